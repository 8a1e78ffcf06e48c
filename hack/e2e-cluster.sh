#!/usr/bin/env bash
# Opt-in real-cluster end-to-end test of the backup and restore paths (issues #7 and #8):
# an application with a ConfigMap and a CSI volume holding generated data is backed up (full,
# then incremental after more data is written) to an S3 target, restored into another
# namespace, and every object and the volume's bytes are checked there.
#
# Needs: kubectl, a cluster where TrilioVault for Kubernetes is installed (the operator and a
# TrilioVaultManager — see deploy/README.md), a StorageClass whose CSI driver takes snapshots
# and a VolumeSnapshotClass for it, and an S3 bucket the cluster can reach.
#
#   KUBECONFIG=...                      the cluster (required)
#   TVK_E2E_S3_BUCKET=...               bucket for the Target (required)
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY   its credentials (required)
#   TVK_E2E_S3_REGION (us-east-1)  TVK_E2E_S3_ENDPOINT (AWS)  TVK_E2E_S3_VENDOR (AWS|MinIO|Other)
#   TVK_E2E_INSTALL_NAMESPACE (trilio-system)   where the Target is created
#   TVK_E2E_STORAGE_CLASS (the cluster default) TVK_E2E_IMAGE (busybox:1.36, pullable by the nodes)
#   TVK_E2E_TIMEOUT (900s per wait)  TVK_E2E_KEEP=1 keeps the namespaces for inspection
#
# hack/test.sh runs this when KUBECONFIG and TVK_E2E_S3_BUCKET are set; on its own:
#   KUBECONFIG=~/.kube/config TVK_E2E_S3_BUCKET=my-bucket AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… hack/e2e-cluster.sh
set -euo pipefail

die() { echo "e2e-cluster: $*" >&2; exit 1; }
log() { printf '\n=== %s\n' "$*"; }

command -v kubectl >/dev/null || die "kubectl not found (install it, e.g. apt-get install kubectl)"
[ -n "${KUBECONFIG:-}" ] || die "set KUBECONFIG to the cluster to test"
[ -n "${TVK_E2E_S3_BUCKET:-}" ] || die "set TVK_E2E_S3_BUCKET to a bucket the cluster can reach"
if [ -z "${AWS_ACCESS_KEY_ID:-}" ] || [ -z "${AWS_SECRET_ACCESS_KEY:-}" ]; then
  die "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for TVK_E2E_S3_BUCKET"
fi

install_ns=${TVK_E2E_INSTALL_NAMESPACE:-trilio-system}
region=${TVK_E2E_S3_REGION:-us-east-1}
vendor=${TVK_E2E_S3_VENDOR:-AWS}
image=${TVK_E2E_IMAGE:-busybox:1.36}
timeout=${TVK_E2E_TIMEOUT:-900s}
run=$(date +%s)-$RANDOM
src=tvk-e2e-src-$run
dst=tvk-e2e-dst-$run
target=tvk-e2e-$run

kubectl get crd backups.triliovault.trilio.io >/dev/null 2>&1 ||
  die "the TrilioVault CRDs are not installed in this cluster: install the operator and a TrilioVaultManager first (deploy/README.md)"
kubectl get namespace "$install_ns" >/dev/null 2>&1 ||
  die "namespace $install_ns does not exist: set TVK_E2E_INSTALL_NAMESPACE to where TrilioVault is installed"

cleanup() {
  local rc=$?
  if [ "${TVK_E2E_KEEP:-}" = 1 ]; then
    echo "kept: namespaces $src $dst, Target $install_ns/$target"
  else
    kubectl delete namespace "$src" "$dst" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    kubectl -n "$install_ns" delete target "$target" --ignore-not-found >/dev/null 2>&1 || true
    kubectl -n "$install_ns" delete secret "$target" --ignore-not-found >/dev/null 2>&1 || true
  fi
  if [ $rc -ne 0 ]; then
    echo "e2e-cluster: FAILED (exit $rc); Backups, Restores and Jobs for the record:" >&2
    kubectl get backups,restores -A -o wide 2>/dev/null | grep -E "$run|NAME" >&2 || true
    kubectl -n "$install_ns" get jobs -o wide 2>/dev/null >&2 || true
  fi
}
trap cleanup EXIT

# wait_status KIND/NAME NAMESPACE WANT: waits for .status.status == WANT; fails at once on a
# terminal failure, printing the resource's conditions.
wait_status() {
  local what=$1 ns=$2 want=$3 deadline=$((SECONDS + ${timeout%s})) status
  while :; do
    status=$(kubectl -n "$ns" get "$what" -o jsonpath='{.status.status}' 2>/dev/null || true)
    [ "$status" = "$want" ] && { echo "$what: $status"; return 0; }
    case $status in
      Failed | Error | Canceled | Unavailable)
        kubectl -n "$ns" get "$what" -o yaml >&2
        die "$what ended $status (wanted $want)" ;;
    esac
    [ $SECONDS -lt $deadline ] || { kubectl -n "$ns" get "$what" -o yaml >&2; die "$what still '$status' after $timeout (wanted $want)"; }
    sleep 5
  done
}

# Runs a pod mounting claim $2 in namespace $1 with shell command $3; prints its output.
run_on_volume() {
  local ns=$1 claim=$2 cmd=$3 pod=vol-$RANDOM
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $pod}
spec:
  restartPolicy: Never
  containers:
  - name: sh
    image: $image
    command: ["sh", "-c", "$cmd"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: $claim}
YAML
  kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$pod" --timeout="$timeout" >/dev/null ||
    { kubectl -n "$ns" describe "pod/$pod" >&2; die "pod $ns/$pod on claim $claim did not succeed"; }
  kubectl -n "$ns" logs "$pod"
  kubectl -n "$ns" delete pod "$pod" --wait=false >/dev/null
}

storage_class=""
[ -n "${TVK_E2E_STORAGE_CLASS:-}" ] && storage_class="storageClassName: $TVK_E2E_STORAGE_CLASS"

log "application in $src: a ConfigMap and a 256Mi CSI volume with generated data"
kubectl create namespace "$src" >/dev/null
kubectl -n "$src" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {app: e2e}}
data: {greeting: "hello from $run"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, labels: {app: e2e}}
spec:
  accessModes: [ReadWriteOnce]
  $storage_class
  resources: {requests: {storage: 256Mi}}
YAML
sum1=$(run_on_volume "$src" data "head -c 33554432 /dev/urandom > /data/a && dd if=/dev/urandom of=/data/b bs=1M count=8 seek=100 2>/dev/null && sync && cat /data/a /data/b | sha256sum")

log "S3 Target $install_ns/$target (bucket $TVK_E2E_S3_BUCKET)"
kubectl -n "$install_ns" create secret generic "$target" \
  --from-literal=accessKey="$AWS_ACCESS_KEY_ID" --from-literal=secretKey="$AWS_SECRET_ACCESS_KEY" >/dev/null
endpoint=""
[ -n "${TVK_E2E_S3_ENDPOINT:-}" ] && endpoint="url: $TVK_E2E_S3_ENDPOINT"
kubectl -n "$install_ns" apply -f - >/dev/null <<YAML
apiVersion: triliovault.trilio.io/v1
kind: Target
metadata: {name: $target}
spec:
  type: ObjectStore
  vendor: $vendor
  objectStoreCredentials:
    region: $region
    bucketName: $TVK_E2E_S3_BUCKET
    $endpoint
    credentialSecret: {name: $target, namespace: $install_ns}
  thresholdCapacity: 10Gi
YAML
wait_status "target/$target" "$install_ns" Available

log "BackupPlan of the whole namespace, full backup"
kubectl -n "$src" apply -f - >/dev/null <<YAML
apiVersion: triliovault.trilio.io/v1
kind: BackupPlan
metadata: {name: plan}
spec:
  backupConfig:
    target: {name: $target, namespace: $install_ns}
  backupPlanFlags: {skipImageBackup: true}
---
apiVersion: triliovault.trilio.io/v1
kind: Backup
metadata: {name: full}
spec:
  type: Full
  backupPlan: {name: plan, namespace: $src}
YAML
wait_status backupplan/plan "$src" Available
wait_status backup/full "$src" Available

log "more data, incremental backup"
sum2=$(run_on_volume "$src" data "dd if=/dev/urandom of=/data/a bs=1M count=2 seek=4 conv=notrunc 2>/dev/null && sync && cat /data/a /data/b | sha256sum")
[ "$sum1" != "$sum2" ] || die "the volume did not change between the backups"
kubectl -n "$src" apply -f - >/dev/null <<YAML
apiVersion: triliovault.trilio.io/v1
kind: Backup
metadata: {name: incr}
spec:
  type: Incremental
  backupPlan: {name: plan, namespace: $src}
YAML
wait_status backup/incr "$src" Available
[ "$(kubectl -n "$src" get backup/incr -o jsonpath='{.status.type}')" = Incremental ] ||
  die "backup/incr was not taken as an Incremental (a parent on the same target was expected)"

log "Restore of the incremental into $dst"
kubectl create namespace "$dst" >/dev/null
kubectl -n "$dst" apply -f - >/dev/null <<YAML
apiVersion: triliovault.trilio.io/v1
kind: Restore
metadata: {name: restore}
spec:
  source:
    type: Backup
    backup: {name: incr, namespace: $src}
  actionFlags: {cleanupOnFailure: true}
YAML
wait_status restore/restore "$dst" Completed

log "checking the restored objects and bytes"
greeting=$(kubectl -n "$dst" get configmap settings -o jsonpath='{.data.greeting}')
[ "$greeting" = "hello from $run" ] || die "restored ConfigMap settings has greeting '$greeting'"
sum3=$(run_on_volume "$dst" data "cat /data/a /data/b | sha256sum")
[ "$sum3" = "$sum2" ] || die "restored volume differs: sha256 $sum3, backed up $sum2"
echo "e2e-cluster: PASSED (restored objects and $(echo "$sum3" | cut -c1-16)… bytes match)"
