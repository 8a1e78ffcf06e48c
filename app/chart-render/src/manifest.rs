//! Splitting rendered templates, or a release's recorded `manifest`, into objects.

use serde_json::Value;

use crate::{RenderError, Rendered};

/// One Kubernetes object of a manifest with the template it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestDoc {
    /// The template path (`<chart>/templates/<file>`, the `# Source:` line).
    pub source: String,
    /// The object.
    pub object: Value,
}

/// Manifest documents: split rendered templates into objects with their source path; empty
/// documents dropped; objects with a `helm.sh/hook` annotation reported apart (Helm keeps hooks
/// out of `manifest`). Returns `(objects, hooks)`, each in template-path order.
pub fn manifest_docs(
    rendered: &Rendered,
) -> Result<(Vec<ManifestDoc>, Vec<ManifestDoc>), RenderError> {
    let mut objects = Vec::new();
    let mut hooks = Vec::new();
    for (source, text) in &rendered.templates {
        for object in parse_objects(source, text)? {
            let doc = ManifestDoc {
                source: source.clone(),
                object,
            };
            if is_hook(&doc.object) {
                hooks.push(doc);
            } else {
                objects.push(doc);
            }
        }
    }
    Ok((objects, hooks))
}

/// Splits a release's recorded `manifest` ("---\n# Source: <path>\n<yaml>" blocks) into
/// objects with their source path; empty documents dropped.
pub fn split_manifest(manifest: &str) -> Result<Vec<ManifestDoc>, RenderError> {
    let mut docs = Vec::new();
    let mut source = String::new();
    let mut current = String::new();
    let flush = |source: &str, current: &mut String, docs: &mut Vec<ManifestDoc>| {
        let text = std::mem::take(current);
        if text.trim().is_empty() {
            return Ok(());
        }
        for object in parse_objects(source, &text)? {
            docs.push(ManifestDoc {
                source: source.to_string(),
                object,
            });
        }
        Ok::<(), RenderError>(())
    };
    for line in manifest.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") {
            flush(&source, &mut current, &mut docs)?;
            continue;
        }
        if let Some(path) = bare.strip_prefix("# Source: ")
            && current.trim().is_empty()
        {
            source = path.trim().to_string();
            current.clear();
            continue;
        }
        current.push_str(line);
    }
    flush(&source, &mut current, &mut docs)?;
    Ok(docs)
}

fn parse_objects(source: &str, text: &str) -> Result<Vec<Value>, RenderError> {
    let limits = tvk_api::yaml::Limits::default();
    let docs =
        tvk_api::yaml::parse_documents(text, &limits).map_err(|e| RenderError::Manifest {
            source_path: source.to_string(),
            message: e.to_string(),
        })?;
    docs.into_iter()
        .map(|d| match d.value {
            v @ Value::Object(_) => Ok(v),
            other => Err(RenderError::Manifest {
                source_path: source.to_string(),
                message: format!(
                    "document {} is not a Kubernetes object (a mapping) but {}",
                    d.index + 1,
                    kind(&other)
                ),
            }),
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn is_hook(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key("helm.sh/hook"))
}
