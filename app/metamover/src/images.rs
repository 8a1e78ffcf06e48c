//! Container images in backups (issue #9): the pure part.
//!
//! `tvk-metamover images backup` ([`crate::images_backup`]) stores every image the backed-up
//! workloads run in the target's content-addressed image store ([`tvk_oci::store`]) and records
//! them in `status.snapshot.images` and `<location>/_metadata/images.json`; `images restore`
//! ([`crate::images_restore`]) pushes the images whose originals are no longer pullable into
//! the Restore's `imageRegistry`; `images gc` collects blobs no backup uses any more. This
//! module holds the decisions, without a client: which images an object runs
//! ([`collect_images`]), where a restored image goes ([`restore_destination`], [`new_tag`]),
//! and how a restored object is rewritten to it ([`rewrite_images`], called by the
//! metaprocessor's `restore`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tvk_oci::{Digest, ImageReference};

/// Kinds whose objects run containers (their pod spec is found by
/// [`crate::selection::pod_spec_pointer`]).
const WORKLOAD_KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("", "ReplicationController"),
    ("batch", "Job"),
    ("batch", "CronJob"),
];

/// The container lists of a pod spec.
const CONTAINER_LISTS: &[&str] = &["initContainers", "containers", "ephemeralContainers"];

/// Whether objects of this group and kind run containers (their documents are read at backup).
pub fn is_workload_kind(group: &str, kind: &str) -> bool {
    WORKLOAD_KINDS
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

fn group_of(object: &Value) -> &str {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .map_or("", |(group, _)| group)
}

/// The pod spec pointer of an object of a workload kind.
fn pod_spec_pointer(object: &Value) -> Option<&'static str> {
    let kind = object.get("kind").and_then(Value::as_str)?;
    is_workload_kind(group_of(object), kind)
        .then(|| crate::selection::pod_spec_pointer(object))
        .flatten()
}

/// `Deployment ns/name` (or `Kind name` for an object without namespace).
pub fn workload_name(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = crate::object::name(object).unwrap_or("?");
    match crate::object::namespace(object) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Where a workload's images come from and how it authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadImages {
    /// `Deployment ns/name`.
    pub workload: String,
    /// Namespace (pull secrets and the service account live there).
    pub namespace: Option<String>,
    /// Every container image (init, regular, ephemeral), as written, de-duplicated in order.
    pub images: Vec<String>,
    /// `imagePullSecrets` names of the pod spec.
    pub pull_secrets: Vec<String>,
    /// The pod's service account (`default` when unset), whose pull secrets apply too.
    pub service_account: String,
}

/// The images one object runs, or `None` for an object that runs no containers.
pub fn workload_images(object: &Value) -> Option<WorkloadImages> {
    let spec = object.pointer(pod_spec_pointer(object)?)?;
    let mut images = Vec::new();
    for list in CONTAINER_LISTS {
        for container in spec
            .get(*list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(image) = container.get("image").and_then(Value::as_str)
                && !image.is_empty()
                && !images.iter().any(|i| i == image)
            {
                images.push(image.to_owned());
            }
        }
    }
    let pull_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let service_account = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_owned();
    Some(WorkloadImages {
        workload: workload_name(object),
        namespace: crate::object::namespace(object).map(str::to_owned),
        images,
        pull_secrets,
        service_account,
    })
}

/// One image to back up and every workload that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// The reference exactly as the workloads write it.
    pub image: String,
    /// `Deployment ns/name` of each user, sorted.
    pub workloads: BTreeSet<String>,
    /// Pull secrets to try, as `(namespace, name)`, in the order the users give them
    /// (pod secrets before service-account ones, first user first).
    pub pull_secrets: Vec<(String, String)>,
}

/// Every image the objects run, sorted by reference. `service_account_secrets` gives the
/// `imagePullSecrets` of a service account `(namespace, name)` (read from the API by the
/// caller; absent accounts have none).
pub fn collect_images(
    workloads: &[WorkloadImages],
    service_account_secrets: &BTreeMap<(String, String), Vec<String>>,
) -> Vec<ImageUse> {
    let mut by_image: BTreeMap<String, ImageUse> = BTreeMap::new();
    for w in workloads {
        let ns = w.namespace.clone().unwrap_or_default();
        let mut secrets: Vec<(String, String)> = w
            .pull_secrets
            .iter()
            .map(|s| (ns.clone(), s.clone()))
            .collect();
        if let Some(sa) = service_account_secrets.get(&(ns.clone(), w.service_account.clone())) {
            secrets.extend(sa.iter().map(|s| (ns.clone(), s.clone())));
        }
        for image in &w.images {
            let entry = by_image.entry(image.clone()).or_insert_with(|| ImageUse {
                image: image.clone(),
                workloads: BTreeSet::new(),
                pull_secrets: Vec::new(),
            });
            entry.workloads.insert(w.workload.clone());
            for s in &secrets {
                if !entry.pull_secrets.contains(s) {
                    entry.pull_secrets.push(s.clone());
                }
            }
        }
    }
    by_image.into_values().collect()
}

/// Replaces every container, init container and ephemeral container `image` of a workload or
/// Pod whose value is a key of `map` (an original reference) with the value (its restored
/// reference); returns how many it changed. Objects that run no containers are left alone.
pub fn rewrite_images(object: &mut Value, map: &BTreeMap<String, String>) -> usize {
    if map.is_empty() {
        return 0;
    }
    let Some(pointer) = pod_spec_pointer(object) else {
        return 0;
    };
    let Some(spec) = object.pointer_mut(pointer) else {
        return 0;
    };
    let mut changed = 0;
    for list in CONTAINER_LISTS {
        let Some(containers) = spec.get_mut(*list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let Some(image) = container.get_mut("image") else {
                continue;
            };
            if let Some(new) = image.as_str().and_then(|i| map.get(i)) {
                *image = Value::String(new.clone());
                changed += 1;
            }
        }
    }
    changed
}

/// Where an image is pushed at restore: `(repository inside the registry, tag)`.
/// The repository is `<repository>/<last path element of the original repository>`; the tag
/// the original's, or `tvk-<first 12 hex of the digest>` for a digest-only reference.
pub fn restore_destination(
    original: &ImageReference,
    digest: &Digest,
    repository: &str,
) -> (String, String) {
    let last = original
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&original.repository);
    let repository = repository.trim_matches('/');
    let dest = if repository.is_empty() {
        last.to_owned()
    } else {
        format!("{repository}/{last}")
    };
    let tag = original
        .tag
        .clone()
        .unwrap_or_else(|| format!("tvk-{}", &digest.hex()[..12]));
    (dest, tag)
}

/// The tag used when the original tag names a different image in the restore registry:
/// `<tag>-tvk-<first 8 characters of the restore's UID>`, kept within the 128-character limit.
pub fn new_tag(tag: &str, restore_uid: &str) -> String {
    let suffix: String = restore_uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let suffix = format!("-tvk-{suffix}");
    let keep = 128usize.saturating_sub(suffix.len());
    let head: String = tag.chars().take(keep).collect();
    format!("{head}{suffix}")
}

/// The reference restored workloads use: the same form as the original (tag, digest or both)
/// at `<registry>/<repository>`.
pub fn restored_reference(
    original: &ImageReference,
    registry: &str,
    repository: &str,
    tag: &str,
    digest: &Digest,
) -> String {
    match (&original.tag, &original.digest) {
        (_, Some(_)) if original.tag.is_none() => format!("{registry}/{repository}@{digest}"),
        (Some(_), Some(_)) => format!("{registry}/{repository}:{tag}@{digest}"),
        _ => format!("{registry}/{repository}:{tag}"),
    }
}

/// The metamover error for an image operation that failed: `context` names the image (and
/// its workloads or the registry); the OCI error's own message says what was wrong. Transient
/// registry and target faults (429, 5xx, timeouts) are retryable (exit 75).
pub fn image_error(context: &str, e: tvk_oci::OciError) -> crate::Error {
    use tvk_oci::OciError as E;
    let category = match &e {
        E::NotFound { .. } => "ImageNotFound",
        E::Unauthorized { .. } | E::Forbidden { .. } | E::Token { .. } => "RegistryAuth",
        E::DigestMismatch { .. } | E::SizeMismatch { .. } => "CorruptedImage",
        E::UnsupportedMediaType { .. }
        | E::MalformedManifest { .. }
        | E::ManifestTooLarge { .. } => "UnsupportedImage",
        E::InvalidReference { .. } | E::InvalidDigest(_) => "InvalidImageReference",
        E::Store { .. } => "Target",
        _ => "Registry",
    };
    // The OCI client's own auth message points at CLI auth files; a Job's credentials come
    // from Secrets, which the context names.
    let message = match &e {
        E::Unauthorized { registry, what } => format!(
            "{context}: registry {registry} refused access to {what} (HTTP 401: credentials \
             missing or wrong)"
        ),
        E::Forbidden { registry, what } => format!(
            "{context}: registry {registry} denied access to {what} (HTTP 403: the credentials \
             lack permission)"
        ),
        _ => format!("{context}: {e}"),
    };
    crate::Error::Image {
        message,
        retryable: e.is_transient(),
        category,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_spec(images: &[&str], init: &[&str], ephemeral: &[&str]) -> Value {
        let c = |list: &[&str]| {
            list.iter()
                .enumerate()
                .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
                .collect::<Vec<_>>()
        };
        json!({"containers": c(images), "initContainers": c(init),
            "ephemeralContainers": c(ephemeral), "imagePullSecrets": [{"name": "pull"}],
            "serviceAccountName": "runner"})
    }

    fn every_kind() -> Vec<Value> {
        let spec = |tag: &str| pod_spec(&[&format!("app:{tag}")], &["init:1"], &["debug:1"]);
        vec![
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
                "spec": spec("pod")}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"},
                "spec": {"template": {"spec": spec("deploy")}}}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s", "namespace": "ns"},
                "spec": {"template": {"spec": spec("sts")}}}),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds", "namespace": "ns"},
                "spec": {"template": {"spec": spec("ds")}}}),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs", "namespace": "ns"},
                "spec": {"template": {"spec": spec("rs")}}}),
            json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc", "namespace": "ns"},
                "spec": {"template": {"spec": spec("rc")}}}),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns"},
                "spec": {"template": {"spec": spec("job")}}}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj", "namespace": "ns"},
                "spec": {"jobTemplate": {"spec": {"template": {"spec": spec("cron")}}}}}),
        ]
    }

    #[test]
    fn every_workload_kind_yields_its_init_regular_and_ephemeral_images() {
        for (object, tag) in every_kind()
            .iter()
            .zip(["pod", "deploy", "sts", "ds", "rs", "rc", "job", "cron"])
        {
            let w = workload_images(object).unwrap_or_else(|| panic!("{object}"));
            assert_eq!(
                w.images,
                ["init:1", &format!("app:{tag}"), "debug:1"],
                "{object}"
            );
            assert_eq!(w.pull_secrets, ["pull"]);
            assert_eq!(w.service_account, "runner");
            assert_eq!(w.namespace.as_deref(), Some("ns"));
        }
        assert_eq!(
            workload_images(&every_kind()[1]).unwrap().workload,
            "Deployment ns/d"
        );
    }

    #[test]
    fn objects_without_containers_and_lookalikes_are_ignored() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert_eq!(workload_images(&cm), None);
        // A custom resource named Deployment in another group is not a workload.
        let cr = json!({"apiVersion": "example.com/v1", "kind": "Deployment",
            "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert_eq!(workload_images(&cr), None);
        assert!(is_workload_kind("batch", "CronJob"));
        assert!(!is_workload_kind("", "Deployment"));
        let no_template = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "e", "namespace": "n"}, "spec": {}});
        assert_eq!(workload_images(&no_template), None);
        let empty = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "e", "namespace": "n"}, "spec": {"template": {"spec": {}}}});
        let w = workload_images(&empty).unwrap();
        assert!(w.images.is_empty());
        assert_eq!(w.service_account, "default");
    }

    #[test]
    fn images_are_merged_across_workloads_with_their_secrets_in_order() {
        let a = WorkloadImages {
            workload: "Deployment ns/a".into(),
            namespace: Some("ns".into()),
            images: vec!["shared:1".into(), "a:1".into()],
            pull_secrets: vec!["pa".into()],
            service_account: "sa".into(),
        };
        let b = WorkloadImages {
            workload: "Job ns/b".into(),
            namespace: Some("ns".into()),
            images: vec!["shared:1".into()],
            pull_secrets: vec!["pb".into(), "pa".into()],
            service_account: "default".into(),
        };
        let sa = BTreeMap::from([(("ns".to_owned(), "sa".to_owned()), vec!["psa".to_owned()])]);
        let uses = collect_images(&[a, b], &sa);
        assert_eq!(uses.len(), 2);
        assert_eq!(uses[0].image, "a:1");
        assert_eq!(uses[1].image, "shared:1");
        assert_eq!(
            uses[1].workloads.iter().collect::<Vec<_>>(),
            ["Deployment ns/a", "Job ns/b"]
        );
        let secrets: Vec<_> = uses[1]
            .pull_secrets
            .iter()
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(secrets, ["pa", "psa", "pb"]);
    }

    #[test]
    fn rewrite_changes_only_mapped_images_in_every_container_list() {
        let map = BTreeMap::from([
            ("app:cron".to_owned(), "reg.b/app:cron".to_owned()),
            ("init:1".to_owned(), "reg.b/init:1".to_owned()),
            ("debug:1".to_owned(), "reg.b/debug:1".to_owned()),
        ]);
        let mut cron = every_kind()[7].clone();
        assert_eq!(rewrite_images(&mut cron, &map), 3);
        let spec = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["image"], "reg.b/app:cron");
        assert_eq!(spec["initContainers"][0]["image"], "reg.b/init:1");
        assert_eq!(spec["ephemeralContainers"][0]["image"], "reg.b/debug:1");
        // The Deployment's own app image is not in the map.
        let mut deploy = every_kind()[1].clone();
        assert_eq!(rewrite_images(&mut deploy, &map), 2);
        assert_eq!(
            deploy["spec"]["template"]["spec"]["containers"][0]["image"],
            "app:deploy"
        );
        // Non-workloads are untouched even if they look like one.
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "spec": {"template": {"spec": {"containers": [{"image": "init:1"}]}}}});
        let before = cm.clone();
        assert_eq!(rewrite_images(&mut cm, &map), 0);
        assert_eq!(cm, before);
        assert_eq!(rewrite_images(&mut deploy, &BTreeMap::new()), 0);
    }

    #[test]
    fn restore_destinations_and_tags() {
        let digest = Digest::of(b"image");
        let tagged = ImageReference::parse("127.0.0.1:5001/team/web/frontend:1.2").unwrap();
        let (repo, tag) = restore_destination(&tagged, &digest, "restored/");
        assert_eq!((repo.as_str(), tag.as_str()), ("restored/frontend", "1.2"));
        assert_eq!(
            restored_reference(&tagged, "reg.b:5000", &repo, &tag, &digest),
            "reg.b:5000/restored/frontend:1.2"
        );
        let pinned = ImageReference::parse(&format!("busybox@{digest}")).unwrap();
        let (repo, tag) = restore_destination(&pinned, &digest, "");
        assert_eq!(repo, "busybox");
        assert_eq!(tag, format!("tvk-{}", &digest.hex()[..12]));
        assert_eq!(
            restored_reference(&pinned, "reg.b", &repo, &tag, &digest),
            format!("reg.b/busybox@{digest}")
        );
        let both = ImageReference::parse(&format!("quay.io/a/b:7@{digest}")).unwrap();
        assert_eq!(
            restored_reference(&both, "reg.b", "r/b", "7", &digest),
            format!("reg.b/r/b:7@{digest}")
        );
        assert_eq!(new_tag("1.2", "0f3e9a1c-77aa-4bcd"), "1.2-tvk-0f3e9a1c");
        let long = "x".repeat(128);
        let t = new_tag(&long, "abcdef0123");
        assert_eq!(t.len(), 128);
        assert!(t.ends_with("-tvk-abcdef01"));
    }
}
