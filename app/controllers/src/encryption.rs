//! Encryption keys for the execution layer: a backup plan's `encryption.encryptionSecret` (or a
//! restore's `spec.encryption`) reaches the Jobs that read or write the backup as a file.
//!
//! The Secret holds the key under [`SECRET_KEY`] (`encryptionKey`, as T4K's encryption Secrets
//! do). Jobs run in the install namespace and can only mount Secrets of their own namespace, so
//! a Secret elsewhere is copied there under a name derived from its namespace and name
//! ([`copy_name`]), labelled with where it came from and refreshed (server-side apply) every
//! time a Job needs it: a changed key reaches the next Job. Copies nothing needs any more are
//! deleted by [`crate::key_copy_sweep`]. The copy is mounted read-only at
//! [`KEY_DIR`] and the tools get `--encryption-key-file` (never the key on a command line or in
//! the environment). The tools do the encryption: LUKS in QCOW2 and a keyed digest index for
//! volume data (tvk-datamover), AES-256-GCM for everything under `_metadata/` (tvk-metamover).

use k8s_openapi::{
    ByteString,
    api::core::v1::{KeyToPath, Secret, SecretVolumeSource, Volume, VolumeMount},
};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use std::collections::BTreeMap;
use tvk_api::common::ObjectReference;

use crate::{
    context::{CONTROLLER_NAME, Context},
    error::{Error, Result},
    kinds::PlanKind,
    naming::short_hash,
    target_access::{TargetAccess, ref_namespace},
};

/// Key of the encryption key in the user's Secret.
pub const SECRET_KEY: &str = "encryptionKey";
/// Where Jobs find the key file.
pub const KEY_DIR: &str = "/etc/tvk/encryption";
/// Field manager of the copies in the install namespace.
pub const FIELD_MANAGER: &str = "tvk-control-plane-encryption";
/// Annotation of a copy: the Secret it was copied from (`<namespace>/<name>`).
pub const ANNOTATION_SOURCE: &str = "triliovault.trilio.io/encryption-secret";
/// Annotation of a copy: when it was last applied for a Job (RFC 3339); unused copies are
/// deleted a grace period after it ([`crate::key_copy_sweep`]).
pub const ANNOTATION_REFRESHED: &str = "triliovault.trilio.io/encryption-secret-refreshed";
/// The metamover flag given with the key to every metaprocessor Job of a backup whose
/// `status.encryptionEnabled` is true: a plain (unsealed) metadata object is refused, so whoever
/// can write to the target cannot swap plain metadata into an encrypted backup.
pub const REQUIRE_SEALED: &str = "--require-sealed";
/// Pod volume name of the key.
const VOLUME: &str = "encryption-key";

/// Where a backup's or restore's key comes from, for the Jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRef {
    /// The user's Secret.
    pub secret: ObjectReference,
    /// Its namespace when the reference names none.
    pub default_ns: String,
    /// The API field naming it (for messages).
    pub field: String,
}

impl KeyRef {
    /// The plan's `encryption.encryptionSecret`, if any.
    pub fn of_plan<P: PlanKind>(plan: &P, plan_key: &str, install_ns: &str) -> Option<Self> {
        plan.encryption_secret().map(|secret| Self {
            secret: secret.clone(),
            default_ns: plan.refs_namespace(install_ns),
            field: format!("spec.encryption.encryptionSecret of {} {plan_key}", P::KIND),
        })
    }

    /// Name of the Secret Jobs in `job_ns` mount (pure): the user's own in that namespace, else
    /// the copy [`job_secret`] keeps there.
    pub fn job_secret_name(&self, job_ns: &str) -> String {
        let name = self.secret.name.clone().unwrap_or_default();
        let ns = ref_namespace(&self.secret, &self.default_ns);
        if ns == job_ns {
            name
        } else {
            copy_name(ns, &name)
        }
    }

    /// [`job_secret`] of this key.
    pub async fn job_secret(
        &self,
        ctx: &Context,
        job_ns: &str,
    ) -> Result<std::result::Result<String, String>> {
        job_secret(ctx, &self.secret, &self.default_ns, job_ns, &self.field).await
    }
}

/// Name of the copy of Secret `namespace/name` in the install namespace.
pub fn copy_name(namespace: &str, name: &str) -> String {
    format!("tvk-encryption-{}", short_hash(&[namespace, name]))
}

/// The Secret named by `secret` (its namespace, else `default_ns`) made readable to Jobs in
/// `job_ns`: returns the name of a Secret in `job_ns` holding the key under [`SECRET_KEY`].
/// `field` names the API field for messages (e.g. `spec.encryption.encryptionSecret of
/// BackupPlan ns/p`). Outer `Err`: API error (retry); inner `Err(reason)`: the user must act.
pub async fn job_secret(
    ctx: &Context,
    secret: &ObjectReference,
    default_ns: &str,
    job_ns: &str,
    field: &str,
) -> Result<std::result::Result<String, String>> {
    let name = secret.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Ok(Err(format!(
            "{field} has no name; name the Secret holding the key `{SECRET_KEY}`"
        )));
    }
    let ns = ref_namespace(secret, default_ns).to_string();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let found = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read encryption Secret {ns}/{name}"), e))?;
    let Some(found) = found else {
        return Ok(Err(format!(
            "{field}: Secret {ns}/{name} does not exist; create it with the key `{SECRET_KEY}` (the encryption key)"
        )));
    };
    let key = found
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY))
        .filter(|k| !k.0.is_empty())
        .cloned();
    let Some(key) = key else {
        return Ok(Err(format!(
            "{field}: Secret {ns}/{name} has no non-empty key `{SECRET_KEY}`; put the encryption key there"
        )));
    };
    if ns == job_ns {
        return Ok(Ok(name));
    }
    let copy = copy_name(&ns, &name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(copy.clone()),
            namespace: Some(job_ns.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                CONTROLLER_NAME.to_string(),
            )])),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_SOURCE.to_string(), format!("{ns}/{name}")),
                (
                    ANNOTATION_REFRESHED.to_string(),
                    crate::status_patch::now_rfc3339(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SECRET_KEY.to_string(),
            ByteString(key.0),
        )])),
        ..Secret::default()
    };
    let copies: Api<Secret> = Api::namespaced(ctx.client.clone(), job_ns);
    let value = serde_json::to_value(&secret).map_err(|source| Error::Serde {
        what: "the encryption Secret copy",
        source,
    })?;
    let mut value = value;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), "v1".into());
        obj.insert("kind".into(), "Secret".into());
    }
    copies
        .patch(
            &copy,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await
        .map_err(|e| {
            Error::kube(
                format!("copy encryption Secret {ns}/{name} to {job_ns}/{copy}"),
                e,
            )
        })?;
    Ok(Ok(copy))
}

/// Adds the key Secret `secret_name` (in the Job's namespace) to a Job's access: a read-only
/// volume at [`KEY_DIR`] and `--encryption-key-file`.
pub fn mount(access: &mut TargetAccess, secret_name: &str) {
    access.volumes.push(Volume {
        name: VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.to_string()),
            items: Some(vec![KeyToPath {
                key: SECRET_KEY.into(),
                path: SECRET_KEY.into(),
                mode: None,
            }]),
            default_mode: Some(0o444),
            optional: Some(false),
        }),
        ..Volume::default()
    });
    access.volume_mounts.push(VolumeMount {
        name: VOLUME.into(),
        mount_path: KEY_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    access
        .args
        .push(format!("--encryption-key-file={KEY_DIR}/{SECRET_KEY}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_named_per_source_and_mounts_pass_a_file_never_the_key() {
        assert_eq!(copy_name("a", "k"), copy_name("a", "k"));
        assert_ne!(copy_name("a", "k"), copy_name("b", "k"));
        assert!(copy_name("a", "k").len() <= 63);
        let mut access = TargetAccess::default();
        mount(&mut access, "s");
        assert_eq!(
            access.args,
            vec!["--encryption-key-file=/etc/tvk/encryption/encryptionKey".to_string()]
        );
        assert_eq!(access.volume_mounts[0].read_only, Some(true));
        assert_eq!(
            access.volumes[0]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("s")
        );
        assert!(access.env.is_empty());
    }
}
