//! Helm 3 releases as Helm stores them, read without Helm.
//!
//! Helm 3 keeps one storage object per revision: a Secret of type `helm.sh/release.v1` (the
//! default driver) or a ConfigMap, named `sh.helm.release.v1.<release>.v<revision>`, labelled
//! `owner=helm`, `name=<release>`, `status=<deployed|superseded|…>`, `version=<revision>`. Its
//! `data.release` is base64(gzip(JSON of the release)) — inside a Secret that text is
//! base64-encoded once more by Kubernetes. The JSON's `manifest` is the multi-document YAML of
//! every object the release made. Decoding is bounded: the gzip stream may expand to at most
//! [`MAX_RELEASE_BYTES`].

use std::io::Read;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    error::{Error, Result},
    object::{ObjectKey, labels, name, str_at},
};

/// Largest decompressed release accepted (Helm's own limit on a release Secret is 1 MiB
/// compressed; a 64 MiB cap leaves room and stops a gzip bomb).
pub const MAX_RELEASE_BYTES: u64 = 64 << 20;

/// Type of Helm 3 release Secrets.
pub const RELEASE_SECRET_TYPE: &str = "helm.sh/release.v1";

/// The label selector that finds every Helm release storage object of a namespace.
pub const STORAGE_LABEL_SELECTOR: &str = "owner=helm";

/// The parts of a Helm release the backup uses.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Release {
    /// Release name.
    pub name: String,
    /// Namespace of the release.
    #[serde(default)]
    pub namespace: String,
    /// Revision.
    pub version: i64,
    /// Status and times.
    #[serde(default)]
    pub info: ReleaseInfo,
    /// The chart.
    #[serde(default)]
    pub chart: Option<Chart>,
    /// Rendered multi-document YAML of the release's objects.
    #[serde(default)]
    pub manifest: String,
}

/// `info` of a release.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ReleaseInfo {
    /// `deployed`, `superseded`, `failed`, `uninstalled`, `pending-*`.
    #[serde(default)]
    pub status: String,
}

/// `chart` of a release.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Chart {
    /// `Chart.yaml`.
    #[serde(default)]
    pub metadata: ChartMetadata,
}

/// `Chart.yaml` fields the snapshot reports.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ChartMetadata {
    /// Chart name.
    #[serde(default)]
    pub name: String,
    /// Chart version.
    #[serde(default)]
    pub version: String,
}

/// Decodes Helm's encoding of a release: base64, then gzip when the gzip magic is there (Helm
/// writes plain JSON when compression is off), then JSON.
pub fn decode_release(encoded: &str, what: &str) -> Result<Release> {
    let json = decode_release_bytes(encoded, what)?;
    serde_json::from_slice(&json).map_err(|e| Error::HelmRelease {
        storage: what.to_owned(),
        reason: format!("the release is not Helm JSON: {e}"),
    })
}

/// Decodes a release like [`decode_release`] but keeps every field (restore rewrites it).
pub fn decode_release_value(encoded: &str, what: &str) -> Result<Value> {
    let json = decode_release_bytes(encoded, what)?;
    serde_json::from_slice::<Value>(&json)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Error::HelmRelease {
            storage: what.to_owned(),
            reason: "the release is not a Helm JSON object".into(),
        })
}

fn decode_release_bytes(encoded: &str, what: &str) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::HelmRelease {
        storage: what.to_owned(),
        reason,
    };
    let raw = STANDARD
        .decode(encoded.trim())
        .map_err(|e| bad(format!("data.release is not base64: {e}")))?;
    if !raw.starts_with(&[0x1f, 0x8b, 0x08]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .take(MAX_RELEASE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("data.release is not valid gzip: {e}")))?;
    if out.len() as u64 > MAX_RELEASE_BYTES {
        return Err(bad(format!(
            "the release expands to more than {MAX_RELEASE_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Encodes a release as Helm 3 does: JSON → gzip → base64.
pub fn encode_release_value(release: &Value) -> Result<String> {
    use std::io::Write;
    let json = serde_json::to_vec(release).map_err(|e| Error::json("encode a Helm release", e))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json)
        .and_then(|()| gz.finish())
        .map(|b| STANDARD.encode(b))
        .map_err(|e| Error::Usage(format!("failed to compress a Helm release: {e}")))
}

/// Stores Helm-encoded release text in a storage object (a Secret's data is base64 of it).
pub fn set_storage_payload(obj: &mut Value, encoded: &str) {
    let is_secret = str_at(obj, "/kind") == Some("Secret");
    let field = if is_secret {
        STANDARD.encode(encoded)
    } else {
        encoded.to_owned()
    };
    if let Some(root) = obj.as_object_mut() {
        let data = root
            .entry("data")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Some(d) = data.as_object_mut() {
            d.insert("release".into(), Value::String(field));
        }
    }
}

/// The typed value of a Helm `--set` value: `true`/`false`, `null`, integers, else a string
/// (Helm's `strvals` rules; `--set-string` keeps strings).
pub fn parse_set_value(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => v
            .parse::<i64>()
            .ok()
            .filter(|_| !(v.len() > 1 && v.starts_with('0')))
            .map(Value::from)
            .unwrap_or_else(|| Value::String(v.to_owned())),
    }
}

/// One step of a Helm `--set` key: a map key or a list index.
#[derive(Debug, PartialEq, Eq)]
enum KeyPart {
    Key(String),
    Index(usize),
}

/// Parses `a.b\.c[0].d` into parts (`\.` escapes a dot, `[n]` indexes a list).
fn parse_set_key(key: &str) -> std::result::Result<Vec<KeyPart>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = key.chars().peekable();
    let mut after_index = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err(format!("key {key:?} ends with a backslash")),
            },
            '.' => {
                if cur.is_empty() && !after_index {
                    return Err(format!("key {key:?} has an empty part"));
                }
                if !cur.is_empty() {
                    parts.push(KeyPart::Key(std::mem::take(&mut cur)));
                }
                after_index = false;
            }
            '[' => {
                if !cur.is_empty() {
                    parts.push(KeyPart::Key(std::mem::take(&mut cur)));
                }
                let mut n = String::new();
                loop {
                    match chars.next() {
                        Some(']') => break,
                        Some(d) if d.is_ascii_digit() => n.push(d),
                        _ => return Err(format!("key {key:?} has a bad list index")),
                    }
                }
                let i: usize = n
                    .parse()
                    .map_err(|_| format!("key {key:?} has a bad list index"))?;
                if i > 65_535 {
                    return Err(format!("key {key:?}: list index {i} is too large"));
                }
                parts.push(KeyPart::Index(i));
                after_index = true;
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        parts.push(KeyPart::Key(cur));
    } else if !after_index {
        return Err(format!("key {key:?} has an empty part"));
    }
    Ok(parts)
}

/// The first map key of a Helm `--set` key (`image` of `image.tag`, `db` of `db[0].x`);
/// `None` when the key starts with a list index. Errors name a malformed key.
pub fn set_key_head(key: &str) -> std::result::Result<Option<String>, String> {
    Ok(match parse_set_key(key)?.into_iter().next() {
        Some(KeyPart::Key(k)) => Some(k),
        _ => None,
    })
}

/// Sets `value` at a Helm `--set` key in `values`, creating maps and lists on the way (a list
/// grows with nulls to the index, as Helm does).
pub fn set_value(values: &mut Value, key: &str, value: Value) -> std::result::Result<(), String> {
    let parts = parse_set_key(key)?;
    let mut cur = values;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match part {
            KeyPart::Key(k) => {
                if !cur.is_object() {
                    *cur = Value::Object(serde_json::Map::new());
                }
                let Some(m) = cur.as_object_mut() else {
                    return Err(format!("key {key:?}: not a map"));
                };
                if last {
                    m.insert(k.clone(), value);
                    return Ok(());
                }
                cur = m.entry(k.clone()).or_insert(Value::Null);
            }
            KeyPart::Index(idx) => {
                if !cur.is_array() {
                    *cur = Value::Array(Vec::new());
                }
                let Some(a) = cur.as_array_mut() else {
                    return Err(format!("key {key:?}: not a list"));
                };
                while a.len() <= *idx {
                    a.push(Value::Null);
                }
                if last {
                    a[*idx] = value;
                    return Ok(());
                }
                cur = &mut a[*idx];
            }
        }
    }
    Ok(())
}

/// The Helm-encoded release text of a storage object: a Secret's `data.release` (base64 of it,
/// as the API returns Secret data) or a ConfigMap's `data.release`.
pub fn storage_payload(obj: &Value) -> Result<String> {
    let what = name(obj).unwrap_or("<unnamed>").to_owned();
    let field = str_at(obj, "/data/release").ok_or_else(|| Error::HelmRelease {
        storage: what.clone(),
        reason: "no data.release".into(),
    })?;
    if str_at(obj, "/kind") == Some("Secret") {
        let bytes = STANDARD.decode(field).map_err(|e| Error::HelmRelease {
            storage: what.clone(),
            reason: format!("Secret data.release is not base64: {e}"),
        })?;
        String::from_utf8(bytes).map_err(|_| Error::HelmRelease {
            storage: what,
            reason: "Secret data.release is not text".into(),
        })
    } else {
        Ok(field.to_owned())
    }
}

/// Whether an object is Helm 3 release storage, and for which release.
pub fn release_of_storage(obj: &Value) -> Option<String> {
    let l = labels(obj);
    if l.get("owner").map(String::as_str) != Some("helm") {
        return None;
    }
    let kind = str_at(obj, "/kind")?;
    let ok = match kind {
        "Secret" => str_at(obj, "/type") == Some(RELEASE_SECRET_TYPE),
        "ConfigMap" => true,
        _ => false,
    };
    if !ok || !name(obj)?.starts_with("sh.helm.release.v1.") {
        return None;
    }
    l.get("name").cloned()
}

/// Revision number from the storage object's `version` label.
fn revision_label(obj: &Value) -> Option<i64> {
    labels(obj).get("version")?.parse().ok()
}

/// Picks and decodes the latest `deployed` revision among one release's storage objects.
/// `None` when no revision is deployed (the release is failed, pending or uninstalled).
pub fn latest_deployed(storage: &[Value]) -> Result<Option<Release>> {
    let mut deployed: Vec<&Value> = storage
        .iter()
        .filter(|o| labels(o).get("status").map(String::as_str) == Some("deployed"))
        .collect();
    deployed.sort_by_key(|o| revision_label(o).unwrap_or(-1));
    let Some(obj) = deployed.last() else {
        return Ok(None);
    };
    let what = name(obj).unwrap_or("<unnamed>").to_owned();
    let release = decode_release(&storage_payload(obj)?, &what)?;
    Ok(Some(release))
}

/// The objects a release's manifest names. Objects without a namespace get the release's
/// namespace; `namespaced(group, kind)` says whether a type is namespaced (cluster-scoped
/// objects get none), `None` = unknown type (kept as namespaced).
pub fn manifest_objects(
    release: &Release,
    namespaced: impl Fn(&str, &str) -> Option<bool>,
) -> Result<Vec<ObjectKey>> {
    let docs = tvk_api::yaml::parse_documents(&release.manifest, &tvk_api::yaml::Limits::default())
        .map_err(|e| Error::HelmRelease {
            storage: release.name.clone(),
            reason: format!("its manifest is not valid YAML: {e}"),
        })?;
    let mut out = Vec::new();
    for doc in docs {
        let obj = doc.value;
        // `kind: List` documents carry items.
        let items = match obj.get("items").and_then(Value::as_array) {
            Some(items) if str_at(&obj, "/kind") == Some("List") => items.clone(),
            _ => vec![obj],
        };
        for item in items {
            let Some(mut key) = ObjectKey::of(&item, Some(&release.namespace)) else {
                continue;
            };
            if namespaced(&key.group, &key.kind) == Some(false) {
                key.namespace = None;
            }
            out.push(key);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use serde_json::json;
    use std::io::Write;

    /// Encodes a release exactly as Helm 3 does: JSON → gzip → base64.
    pub(crate) fn helm_encode(release: &Value) -> String {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(release.to_string().as_bytes()).unwrap();
        STANDARD.encode(gz.finish().unwrap())
    }

    /// A release Secret as the API returns it (Secret data base64-encoded once more).
    pub(crate) fn release_secret(
        ns: &str,
        release: &str,
        rev: i64,
        status: &str,
        manifest: &str,
    ) -> Value {
        let body = json!({"name": release, "namespace": ns, "version": rev,
            "info": {"status": status},
            "chart": {"metadata": {"name": "mychart", "version": "1.2.3"}},
            "manifest": manifest});
        json!({"apiVersion": "v1", "kind": "Secret", "type": RELEASE_SECRET_TYPE,
            "metadata": {"name": format!("sh.helm.release.v1.{release}.v{rev}"), "namespace": ns,
                "labels": {"owner": "helm", "name": release, "status": status,
                    "version": rev.to_string()}},
            "data": {"release": STANDARD.encode(helm_encode(&body))}})
    }

    pub(crate) const MANIFEST: &str = "---\n# Source: mychart/templates/sa.yaml\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\n# Source: mychart/templates/cr.yaml\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: web-reader\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  replicas: 1\n";

    #[test]
    fn latest_deployed_revision_is_decoded() {
        let storage = vec![
            release_secret("shop", "web", 1, "superseded", "---\n"),
            release_secret("shop", "web", 3, "deployed", MANIFEST),
            release_secret("shop", "web", 4, "failed", "---\n"),
        ];
        assert_eq!(release_of_storage(&storage[0]).as_deref(), Some("web"));
        let rel = latest_deployed(&storage).unwrap().unwrap();
        assert_eq!(rel.version, 3);
        assert_eq!(rel.info.status, "deployed");
        assert_eq!(rel.chart.as_ref().unwrap().metadata.version, "1.2.3");
        let keys = manifest_objects(&rel, |g, k| {
            Some(!(g == "rbac.authorization.k8s.io" && k == "ClusterRole"))
        })
        .unwrap();
        assert_eq!(
            keys,
            vec![
                ObjectKey::new("", "ServiceAccount", Some("shop"), "web"),
                ObjectKey::new("apps", "Deployment", Some("shop"), "web"),
                ObjectKey::new(
                    "rbac.authorization.k8s.io",
                    "ClusterRole",
                    None,
                    "web-reader"
                ),
            ]
        );
    }

    #[test]
    fn no_deployed_revision_is_none() {
        let storage = vec![release_secret("shop", "web", 1, "failed", "---\n")];
        assert_eq!(latest_deployed(&storage).unwrap(), None);
    }

    #[test]
    fn configmap_storage_and_uncompressed_json_decode() {
        let body = json!({"name": "r", "namespace": "n", "version": 2, "manifest": ""});
        let plain = STANDARD.encode(body.to_string());
        let rel = decode_release(&plain, "cm").unwrap();
        assert_eq!(rel.version, 2);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "sh.helm.release.v1.r.v2", "labels": {"owner": "helm", "name": "r",
                "status": "deployed", "version": "2"}},
            "data": {"release": helm_encode(&body)}});
        assert_eq!(release_of_storage(&cm).as_deref(), Some("r"));
        assert_eq!(latest_deployed(&[cm]).unwrap().unwrap().name, "r");
    }

    #[test]
    fn damaged_releases_are_clear_errors() {
        let err = decode_release("***", "s1").unwrap_err().to_string();
        assert!(err.contains("s1") && err.contains("base64"), "{err}");
        let bad_gzip = STANDARD.encode([0x1f, 0x8b, 0x08, 0, 1, 2, 3]);
        let err = decode_release(&bad_gzip, "s2").unwrap_err().to_string();
        assert!(err.contains("gzip"), "{err}");
        let not_json = helm_encode(&json!("just a string"));
        assert!(decode_release(&not_json, "s3").is_err());
    }

    #[test]
    fn gzip_bomb_is_refused() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..65 {
            gz.write_all(&zeros).unwrap();
        }
        let encoded = STANDARD.encode(gz.finish().unwrap());
        let err = decode_release(&encoded, "bomb").unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn helm_set_paths() {
        let mut v = json!({"image": {"tag": "1.0"}, "list": [1]});
        set_value(&mut v, "image.tag", parse_set_value("2.0")).unwrap();
        set_value(&mut v, "replicas", parse_set_value("3")).unwrap();
        set_value(&mut v, "enabled", parse_set_value("false")).unwrap();
        set_value(&mut v, "zip", parse_set_value("0123")).unwrap();
        set_value(&mut v, "list[2].name", parse_set_value("x")).unwrap();
        set_value(&mut v, "a\\.b.c", Value::String("3".into())).unwrap();
        set_value(
            &mut v,
            "nodeSelector.kubernetes\\.io/os",
            parse_set_value("linux"),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"image": {"tag": "2.0"}, "replicas": 3, "enabled": false, "zip": "0123",
                "list": [1, null, {"name": "x"}], "a.b": {"c": "3"},
                "nodeSelector": {"kubernetes.io/os": "linux"}})
        );
        assert_eq!(set_key_head("db\\.x.y").unwrap().as_deref(), Some("db.x"));
        assert_eq!(
            set_key_head("redis[0].a").unwrap().as_deref(),
            Some("redis")
        );
        assert_eq!(set_key_head("[0]").unwrap(), None);
        for bad in ["", "a..b", "a[x]", "a[", "a\\", "a[99999999]"] {
            assert!(set_value(&mut v, bad, Value::Null).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn release_reencodes_and_decodes() {
        let mut s = release_secret("shop", "web", 1, "deployed", MANIFEST);
        let mut rel = decode_release_value(&storage_payload(&s).unwrap(), "s").unwrap();
        rel["namespace"] = json!("other");
        set_storage_payload(&mut s, &encode_release_value(&rel).unwrap());
        let back = decode_release(&storage_payload(&s).unwrap(), "s").unwrap();
        assert_eq!(back.namespace, "other");
        assert_eq!(back.manifest, MANIFEST);
    }

    #[test]
    fn other_secrets_are_not_release_storage() {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "sh.helm.release.v1.x.v1", "labels": {"owner": "helm", "name": "x"}}});
        assert_eq!(release_of_storage(&s), None);
    }
}
