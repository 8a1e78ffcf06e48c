#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Golden-file tests of the renderer: each `tests/tvms/<case>.yaml` renders to exactly
//! `tests/golden/<case>.yaml`. `UPDATE_GOLDEN=1 cargo test -p tvk-manager --test golden`
//! rewrites the golden files; review the diff before committing.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tvk_manager::{
    render::{Manifest, RenderError, RenderInputs, Renderer, TemplateSource},
    tvm::TrilioVaultManager,
};

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfixture\n-----END CERTIFICATE-----\n";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn load(case: &str) -> TrilioVaultManager {
    let text = std::fs::read_to_string(dir().join("tvms").join(format!("{case}.yaml"))).unwrap();
    let value = tvk_api::yaml::parse_single(&text, &Default::default()).unwrap();
    serde_json::from_value(value).unwrap()
}

/// The `RELATED_IMAGE_*` variables the golden cases run with, as OLM sets them: the golden
/// files must not change each time `cargo xtask images` refreshes the compiled-in digests.
fn related_images() -> Vec<(String, String)> {
    tvk_manager::values::RELATED_IMAGES
        .iter()
        .map(|(env, key)| {
            (
                env.to_string(),
                format!("registry.example/tvk/{key}@sha256:{}", "ab".repeat(32)),
            )
        })
        .collect()
}

/// Inputs per case: the cluster case has the Prometheus Operator and a known CA bundle.
fn inputs(case: &str) -> RenderInputs {
    match case {
        "cluster" => RenderInputs {
            api_versions: vec!["monitoring.coreos.com/v1".into()],
            ca_bundle: Some(CA_PEM.into()),
            related_images: related_images(),
            ..Default::default()
        },
        _ => RenderInputs {
            related_images: related_images(),
            ..Default::default()
        },
    }
}

/// The embedded templates without the generated app CRDs: the golden files cover the templates,
/// and CRD changes (made by the API crate's generator) must not make them drift.
fn templates() -> TemplateSource {
    TemplateSource::embedded().without_crds()
}

fn render(case: &str) -> Manifest {
    let renderer = Renderer::new(&templates()).unwrap();
    renderer.render(&load(case), &inputs(case)).unwrap()
}

const CASES: &[&str] = &[
    "cluster",
    "namespaced",
    "ingress",
    "components-off",
    "resources-scheduling",
];

#[test]
fn every_case_matches_its_golden_file() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for case in CASES {
        let got = render(case).to_yaml().unwrap();
        let path = dir().join("golden").join(format!("{case}.yaml"));
        if update {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            stale.push(case.to_string());
            pretty_assertions::assert_eq!(want, got, "case {case} (UPDATE_GOLDEN=1 to accept)");
        }
    }
    assert!(stale.is_empty(), "{stale:?}");
}

fn kinds(manifest: &Manifest) -> Vec<String> {
    manifest
        .objects
        .iter()
        .map(|o| o.types.as_ref().unwrap().kind.clone())
        .collect()
}

fn find<'a>(
    manifest: &'a Manifest,
    kind: &str,
    name: &str,
) -> Option<&'a kube::api::DynamicObject> {
    manifest.objects.iter().find(|o| {
        o.types.as_ref().unwrap().kind == kind && o.metadata.name.as_deref() == Some(name)
    })
}

#[test]
fn objects_come_in_dependency_order() {
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.io}\nspec: {group: example.io}\n";
    let source = templates().with_file("crds/widgets.example.io.yaml", crd);
    let manifest = Renderer::new(&source)
        .unwrap()
        .render(&load("cluster"), &inputs("cluster"))
        .unwrap();
    let order = kinds(&manifest);
    let position = |kind: &str| order.iter().position(|k| k == kind).unwrap();
    let last = |kind: &str| order.iter().rposition(|k| k == kind).unwrap();
    assert_eq!(order[0], "CustomResourceDefinition");
    assert!(last("CustomResourceDefinition") < position("ServiceAccount"));
    assert!(last("ServiceAccount") < position("ClusterRole"));
    assert!(last("ClusterRoleBinding") < position("ConfigMap"));
    assert!(last("ConfigMap") < position("Deployment"));
    assert!(last("Deployment") < position("ValidatingWebhookConfiguration"));
    assert_eq!(order.last().unwrap(), "ValidatingWebhookConfiguration");
    assert_eq!(order[order.len() - 2], "MutatingWebhookConfiguration");
}

#[test]
fn every_object_carries_the_inventory_labels_and_a_hash() {
    for case in CASES {
        let manifest = render(case);
        for object in &manifest.objects {
            let labels = object.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/managed-by"], "tvk-manager");
            assert_eq!(labels["app.kubernetes.io/part-of"], "triliovault");
            assert_eq!(
                labels["app.kubernetes.io/instance"],
                load(case).metadata.name.unwrap()
            );
            assert!(
                object.metadata.annotations.as_ref().unwrap()["triliovault.trilio.io/rendered-hash"]
                    .len() == 16
            );
        }
    }
}

/// Every pod template passes the `restricted` Pod Security profile and leaves the UID to the
/// platform (OpenShift restricted-v2).
#[test]
fn every_pod_meets_the_restricted_profile() {
    for case in CASES {
        let manifest = render(case);
        for object in manifest
            .objects
            .iter()
            .filter(|o| o.types.as_ref().unwrap().kind == "Deployment")
        {
            let pod = &object.data["spec"]["template"]["spec"];
            let name = object.metadata.name.clone().unwrap();
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{case} {name}"
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{case} {name}"
            );
            assert!(
                pod["securityContext"].get("runAsUser").is_none(),
                "{case} {name}"
            );
            assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
            for container in pod["containers"].as_array().unwrap() {
                let sc = &container["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{case} {name}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{case} {name}");
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{case} {name}"
                );
                assert!(sc.get("runAsUser").is_none() && sc.get("privileged").is_none());
            }
        }
    }
}

#[test]
fn scope_decides_the_rbac_kinds_and_webhook_reach() {
    let cluster = render("cluster");
    let namespaced = render("namespaced");
    assert!(kinds(&cluster).contains(&"ClusterRole".to_string()));
    assert!(!kinds(&namespaced).contains(&"ClusterRole".to_string()));
    assert!(!kinds(&namespaced).contains(&"ClusterRoleBinding".to_string()));
    let role = find(&namespaced, "Role", "tvk-control-plane").unwrap();
    let text = serde_json::to_string(&role.data["rules"]).unwrap();
    for cluster_only in [
        "persistentvolumes\"",
        "namespaces",
        "storageclasses",
        "clusterbackups",
    ] {
        assert!(
            !text.contains(cluster_only),
            "{cluster_only} in a namespaced Role"
        );
    }
    let hooks = &find(
        &namespaced,
        "ValidatingWebhookConfiguration",
        "tvk-team-a-validating",
    )
    .unwrap()
    .data["webhooks"];
    assert_eq!(
        hooks.as_array().unwrap().len(),
        6,
        "only the namespaced kinds"
    );
    assert_eq!(
        hooks[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    let cluster_hooks = &find(
        &cluster,
        "ValidatingWebhookConfiguration",
        "tvk-trilio-system-validating",
    )
    .unwrap()
    .data["webhooks"];
    assert_eq!(cluster_hooks.as_array().unwrap().len(), 9);
    for hook in cluster_hooks.as_array().unwrap() {
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["sideEffects"], "None");
        assert!(hook["timeoutSeconds"].as_i64().unwrap() <= 10);
        assert_eq!(
            hook["rules"][0]["apiGroups"],
            serde_json::json!(["triliovault.trilio.io"])
        );
        assert_eq!(
            hook["rules"][0]["operations"],
            serde_json::json!(["CREATE", "UPDATE"])
        );
        let path = hook["clientConfig"]["service"]["path"].as_str().unwrap();
        assert!(
            path.starts_with("/validate-triliovault-trilio-io-v1-"),
            "{path}"
        );
        // base64 of the PEM given as input
        assert!(
            hook["clientConfig"]["caBundle"]
                .as_str()
                .unwrap()
                .starts_with("LS0tLS1CRUdJTi")
        );
    }
}

#[test]
fn optional_objects_follow_their_inputs() {
    let cluster = render("cluster");
    assert!(find(&cluster, "ServiceMonitor", "tvk-exporter").is_some());
    assert!(find(&cluster, "Ingress", "tvk-ingress").is_none());
    let ingress = render("ingress");
    assert!(
        find(&ingress, "ServiceMonitor", "tvk-exporter").is_none(),
        "no monitoring API"
    );
    let rule = &find(&ingress, "Ingress", "tvk-ingress").unwrap().data["spec"];
    assert_eq!(rule["rules"][0]["host"], "tvk.example.com");
    assert_eq!(rule["ingressClassName"], "nginx");
    let off = render("components-off");
    assert!(find(&off, "Deployment", "tvk-control-plane").is_none());
    assert!(find(&off, "Service", "tvk-exporter").is_none());
    assert!(find(&off, "PodDisruptionBudget", "tvk-control-plane").is_none());
    assert!(find(&off, "Deployment", "tvk-webhook").is_some());
}

#[test]
fn typed_fields_reach_the_objects() {
    let manifest = render("resources-scheduling");
    let deployment = find(&manifest, "Deployment", "tvk-control-plane").unwrap();
    let pod = &deployment.data["spec"]["template"];
    assert_eq!(deployment.data["spec"]["replicas"], 2);
    assert_eq!(
        pod["spec"]["nodeSelector"]["node-role.kubernetes.io/infra"],
        ""
    );
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "infra");
    assert_eq!(pod["metadata"]["annotations"]["team"], "backup");
    assert_eq!(
        pod["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "false"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "200m"
    );
    assert_eq!(
        find(&manifest, "Deployment", "tvk-webhook").unwrap().data["spec"]["replicas"],
        3
    );
    let config = find(&manifest, "ConfigMap", "tvk-config").unwrap();
    let app: Value = tvk_api::yaml::parse_single(
        config.data["data"]["config.yaml"].as_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(app["logConfig"]["logLevel"], "Warn");
    assert_eq!(
        app["logConfig"]["datamoverLogLevel"], "Debug",
        "deprecated field applied"
    );
    assert_eq!(app["logConfig"]["maxLogFiles"], 3);
    assert_eq!(app["jobResources"]["data"]["limits"]["memory"], "8Gi");
    assert_eq!(
        app["workerJobsScheduling"]["nodeSelector"]["storage"],
        "fast"
    );
    assert_eq!(
        app["images"]["datamover"],
        format!("registry.example/tvk/datamover@sha256:{}", "ab".repeat(32))
    );
}

/// Without any `RELATED_IMAGE_*` (a plain `tvk-manager run` or `render`), the compiled-in
/// defaults name every image by digest — the digests of images/images.lock.json — in every
/// container and in the configuration the control plane starts its Jobs from.
#[test]
fn compiled_in_defaults_name_every_image_by_digest_from_the_lock() {
    let lock: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/images.lock.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let registry = lock["registry"].as_str().unwrap();
    let renderer = Renderer::new(&templates()).unwrap();
    for (key, name) in [
        ("controlPlane", "tvk-control-plane"),
        ("webhook", "tvk-webhook"),
        ("datamover", "tvk-datamover"),
        ("metamover", "tvk-metamover"),
    ] {
        let want = format!(
            "{registry}/{name}@{}",
            lock["images"][name].as_str().unwrap()
        );
        assert_eq!(
            renderer.defaults()["images"][key],
            want.as_str(),
            "images.{key}"
        );
    }
    let manifest = renderer
        .render(&load("cluster"), &RenderInputs::default())
        .unwrap();
    let mut images = 0;
    for object in &manifest.objects {
        let spec = &object.data["spec"]["template"]["spec"];
        for container in spec["containers"].as_array().into_iter().flatten() {
            let image = container["image"].as_str().unwrap();
            assert!(
                image.starts_with(registry) && image.contains("@sha256:"),
                "{} names {image}, not an image of the lock by digest",
                object.metadata.name.as_deref().unwrap_or_default()
            );
            images += 1;
        }
    }
    assert!(images >= 2, "no workload rendered");
    let config = find(&manifest, "ConfigMap", "tvk-config").unwrap();
    let text = config.data["data"]["config.yaml"].as_str().unwrap();
    assert!(!text.contains(":0.1.0"), "a tag in tvk-config: {text}");
}

#[test]
fn related_images_and_overrides_take_precedence() {
    let renderer = Renderer::new(&templates()).unwrap();
    let inputs = RenderInputs {
        related_images: vec![
            (
                "RELATED_IMAGE_CONTROL_PLANE".into(),
                "mirror.local/cp@sha256:aa".into(),
            ),
            (
                "RELATED_IMAGE_DATAMOVER".into(),
                "mirror.local/dm@sha256:bb".into(),
            ),
        ],
        overrides: vec!["components.webhook.replicas=4".parse().unwrap()],
        ..Default::default()
    };
    let manifest = renderer.render(&load("cluster"), &inputs).unwrap();
    let cp = find(&manifest, "Deployment", "tvk-control-plane").unwrap();
    assert_eq!(
        cp.data["spec"]["template"]["spec"]["containers"][0]["image"],
        "mirror.local/cp@sha256:aa"
    );
    assert_eq!(
        find(&manifest, "Deployment", "tvk-webhook").unwrap().data["spec"]["replicas"],
        4
    );
    let config = find(&manifest, "ConfigMap", "tvk-config").unwrap();
    assert!(
        config.data["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .contains("mirror.local/dm@sha256:bb")
    );
}

#[test]
fn bad_inputs_give_errors_naming_the_cause() {
    let renderer = Renderer::new(&templates()).unwrap();
    let mut tvm = load("cluster");
    tvm.spec.helm_values = Some(serde_json::json!({"schedule_policy_timezone": "UTC"}));
    let err = renderer.render(&tvm, &RenderInputs::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("shadows the typed value \"schedulePolicyTimezone\""),
        "{err}"
    );

    let mut tvm = load("cluster");
    tvm.spec.helm_values = Some(serde_json::json!({"jobSpec": {"activeDeadlineSeconds": "soon"}}));
    let err = renderer.render(&tvm, &RenderInputs::default()).unwrap_err();
    assert!(
        err.to_string().contains("activeDeadlineSeconds")
            || err.to_string().contains("invalid type"),
        "{err}"
    );

    let mut tvm = load("cluster");
    tvm.spec.helm_values = Some(serde_json::json!({"webhook": {"timeoutSeconds": 30}}));
    let err = renderer.render(&tvm, &RenderInputs::default()).unwrap_err();
    assert!(
        err.to_string().contains("webhook.timeoutSeconds is 30"),
        "{err}"
    );

    let mut tvm = load("cluster");
    tvm.metadata.namespace = None;
    let err = renderer.render(&tvm, &RenderInputs::default()).unwrap_err();
    assert!(err.to_string().contains("metadata.namespace"), "{err}");
}

#[test]
fn template_errors_name_the_template_and_line() {
    let source = templates().with_file("zz-broken.yaml.hbs", "a: 1\nb: {{Values.nope}}\n");
    let err = Renderer::new(&source)
        .unwrap()
        .render(&load("cluster"), &RenderInputs::default())
        .unwrap_err();
    assert!(
        matches!(err, RenderError::Render { line: Some(2), .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("zz-broken.yaml.hbs line 2"),
        "{err}"
    );

    let source = templates().with_file("zz-bad-yaml.yaml.hbs", "kind: ConfigMap\n  bad: [\n");
    let err = Renderer::new(&source)
        .unwrap()
        .render(&load("cluster"), &RenderInputs::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("zz-bad-yaml.yaml.hbs rendered invalid YAML"),
        "{err}"
    );

    let source = templates().with_file(
        "zz-unknown.yaml.hbs",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\n",
    );
    let err = Renderer::new(&source)
        .unwrap()
        .render(&load("cluster"), &RenderInputs::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("not a kind the manager applies"),
        "{err}"
    );

    let source = templates().with_file(
        "zz-elsewhere.yaml.hbs",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n",
    );
    let err = Renderer::new(&source)
        .unwrap()
        .render(&load("cluster"), &RenderInputs::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("may only create objects in trilio-system"),
        "{err}"
    );
}

#[test]
fn cli_render_writes_the_same_yaml_and_per_object_files() {
    let exe = env!("CARGO_BIN_EXE_tvk-manager");
    let input = dir().join("tvms").join("ingress.yaml");
    let out = std::process::Command::new(exe)
        .args(["render", "-f"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The binary renders the whole compiled-in set, generated CRDs included.
    let full = Renderer::new(&TemplateSource::embedded())
        .unwrap()
        .render(&load("ingress"), &RenderInputs::default())
        .unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == full.to_yaml().unwrap(),
        "stdout differs from the library render"
    );

    let temp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "render",
            "--set",
            "components.webhook.replicas=5",
            "--output-dir",
        ])
        .arg(temp.path())
        .arg("-f")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<_> = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files.len(), full.objects.len());
    assert!(
        files[0].starts_with("001-customresourcedefinition-")
            || files[0].starts_with("001-serviceaccount-"),
        "{files:?}"
    );
    let webhook = files
        .iter()
        .find(|f| f.ends_with("-deployment-tvk-webhook.yaml"))
        .unwrap();
    assert!(
        std::fs::read_to_string(temp.path().join(webhook))
            .unwrap()
            .contains("replicas: 5")
    );

    let bad = temp.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: triliovault.trilio.io/v1\nkind: TrilioVaultManager\nmetadata: {name: x, namespace: y}\nspec: {applicationScope: Everywhere}\n").unwrap();
    let out = std::process::Command::new(exe)
        .args(["render", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("spec.applicationScope: must be Cluster or Namespaced")
    );
}

#[test]
fn every_generated_crd_is_rendered_first() {
    let manifest = Renderer::new(&TemplateSource::embedded())
        .unwrap()
        .render(&load("cluster"), &inputs("cluster"))
        .unwrap();
    let crd_files =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/crds"))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
                })
                .count()
            })
            .unwrap_or(0);
    let crds = kinds(&manifest)
        .iter()
        .take_while(|k| *k == "CustomResourceDefinition")
        .count();
    assert_eq!(crds, crd_files);
    assert_eq!(
        kinds(&manifest)
            .iter()
            .filter(|k| *k == "CustomResourceDefinition")
            .count(),
        crd_files
    );
}

/// OLM injects the cluster-wide proxy into the manager as HTTP_PROXY / HTTPS_PROXY / NO_PROXY;
/// every workload the manager renders gets them, and tvk-config hands them to the control
/// plane for its Jobs. Without them nothing proxy-related is rendered.
#[test]
fn proxy_environment_reaches_every_workload_and_the_job_configuration() {
    let renderer = Renderer::new(&templates()).unwrap();
    let mut inputs = inputs("cluster");
    let proxy = [
        ("HTTP_PROXY", "http://proxy.corp:3128"),
        ("HTTPS_PROXY", "http://proxy.corp:3129"),
        ("NO_PROXY", ".cluster.local,.svc,10.0.0.0/16"),
    ];
    inputs
        .related_images
        .extend(proxy.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let manifest = renderer.render(&load("cluster"), &inputs).unwrap();
    let mut workloads = 0;
    for object in &manifest.objects {
        let spec = &object.data["spec"]["template"]["spec"];
        for container in spec["containers"].as_array().into_iter().flatten() {
            workloads += 1;
            for (name, value) in proxy {
                let env = container["env"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{}: no env", container["name"]));
                assert!(
                    env.iter().any(|e| e["name"] == name && e["value"] == value),
                    "{} lacks {name}={value}: {env:?}",
                    container["name"]
                );
            }
        }
    }
    assert!(workloads >= 2, "control plane and webhook rendered");
    let config = find(&manifest, "ConfigMap", "tvk-config").unwrap();
    let app: Value = tvk_api::yaml::parse_single(
        config.data["data"]["config.yaml"].as_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(app["proxy"]["httpProxy"], "http://proxy.corp:3128");
    assert_eq!(app["proxy"]["httpsProxy"], "http://proxy.corp:3129");
    assert_eq!(app["proxy"]["noProxy"], ".cluster.local,.svc,10.0.0.0/16");

    let plain = render("cluster");
    let yaml = plain.to_yaml().unwrap();
    assert!(!yaml.contains("_PROXY"), "proxy env without a proxy");
    let config = find(&plain, "ConfigMap", "tvk-config").unwrap();
    assert!(
        !config.data["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .contains("proxy:")
    );
}
