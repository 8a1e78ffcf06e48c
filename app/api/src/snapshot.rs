//! Typed model of a Backup's `status.snapshot`: what one backup captured.
//!
//! `BackupStatus.snapshot` stays a free-form `Value` in the CRD (the original product's schema is
//! preserve-unknown there, and a typed field would force a CRD regeneration); the metamover and
//! the control plane convert it through this model with [`Snapshot::from_status_value`] and
//! [`Snapshot::to_value`]. Field names are T4K's, so a status written by the original product
//! reads back here and a status written here reads in its tools.
//!
//! Who writes what:
//! - the metamover (`tvk-metamover snapshot`) fills `helmCharts[]`, `operators[]`, `custom`
//!   (`resources` summary, `warnings`) and, for every PVC to protect, a [`DataSnapshot`] with
//!   `persistentVolumeClaimName`, `persistentVolumeClaimMetadata` (the cleaned PVC as a JSON
//!   string), `size`, `volumeMode` and, in ClusterBackups, `namespace`;
//! - the control plane fills, per data snapshot, `location`, `uploaded`, `volumeSnapshot`,
//!   `snapshotType` and `conditions` as the volume goes through DataSnapshot and DataUpload.
//!
//! Every struct keeps fields it does not model in `unknown`, so a read-modify-write never drops
//! what another version wrote.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    backup::{BackupPhase, BackupPhaseStatus, BackupState, BackupType},
    common::{ObjectReference, PhaseCondition, Resource, UnknownFields},
};

/// `status.snapshot` of a Backup or ClusterBackup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Helm releases captured (the Helm way: release storage plus the release's objects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub helm_charts: Vec<HelmChart>,
    /// OLM (or Helm-installed) operators captured with their custom resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorSnapshot>,
    /// Everything else: label/GVK selections and whole namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomSnapshot>,
    /// Container images of the backed-up workloads, stored on the target
    /// (`tvk-metamover images backup`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<SnapshotImage>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One container image stored with a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotImage {
    /// The reference exactly as a workload names it (`registry/repo:tag`, `repo@sha256:…`).
    pub image: String,
    /// Digest of the manifest or index the reference resolved to (`sha256:…`).
    pub digest: String,
    /// Platforms stored (`linux/amd64`, …); empty for a single-platform manifest whose config
    /// names none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One Helm release in a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChart {
    /// Release name.
    pub release: String,
    /// Revision captured (the latest deployed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Helm major version of the release storage (`v3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where Helm keeps the release: `Secret` or `ConfigMap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_backend: Option<String>,
    /// Name of the chart the release was installed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_name: Option<String>,
    /// Version of that chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_version: Option<String>,
    /// Namespace of the release (ClusterBackups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The release's objects, by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
    /// Volumes of the release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_snapshots: Vec<DataSnapshot>,
    /// Things the user should know (skipped objects, missing dependencies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One operator in a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorSnapshot {
    /// The plan's `operatorId`.
    pub operator_id: String,
    /// The OLM Subscription captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<ObjectReference>,
    /// The operator's Helm release, when it was installed by Helm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmChart>,
    /// The operator's own objects (Subscription, CSV, Deployments, RBAC, …), by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_resources: Vec<Resource>,
    /// The custom resources of the operator's application, by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_resources: Vec<Resource>,
    /// Objects the operator created for its instances, by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_resources: Vec<Resource>,
    /// Volumes of the operator's application.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_snapshots: Vec<DataSnapshot>,
    /// Things the user should know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Objects captured by label/GVK selection or as whole namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomSnapshot {
    /// The objects, by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
    /// Volumes of these objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_snapshots: Vec<DataSnapshot>,
    /// Things the user should know (e.g. a resource type skipped because listing it was
    /// Forbidden, an unbound PVC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One PVC to protect, and what happened to it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataSnapshot {
    /// Name of the PVC.
    pub persistent_volume_claim_name: String,
    /// Namespace of the PVC (ClusterBackups; a Backup's PVCs are in its namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The cleaned PVC object as a JSON string (what restore recreates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_metadata: Option<String>,
    /// Size of the volume (the PVC's capacity, else its request), a quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<IntOrString>,
    /// Size of the uploaded data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_size: Option<IntOrString>,
    /// `Filesystem` or `Block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// Path of the volume's QCOW2 image directory on the target:
    /// `<plan uid>/<backup uid>/<pvc uid>` (set by the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The image is on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<bool>,
    /// The CSI snapshot taken of the PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<VolumeSnapshotInfo>,
    /// Full or Incremental image (set by the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<BackupType>,
    /// Full or Incremental, as the original product names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<BackupType>,
    /// Per-step history of this volume (DataSnapshot, DataUpload, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PhaseCondition<BackupPhase, BackupPhaseStatus>>,
    /// Pods (and their containers) that mount the PVC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_containers_map: Vec<PodContainers>,
    /// Why the volume could not be captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// The CSI VolumeSnapshot of one PVC.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotInfo {
    /// The VolumeSnapshot object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<ObjectReference>,
    /// Attempts so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<i64>,
    /// State of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BackupState>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// A pod and the containers in it that use a volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodContainers {
    /// Pod name.
    pub pod_name: String,
    /// Container names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

impl Snapshot {
    /// Reads `status.snapshot` (absent or `null` → `None`).
    pub fn from_status_value(value: Option<&Value>) -> Result<Option<Self>, serde_json::Error> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Self::deserialize(v).map(Some),
        }
    }

    /// The JSON value to store in `status.snapshot`.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    /// Every data snapshot, wherever it sits (Helm charts, operators and their Helm releases,
    /// custom), in that order.
    pub fn data_snapshots(&self) -> impl Iterator<Item = &DataSnapshot> {
        let helm = self
            .helm_charts
            .iter()
            .flat_map(|h| h.data_snapshots.iter());
        let operators = self.operators.iter().flat_map(|o| {
            o.data_snapshots
                .iter()
                .chain(o.helm.iter().flat_map(|h| h.data_snapshots.iter()))
        });
        let custom = self.custom.iter().flat_map(|c| c.data_snapshots.iter());
        helm.chain(operators).chain(custom)
    }

    /// Every data snapshot, mutably (the control plane sets `location`, `uploaded`, … in place).
    pub fn data_snapshots_mut(&mut self) -> impl Iterator<Item = &mut DataSnapshot> {
        let helm = self
            .helm_charts
            .iter_mut()
            .flat_map(|h| h.data_snapshots.iter_mut());
        let operators = self.operators.iter_mut().flat_map(|o| {
            o.data_snapshots
                .iter_mut()
                .chain(o.helm.iter_mut().flat_map(|h| h.data_snapshots.iter_mut()))
        });
        let custom = self
            .custom
            .iter_mut()
            .flat_map(|c| c.data_snapshots.iter_mut());
        helm.chain(operators).chain(custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `status.snapshot` of the original product's fixture reads into the model and writes
    /// back to the same JSON.
    #[test]
    fn t4k_snapshot_round_trips() {
        let text = include_str!("../tests/fixtures/t4k/backup-with-status.yaml");
        let backup = crate::yaml::parse_single(text, &crate::yaml::Limits::default()).unwrap();
        let original = backup["status"]["snapshot"].clone();
        let snap = Snapshot::from_status_value(Some(&original))
            .unwrap()
            .unwrap();
        assert_eq!(snap.operators.len(), 1);
        let op = &snap.operators[0];
        assert_eq!(op.operator_id, "log-collector-mysql-operator");
        assert_eq!(op.custom_resources[0].objects.as_deref().unwrap().len(), 1);
        let ds = &op.data_snapshots[0];
        assert_eq!(
            ds.persistent_volume_claim_name,
            "data-log-collector-mysql-operator-0"
        );
        assert_eq!(ds.backup_type, Some(BackupType::Full));
        assert_eq!(ds.uploaded, Some(true));
        assert_eq!(
            ds.volume_snapshot.as_ref().unwrap().status,
            Some(BackupState::Completed)
        );
        assert_eq!(ds.pod_containers_map[0].containers.len(), 2);
        assert_eq!(snap.to_value().unwrap(), original);
    }

    #[test]
    fn images_round_trip() {
        let original = json!({"images": [
            {"image": "127.0.0.1:5001/app/web:1.0", "digest": "sha256:ab",
             "platforms": ["linux/amd64", "linux/arm64"]},
            {"image": "busybox@sha256:cd", "digest": "sha256:cd"}
        ]});
        let snap = Snapshot::from_status_value(Some(&original))
            .unwrap()
            .unwrap();
        assert_eq!(snap.images.len(), 2);
        assert_eq!(snap.images[0].platforms, ["linux/amd64", "linux/arm64"]);
        assert!(snap.images[1].platforms.is_empty());
        assert_eq!(snap.to_value().unwrap(), original);
    }

    #[test]
    fn absent_or_null_snapshot_is_none() {
        assert_eq!(Snapshot::from_status_value(None).unwrap(), None);
        assert_eq!(
            Snapshot::from_status_value(Some(&Value::Null)).unwrap(),
            None
        );
    }

    #[test]
    fn data_snapshots_are_found_everywhere_and_mutable() {
        let mut snap: Snapshot = serde_json::from_value(json!({
            "helmCharts": [{"release": "db", "dataSnapshots": [{"persistentVolumeClaimName": "a"}]}],
            "operators": [{"operatorId": "op",
                "dataSnapshots": [{"persistentVolumeClaimName": "b"}],
                "helm": {"release": "op", "dataSnapshots": [{"persistentVolumeClaimName": "c"}]}}],
            "custom": {"dataSnapshots": [{"persistentVolumeClaimName": "d", "namespace": "ns",
                "size": "10Gi", "volumeMode": "Filesystem", "futureField": 1}]}
        }))
        .unwrap();
        let names: Vec<_> = snap
            .data_snapshots()
            .map(|d| d.persistent_volume_claim_name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert!(snap.images.is_empty());
        for d in snap.data_snapshots_mut() {
            d.location = Some(format!("plan/backup/{}", d.persistent_volume_claim_name));
            d.snapshot_type = Some(BackupType::Incremental);
        }
        let v = snap.to_value().unwrap();
        assert_eq!(v["custom"]["dataSnapshots"][0]["location"], "plan/backup/d");
        assert_eq!(
            v["custom"]["dataSnapshots"][0]["snapshotType"],
            "Incremental"
        );
        assert_eq!(v["custom"]["dataSnapshots"][0]["futureField"], 1);
        assert_eq!(v["custom"]["dataSnapshots"][0]["size"], "10Gi");
        assert_eq!(
            v["operators"][0]["helm"]["dataSnapshots"][0]["location"],
            "plan/backup/c"
        );
    }
}
