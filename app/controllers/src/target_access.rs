//! How a Job reaches a Target (contracts7.md): the ONE function that turns a `Target` into the
//! datamover's target flags (`tvk_datamover::target_args::TargetArgs`), environment and volumes.
//!
//! - S3: `--target s3://<bucket>`, `--s3-endpoint`, `--s3-region`, `--s3-skip-tls-verify`;
//!   credentials as `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` from the Target's
//!   `credentialSecret` keys `accessKey` / `secretKey` through `secretKeyRef` (never copied into
//!   the Job spec); the `sslCertConfig.certConfigMap` mounted at [`CA_DIR`] and passed as
//!   `--s3-ca-file /etc/tvk/target-ca/<certKey>`.
//! - NFS: the claim recorded in the Target's `status.nfsPersistentVolumeClaim` mounted at
//!   [`NFS_MOUNT`], `--target /mnt/target`.
//!
//! A Job can only read Secrets and claims of its own namespace, so a Target whose Secret or
//! claim lives elsewhere is refused with a message saying where to create it.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, PersistentVolumeClaimVolumeSource,
    SecretKeySelector, Volume, VolumeMount,
};
use kube::ResourceExt;
use tvk_api::target::{Target, TargetType};

use crate::error::{Error, Result};

/// Where the certConfigMap is mounted in Jobs.
pub const CA_DIR: &str = "/etc/tvk/target-ca";
/// Where the NFS claim is mounted in Jobs.
pub const NFS_MOUNT: &str = "/mnt/target";
/// Secret key of the access key id.
pub const ACCESS_KEY: &str = "accessKey";
/// Secret key of the secret access key.
pub const SECRET_KEY: &str = "secretKey";
/// Default region when the Target names none (the datamover's default too).
pub const DEFAULT_REGION: &str = "us-east-1";

/// What a Job container needs to reach a Target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetAccess {
    /// Target flags, appended to the command.
    pub args: Vec<String>,
    /// Environment (credentials by reference).
    pub env: Vec<EnvVar>,
    /// Pod volumes.
    pub volumes: Vec<Volume>,
    /// Container mounts of those volumes.
    pub volume_mounts: Vec<VolumeMount>,
}

/// The namespace a reference points into (its own, else the referring object's).
pub fn ref_namespace<'a>(
    reference: &'a tvk_api::common::ObjectReference,
    default: &'a str,
) -> &'a str {
    reference
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(default)
}

/// Builds the target flags, env and volumes of a Job running in `job_namespace`.
pub fn job_access(target: &Target, job_namespace: &str) -> Result<TargetAccess> {
    let target_ns = target.namespace().unwrap_or_default();
    let name = target.name_any();
    match target.spec.type_ {
        TargetType::ObjectStore => {
            let Some(s3) = &target.spec.object_store_credentials else {
                return Err(Error::InvalidSpec(format!(
                    "Target {target_ns}/{name} is of type ObjectStore but has no objectStoreCredentials; add bucketName and credentialSecret"
                )));
            };
            let mut access = TargetAccess {
                args: vec!["--target".into(), format!("s3://{}", s3.bucket_name)],
                ..TargetAccess::default()
            };
            if let Some(url) = s3.url.as_deref().filter(|u| !u.is_empty()) {
                access
                    .args
                    .extend(["--s3-endpoint".into(), url.to_string()]);
            }
            let region = s3
                .region
                .as_deref()
                .filter(|r| !r.is_empty())
                .unwrap_or(DEFAULT_REGION);
            access
                .args
                .extend(["--s3-region".into(), region.to_string()]);
            if s3.skip_cert_verification == Some(true) {
                access.args.push("--s3-skip-tls-verify".into());
            }
            let Some(secret) = &s3.credential_secret else {
                return Err(Error::InvalidSpec(format!(
                    "Target {target_ns}/{name} has no objectStoreCredentials.credentialSecret; create a Secret with keys {ACCESS_KEY} and {SECRET_KEY} and reference it"
                )));
            };
            let secret_name = secret.name.clone().unwrap_or_default();
            let secret_ns = ref_namespace(secret, &target_ns);
            if secret_ns != job_namespace {
                return Err(Error::InvalidSpec(format!(
                    "the credential Secret {secret_ns}/{secret_name} of Target {target_ns}/{name} is not in namespace {job_namespace}, where the backup's Jobs run, and Jobs can only read Secrets of their own namespace; create the Secret (and a Target using it) in {job_namespace}"
                )));
            }
            for (env, key) in [
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ] {
                access.env.push(EnvVar {
                    name: env.into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret_name.clone(),
                            key: key.into(),
                            optional: Some(false),
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                });
            }
            if let Some(cert) = &s3.ssl_cert_config
                && let Some(map) = &cert.cert_config_map
            {
                let map_name = map.name.clone().unwrap_or_default();
                let map_ns = ref_namespace(map, &target_ns);
                if map_ns != job_namespace {
                    return Err(Error::InvalidSpec(format!(
                        "the certificate ConfigMap {map_ns}/{map_name} of Target {target_ns}/{name} is not in namespace {job_namespace}, where the backup's Jobs run; create it in {job_namespace}"
                    )));
                }
                let key = cert.cert_key.clone().unwrap_or_else(|| "ca.crt".into());
                if key.contains('/') || key.starts_with('.') || key.is_empty() {
                    return Err(Error::InvalidSpec(format!(
                        "Target {target_ns}/{name}: sslCertConfig.certKey {key:?} is not a ConfigMap key"
                    )));
                }
                access.volumes.push(Volume {
                    name: "target-ca".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: map_name,
                        items: Some(vec![KeyToPath {
                            key: key.clone(),
                            path: key.clone(),
                            mode: None,
                        }]),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                });
                access.volume_mounts.push(VolumeMount {
                    name: "target-ca".into(),
                    mount_path: CA_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
                access
                    .args
                    .extend(["--s3-ca-file".into(), format!("{CA_DIR}/{key}")]);
            }
            Ok(access)
        }
        TargetType::Nfs => {
            let claim = target
                .status
                .as_ref()
                .and_then(|s| s.nfs_persistent_volume_claim.as_ref())
                .and_then(|c| c.name.clone());
            let Some(claim) = claim else {
                return Err(Error::InvalidSpec(format!(
                    "NFS Target {target_ns}/{name} has no claim of its share yet (status.nfsPersistentVolumeClaim); wait until the Target is Available"
                )));
            };
            if target_ns != job_namespace {
                return Err(Error::InvalidSpec(format!(
                    "the NFS share of Target {target_ns}/{name} is claimed in namespace {target_ns}, but the backup's Jobs run in {job_namespace}; create an NFS Target in {job_namespace}"
                )));
            }
            Ok(TargetAccess {
                args: vec!["--target".into(), NFS_MOUNT.into()],
                env: Vec::new(),
                volumes: vec![Volume {
                    name: "target".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim,
                        read_only: Some(false),
                    }),
                    ..Volume::default()
                }],
                volume_mounts: vec![VolumeMount {
                    name: "target".into(),
                    mount_path: NFS_MOUNT.into(),
                    ..VolumeMount::default()
                }],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;

    fn target(value: serde_json::Value) -> Target {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn s3_target_becomes_flags_env_by_reference_and_a_ca_mount() {
        let t = target(json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
            "metadata": {"name": "s3", "namespace": "app"},
            "spec": {"type": "ObjectStore", "vendor": "MinIO", "objectStoreCredentials": {
                "bucketName": "backups", "region": "eu-west-1", "url": "https://minio.example:9000",
                "credentialSecret": {"name": "s3-creds"}, "skipCertVerification": true,
                "sslCertConfig": {"certConfigMap": {"name": "minio-ca"}, "certKey": "ca.pem"}}}
        }));
        let access = job_access(&t, "app").unwrap();
        assert_eq!(
            access.args,
            [
                "--target",
                "s3://backups",
                "--s3-endpoint",
                "https://minio.example:9000",
                "--s3-region",
                "eu-west-1",
                "--s3-skip-tls-verify",
                "--s3-ca-file",
                "/etc/tvk/target-ca/ca.pem"
            ]
        );
        let env = serde_json::to_value(&access.env).unwrap();
        assert_eq!(
            env,
            json!([
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "accessKey", "optional": false}}},
                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secretKey", "optional": false}}}
            ])
        );
        assert_eq!(access.volume_mounts[0].mount_path, CA_DIR);
        let parsed = <tvk_datamover_args::Args as clap::Parser>::try_parse_from(
            std::iter::once("x".to_string()).chain(access.args.clone()),
        )
        .unwrap();
        assert_eq!(parsed.target.target, "s3://backups");
        assert_eq!(parsed.target.s3_region, "eu-west-1");
        assert!(parsed.target.s3_skip_tls_verify);
    }

    /// The datamover's own parser accepts what we build.
    mod tvk_datamover_args {
        #[derive(clap::Parser)]
        pub struct Args {
            #[command(flatten)]
            pub target: tvk_datamover::target_args::TargetArgs,
        }
    }

    #[test]
    fn secret_in_another_namespace_is_refused_with_advice() {
        let t = target(json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
            "metadata": {"name": "s3", "namespace": "trilio-system"},
            "spec": {"type": "ObjectStore", "vendor": "AWS", "objectStoreCredentials": {
                "bucketName": "b", "credentialSecret": {"name": "c"}}}
        }));
        let err = job_access(&t, "app").unwrap_err().to_string();
        assert!(
            err.contains("trilio-system/c") && err.contains("create the Secret"),
            "{err}"
        );
        assert!(job_access(&t, "trilio-system").is_ok());
    }

    #[test]
    fn nfs_target_mounts_its_claim() {
        let mut t = target(json!({
            "apiVersion": "triliovault.trilio.io/v1", "kind": "Target",
            "metadata": {"name": "nfs", "namespace": "app"},
            "spec": {"type": "NFS", "vendor": "Other", "nfsCredentials": {"nfsExport": "10.0.0.1:/exports"}}
        }));
        assert!(
            job_access(&t, "app")
                .unwrap_err()
                .to_string()
                .contains("wait until")
        );
        t.status = Some(
            serde_json::from_value(
                json!({"nfsPersistentVolumeClaim": {"name": "tvk-nfs-x", "namespace": "app"}}),
            )
            .unwrap(),
        );
        let access = job_access(&t, "app").unwrap();
        assert_eq!(access.args, ["--target", "/mnt/target"]);
        assert_eq!(
            access.volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "tvk-nfs-x"
        );
    }
}
