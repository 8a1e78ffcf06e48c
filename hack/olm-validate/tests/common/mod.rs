//! Shared helpers of the rule tests: copy a checked-in valid fixture into a temporary
//! directory, change it in one way, validate it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use tvk_api::yaml::{Limits, parse_documents, to_multi_document};

pub const CSV: &str = "manifests/tvk-operator.clusterserviceversion.yaml";
pub const CRD: &str = "manifests/triliovault.trilio.io_triliovaultmanagers.yaml";
pub const ANNOTATIONS: &str = "metadata/annotations.yaml";
pub const DOCKERFILE: &str = "bundle.Dockerfile";
pub const CATALOG: &str = "tvk-operator/catalog.yaml";
pub const CATALOG_JSON: &str = "tvk-operator/v1.2.0.json";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A fresh copy of `tests/fixtures/<name>`.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join(name), dir.path());
    dir
}

/// Rewrites every document of a YAML file through `f`.
pub fn edit_docs(path: &Path, f: impl FnOnce(&mut Vec<Value>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut docs: Vec<Value> = parse_documents(&text, &Limits::default())
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    f(&mut docs);
    std::fs::write(path, to_multi_document(&docs).unwrap()).unwrap();
}

/// Rewrites a single-document YAML file through `f`.
pub fn edit(path: &Path, f: impl FnOnce(&mut Value)) {
    edit_docs(path, |docs| {
        assert_eq!(docs.len(), 1, "{}", path.display());
        f(&mut docs[0]);
    });
}

/// The value at a JSON pointer, which must exist.
pub fn at<'a>(v: &'a mut Value, pointer: &str) -> &'a mut Value {
    v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the fixture"))
}

/// Removes the last component of `pointer` from its parent object or array.
pub fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match at(v, parent) {
        Value::Object(map) => {
            map.remove(&key.replace("~1", "/").replace("~0", "~"))
                .unwrap_or_else(|| panic!("no {pointer} in the fixture"));
        }
        Value::Array(items) => {
            items.remove(key.parse::<usize>().unwrap());
        }
        other => panic!("{parent} is {other}"),
    }
}

/// Replaces text in a file (which must contain it).
pub fn replace(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Incompressible bytes (xorshift), for the size rule.
pub fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
