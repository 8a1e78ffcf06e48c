//! Manifests: a release's recorded `manifest` and a fresh render split into the same objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{chart_dir, ours};
use serde_json::json;
use tvk_chart_render::{manifest_docs, split_manifest};

/// A manifest in Helm's recorded format: each rendered, non-empty, non-hook document as
/// "---\n# Source: <path>\n<yaml>", templates in order.
const RECORDED: &str = "---
# Source: webapp/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: demo-webapp
automountServiceAccountToken: true
---
# Source: webapp/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: demo-webapp
spec:
  type: ClusterIP
  ports:
    - port: 80
      name: http
---
# Source: webapp/templates/multi.yaml
kind: ConfigMap
apiVersion: v1
metadata:
  name: one
---
# Source: webapp/templates/multi.yaml
kind: ConfigMap
apiVersion: v1
metadata:
  name: two
";

#[test]
fn split_manifest_reads_helms_recorded_format() {
    let docs = split_manifest(RECORDED).expect("split");
    let got: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d.source.as_str(),
                d.object["metadata"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("webapp/templates/serviceaccount.yaml", "demo-webapp"),
            ("webapp/templates/service.yaml", "demo-webapp"),
            ("webapp/templates/multi.yaml", "one"),
            ("webapp/templates/multi.yaml", "two"),
        ]
    );
    assert_eq!(docs[1].object["spec"]["ports"][0]["port"], json!(80));
    assert!(split_manifest("").expect("empty").is_empty());
    assert!(
        split_manifest("---\n# Source: a/templates/x.yaml\n\n---\n")
            .expect("blank")
            .is_empty()
    );
    let e =
        split_manifest("---\n# Source: a/templates/x.yaml\n- just\n- a list\n").expect_err("list");
    assert!(e.to_string().contains("a/templates/x.yaml"), "{e}");
}

#[test]
fn rendered_objects_equal_the_recorded_manifest_and_hooks_are_apart() {
    let chart = chart_dir(
        "webapp",
        json!({"name": "webapp", "version": "0.1.0", "apiVersion": "v2", "appVersion": "1.16.0"}),
    );
    let rendered = ours(&chart, &json!({})).expect("render");
    let (objects, hooks) = manifest_docs(&rendered).expect("docs");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].source, "webapp/templates/tests-job.yaml");
    let kinds: Vec<&str> = objects
        .iter()
        .map(|d| d.object["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        vec!["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    );

    // Written the way Helm records it, the manifest splits back into the same objects.
    let mut manifest = String::new();
    for (path, text) in &rendered.templates {
        if text.trim().is_empty() || path.ends_with("tests-job.yaml") {
            continue;
        }
        manifest.push_str(&format!("---\n# Source: {path}\n{text}"));
        if !text.ends_with('\n') {
            manifest.push('\n');
        }
    }
    let recorded = split_manifest(&manifest).expect("split");
    assert_eq!(recorded, objects);
}
