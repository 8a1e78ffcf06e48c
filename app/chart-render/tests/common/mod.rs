//! Shared test support: charts as release records, and the comparison with Go's engine.

#![allow(dead_code, clippy::type_complexity)]

use std::{collections::BTreeMap, path::Path};

use base64::Engine as _;
use serde_json::{Value, json};
use tvk_chart_render::{Capabilities, Chart, RenderError, RenderRequest, Rendered, render};

/// A chart directory under tests/charts as Helm stores it in a release record.
pub fn chart_dir(name: &str, metadata: Value) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/charts")
        .join(name);
    let values: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("values.json")).unwrap_or_else(|_| "{}".into()),
    )
    .expect("values.json");
    let read = |sub: &str| -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let dir = root.join(sub);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries {
                let e = e.expect("dir entry");
                out.push((
                    format!("{sub}/{}", e.file_name().to_string_lossy()),
                    std::fs::read(e.path()).expect("read"),
                ));
            }
        }
        out.sort();
        out
    };
    let templates: Vec<(String, Vec<u8>)> = read("templates");
    let files: Vec<(String, Vec<u8>)> = read("files");
    release_chart(metadata, &templates, values, &files)
}

/// `release.chart` JSON from parts.
pub fn release_chart(
    metadata: Value,
    templates: &[(String, Vec<u8>)],
    values: Value,
    files: &[(String, Vec<u8>)],
) -> Value {
    let enc = |list: &[(String, Vec<u8>)]| -> Vec<Value> {
        list.iter()
            .map(|(n, d)| {
                json!({"name": n, "data": base64::engine::general_purpose::STANDARD.encode(d)})
            })
            .collect()
    };
    json!({
        "metadata": metadata,
        "lock": null,
        "templates": enc(templates),
        "values": values,
        "schema": null,
        "files": enc(files),
    })
}

/// A chart of inline templates (`templates/<name>`).
pub fn inline_chart(templates: &[(&str, &str)], values: Value) -> Value {
    let t: Vec<(String, Vec<u8>)> = templates
        .iter()
        .map(|(n, d)| (format!("templates/{n}"), d.as_bytes().to_vec()))
        .collect();
    release_chart(
        json!({"name": "t", "version": "0.1.0", "apiVersion": "v2", "appVersion": "1.0"}),
        &t,
        values,
        &[],
    )
}

pub fn caps() -> Capabilities {
    Capabilities {
        kube_version: "v1.32.0".into(),
        api_versions: vec![
            "v1".into(),
            "apps/v1".into(),
            "apps/v1/Deployment".into(),
            "networking.k8s.io/v1".into(),
            "networking.k8s.io/v1/Ingress".into(),
        ],
    }
}

pub fn ours(chart: &Value, user: &Value) -> Result<Rendered, RenderError> {
    let chart = Chart::from_release_json(chart)?;
    let caps = caps();
    render(
        &chart,
        &RenderRequest {
            release_name: "demo",
            namespace: "shop",
            revision: 3,
            is_install: false,
            is_upgrade: true,
            user_values: user,
            capabilities: &caps,
        },
    )
}

/// Go's rendering: `Ok(Some(templates))`, `Ok(None)` when Go is not installed locally (the
/// oracle prints SKIPPED), or the oracle's error message as `Err`.
pub fn oracle(
    chart: &Value,
    user: &Value,
) -> Result<Option<Result<BTreeMap<String, String>, String>>, String> {
    let Some(oracle) = tvk_testkit::helm_oracle::helm_oracle()? else {
        return Ok(None);
    };
    let caps = caps();
    let input = json!({
        "chart": chart,
        "request": {
            "release_name": "demo", "namespace": "shop", "revision": 3,
            "is_install": false, "is_upgrade": true, "user_values": user,
            "kube_version": caps.kube_version, "api_versions": caps.api_versions,
        }
    });
    let out: Value = serde_json::from_str(&oracle.run(&input.to_string())?)
        .map_err(|e| format!("oracle output: {e}"))?;
    if let Some(e) = out.get("error").and_then(Value::as_str) {
        return Ok(Some(Err(e.to_string())));
    }
    let templates = out
        .get("templates")
        .and_then(Value::as_object)
        .ok_or("oracle output without templates")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    Ok(Some(Ok(templates)))
}

/// Renders with ours and with Go's engine and asserts the same text for every template.
/// Returns our rendering (or None when the oracle is unavailable locally).
pub fn assert_same_as_go(chart: &Value, user: &Value) -> Option<Rendered> {
    let go = match oracle(chart, user).expect("oracle") {
        None => return None,
        Some(Ok(t)) => t,
        Some(Err(e)) => panic!("Go's engine failed on a chart it should render: {e}"),
    };
    let ours = ours(chart, user).unwrap_or_else(|e| panic!("our render failed: {e}"));
    let go_keys: Vec<&String> = go.keys().collect();
    let our_keys: Vec<&String> = ours.templates.keys().collect();
    assert_eq!(our_keys, go_keys, "rendered template sets differ");
    for (path, text) in &go {
        pretty_assertions::assert_eq!(
            ours.templates.get(path).map(String::as_str).unwrap_or(""),
            text.as_str(),
            "template {path} differs from Go's rendering (left: ours, right: Go)"
        );
    }
    Some(ours)
}
