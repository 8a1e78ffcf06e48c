//! `tvk-metamover images restore` (phase ImageRestore): the images of a backup go back into a
//! registry — only those whose original is no longer pullable.
//!
//! Reads the Restore's (or ClusterRestore's) `imageRegistry` and its `registryAuthSecret` (a
//! `kubernetes.io/dockerconfigjson` Secret), `restoreFlags.overrideImageIfExist`, and the
//! backup's `images.json`. Per image: the original still answers a manifest `HEAD` by digest →
//! `Reachable`, nothing copied; otherwise it is pushed from the target's image store to
//! `<registry>/<repository>/<last element of the original repository>` under the original tag
//! (`tvk-<12 hex>` for a digest-only reference) — `Pushed`; when that tag already names another
//! image, `Overwritten` with `overrideImageIfExist`, else pushed under
//! `<tag>-tvk-<8 chars of the restore's UID>` — `PushedNewTag`. Every push is checked (manifest
//! by digest and the tag) before it is recorded, then `status.images` is merge-patched. The
//! metaprocessor rewrites restored workloads from those records
//! ([`crate::images::rewrite_images`]), so no workload points at an image that is not there.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tvk_api::{
    ClusterRestore, Restore,
    restore::{ImageRegistry, ImageRestoreResult, RestoredImage},
};
use tvk_datamover::target::Target;
use tvk_oci::{
    Digest, ImageReference,
    auth::CredentialStore,
    copy::{CopyEngine, Endpoint, ImageLocation},
    registry::{RegistryClient, RegistryConfig, RegistryPool},
};

use crate::{
    error::{Error, Result, is_status},
    images::{image_error, new_tag, restore_destination, restored_reference},
    images_backup::image_store,
    restore::{RestoreKind, RestoreRef},
    snapshot::{FIELD_MANAGER, ProgressFn},
};

/// What `images restore` did.
#[derive(Debug)]
pub struct RestoreOutcome {
    /// One entry per backed-up image.
    pub images: Vec<RestoredImage>,
    /// The backup recorded no images (image backup was skipped).
    pub no_record: bool,
}

struct Settings {
    uid: String,
    registry: ImageRegistry,
    secret_namespace: String,
    override_existing: bool,
}

async fn load(client: &Client, r: &RestoreRef) -> Result<Settings> {
    let missing = |what: &str| Error::Restore {
        restore: r.display(),
        reason: format!(
            "{what} is required to restore images (actionFlags.imageRestore); set it or turn \
             imageRestore off"
        ),
    };
    let not_found = |e: kube::Error| {
        if is_status(&e, 404) {
            Error::NotFound {
                what: r.display(),
                hint: "it may have been deleted; nothing was restored",
            }
        } else {
            Error::kube(format!("read {}", r.display()), e)
        }
    };
    let (uid, registry, ns, flags) = match r.kind {
        RestoreKind::Restore => {
            let ns = r.namespace.clone().ok_or_else(|| {
                Error::Usage("--namespace is required with --kind Restore".into())
            })?;
            let rst = Api::<Restore>::namespaced(client.clone(), &ns)
                .get(&r.name)
                .await
                .map_err(not_found)?;
            let registry = rst.spec.image_registry.clone();
            let secret_ns = registry
                .as_ref()
                .and_then(|g| g.registry_auth_secret.namespace.clone())
                .unwrap_or(ns);
            (
                rst.metadata.uid.clone().unwrap_or_default(),
                registry,
                Some(secret_ns),
                rst.spec.restore_flags.clone(),
            )
        }
        RestoreKind::ClusterRestore => {
            let rst = Api::<ClusterRestore>::all(client.clone())
                .get(&r.name)
                .await
                .map_err(not_found)?;
            let registry = rst.spec.image_registry.clone();
            let secret_ns = registry
                .as_ref()
                .and_then(|g| g.registry_auth_secret.namespace.clone());
            // A ClusterRestore's flags live in globalConfig (T4K's shape).
            let flags = rst
                .spec
                .global_config
                .as_ref()
                .and_then(|g| g.get("restoreFlags"))
                .and_then(|f| serde_json::from_value(f.clone()).ok());
            (
                rst.metadata.uid.clone().unwrap_or_default(),
                registry,
                secret_ns,
                flags,
            )
        }
    };
    let registry = registry.ok_or_else(|| missing("spec.imageRegistry"))?;
    if registry.registry.trim().is_empty() {
        return Err(missing("spec.imageRegistry.registry"));
    }
    if registry
        .registry_auth_secret
        .name
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        return Err(missing("spec.imageRegistry.registryAuthSecret.name"));
    }
    let secret_namespace =
        ns.ok_or_else(|| missing("spec.imageRegistry.registryAuthSecret.namespace"))?;
    let override_existing = flags
        .and_then(|f: tvk_api::restore::RestoreFlags| f.override_image_if_exist)
        .unwrap_or(false);
    Ok(Settings {
        uid,
        registry,
        secret_namespace,
        override_existing,
    })
}

async fn registry_credentials(client: &Client, s: &Settings) -> Result<CredentialStore> {
    let name = s
        .registry
        .registry_auth_secret
        .name
        .clone()
        .unwrap_or_default();
    let ns = &s.secret_namespace;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&name)
        .await
        .map_err(|e| {
            if is_status(&e, 404) {
                Error::NotFound {
                    what: format!(
                        "registry auth secret {ns}/{name} (spec.imageRegistry.registryAuthSecret)"
                    ),
                    hint: "create it with `kubectl create secret docker-registry`",
                }
            } else {
                Error::kube(format!("read registry auth secret {ns}/{name}"), e)
            }
        })?;
    if secret.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
        return Err(Error::Usage(format!(
            "registry auth secret {ns}/{name} is of type {:?}; spec.imageRegistry.registryAuthSecret \
             must be a kubernetes.io/dockerconfigjson secret",
            secret.type_.as_deref().unwrap_or("Opaque")
        )));
    }
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .ok_or_else(|| {
            Error::Usage(format!(
                "registry auth secret {ns}/{name} has no .dockerconfigjson key"
            ))
        })?;
    let mut store = CredentialStore::anonymous();
    store
        .merge_docker_config(&data.0, &format!("secret {ns}/{name}"))
        .map_err(|e| Error::Usage(e.to_string()))?;
    Ok(store)
}

/// Whether the original answers a manifest `HEAD` by digest. Any failure (gone, auth refused,
/// unreachable) counts as not pullable: the image is restored rather than trusted.
async fn reachable(client: &RegistryClient, repository: &str, digest: &Digest) -> (bool, String) {
    match client.head_manifest(repository, &digest.to_string()).await {
        Ok(Some(d)) if d.digest == *digest => (true, "present".into()),
        Ok(Some(d)) => (false, format!("the registry answered with {}", d.digest)),
        Ok(None) => (false, "not found".into()),
        Err(e) => (false, e.to_string()),
    }
}

/// Runs `images restore` for one restore.
pub async fn run_restore(
    client: Client,
    target: Target,
    r: &RestoreRef,
    location: &str,
    progress: ProgressFn<'_>,
) -> Result<RestoreOutcome> {
    let (plan, backup) = location.split_once('/').ok_or_else(|| {
        Error::Usage(format!(
            "--location {location:?} is not <plan uid>/<backup uid>"
        ))
    })?;
    let location = crate::layout::BackupLocation::new(plan, backup)?.location;
    let location = location.as_str();
    let settings = load(&client, r).await?;
    let store = image_store(&target)?;
    let Some(record) = store
        .read_record(location)
        .await
        .map_err(|e| image_error("read the image record of the backup", e))?
    else {
        patch_restore_status(&client, r, &[]).await?;
        progress(json!({"event": "warning", "message":
            format!("the backup at {location} stored no images (image backup was skipped); workloads keep their original images")}));
        return Ok(RestoreOutcome {
            images: Vec::new(),
            no_record: true,
        });
    };
    let credentials = Arc::new(registry_credentials(&client, &settings).await?);
    let tls_verify = !settings.registry.skip_tls_verify.unwrap_or(false);
    // Originals are checked with the restore registry's credentials only (the backup's pull
    // secrets may not exist here yet).
    let originals = RegistryPool::new(RegistryConfig {
        credentials: credentials.clone(),
        ..RegistryConfig::default()
    })
    .map_err(|e| image_error("configure the registry client", e))?;
    let destinations = RegistryPool::new(RegistryConfig {
        tls_verify,
        credentials,
        ..RegistryConfig::default()
    })
    .map_err(|e| image_error("configure the registry client", e))?;
    let registry_host = settings
        .registry
        .registry
        .trim()
        .trim_end_matches('/')
        .to_owned();
    let destination = destinations.client(&registry_host);
    let secret_hint = format!(
        "credentials from spec.imageRegistry.registryAuthSecret {}/{}",
        settings.secret_namespace,
        settings
            .registry
            .registry_auth_secret
            .name
            .as_deref()
            .unwrap_or_default()
    );
    let engine = CopyEngine::new(4);
    let source = ImageLocation {
        endpoint: Endpoint::Store(store.clone()),
        repository: String::new(),
    };
    let mut results = Vec::new();
    for image in &record.images {
        let what = format!("image {}", image.image);
        let original = ImageReference::parse(&image.image).map_err(|e| image_error(&what, e))?;
        let digest = Digest::parse(&image.digest).map_err(|e| image_error(&what, e))?;
        let (is_reachable, why) = reachable(
            &originals.client(&original.registry),
            &original.repository,
            &digest,
        )
        .await;
        if is_reachable {
            progress(json!({"event": "image", "image": image.image, "result": "Reachable"}));
            results.push(RestoredImage {
                image: image.image.clone(),
                digest: image.digest.clone(),
                restored_image: None,
                result: ImageRestoreResult::Reachable,
            });
            continue;
        }
        let (repository, tag) =
            restore_destination(&original, &digest, &settings.registry.repository);
        let at = |tag: &str| format!("{registry_host}/{repository}:{tag}");
        let first_choice = at(&tag);
        let on_error = |e: tvk_oci::OciError| {
            image_error(
                &format!("{what}: restoring it into {first_choice} ({secret_hint})"),
                e,
            )
        };
        let existing = destination
            .resolve_manifest(&repository, &tag)
            .await
            .map_err(on_error)?;
        let (tag, result) = match existing {
            None => (tag, ImageRestoreResult::Pushed),
            Some(d) if d == digest => (tag, ImageRestoreResult::Pushed),
            Some(_) if settings.override_existing => (tag, ImageRestoreResult::Overwritten),
            Some(_) => {
                let fresh = new_tag(&tag, &settings.uid);
                match destination
                    .resolve_manifest(&repository, &fresh)
                    .await
                    .map_err(on_error)?
                {
                    Some(d) if d != digest => {
                        return Err(Error::Image {
                            message: format!(
                                "{what}: {} already names a different image, and so does the \
                                 generated tag {}; delete one of them or set \
                                 restoreFlags.overrideImageIfExist",
                                at(&tag),
                                at(&fresh)
                            ),
                            retryable: false,
                            category: "ImageConflict",
                        });
                    }
                    _ => (fresh, ImageRestoreResult::PushedNewTag),
                }
            }
        };
        let dest = ImageLocation {
            endpoint: Endpoint::Registry(destination.clone()),
            repository: repository.clone(),
        };
        let chosen = at(&tag);
        let on_error = |e: tvk_oci::OciError| {
            image_error(
                &format!("{what}: restoring it into {chosen} ({secret_hint})"),
                e,
            )
        };
        engine
            .copy_image(&image.image, &source, &dest, &digest, Some(&tag))
            .await
            .map_err(on_error)?;
        // Recorded only once the registry serves it, by digest and by tag.
        let by_digest = destination
            .head_manifest(&repository, &digest.to_string())
            .await
            .map_err(on_error)?;
        let by_tag = destination
            .resolve_manifest(&repository, &tag)
            .await
            .map_err(on_error)?;
        if by_digest.map(|d| d.digest) != Some(digest.clone()) || by_tag != Some(digest.clone()) {
            return Err(Error::Image {
                message: format!(
                    "{what}: after the push, {chosen} does not serve {digest}; the registry did \
                     not keep the image"
                ),
                retryable: true,
                category: "Registry",
            });
        }
        let restored = restored_reference(&original, &registry_host, &repository, &tag, &digest);
        progress(
            json!({"event": "image", "image": image.image, "result": result,
            "restoredImage": restored, "originalUnreachable": why}),
        );
        results.push(RestoredImage {
            image: image.image.clone(),
            digest: image.digest.clone(),
            restored_image: Some(restored),
            result,
        });
    }
    patch_restore_status(&client, r, &results).await?;
    Ok(RestoreOutcome {
        images: results,
        no_record: false,
    })
}

/// Merge-patches `status.images` only (field manager `tvk-metamover`).
async fn patch_restore_status(
    client: &Client,
    r: &RestoreRef,
    images: &[RestoredImage],
) -> Result<()> {
    let patch = Patch::Merge(json!({"status": {"images": images}}));
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let result = match r.kind {
        RestoreKind::Restore => {
            let ns = r.namespace.as_deref().unwrap_or_default();
            Api::<Restore>::namespaced(client.clone(), ns)
                .patch_status(&r.name, &pp, &patch)
                .await
                .map(|_| ())
        }
        RestoreKind::ClusterRestore => Api::<ClusterRestore>::all(client.clone())
            .patch_status(&r.name, &pp, &patch)
            .await
            .map(|_| ()),
    };
    result.map_err(|e| Error::kube(format!("patch the status of {}", r.display()), e))
}
