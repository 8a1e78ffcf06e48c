// Test charts as a Helm 3 release record holds them, and release storage Secrets built from
// them. Included (`include!`) by the unit tests of `plan::render` and by tests/restore_e2e.rs.

/// The chart `tests/charts/<dir>` as Helm stores it in a release (`release.chart`):
/// `metadata` (Chart.yaml), `values` (values.yaml), `templates` [{name, data: base64}] — no
/// subcharts, as Helm drops them.
pub fn chart_json(dir: &str) -> serde_json::Value {
    use base64::Engine;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/charts")
        .join(dir);
    let limits = tvk_api::yaml::Limits::default();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let metadata = tvk_api::yaml::parse_single(&read("Chart.yaml"), &limits).unwrap();
    let values = tvk_api::yaml::parse_single(&read("values.yaml"), &limits).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(root.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let templates: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let data = read(&format!("templates/{n}"));
            serde_json::json!({"name": format!("templates/{n}"),
                "data": base64::engine::general_purpose::STANDARD.encode(data)})
        })
        .collect();
    serde_json::json!({"metadata": metadata, "lock": null, "templates": templates,
        "values": values, "schema": null, "files": []})
}

/// A release record (`helm get all` as JSON): deployed revision `rev` of `release` in `ns`.
pub fn release_json(
    release: &str,
    ns: &str,
    rev: i64,
    chart: &serde_json::Value,
    config: &serde_json::Value,
    manifest: &str,
) -> serde_json::Value {
    serde_json::json!({"name": release, "namespace": ns, "version": rev,
        "info": {"status": "deployed", "description": "Install complete"},
        "chart": chart, "config": config, "manifest": manifest})
}

/// The storage Secret of a release record, as the API returns it (Helm's base64(gzip(JSON)),
/// base64-encoded once more as Secret data).
pub fn release_storage_secret(record: &serde_json::Value, status: &str) -> serde_json::Value {
    use base64::Engine;
    use std::io::Write;
    let release = record["name"].as_str().unwrap();
    let ns = record["namespace"].as_str().unwrap();
    let rev = record["version"].as_i64().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(record.to_string().as_bytes()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let helm_text = b64.encode(gz.finish().unwrap());
    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": format!("sh.helm.release.v1.{release}.v{rev}"), "namespace": ns,
            "labels": {"owner": "helm", "name": release, "status": status,
                "version": rev.to_string()}},
        "data": {"release": b64.encode(helm_text)}})
}

/// The manifest Helm records when it installs `chart` as revision 1 of `release` in `ns`
/// with user values `config`: every document of every rendered template as
/// `---\n# Source: <path>\n<text>\n`, rendered by Go's own text/template + Sprig
/// ([`tvk_testkit::helm_oracle`]). `None` when the oracle is skipped (no `go`, outside CI).
pub fn oracle_manifest(
    chart: &serde_json::Value,
    release: &str,
    ns: &str,
    config: &serde_json::Value,
) -> Option<String> {
    let oracle = tvk_testkit::helm_oracle::helm_oracle().unwrap()?;
    let input = serde_json::json!({"chart": chart, "request": {"release_name": release,
        "namespace": ns, "revision": 1, "is_install": true, "is_upgrade": false,
        "user_values": config, "kube_version": "v1.32.0",
        "api_versions": ["v1", "apps/v1", "apps/v1/Deployment"]}});
    let out: serde_json::Value = serde_json::from_str(&oracle.run(&input.to_string()).unwrap())
        .unwrap();
    assert!(out.get("error").is_none(), "the oracle failed: {out}");
    let mut manifest = String::new();
    for (path, text) in out["templates"].as_object().unwrap() {
        let file = path.rsplit('/').next().unwrap_or("");
        if file.starts_with('_') || file == "NOTES.txt" {
            continue;
        }
        // Helm splits a template's output into documents at `---` lines; empty ones go.
        let mut doc = String::new();
        let mut docs = Vec::new();
        for line in text.as_str().unwrap().lines() {
            if line.trim_end() == "---" {
                docs.push(std::mem::take(&mut doc));
            } else {
                doc.push_str(line);
                doc.push('\n');
            }
        }
        docs.push(doc);
        for d in docs.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
            manifest.push_str(&format!("---\n# Source: {path}\n{d}\n"));
        }
    }
    Some(manifest)
}
