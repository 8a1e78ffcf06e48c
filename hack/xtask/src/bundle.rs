//! The two OLM bundles and the plain-Kubernetes install.
//!
//! * **Operator bundle** (`bundle/`, package `tvk-operator`): the manager under OLM. Its
//!   Deployment, RBAC and TVM webhooks come from [`manager_install`], the same function that
//!   writes `deploy/tvk-operator.yaml`, so the CSV and the plain install cannot disagree.
//! * **Application bundle** (`bundle-application/`, package `tvk-application`): OLM in the
//!   manager's place. Generated from what `tvk_manager` renders from `templates/` (Deployments →
//!   install strategy, app CRDs → owned, webhook configurations → `webhookdefinitions`,
//!   Roles/ClusterRoles → permissions), never from a copy.
//!
//! The generators refuse bad input (missing icon, broken `alm-examples`, a tag reference, an
//! image missing from `relatedImages`) with the file and the rule.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tvk_manager::render::{APPLY_ORDER, RenderInputs, Renderer, TemplateSource};

use crate::{
    Files,
    catalog::{CatalogTemplate, Release},
    images::{self, ImageLock},
};

/// One bundle this repository ships.
#[derive(Debug, Clone, Copy)]
pub struct BundleSpec {
    /// Output directory (repository-relative).
    pub dir: &'static str,
    /// OLM package name.
    pub package: &'static str,
    /// Bundle image name.
    pub image: &'static str,
    /// Display name.
    pub display_name: &'static str,
}

/// The operator bundle.
pub const OPERATOR: BundleSpec = BundleSpec {
    dir: "bundle",
    package: "tvk-operator",
    image: "tvk-operator-bundle",
    display_name: "TVK-RS Operator",
};
/// The application bundle.
pub const APPLICATION: BundleSpec = BundleSpec {
    dir: "bundle-application",
    package: "tvk-application",
    image: "tvk-application-bundle",
    display_name: "TVK-RS Backup Application (OLM-managed)",
};
/// Both bundles, built into images by `cargo xtask images`.
pub const BUNDLES: &[BundleSpec] = &[OPERATOR, APPLICATION];

/// Namespace OLM suggests and the plain install uses.
pub const OPERATOR_NAMESPACE: &str = "tvk-system";
/// The manager's service account, Deployment and RBAC name.
pub const MANAGER: &str = "tvk-manager";
/// Service in front of the manager's TVM admission webhook (plain install).
pub const MANAGER_WEBHOOK_SERVICE: &str = "tvk-manager-webhook";
/// Container port of the manager's TVM webhook.
pub const MANAGER_WEBHOOK_PORT: i64 = 9443;
/// Health/metrics port of the manager.
pub const MANAGER_HEALTH_PORT: i64 = 8081;
/// Hand-edited icon shared by both packages.
pub const ICON_PATH: &str = "bundle/icon.svg";
/// Example TrilioVaultManager used as the operator's `alm-examples`.
pub const TVM_EXAMPLE: &str = "examples/manager/triliovaultmanager.yaml";
/// Oldest Kubernetes the bundles support (OpenShift 4.14 = Kubernetes 1.27).
pub const MIN_KUBE_VERSION: &str = "1.27.0";
/// `com.redhat.openshift.versions`: 4.14 and later.
pub const OPENSHIFT_VERSIONS: &str = "v4.14";
const GROUP: &str = "triliovault.trilio.io";

/// One admission webhook of the manager (the TVM): the CSV's `webhookdefinitions` and the plain
/// install's webhook configurations are both written from this list.
struct ManagerWebhook {
    mutating: bool,
    name: &'static str,
    path: &'static str,
}

const MANAGER_WEBHOOKS: &[ManagerWebhook] = &[
    ManagerWebhook {
        mutating: true,
        name: "triliovaultmanager.mutate.triliovault.trilio.io",
        path: "/mutate-triliovault-trilio-io-v1-triliovaultmanager",
    },
    ManagerWebhook {
        mutating: false,
        name: "triliovaultmanager.validate.triliovault.trilio.io",
        path: "/validate-triliovault-trilio-io-v1-triliovaultmanager",
    },
];

fn webhook_rules() -> Value {
    json!([{
        "apiGroups": [GROUP],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["triliovaultmanagers"],
        "scope": "*"
    }])
}

/// How the manager is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallKind {
    /// Under OLM: OLM provides the webhook certificates and the target namespaces.
    Olm,
    /// `kubectl apply`: the manager makes its own webhook certificate.
    Plain,
}

/// What installing the manager takes, whichever way it is delivered.
pub struct ManagerInstall {
    /// Deployment spec of the manager.
    pub deployment_spec: Value,
    /// Cluster-wide rules of its service account.
    pub cluster_rules: Vec<Value>,
    /// Rules in its own namespace.
    pub namespace_rules: Vec<Value>,
    /// `relatedImages` (name, reference).
    pub related_images: Vec<(String, String)>,
}

/// The manager's Deployment, RBAC and images: the one source of the operator CSV and the plain
/// install.
pub fn manager_install(lock: &ImageLock, kind: InstallKind) -> Result<ManagerInstall, String> {
    let manager_image = lock.reference(images::manager_image().name)?;
    let mut env = vec![
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "TVK_LOG_JSON", "value": "true"}),
    ];
    if kind == InstallKind::Olm {
        // AllNamespaces: "" (every namespace); OwnNamespace: the operator's namespace.
        env.push(json!({"name": "WATCH_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['olm.targetNamespaces']"}}}));
    } else {
        env.push(json!({"name": "TVK_WEBHOOK_SELF_SIGNED", "value": "true"}));
    }
    let mut related_images = vec![("tvk-manager".to_string(), manager_image.clone())];
    for image in images::app_images() {
        let reference = lock.reference(image.name)?;
        if let Some(var) = image.related_env {
            env.push(json!({"name": var, "value": reference}));
        }
        related_images.push((image.name.to_string(), reference));
    }
    let deployment_spec = json!({
        "replicas": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": MANAGER}},
        "strategy": {"type": "Recreate"},
        "template": {
            "metadata": {
                "labels": {
                    "app.kubernetes.io/name": MANAGER,
                    "app.kubernetes.io/part-of": "triliovault",
                    "app.kubernetes.io/component": "operator"
                },
                "annotations": {"kubectl.kubernetes.io/default-container": "manager"}
            },
            "spec": {
                "serviceAccountName": MANAGER,
                "securityContext": {
                    "runAsNonRoot": true,
                    "seccompProfile": {"type": "RuntimeDefault"}
                },
                "containers": [{
                    "name": "manager",
                    "image": manager_image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["run"],
                    "env": env,
                    "ports": [
                        {"name": "health", "containerPort": MANAGER_HEALTH_PORT},
                        {"name": "webhook", "containerPort": MANAGER_WEBHOOK_PORT}
                    ],
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": "health"},
                        "initialDelaySeconds": 5, "periodSeconds": 20
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": "health"},
                        "periodSeconds": 10
                    },
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "1", "memory": "256Mi"}
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "runAsNonRoot": true,
                        "capabilities": {"drop": ["ALL"]}
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "terminationGracePeriodSeconds": 30
            }
        }
    });
    Ok(ManagerInstall {
        deployment_spec,
        cluster_rules: manager_cluster_rules()?,
        namespace_rules: vec![json!({
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]
        })],
        related_images,
    })
}

/// The manager's cluster rules, derived from what it does:
/// * every kind of `tvk_manager::render::APPLY_ORDER` (it applies, watches and prunes them);
/// * every rule of every Role/ClusterRole the templates render, in both scopes (Kubernetes
///   lets it grant only what it holds: no `escalate`/`bind` needed);
/// * its own TrilioVaultManagers, their status and finalizers, and Events.
fn manager_cluster_rules() -> Result<Vec<Value>, String> {
    let mut rules = RuleSet::default();
    let manage = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    for known in APPLY_ORDER {
        rules.add(known.group, known.plural, &manage);
    }
    rules.add(
        GROUP,
        "triliovaultmanagers",
        &["get", "list", "watch", "update", "patch"],
    );
    rules.add(
        GROUP,
        "triliovaultmanagers/status",
        &["get", "update", "patch"],
    );
    rules.add(GROUP, "triliovaultmanagers/finalizers", &["update"]);
    rules.add("", "events", &["create", "patch"]);
    rules.add("events.k8s.io", "events", &["create", "patch"]);
    for scope in ["Cluster", "Namespaced"] {
        for object in render_application(scope, &[])? {
            let kind = object["kind"].as_str().unwrap_or_default();
            if kind == "Role" || kind == "ClusterRole" {
                for rule in object["rules"].as_array().into_iter().flatten() {
                    rules.add_rule(rule)?;
                }
            }
        }
    }
    Ok(rules.to_rules())
}

/// Rules merged per (apiGroup, resource), written back grouped by identical verb sets.
#[derive(Default)]
struct RuleSet {
    verbs: BTreeMap<(String, String), BTreeSet<String>>,
}

impl RuleSet {
    fn add(&mut self, group: &str, resource: &str, verbs: &[&str]) {
        self.verbs
            .entry((group.to_string(), resource.to_string()))
            .or_default()
            .extend(verbs.iter().map(|v| v.to_string()));
    }

    fn add_rule(&mut self, rule: &Value) -> Result<(), String> {
        if rule.get("resourceNames").is_some() || rule.get("nonResourceURLs").is_some() {
            return Err(format!(
                "templates/rbac.yaml.hbs: rule {rule} uses resourceNames or nonResourceURLs, which the CSV permission derivation (hack/xtask/src/bundle.rs) does not merge yet"
            ));
        }
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        let verbs = strings("verbs");
        let verbs: Vec<&str> = verbs.iter().map(String::as_str).collect();
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                self.add(&group, &resource, &verbs);
            }
        }
        Ok(())
    }

    fn to_rules(&self) -> Vec<Value> {
        // group → verbs → resources
        let mut grouped: BTreeMap<(String, Vec<String>), Vec<String>> = BTreeMap::new();
        for ((group, resource), verbs) in &self.verbs {
            grouped
                .entry((group.clone(), verbs.iter().cloned().collect()))
                .or_default()
                .push(resource.clone());
        }
        grouped
            .into_iter()
            .map(|((group, verbs), resources)| {
                json!({"apiGroups": [group], "resources": resources, "verbs": verbs})
            })
            .collect()
    }
}

/// Instance name of the application rendered for the application bundle.
pub const APP_INSTANCE: &str = "tvk";

/// The application as the manager renders it for a TVM with default values in `scope`, as JSON objects
/// in apply order. `related_images` are the manager's `RELATED_IMAGE_*` (name, reference).
pub fn render_application(
    scope: &str,
    related_images: &[(String, String)],
) -> Result<Vec<Value>, String> {
    // Defaults only: what templates/values.yaml gives a TVM that sets nothing but the scope.
    let tvm = json!({
        "apiVersion": "triliovault.trilio.io/v1",
        "kind": "TrilioVaultManager",
        "metadata": {"name": APP_INSTANCE, "namespace": OPERATOR_NAMESPACE},
        "spec": {"applicationScope": scope}
    });
    validate_tvm(
        &tvm,
        "the default TrilioVaultManager of hack/xtask/src/bundle.rs",
    )?;
    let tvm: tvk_manager::tvm::TrilioVaultManager = serde_json::from_value(tvm)
        .map_err(|e| format!("the default TrilioVaultManager does not deserialise: {e}"))?;
    // The CRDs come from this run's generation, not from the copy compiled into tvk-manager:
    // after an API change that copy is the previous one until the next build, and one
    // `cargo xtask generate` must produce bundles that agree with the CRDs it writes.
    let mut source = TemplateSource::embedded().without_crds();
    for (path, text) in crate::generators::crds()? {
        let path = path.to_string_lossy();
        let relative = path.strip_prefix("templates/").unwrap_or(&path);
        source = source.with_file(relative, &text);
    }
    let renderer = Renderer::new(&source).map_err(|e| format!("failed to load templates/: {e}"))?;
    let inputs = RenderInputs {
        related_images: related_images.to_vec(),
        ..RenderInputs::default()
    };
    let manifest = renderer
        .render(&tvm, &inputs)
        .map_err(|e| format!("failed to render templates/ for {TVM_EXAMPLE}: {e}"))?;
    manifest
        .objects
        .iter()
        .map(|o| serde_json::to_value(o).map_err(|e| format!("failed to serialise: {e}")))
        .collect()
}

/// `examples/manager/triliovaultmanager.yaml`, validated by the TVM admission rules, placed in
/// the suggested namespace.
fn example_tvm() -> Result<Value, String> {
    let path = crate::repo_root().join(TVM_EXAMPLE);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("failed to read {TVM_EXAMPLE}: {e}"))?;
    let mut value = tvk_api::yaml::parse_single(&text, &tvk_api::yaml::Limits::default())
        .map_err(|e| format!("{TVM_EXAMPLE}: {e}"))?;
    validate_tvm(&value, TVM_EXAMPLE)?;
    value["metadata"]["namespace"] = json!(OPERATOR_NAMESPACE);
    Ok(value)
}

fn validate_tvm(value: &Value, file: &str) -> Result<(), String> {
    let request = tvk_api::admission::Request {
        operation: tvk_api::admission::Operation::Create,
        object: value,
        old_object: None,
    };
    tvk_manager::admission::tvm_admission()
        .validate(&request)
        .map(|_| ())
        .map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!(
                "{file}: alm-examples: the example TrilioVaultManager is invalid (rule: every alm-example passes admission):\n  {}",
                list.join("\n  ")
            )
        })
}

/// The icon as a CSV/catalog icon object.
pub fn icon(root: &Path) -> Result<Value, String> {
    let path = root.join(ICON_PATH);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!("{ICON_PATH}: cannot read the icon ({e}) (rule: the CSV and the olm.package need an icon); add an SVG there")
    })?;
    if bytes.is_empty() || !String::from_utf8_lossy(&bytes).contains("<svg") {
        return Err(format!(
            "{ICON_PATH}: not an SVG image (rule: the CSV and the olm.package need an icon)"
        ));
    }
    Ok(json!({
        "base64data": base64::engine::general_purpose::STANDARD.encode(&bytes),
        "mediatype": "image/svg+xml"
    }))
}

/// Metadata of one bundle's CSV that differs between the two packages.
struct CsvInput<'a> {
    spec: BundleSpec,
    description: &'a str,
    keywords: &'a [&'a str],
    install_modes: [(&'a str, bool); 4],
    owned: Vec<Value>,
    alm_examples: Vec<Value>,
    permissions: Vec<Value>,
    cluster_permissions: Vec<Value>,
    deployments: Vec<Value>,
    webhooks: Vec<Value>,
    related_images: Vec<(String, String)>,
    container_image: String,
}

/// Upgrade edge of the version this tree builds, from the catalog template.
pub fn current_release<'a>(
    template: &'a CatalogTemplate,
    package: &str,
) -> Result<(&'a Release, Option<&'a Release>), String> {
    let version = env!("CARGO_PKG_VERSION");
    let releases = template.releases(package)?;
    let index = releases
        .iter()
        .position(|r| r.version == version)
        .ok_or_else(|| {
            format!(
                "{}: package {package} has no release {version} (rule: the version this tree builds is listed); add it",
                crate::catalog::TEMPLATE_PATH
            )
        })?;
    let previous = index.checked_sub(1).and_then(|i| releases.get(i));
    Ok((&releases[index], previous))
}

fn csv(root: &Path, lock: &ImageLock, input: CsvInput<'_>) -> Result<Value, String> {
    let file = format!(
        "{}/manifests/{}.clusterserviceversion.yaml",
        input.spec.dir, input.spec.package
    );
    let version = env!("CARGO_PKG_VERSION");
    let template = CatalogTemplate::read(root)?;
    let (release, previous) = current_release(&template, input.spec.package)?;
    let replaces = release
        .replaces
        .clone()
        .or_else(|| previous.map(|p| format!("{}.v{}", input.spec.package, p.version)));
    let skip_range = release.skip_range();
    let alm_examples = alm_examples_text(&file, &input.owned, &input.alm_examples)?;

    let mut annotations = Map::new();
    let mut put = |k: &str, v: &str| {
        annotations.insert(k.to_string(), json!(v));
    };
    put("alm-examples", &alm_examples);
    put("capabilities", "Seamless Upgrades");
    put("categories", "Storage,Integration & Delivery");
    put("containerImage", &input.container_image);
    put("createdAt", &lock.created);
    put("description", first_line(input.description));
    put("support", images::VENDOR);
    put("repository", crate::REPOSITORY);
    put("olm.skipRange", &skip_range);
    put(
        "operatorframework.io/suggested-namespace",
        OPERATOR_NAMESPACE,
    );
    put(
        "operators.openshift.io/valid-subscription",
        "[\"No subscription required\"]",
    );
    put("operators.operatorframework.io/builder", "tvk-xtask");
    put("features.operators.openshift.io/disconnected", "true");
    put("features.operators.openshift.io/fips-compliant", "false");
    // OLM's HTTP_PROXY/HTTPS_PROXY/NO_PROXY reach the manager's workloads (values.proxy), the
    // control plane's Jobs (tvk-config `proxy`) and every HTTP client (reqwest and object_store
    // read them); the Kubernetes API is reached in-cluster, never through the proxy.
    put("features.operators.openshift.io/proxy-aware", "true");
    put("features.operators.openshift.io/tls-profiles", "false");
    put("features.operators.openshift.io/token-auth-aws", "false");
    put("features.operators.openshift.io/token-auth-azure", "false");
    put("features.operators.openshift.io/token-auth-gcp", "false");
    put("features.operators.openshift.io/cnf", "false");
    put("features.operators.openshift.io/cni", "false");
    put("features.operators.openshift.io/csi", "false");

    let related: Vec<Value> = input
        .related_images
        .iter()
        .map(|(name, image)| json!({"name": name, "image": image}))
        .collect();
    let mut spec = json!({
        "displayName": input.spec.display_name,
        "description": input.description,
        "version": version,
        "minKubeVersion": MIN_KUBE_VERSION,
        "maturity": "alpha",
        "icon": [icon(root)?],
        "keywords": input.keywords,
        "maintainers": [{"name": images::VENDOR, "email": "maintainers@tvk-rs.dev"}],
        "provider": {"name": images::VENDOR, "url": crate::REPOSITORY},
        "links": [
            {"name": "Source", "url": crate::REPOSITORY},
            {"name": "Documentation", "url": format!("{}#readme", crate::REPOSITORY)}
        ],
        "installModes": input.install_modes.iter().map(|(t, s)| json!({"type": t, "supported": s})).collect::<Vec<_>>(),
        "customresourcedefinitions": {"owned": input.owned},
        "install": {
            "strategy": "deployment",
            "spec": {
                "deployments": input.deployments,
                "permissions": input.permissions,
                "clusterPermissions": input.cluster_permissions
            }
        },
        "relatedImages": related
    });
    if !input.webhooks.is_empty() {
        spec["webhookdefinitions"] = json!(input.webhooks);
    }
    if let Some(replaces) = replaces {
        spec["replaces"] = json!(replaces);
    }
    let csv = json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": format!("{}.v{version}", input.spec.package),
            "namespace": "placeholder",
            "annotations": annotations,
            "labels": {
                "operatorframework.io/arch.amd64": "supported",
                "operatorframework.io/os.linux": "supported"
            }
        },
        "spec": spec
    });
    check_images(&file, &csv)?;
    Ok(csv)
}

/// `alm-examples`: one example per owned kind, each of our group with a name, as JSON.
fn alm_examples_text(file: &str, owned: &[Value], examples: &[Value]) -> Result<String, String> {
    for example in examples {
        let kind = example["kind"].as_str().unwrap_or_default();
        if !example["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with(GROUP))
            || kind.is_empty()
            || !example["metadata"]["name"].is_string()
        {
            return Err(format!(
                "{file}: alm-examples: {example} is not an object of {GROUP} with kind and metadata.name (rule: alm-examples are valid objects)"
            ));
        }
        if !owned.iter().any(|o| o["kind"] == kind) {
            return Err(format!(
                "{file}: alm-examples: {kind} is not an owned kind of this bundle (rule: examples only of owned CRDs)"
            ));
        }
    }
    for crd in owned {
        let kind = crd["kind"].as_str().unwrap_or_default();
        let n = examples.iter().filter(|e| e["kind"] == kind).count();
        if n != 1 {
            return Err(format!(
                "{file}: alm-examples has {n} examples of {kind} (rule: exactly one alm-example per owned kind)"
            ));
        }
    }
    let text = serde_json::to_string_pretty(examples)
        .map_err(|e| format!("{file}: alm-examples is not valid JSON: {e}"))?;
    serde_json::from_str::<Vec<Value>>(&text)
        .map_err(|e| format!("{file}: alm-examples is not valid JSON: {e}"))?;
    Ok(text)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Every `image:` field of the CSV is by digest and listed in `relatedImages`.
fn check_images(file: &str, csv: &Value) -> Result<(), String> {
    let related: BTreeSet<&str> = csv["spec"]["relatedImages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["image"].as_str())
        .collect();
    let mut used = Vec::new();
    collect_images(&csv["spec"]["install"], &mut used);
    for image in related
        .iter()
        .copied()
        .chain(used.iter().map(String::as_str))
    {
        check_digest_reference(file, image)?;
    }
    for image in &used {
        if !related.contains(image.as_str()) {
            return Err(format!(
                "{file}: image {image} is used by the install strategy but missing from spec.relatedImages (rule: every image in relatedImages)"
            ));
        }
    }
    Ok(())
}

/// `image` fields and `RELATED_IMAGE_*` env values anywhere under `value`.
pub fn collect_images(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(image)) = map.get("image") {
                out.push(image.clone());
            }
            if let (Some(Value::String(name)), Some(Value::String(v))) =
                (map.get("name"), map.get("value"))
                && name.starts_with("RELATED_IMAGE_")
            {
                out.push(v.clone());
            }
            for v in map.values() {
                collect_images(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_images(v, out)),
        _ => {}
    }
}

/// Refuses an image reference that is not `name@sha256:<64 hex>`.
pub fn check_digest_reference(file: &str, image: &str) -> Result<(), String> {
    match image.rsplit_once('@') {
        Some((_, digest)) if images::is_digest(digest) => Ok(()),
        _ => Err(format!(
            "{file}: image {image} is not pinned by digest (rule: no image reference by tag; use name@sha256:…)"
        )),
    }
}

/// Spec/status descriptors derived from a CRD's schema (top-level fields), plus the
/// x-descriptors we know for some fields.
fn descriptors(crd: &Value, section: &str, known: &[(&str, &[&str])]) -> Vec<Value> {
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][section]["properties"];
    let Some(properties) = schema.as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut descriptor = json!({
                "path": name,
                "displayName": display_name(name),
            });
            if let Some(description) = property["description"].as_str() {
                descriptor["description"] = json!(first_line(description));
            }
            let mut x: Vec<String> = known
                .iter()
                .find(|(path, _)| path == name)
                .map(|(_, xs)| xs.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            if x.is_empty() {
                if name == "conditions" {
                    x.push("urn:alm:descriptor:io.kubernetes.conditions".into());
                } else if section == "status" {
                    x.push("urn:alm:descriptor:text".into());
                } else if property["type"] == "boolean" {
                    x.push("urn:alm:descriptor:com.tectonic.ui:booleanSwitch".into());
                } else if let Some(values) = property["enum"].as_array() {
                    x.extend(
                        values
                            .iter()
                            .filter_map(|v| v.as_str())
                            .map(|v| format!("urn:alm:descriptor:com.tectonic.ui:select:{v}")),
                    );
                } else if property["type"] == "string" {
                    x.push("urn:alm:descriptor:com.tectonic.ui:text".into());
                } else if property["type"] == "integer" {
                    x.push("urn:alm:descriptor:com.tectonic.ui:number".into());
                } else {
                    x.push("urn:alm:descriptor:com.tectonic.ui:advanced".into());
                }
            }
            descriptor["x-descriptors"] = json!(x);
            descriptor
        })
        .collect()
}

fn display_name(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase() {
            out.push(' ');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

fn owned_crd(crd: &Value, known: &[(&str, &[&str])]) -> Result<Value, String> {
    let names = &crd["spec"]["names"];
    let kind = names["kind"]
        .as_str()
        .ok_or_else(|| "a CRD without spec.names.kind".to_string())?;
    let version = crd["spec"]["versions"][0]["name"].as_str().unwrap_or("v1");
    let description = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
        .as_str()
        .map(first_line)
        .unwrap_or(kind);
    Ok(json!({
        "name": crd["metadata"]["name"],
        "kind": kind,
        "version": version,
        "displayName": display_name(kind),
        "description": description,
        "specDescriptors": descriptors(crd, "spec", known),
        "statusDescriptors": descriptors(crd, "status", known)
    }))
}

fn yaml_text(value: &Value, header: &str) -> Result<String, String> {
    let body = tvk_api::yaml::to_string(value).map_err(|e| format!("failed to write YAML: {e}"))?;
    Ok(format!("{header}\n{body}"))
}

const HEADER: &str =
    "# generated by cargo xtask generate from hack/xtask and images/images.lock.json — do not edit";

/// `metadata/annotations.yaml` and `bundle.Dockerfile` of a bundle (the same keys).
fn bundle_metadata(spec: BundleSpec) -> Result<Files, String> {
    let channels = crate::catalog::channels_of(env!("CARGO_PKG_VERSION"))?;
    let pairs = [
        (
            "operators.operatorframework.io.bundle.mediatype.v1",
            "registry+v1".to_string(),
        ),
        (
            "operators.operatorframework.io.bundle.manifests.v1",
            "manifests/".to_string(),
        ),
        (
            "operators.operatorframework.io.bundle.metadata.v1",
            "metadata/".to_string(),
        ),
        (
            "operators.operatorframework.io.bundle.package.v1",
            spec.package.to_string(),
        ),
        (
            "operators.operatorframework.io.bundle.channels.v1",
            channels.join(","),
        ),
        (
            "operators.operatorframework.io.bundle.channel.default.v1",
            crate::catalog::DEFAULT_CHANNEL.to_string(),
        ),
        (
            "com.redhat.openshift.versions",
            OPENSHIFT_VERSIONS.to_string(),
        ),
    ];
    let mut annotations = Map::new();
    for (k, v) in &pairs {
        annotations.insert(k.to_string(), json!(v));
    }
    let mut dockerfile = String::from(
        "# generated by cargo xtask generate (hack/xtask/src/bundle.rs) — do not edit\nFROM scratch\n\n",
    );
    for (k, v) in &pairs {
        dockerfile.push_str(&format!("LABEL {k}={v}\n"));
    }
    dockerfile.push_str(&format!(
        "LABEL name=\"{}\" vendor=\"{}\" version=\"{}\" release=\"1\" summary=\"{} OLM bundle\" description=\"{} OLM bundle\"\n\nCOPY manifests /manifests/\nCOPY metadata /metadata/\n",
        spec.image,
        images::VENDOR,
        env!("CARGO_PKG_VERSION"),
        spec.display_name,
        spec.display_name
    ));
    Ok(Files::from([
        (
            PathBuf::from(format!("{}/metadata/annotations.yaml", spec.dir)),
            yaml_text(&json!({"annotations": annotations}), HEADER)?,
        ),
        (
            PathBuf::from(format!("{}/bundle.Dockerfile", spec.dir)),
            dockerfile,
        ),
    ]))
}

const OPERATOR_DESCRIPTION: &str = "Kubernetes-native backup and recovery speaking the TrilioVault for Kubernetes API: the operator installs, upgrades and heals the application from one TrilioVaultManager.

Create one `TrilioVaultManager` and the operator installs the whole backup application
(controllers, admission webhook, data-mover jobs), upgrades it by semantic version and
self-heals it. Volumes are stored as QCOW2 images (full = base image, incremental = overlay)
on an NFS share or an S3 bucket. Existing T4K manifests (Target, Policy, Hook, BackupPlan,
Backup, Restore and their cluster-scoped variants) apply unchanged.

**Install modes.** *AllNamespaces* (the usual choice) watches TrilioVaultManagers everywhere;
*OwnNamespace* watches only the operator's namespace. The operator itself always needs
cluster permissions: it installs the application's CRDs and webhook configurations.

**CRDs.** This bundle owns only the TrilioVaultManager CRD; the operator installs and upgrades
the application's CRDs itself, exactly as on plain Kubernetes.

**Air-gapped clusters.** Every image is listed by digest in relatedImages; mirror the catalog
with `kubectl-tvk mirror`.";

/// The operator bundle: CSV, TVM CRD (written by the `tvm_crd` generator), annotations and
/// bundle.Dockerfile.
pub fn operator_bundle(root: &Path, lock: &ImageLock) -> Result<Files, String> {
    let install = manager_install(lock, InstallKind::Olm)?;
    let tvm_crd = serde_json::to_value(tvk_manager::crd::tvm_crd())
        .map_err(|e| format!("failed to serialise the TVM CRD: {e}"))?;
    let tvm_known: &[(&str, &[&str])] = &[
        (
            "applicationScope",
            &[
                "urn:alm:descriptor:com.tectonic.ui:select:Cluster",
                "urn:alm:descriptor:com.tectonic.ui:select:Namespaced",
            ],
        ),
        (
            "pauseSchedule",
            &["urn:alm:descriptor:com.tectonic.ui:booleanSwitch"],
        ),
        (
            "dataJobResources",
            &["urn:alm:descriptor:com.tectonic.ui:resourceRequirements"],
        ),
        (
            "metadataJobResources",
            &["urn:alm:descriptor:com.tectonic.ui:resourceRequirements"],
        ),
        (
            "targetBrowserResources",
            &["urn:alm:descriptor:com.tectonic.ui:resourceRequirements"],
        ),
        (
            "nodeSelector",
            &["urn:alm:descriptor:com.tectonic.ui:nodeSelector"],
        ),
        (
            "tolerations",
            &["urn:alm:descriptor:io.kubernetes:tolerations"],
        ),
        (
            "affinity",
            &["urn:alm:descriptor:com.tectonic.ui:nodeAffinity"],
        ),
    ];
    let mut example = example_tvm()?;
    if let Some(meta) = example["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    let webhooks: Vec<Value> = MANAGER_WEBHOOKS
        .iter()
        .map(|w| {
            json!({
                "type": if w.mutating { "MutatingAdmissionWebhook" } else { "ValidatingAdmissionWebhook" },
                "generateName": w.name,
                "deploymentName": MANAGER,
                "containerPort": 443,
                "targetPort": MANAGER_WEBHOOK_PORT,
                "webhookPath": w.path,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "rules": webhook_rules()
            })
        })
        .collect();
    let csv_value = csv(
        root,
        lock,
        CsvInput {
            spec: OPERATOR,
            description: OPERATOR_DESCRIPTION,
            keywords: &[
                "backup",
                "restore",
                "disaster recovery",
                "trilio",
                "qcow2",
                "s3",
                "nfs",
            ],
            install_modes: [
                ("OwnNamespace", true),
                ("SingleNamespace", false),
                ("MultiNamespace", false),
                ("AllNamespaces", true),
            ],
            owned: vec![owned_crd(&tvm_crd, tvm_known)?],
            alm_examples: vec![example],
            permissions: vec![
                json!({"serviceAccountName": MANAGER, "rules": install.namespace_rules}),
            ],
            cluster_permissions: vec![
                json!({"serviceAccountName": MANAGER, "rules": install.cluster_rules}),
            ],
            deployments: vec![json!({
                "name": MANAGER,
                "label": {"app.kubernetes.io/name": MANAGER},
                "spec": install.deployment_spec
            })],
            webhooks,
            related_images: install.related_images.clone(),
            container_image: lock.reference(images::manager_image().name)?,
        },
    )?;
    let mut files = bundle_metadata(OPERATOR)?;
    files.insert(
        PathBuf::from("bundle/manifests/tvk-operator.clusterserviceversion.yaml"),
        yaml_text(&csv_value, HEADER)?,
    );
    Ok(files)
}

/// `deploy/tvk-operator.yaml`: namespace, TVM CRD, RBAC, the manager, its webhook Service and
/// configurations — from [`manager_install`], like the CSV.
pub fn plain_install(lock: &ImageLock) -> Result<Files, String> {
    let install = manager_install(lock, InstallKind::Plain)?;
    let ns = OPERATOR_NAMESPACE;
    let labels =
        json!({"app.kubernetes.io/name": MANAGER, "app.kubernetes.io/part-of": "triliovault"});
    let tvm_crd = serde_json::to_value(tvk_manager::crd::tvm_crd())
        .map_err(|e| format!("failed to serialise the TVM CRD: {e}"))?;
    let webhook_entry = |w: &ManagerWebhook| {
        json!({
            "name": w.name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
            "clientConfig": {"service": {"name": MANAGER_WEBHOOK_SERVICE, "namespace": ns, "path": w.path, "port": 443}},
            "rules": webhook_rules()
        })
    };
    let configuration = |mutating: bool| {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": if mutating { "MutatingWebhookConfiguration" } else { "ValidatingWebhookConfiguration" },
            "metadata": {"name": if mutating { "tvk-manager-mutating" } else { "tvk-manager-validating" }, "labels": labels},
            "webhooks": MANAGER_WEBHOOKS.iter().filter(|w| w.mutating == mutating).map(webhook_entry).collect::<Vec<_>>()
        })
    };
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}}),
        tvm_crd,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": MANAGER, "namespace": ns, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": MANAGER, "labels": labels}, "rules": install.cluster_rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": MANAGER, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": MANAGER},
            "subjects": [{"kind": "ServiceAccount", "name": MANAGER, "namespace": ns}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": MANAGER, "namespace": ns, "labels": labels}, "rules": install.namespace_rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": MANAGER, "namespace": ns, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": MANAGER},
            "subjects": [{"kind": "ServiceAccount", "name": MANAGER, "namespace": ns}]}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": MANAGER_WEBHOOK_SERVICE, "namespace": ns, "labels": labels},
            "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": MANAGER},
                "ports": [{"name": "webhook", "port": 443, "targetPort": "webhook"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": MANAGER, "namespace": ns, "labels": labels},
            "spec": install.deployment_spec}),
        configuration(true),
        configuration(false),
    ];
    let file = "deploy/tvk-operator.yaml";
    let mut used = Vec::new();
    for object in &objects {
        collect_images(object, &mut used);
    }
    for image in &used {
        check_digest_reference(file, image)?;
    }
    let body = tvk_api::yaml::to_multi_document(&objects)
        .map_err(|e| format!("failed to write {file}: {e}"))?;
    Ok(Files::from([(
        PathBuf::from(file),
        format!(
            "{HEADER}\n# Plain-Kubernetes install of the operator: kubectl apply --server-side -f {file}\n# (uninstall: see deploy/README.md)\n{body}"
        ),
    )]))
}

const APPLICATION_DESCRIPTION: &str =
    "The TVK-RS backup application installed directly by OLM, without the TVK-RS operator.

This package installs the application itself (control plane, admission webhook, CRDs of
Target, Policy, Hook, BackupPlan, Backup, Restore and their cluster-scoped variants) with OLM
as its operator: OLM applies the Deployments, RBAC and CRDs, provides the webhook
certificates and upgrades along the catalog's channels.

Pick it when OLM should be the only operator in the cluster and the defaults suit you.
Pick the *tvk-operator* package instead when you want a TrilioVaultManager to tune the
installation (helmValues, componentConfiguration, scheduling, log levels), namespaced
installs, or the same behaviour as on plain Kubernetes. Never install both in one cluster:
they own the same CRDs.";

/// The application bundle, from what `tvk_manager` renders (cluster scope, default values,
/// images by digest).
pub fn application_bundle(root: &Path, lock: &ImageLock) -> Result<Files, String> {
    let related: Vec<(String, String)> = images::app_images()
        .filter_map(|i| i.related_env.map(|env| (env, i.name)))
        .map(|(env, name)| lock.reference(name).map(|r| (env.to_string(), r)))
        .collect::<Result<_, _>>()?;
    let objects = render_application("Cluster", &related)?;
    let dir = APPLICATION.dir;
    let mut files = bundle_metadata(APPLICATION)?;
    let mut owned = Vec::new();
    let mut deployments = Vec::new();
    let mut permissions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut cluster_permissions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut roles: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    let mut bindings = Vec::new();
    let mut webhooks = Vec::new();
    let mut webhook_deployments = BTreeMap::new();
    // Services that front webhooks are replaced by OLM's own (`<deployment>-service`).
    let mut webhook_services = BTreeSet::new();
    let mut extra = Vec::new();
    for object in &objects {
        if object["kind"] == "ValidatingWebhookConfiguration"
            || object["kind"] == "MutatingWebhookConfiguration"
        {
            for hook in object["webhooks"].as_array().into_iter().flatten() {
                if let Some(svc) = hook["clientConfig"]["service"]["name"].as_str() {
                    webhook_services.insert(svc.to_string());
                }
            }
        }
    }
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "CustomResourceDefinition" => {
                owned.push(owned_crd(&object, &[])?);
                let plural = object["spec"]["names"]["plural"].as_str().unwrap_or(&name);
                files.insert(
                    PathBuf::from(format!("{dir}/manifests/{GROUP}_{plural}.yaml")),
                    yaml_text(&strip(object.clone()), HEADER)?,
                );
            }
            "Deployment" => {
                let mut spec = object["spec"].clone();
                drop_serving_cert_volume(&mut spec);
                deployments.push(json!({
                    "name": name,
                    "label": object["metadata"]["labels"].clone(),
                    "spec": spec
                }));
            }
            "Role" | "ClusterRole" => {
                roles.insert(
                    (kind.clone(), name),
                    object["rules"].as_array().cloned().unwrap_or_default(),
                );
            }
            "RoleBinding" | "ClusterRoleBinding" => bindings.push(object),
            "ServiceAccount" | "Namespace" => {} // OLM creates the service accounts it binds.
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
                for hook in object["webhooks"].as_array().into_iter().flatten() {
                    let service = hook["clientConfig"]["service"]["name"]
                        .as_str()
                        .unwrap_or_default();
                    webhook_deployments.insert(service.to_string(), ());
                    let mut def = json!({
                        "type": if kind == "ValidatingWebhookConfiguration" { "ValidatingAdmissionWebhook" } else { "MutatingAdmissionWebhook" },
                        "generateName": hook["name"],
                        "deploymentName": service,
                        "containerPort": 443,
                        "targetPort": 9443,
                        "webhookPath": hook["clientConfig"]["service"]["path"],
                        "admissionReviewVersions": hook["admissionReviewVersions"],
                        "sideEffects": hook["sideEffects"],
                        "failurePolicy": hook["failurePolicy"],
                        "timeoutSeconds": hook["timeoutSeconds"],
                        "rules": hook["rules"]
                    });
                    if let Some(selector) = hook.get("objectSelector") {
                        def["objectSelector"] = selector.clone();
                    }
                    webhooks.push(def);
                }
            }
            "Service" if webhook_services.contains(&name) => {}
            "ConfigMap" | "Service" | "PodDisruptionBudget" | "ServiceMonitor" | "Secret" => {
                extra.push(object);
            }
            other => {
                return Err(format!(
                    "templates/: the application renders a {other} ({name}), which an OLM bundle cannot ship (rule: bundle objects are CSV-managed or in OLM's supported kinds); extend hack/xtask/src/bundle.rs"
                ));
            }
        }
    }
    // Roles → permissions of the service accounts their bindings name.
    for binding in &bindings {
        let role_kind = binding["roleRef"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let role_name = binding["roleRef"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let rules = roles
            .get(&(role_kind.clone(), role_name.clone()))
            .ok_or_else(|| {
                format!(
                    "templates/: {} binds {role_kind} {role_name}, which is not rendered",
                    binding["metadata"]["name"]
                )
            })?;
        for subject in binding["subjects"].as_array().into_iter().flatten() {
            let Some(sa) = subject["name"].as_str() else {
                continue;
            };
            let target = if role_kind == "ClusterRole" {
                &mut cluster_permissions
            } else {
                &mut permissions
            };
            target
                .entry(sa.to_string())
                .or_default()
                .extend(rules.iter().cloned());
        }
    }
    for (service, ()) in &webhook_deployments {
        if !deployments.iter().any(|d| d["name"] == service.as_str()) {
            return Err(format!(
                "templates/: webhook Service {service} has no Deployment of the same name; OLM's webhookdefinitions need deploymentName (rule: webhook → deployment)"
            ));
        }
    }
    let as_list = |m: BTreeMap<String, Vec<Value>>| -> Vec<Value> {
        m.into_iter()
            .map(|(sa, rules)| json!({"serviceAccountName": sa, "rules": rules}))
            .collect()
    };
    let mut related: Vec<(String, String)> = Vec::new();
    for image in images::app_images() {
        related.push((image.name.to_string(), lock.reference(image.name)?));
    }
    let examples = app_examples(root, &owned)?;
    let csv_value = csv(
        root,
        lock,
        CsvInput {
            spec: APPLICATION,
            description: APPLICATION_DESCRIPTION,
            keywords: &["backup", "restore", "disaster recovery", "trilio", "qcow2"],
            install_modes: [
                ("OwnNamespace", false),
                ("SingleNamespace", false),
                ("MultiNamespace", false),
                ("AllNamespaces", true),
            ],
            owned,
            alm_examples: examples,
            permissions: as_list(permissions),
            cluster_permissions: as_list(cluster_permissions),
            deployments,
            webhooks,
            related_images: related,
            container_image: lock.reference("tvk-control-plane")?,
        },
    )?;
    files.insert(
        PathBuf::from(format!(
            "{dir}/manifests/{}.clusterserviceversion.yaml",
            APPLICATION.package
        )),
        yaml_text(&csv_value, HEADER)?,
    );
    for object in extra {
        let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        files.insert(
            PathBuf::from(format!("{dir}/manifests/{name}.{kind}.yaml")),
            yaml_text(&strip(object), HEADER)?,
        );
    }
    Ok(files)
}

/// Removes what OLM sets itself (namespace) and the manager's inventory labels/annotations.
fn strip(mut object: Value) -> Value {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("namespace");
        meta.remove("ownerReferences");
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(tvk_manager::render::LABEL_MANAGED_BY);
            labels.remove(tvk_manager::render::LABEL_INSTANCE);
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(tvk_manager::render::ANNOTATION_HASH);
            annotations.remove(tvk_manager::render::ANNOTATION_OWNER_NAMESPACE);
        }
        if meta
            .get("labels")
            .is_some_and(|l| l.as_object().is_some_and(|m| m.is_empty()))
        {
            meta.remove("labels");
        }
        if meta
            .get("annotations")
            .is_some_and(|l| l.as_object().is_some_and(|m| m.is_empty()))
        {
            meta.remove("annotations");
        }
    }
    object
}

/// OLM mounts the webhook certificate it generates at /tmp/k8s-webhook-server/serving-certs;
/// the manager's Secret volume at that path would collide with it.
fn drop_serving_cert_volume(spec: &mut Value) {
    let pod = &mut spec["template"]["spec"];
    let mut dropped = BTreeSet::new();
    if let Some(volumes) = pod["volumes"].as_array_mut() {
        volumes.retain(|v| {
            let secret = v.get("secret").is_some();
            if secret && let Some(n) = v["name"].as_str() {
                dropped.insert(n.to_string());
            }
            !secret
        });
    }
    for container in pod["containers"].as_array_mut().into_iter().flatten() {
        if let Some(mounts) = container["volumeMounts"].as_array_mut() {
            mounts.retain(|m| !m["name"].as_str().is_some_and(|n| dropped.contains(n)));
        }
    }
}

/// One example per owned kind, from `examples/*.yaml` (first file in name order that has it).
fn app_examples(root: &Path, owned: &[Value]) -> Result<Vec<Value>, String> {
    let dir = root.join("examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("failed to list examples/: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    let mut by_kind: BTreeMap<String, Value> = BTreeMap::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        let documents = tvk_api::yaml::parse_documents(&text, &tvk_api::yaml::Limits::default())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for document in documents {
            let mut value = document.value;
            let Some(kind) = value["kind"].as_str().map(String::from) else {
                continue;
            };
            if !value["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with(GROUP))
            {
                continue;
            }
            if let Some(meta) = value["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            by_kind.entry(kind).or_insert(value);
        }
    }
    owned
        .iter()
        .map(|crd| {
            let kind = crd["kind"].as_str().unwrap_or_default();
            by_kind.get(kind).cloned().ok_or_else(|| {
                format!("examples/: no example of {kind} (rule: exactly one alm-example per owned kind); add one")
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A digest record with made-up (well-formed) digests.
    pub(crate) fn fake_lock() -> ImageLock {
        let digest = |i: usize| format!("sha256:{:064x}", i + 1);
        let mut lock = ImageLock {
            comment: String::new(),
            version: env!("CARGO_PKG_VERSION").into(),
            created: "2026-01-01T00:00:00Z".into(),
            registry: "registry.example/tvk".into(),
            images: Default::default(),
            bundles: Default::default(),
            catalog: Default::default(),
        };
        for (i, image) in images::IMAGES.iter().enumerate() {
            lock.images.insert(image.name.into(), digest(i));
        }
        for (i, b) in BUNDLES.iter().enumerate() {
            lock.bundles.insert(b.image.into(), digest(100 + i));
        }
        lock
    }

    fn parse(files: &Files, path: &str) -> Value {
        let text = files
            .get(Path::new(path))
            .unwrap_or_else(|| panic!("{path} not generated"));
        tvk_api::yaml::parse_single(text, &tvk_api::yaml::Limits::default()).unwrap()
    }

    fn rule_covers(rules: &[Value], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            let has =
                |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v || x == "*");
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    }

    #[test]
    fn operator_csv_pins_every_image_by_digest_and_passes_related_images() {
        let root = crate::repo_root();
        let lock = fake_lock();
        let files = operator_bundle(&root, &lock).unwrap();
        let csv = parse(
            &files,
            "bundle/manifests/tvk-operator.clusterserviceversion.yaml",
        );
        assert_eq!(csv["metadata"]["name"], "tvk-operator.v0.1.0");
        let related: Vec<&str> = csv["spec"]["relatedImages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["image"].as_str().unwrap())
            .collect();
        let container = &csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]
            ["containers"][0];
        for image in images::app_images() {
            let reference = lock.reference(image.name).unwrap();
            assert!(
                related.contains(&reference.as_str()),
                "{reference} not related"
            );
            let env = container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == image.related_env.unwrap())
                .unwrap_or_else(|| panic!("no {:?}", image.related_env));
            assert_eq!(env["value"], reference.as_str());
        }
        assert_eq!(
            container["image"],
            lock.reference("tvk-manager").unwrap().as_str()
        );
        assert_eq!(
            csv["metadata"]["annotations"]["containerImage"],
            container["image"]
        );
        for key in [
            "alm-examples",
            "capabilities",
            "categories",
            "createdAt",
            "support",
            "repository",
            "olm.skipRange",
            "operatorframework.io/suggested-namespace",
            "operators.openshift.io/valid-subscription",
            "features.operators.openshift.io/disconnected",
            "features.operators.openshift.io/proxy-aware",
        ] {
            assert!(
                csv["metadata"]["annotations"][key].is_string(),
                "annotation {key} missing"
            );
        }
        assert_eq!(
            csv["metadata"]["annotations"]["features.operators.openshift.io/proxy-aware"],
            "true"
        );
        let examples: Vec<Value> = serde_json::from_str(
            csv["metadata"]["annotations"]["alm-examples"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(examples.len(), 1);
        assert_eq!(examples[0]["kind"], "TrilioVaultManager");
        assert_eq!(
            csv["metadata"]["annotations"]["olm.skipRange"],
            ">=0.0.0 <0.1.0"
        );
        assert!(container["livenessProbe"]["httpGet"]["path"] == "/healthz");
        assert!(container["readinessProbe"]["httpGet"]["path"] == "/readyz");
        assert!(container["resources"]["requests"]["memory"].is_string());
        let hooks = csv["spec"]["webhookdefinitions"].as_array().unwrap();
        assert_eq!(hooks.len(), 2);
        for hook in hooks {
            assert_eq!(hook["targetPort"], MANAGER_WEBHOOK_PORT);
            assert_eq!(hook["deploymentName"], MANAGER);
            assert_eq!(hook["failurePolicy"], "Fail");
        }
        let descriptors = csv["spec"]["customresourcedefinitions"]["owned"][0]["specDescriptors"]
            .as_array()
            .unwrap();
        assert!(descriptors.iter().any(|d| d["path"] == "applicationScope"));
        assert!(
            csv["spec"]["customresourcedefinitions"]["owned"][0]["statusDescriptors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["path"] == "conditions")
        );
        let annotations = parse(&files, "bundle/metadata/annotations.yaml");
        assert_eq!(
            annotations["annotations"]["operators.operatorframework.io.bundle.channels.v1"],
            "stable,stable-0.1"
        );
        let dockerfile = &files[Path::new("bundle/bundle.Dockerfile")];
        for (key, value) in annotations["annotations"].as_object().unwrap() {
            assert!(
                dockerfile.contains(&format!("LABEL {key}={}", value.as_str().unwrap())),
                "bundle.Dockerfile lacks {key}"
            );
        }
    }

    #[test]
    fn manager_holds_every_rule_the_templates_grant_in_both_scopes() {
        let rules = manager_cluster_rules().unwrap();
        for scope in ["Cluster", "Namespaced"] {
            for object in render_application(scope, &[]).unwrap() {
                let kind = object["kind"].as_str().unwrap();
                let (_, known) =
                    tvk_manager::render::known_kind(object["apiVersion"].as_str().unwrap(), kind)
                        .unwrap();
                for verb in ["get", "list", "watch", "create", "patch", "delete"] {
                    assert!(
                        rule_covers(&rules, known.group, known.plural, verb),
                        "manager cannot {verb} {}",
                        known.plural
                    );
                }
                if kind == "Role" || kind == "ClusterRole" {
                    for rule in object["rules"].as_array().unwrap() {
                        for g in rule["apiGroups"].as_array().unwrap() {
                            for r in rule["resources"].as_array().unwrap() {
                                for v in rule["verbs"].as_array().unwrap() {
                                    assert!(
                                        rule_covers(
                                            &rules,
                                            g.as_str().unwrap(),
                                            r.as_str().unwrap(),
                                            v.as_str().unwrap()
                                        ),
                                        "{scope}: manager does not hold {v} {g}/{r} that it grants"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(rule_covers(
            &rules,
            GROUP,
            "triliovaultmanagers/status",
            "patch"
        ));
    }

    #[test]
    fn plain_install_and_csv_come_from_one_source() {
        let root = crate::repo_root();
        let lock = fake_lock();
        let csv = parse(
            &operator_bundle(&root, &lock).unwrap(),
            "bundle/manifests/tvk-operator.clusterserviceversion.yaml",
        );
        let plain = &plain_install(&lock).unwrap()[Path::new("deploy/tvk-operator.yaml")];
        let objects: Vec<Value> =
            tvk_api::yaml::parse_documents(plain, &tvk_api::yaml::Limits::default())
                .unwrap()
                .into_iter()
                .map(|d| d.value)
                .collect();
        let find = |kind: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind}"))
        };
        assert_eq!(
            find("ClusterRole")["rules"],
            csv["spec"]["install"]["spec"]["clusterPermissions"][0]["rules"]
        );
        assert_eq!(
            find("Role")["rules"],
            csv["spec"]["install"]["spec"]["permissions"][0]["rules"]
        );
        let plain_container = &find("Deployment")["spec"]["template"]["spec"]["containers"][0];
        let csv_container = &csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]
            ["containers"][0];
        assert_eq!(plain_container["image"], csv_container["image"]);
        assert_eq!(plain_container["ports"], csv_container["ports"]);
        assert!(
            plain_container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "TVK_WEBHOOK_SELF_SIGNED" && e["value"] == "true")
        );
        for (kind, name) in [
            ("ValidatingWebhookConfiguration", "tvk-manager-validating"),
            ("MutatingWebhookConfiguration", "tvk-manager-mutating"),
        ] {
            let config = find(kind);
            assert_eq!(config["metadata"]["name"], name);
            let hook = &config["webhooks"][0];
            assert_eq!(
                hook["clientConfig"]["service"]["name"],
                MANAGER_WEBHOOK_SERVICE
            );
            assert_eq!(hook["clientConfig"]["service"]["port"], 443);
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(hook["sideEffects"], "None");
        }
        let service = find("Service");
        assert_eq!(service["spec"]["ports"][0]["port"], 443);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
        assert!(
            find("CustomResourceDefinition")["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("triliovaultmanagers.")
        );
    }

    #[test]
    fn application_bundle_is_the_rendered_application() {
        let root = crate::repo_root();
        let lock = fake_lock();
        let files = application_bundle(&root, &lock).unwrap();
        let csv = parse(
            &files,
            "bundle-application/manifests/tvk-application.clusterserviceversion.yaml",
        );
        let related: Vec<(String, String)> = images::app_images()
            .map(|i| {
                (
                    i.related_env.unwrap().to_string(),
                    lock.reference(i.name).unwrap(),
                )
            })
            .collect();
        let rendered = render_application("Cluster", &related).unwrap();
        let of_kind = |k: &'static str| rendered.iter().filter(move |o| o["kind"] == k);
        let deployments: Vec<&Value> = of_kind("Deployment").collect();
        assert_eq!(
            csv["spec"]["install"]["spec"]["deployments"]
                .as_array()
                .unwrap()
                .len(),
            deployments.len()
        );
        assert_eq!(
            csv["spec"]["customresourcedefinitions"]["owned"]
                .as_array()
                .unwrap()
                .len(),
            of_kind("CustomResourceDefinition").count()
        );
        let hooks: usize = of_kind("ValidatingWebhookConfiguration")
            .chain(of_kind("MutatingWebhookConfiguration"))
            .map(|c| c["webhooks"].as_array().unwrap().len())
            .sum();
        assert_eq!(
            csv["spec"]["webhookdefinitions"].as_array().unwrap().len(),
            hooks
        );
        for crd in of_kind("CustomResourceDefinition") {
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap();
            assert!(files.contains_key(Path::new(&format!(
                "bundle-application/manifests/{GROUP}_{plural}.yaml"
            ))));
        }
        let examples: Vec<Value> = serde_json::from_str(
            csv["metadata"]["annotations"]["alm-examples"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(examples.len(), 9);
        // OLM mounts the webhook certificate; no Secret volume may collide with it.
        let text = tvk_api::yaml::to_string(&csv["spec"]["install"]).unwrap();
        assert!(!text.contains("secretName"), "{text}");
        let mut used = Vec::new();
        collect_images(&csv["spec"]["install"], &mut used);
        assert!(!used.is_empty());
        for image in used {
            assert!(
                image.starts_with("registry.example/tvk/") && image.contains("@sha256:"),
                "{image}"
            );
        }
        // Every ClusterRole rendered became clusterPermissions of a bound service account.
        let sas: Vec<&str> = csv["spec"]["install"]["spec"]["clusterPermissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["serviceAccountName"].as_str().unwrap())
            .collect();
        assert!(sas.contains(&"tvk-control-plane"), "{sas:?}");
    }

    #[test]
    fn missing_or_broken_icon_is_refused_naming_file_and_rule() {
        let dir = tvk_testkit::TempDir::new("xtask-icon").unwrap();
        let err = icon(dir.path()).unwrap_err();
        assert!(err.contains(ICON_PATH) && err.contains("rule:"), "{err}");
        std::fs::create_dir_all(dir.path().join("bundle")).unwrap();
        std::fs::write(dir.path().join(ICON_PATH), "not an image").unwrap();
        let err = icon(dir.path()).unwrap_err();
        assert!(err.contains("not an SVG"), "{err}");
        std::fs::write(dir.path().join(ICON_PATH), "<svg/>").unwrap();
        assert_eq!(icon(dir.path()).unwrap()["mediatype"], "image/svg+xml");
    }

    #[test]
    fn tag_references_and_unlisted_images_are_refused() {
        let digest = format!("r/a@sha256:{}", "a".repeat(64));
        let csv = |image: &str, related: &str| {
            json!({"spec": {
                "relatedImages": [{"name": "a", "image": related}],
                "install": {"spec": {"deployments": [{"spec": {"template": {"spec": {
                    "containers": [{"image": image}]}}}}]}}
            }})
        };
        assert!(check_images("f.yaml", &csv(&digest, &digest)).is_ok());
        let err = check_images("f.yaml", &csv("r/a:1.0", "r/a:1.0")).unwrap_err();
        assert!(
            err.contains("f.yaml") && err.contains("no image reference by tag"),
            "{err}"
        );
        let other = format!("r/b@sha256:{}", "b".repeat(64));
        let err = check_images("f.yaml", &csv(&other, &digest)).unwrap_err();
        assert!(err.contains("missing from spec.relatedImages"), "{err}");
        // A RELATED_IMAGE_* variable counts as a use.
        let mut with_env = csv(&digest, &digest);
        with_env["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]["containers"]
            [0]["env"] = json!([{"name": "RELATED_IMAGE_X", "value": other}]);
        assert!(check_images("f.yaml", &with_env).is_err());
        assert!(check_digest_reference("f", "r/a@sha256:abc").is_err());
    }

    #[test]
    fn broken_alm_examples_are_refused() {
        let owned = vec![json!({"kind": "Target"}), json!({"kind": "Policy"})];
        let target = json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Target", "metadata": {"name": "t"}});
        let policy = json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Policy", "metadata": {"name": "p"}});
        assert!(alm_examples_text("f", &owned, &[target.clone(), policy.clone()]).is_ok());
        let err = alm_examples_text("f", &owned, std::slice::from_ref(&target)).unwrap_err();
        assert!(
            err.contains("0 examples of Policy") && err.contains("rule:"),
            "{err}"
        );
        let err = alm_examples_text(
            "f",
            &owned,
            &[target.clone(), target.clone(), policy.clone()],
        )
        .unwrap_err();
        assert!(err.contains("2 examples of Target"), "{err}");
        let err = alm_examples_text("f", &owned, &[target.clone(), json!({"kind": "Policy"})])
            .unwrap_err();
        assert!(err.contains("not an object of"), "{err}");
        let hook = json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "Hook", "metadata": {"name": "h"}});
        let err = alm_examples_text("f", &owned, &[target, policy, hook]).unwrap_err();
        assert!(err.contains("not an owned kind"), "{err}");
        let bad_tvm = json!({"apiVersion": "triliovault.trilio.io/v1", "kind": "TrilioVaultManager",
            "metadata": {"name": "x", "namespace": "n"}, "spec": {"applicationScope": "Everywhere"}});
        let err = validate_tvm(&bad_tvm, TVM_EXAMPLE).unwrap_err();
        assert!(
            err.contains(TVM_EXAMPLE) && err.contains("alm-examples"),
            "{err}"
        );
    }
}
