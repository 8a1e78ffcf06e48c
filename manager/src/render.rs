//! Rendering: templates (compiled into the binary, or a directory for development) + a TVM →
//! Kubernetes objects in apply order.
//!
//! The handlebars registry is strict (a missing value is an error, not an empty string) and
//! escapes nothing (the output is YAML, not HTML). Helpers keep the output YAML-safe: `json`
//! and `quote` write a JSON scalar (valid YAML), `toYaml` a block to place with `nindent`,
//! `default`, `b64enc`, `indent`/`nindent`, plus the built-in `eq`/`ne`/`and`/`or`/`not`.
//! Templates are the `*.yaml.hbs` files (rendered in name order), `_*.hbs` files are partials,
//! `values.yaml` holds the defaults and `crds/*.yaml` the generated application CRDs (not
//! templated: parsed once when the [`Renderer`] is built). Every rendered document is parsed back
//! into a [`DynamicObject`] before anything is applied; errors name the template and line.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderErrorReason, ScopedJson,
    handlebars_helper,
};
use include_dir::{Dir, include_dir};
use kube::{ResourceExt, api::DynamicObject};
use serde_json::{Value, json};
use tvk_api::yaml::{self, Limits, YamlError};

use crate::{
    tvm::TrilioVaultManager,
    values::{self, Override, Values, ValuesError},
};

/// Templates, defaults and CRDs shipped inside the binary (air-gapped installs need no files).
static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../templates");

/// Version of the application this manager ships and installs.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Label: who manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: which TVM installed the object.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label: the product.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGER_NAME: &str = "tvk-manager";
/// Value of [`LABEL_PART_OF`].
pub const PART_OF: &str = "triliovault";
/// Annotation: digest of the object as rendered, to skip writes when nothing changed.
pub const ANNOTATION_HASH: &str = "triliovault.trilio.io/rendered-hash";
/// Annotation: the namespace of the TVM that installed a cluster-scoped object.
pub const ANNOTATION_OWNER_NAMESPACE: &str = "triliovault.trilio.io/owner-namespace";

/// One kind the manager may install: apply rank is its position in [`APPLY_ORDER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownKind {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> KnownKind {
    KnownKind {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

/// Every kind the templates may render, in apply order: CRDs first, RBAC before the workloads
/// that use it, config before the pods that read it, webhook configurations last (so the
/// webhook serves before the apiserver calls it). It is also the allow-list of prune.
pub const APPLY_ORDER: &[KnownKind] = &[
    kind(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    kind("", "v1", "Namespace", "namespaces", false),
    kind("", "v1", "ServiceAccount", "serviceaccounts", true),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    kind("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    kind("", "v1", "Secret", "secrets", true),
    kind("", "v1", "ConfigMap", "configmaps", true),
    kind("", "v1", "Service", "services", true),
    kind("apps", "v1", "Deployment", "deployments", true),
    kind(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    kind("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    kind(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
        "servicemonitors",
        true,
    ),
    kind(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
    kind(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    ),
];

/// The known kind of `apiVersion` + `kind`, if any.
pub fn known_kind(api_version: &str, kind: &str) -> Option<(usize, &'static KnownKind)> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    APPLY_ORDER
        .iter()
        .enumerate()
        .find(|(_, k)| k.group == group && k.version == version && k.kind == kind)
}

/// The application's kinds, for webhook configurations and RBAC.
const APP_KINDS: &[(&str, &str, bool)] = &[
    ("Target", "targets", true),
    ("Policy", "policies", true),
    ("Hook", "hooks", true),
    ("BackupPlan", "backupplans", true),
    ("ClusterBackupPlan", "clusterbackupplans", false),
    ("Backup", "backups", true),
    ("ClusterBackup", "clusterbackups", false),
    ("Restore", "restores", true),
    ("ClusterRestore", "clusterrestores", false),
];

/// Rendering failed: what, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template directory could not be read.
    #[error("failed to read templates from {path}: {source}")]
    ReadTemplates {
        /// Path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A template is not valid handlebars.
    #[error("failed to compile template {name}: {source}")]
    Compile {
        /// Template file.
        name: String,
        /// The parser's error (with line and column).
        #[source]
        source: Box<handlebars::TemplateError>,
    },
    /// Rendering a template failed (missing value in strict mode, bad helper argument, ...).
    #[error("failed to render template {template}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Render {
        /// Template file.
        template: String,
        /// Line in the template, when known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
    /// A template rendered text that is not YAML.
    #[error("template {template} rendered invalid YAML: {source}{}", snippet.as_ref().map(|s| format!("; rendered line: {s:?}")).unwrap_or_default())]
    Yaml {
        /// Template file.
        template: String,
        /// The offending rendered line.
        snippet: Option<String>,
        /// The parser's error.
        #[source]
        source: YamlError,
    },
    /// A rendered document is not a Kubernetes object the manager may apply.
    #[error("template {template} document {document}: {message}")]
    Object {
        /// Template file.
        template: String,
        /// One-based document number in the template's output.
        document: usize,
        /// What is wrong.
        message: String,
    },
    /// `templates/values.yaml` is unreadable.
    #[error("failed to read values.yaml: {0}")]
    Defaults(#[source] YamlError),
    /// The values could not be merged.
    #[error(transparent)]
    Values(#[from] ValuesError),
    /// The TVM lacks what rendering needs.
    #[error("the TrilioVaultManager {0}")]
    Tvm(String),
    /// Two templates render the same object.
    #[error("{kind} {name} is rendered twice (templates {first} and {second}); rename one")]
    Duplicate {
        /// Kind.
        kind: String,
        /// Namespace/name.
        name: String,
        /// First template.
        first: String,
        /// Second template.
        second: String,
    },
}

/// The files rendering reads: templates, partials, defaults, CRDs (relative path → text).
#[derive(Debug, Clone, Default)]
pub struct TemplateSource {
    files: BTreeMap<String, String>,
}

impl TemplateSource {
    /// The set compiled into the binary.
    pub fn embedded() -> Self {
        let mut files = BTreeMap::new();
        collect_embedded(&EMBEDDED, &mut files);
        Self { files }
    }

    /// A directory laid out like `templates/` (development override).
    pub fn from_dir(dir: &Path) -> Result<Self, RenderError> {
        let mut files = BTreeMap::new();
        collect_dir(dir, dir, &mut files)?;
        Ok(Self { files })
    }

    /// The same set without the generated CRDs (golden tests stay independent of CRD changes).
    pub fn without_crds(mut self) -> Self {
        self.files.retain(|path, _| !path.starts_with("crds/"));
        self
    }

    /// Adds or replaces a file (tests, upgrades from an older template set).
    pub fn with_file(mut self, path: &str, text: &str) -> Self {
        self.files.insert(path.to_string(), text.to_string());
        self
    }
}

fn collect_embedded(dir: &Dir<'_>, out: &mut BTreeMap<String, String>) {
    for file in dir.files() {
        if let Some(text) = file.contents_utf8() {
            out.insert(
                file.path().to_string_lossy().replace('\\', "/"),
                text.to_string(),
            );
        }
    }
    for sub in dir.dirs() {
        collect_embedded(sub, out);
    }
}

fn collect_dir(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
) -> Result<(), RenderError> {
    let read_err = |source| RenderError::ReadTemplates {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            collect_dir(root, &path, out)?;
        } else {
            let text =
                std::fs::read_to_string(&path).map_err(|source| RenderError::ReadTemplates {
                    path: path.clone(),
                    source,
                })?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel, text);
        }
    }
    Ok(())
}

/// Inputs of a render besides the TVM.
#[derive(Debug, Clone, Default)]
pub struct RenderInputs {
    /// `RELATED_IMAGE_*` variables that are set (name, image reference).
    pub related_images: Vec<(String, String)>,
    /// `group/version`s the cluster serves (only optional APIs matter: `monitoring.coreos.com/v1`).
    pub api_versions: Vec<String>,
    /// PEM CA bundle of the webhook serving certificate, when known.
    pub ca_bundle: Option<String>,
    /// `--set` overrides (offline render only).
    pub overrides: Vec<Override>,
}

impl RenderInputs {
    /// The `RELATED_IMAGE_*` and proxy variables of this process's environment.
    pub fn related_images_from_env() -> Vec<(String, String)> {
        values::RELATED_IMAGES
            .iter()
            .chain(values::PROXY_ENV)
            .filter_map(|(name, _)| {
                std::env::var(name)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| (name.to_string(), v))
            })
            .collect()
    }
}

/// The rendered application, in apply order.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Objects in apply order.
    pub objects: Vec<DynamicObject>,
    /// The merged values they were rendered from.
    pub values: Values,
    /// Digest of every object (changes exactly when what is applied changes).
    pub digest: String,
}

impl Manifest {
    /// Multi-document YAML of every object, in apply order.
    pub fn to_yaml(&self) -> Result<String, YamlError> {
        let values: Vec<Value> = self
            .objects
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .collect();
        yaml::to_multi_document(&values)
    }

    /// `(file name, YAML)` per object, names prefixed with the apply position.
    pub fn to_files(&self) -> Result<Vec<(String, String)>, YamlError> {
        self.objects
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let kind = o
                    .types
                    .as_ref()
                    .map(|t| t.kind.to_lowercase())
                    .unwrap_or_default();
                let name = format!("{:03}-{kind}-{}.yaml", i + 1, o.name_any());
                Ok((name, yaml::to_string(o)?))
            })
            .collect()
    }
}

/// A compiled template set, ready to render many TVMs.
pub struct Renderer {
    registry: Handlebars<'static>,
    templates: Vec<String>,
    defaults: Value,
    /// Generated CRDs with the digest of their content (hashed once: they are large).
    crds: Vec<(DynamicObject, String)>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("templates", &self.templates)
            .finish()
    }
}

impl Renderer {
    /// Compiles every template and partial, reads the defaults and the CRDs.
    pub fn new(source: &TemplateSource) -> Result<Self, RenderError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        registry.register_helper("toYaml", Box::new(to_yaml));
        registry.register_helper("json", Box::new(json_helper));
        registry.register_helper("quote", Box::new(json_helper));
        registry.register_helper("b64enc", Box::new(b64enc));
        registry.register_helper("indent", Box::new(indent));
        registry.register_helper("nindent", Box::new(nindent));
        registry.register_helper("default", Box::new(DefaultHelper));
        let limits = Limits::default();
        let mut templates = Vec::new();
        let mut defaults = None;
        let mut crds = Vec::new();
        for (path, text) in &source.files {
            let file = path.rsplit('/').next().unwrap_or(path);
            if let Some(crd_file) = path.strip_prefix("crds/") {
                if !(crd_file.ends_with(".yaml") || crd_file.ends_with(".yml")) {
                    continue;
                }
                for (index, document) in yaml::parse_documents(text, &limits)
                    .map_err(|source| RenderError::Yaml {
                        template: path.clone(),
                        snippet: None,
                        source,
                    })?
                    .into_iter()
                    .enumerate()
                {
                    let crd = to_object(path, index + 1, document.value)?;
                    let content_hash = object_hash(&crd);
                    crds.push((crd, content_hash));
                }
            } else if path == "values.yaml" {
                defaults = Some(yaml::parse_single(text, &limits).map_err(RenderError::Defaults)?);
            } else if file.starts_with('_') && file.ends_with(".hbs") {
                let name = file.trim_end_matches(".hbs");
                registry
                    .register_partial(name, text.as_str())
                    .map_err(|source| RenderError::Compile {
                        name: path.clone(),
                        source: Box::new(source),
                    })?;
            } else if file.ends_with(".yaml.hbs") {
                registry
                    .register_template_string(path, text.as_str())
                    .map_err(|source| RenderError::Compile {
                        name: path.clone(),
                        source: Box::new(source),
                    })?;
                templates.push(path.clone());
            }
        }
        let defaults = defaults.ok_or_else(|| RenderError::ReadTemplates {
            path: PathBuf::from("values.yaml"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "values.yaml is missing from the template set",
            ),
        })?;
        Ok(Self {
            registry,
            templates,
            defaults,
            crds,
        })
    }

    /// The parsed `values.yaml` defaults.
    pub fn defaults(&self) -> &Value {
        &self.defaults
    }

    /// Names of the templates, in render order.
    pub fn templates(&self) -> &[String] {
        &self.templates
    }

    /// Renders the application for `tvm`.
    pub fn render(
        &self,
        tvm: &TrilioVaultManager,
        inputs: &RenderInputs,
    ) -> Result<Manifest, RenderError> {
        let name = tvm
            .metadata
            .name
            .clone()
            .ok_or_else(|| RenderError::Tvm("has no metadata.name".into()))?;
        let namespace = tvm.metadata.namespace.clone().ok_or_else(|| {
            RenderError::Tvm(format!(
                "{name} has no metadata.namespace; set the install namespace"
            ))
        })?;
        let mut overrides = inputs.overrides.clone();
        if let Some(ca) = &inputs.ca_bundle {
            overrides.push(Override {
                path: "webhook.caBundle".into(),
                value: Value::String(ca.clone()),
            });
        }
        let values = values::merge(
            &self.defaults,
            &inputs.related_images,
            &tvm.spec,
            &overrides,
        )?;
        let cluster = values.application_scope == "Cluster";
        let app_kinds: Vec<Value> = APP_KINDS
            .iter()
            .map(|(kind, plural, namespaced)| {
                json!({"kind": kind, "lower": kind.to_lowercase(), "plural": plural, "namespaced": namespaced})
            })
            .collect();
        let context = json!({
            "Release": {"name": name, "namespace": namespace},
            "Values": serde_json::to_value(&values).map_err(|e| RenderError::Tvm(format!("values are not serializable: {e}")))?,
            "Capabilities": {
                "apiVersions": inputs.api_versions,
                "serviceMonitor": inputs.api_versions.iter().any(|v| v == "monitoring.coreos.com/v1"),
            },
            "Scope": {
                "cluster": cluster,
                "roleKind": if cluster { "ClusterRole" } else { "Role" },
                "bindingKind": if cluster { "ClusterRoleBinding" } else { "RoleBinding" },
            },
            "Names": {"rolePrefix": if cluster { format!("tvk-{namespace}-") } else { "tvk-".to_string() }},
            "AppKinds": app_kinds,
            "Version": APP_VERSION,
        });
        let limits = Limits::default();
        let mut ranked: Vec<(usize, String, DynamicObject, Option<&str>)> = Vec::new();
        for (crd, content_hash) in &self.crds {
            ranked.push((0, "crds".into(), crd.clone(), Some(content_hash.as_str())));
        }
        for template in &self.templates {
            let text =
                self.registry
                    .render(template, &context)
                    .map_err(|e| RenderError::Render {
                        template: template.clone(),
                        line: e.line_no,
                        message: e.reason().to_string(),
                    })?;
            let documents = yaml::parse_documents(&text, &limits).map_err(|source| {
                let snippet = match &source {
                    YamlError::Syntax {
                        position: Some(p), ..
                    } => text
                        .lines()
                        .nth(p.line.saturating_sub(1))
                        .map(str::to_string),
                    _ => None,
                };
                RenderError::Yaml {
                    template: template.clone(),
                    snippet,
                    source,
                }
            })?;
            for document in documents {
                let object = to_object(template, document.index + 1, document.value)?;
                let (rank, known) = rank_of(template, document.index + 1, &object)?;
                let mut object = object;
                if known.namespaced {
                    match object.metadata.namespace.as_deref() {
                        None => object.metadata.namespace = Some(namespace.clone()),
                        Some(ns) if ns == namespace => {}
                        Some(other) => {
                            return Err(RenderError::Object {
                                template: template.clone(),
                                document: document.index + 1,
                                message: format!(
                                    "{} {} is in namespace {other}; the application may only create objects in {namespace}",
                                    known.kind,
                                    object.name_any()
                                ),
                            });
                        }
                    }
                } else {
                    object.metadata.namespace = None;
                }
                ranked.push((rank, template.clone(), object, None));
            }
        }
        ranked.sort_by_key(|(rank, _, _, _)| *rank);
        let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut objects = Vec::with_capacity(ranked.len());
        let mut digest = blake3::Hasher::new();
        for (_, template, mut object, content_hash) in ranked {
            let kind = object
                .types
                .as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_default();
            let id = format!(
                "{}/{}",
                object.metadata.namespace.as_deref().unwrap_or(""),
                object.name_any()
            );
            if let Some(first) = seen.insert((kind.clone(), id.clone()), template.clone()) {
                return Err(RenderError::Duplicate {
                    kind,
                    name: id,
                    first,
                    second: template,
                });
            }
            let labels = object.metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.insert(LABEL_MANAGED_BY.into(), MANAGER_NAME.into());
            labels.insert(LABEL_INSTANCE.into(), name.clone());
            labels.insert(LABEL_PART_OF.into(), PART_OF.into());
            if object.metadata.namespace.is_none() {
                object
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(ANNOTATION_OWNER_NAMESPACE.into(), namespace.clone());
            }
            // A CRD's content was hashed once when the templates were loaded; only what this
            // render adds (labels, annotations) is hashed here.
            let hash = match content_hash {
                Some(content) => {
                    let added = format!(
                        "{content}|{:?}|{:?}",
                        object.metadata.labels, object.metadata.annotations
                    );
                    blake3::hash(added.as_bytes()).to_hex()[..16].to_string()
                }
                None => object_hash(&object),
            };
            digest.update(hash.as_bytes());
            object
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(ANNOTATION_HASH.into(), hash);
            objects.push(object);
        }
        Ok(Manifest {
            objects,
            values,
            digest: digest.finalize().to_hex()[..16].to_string(),
        })
    }
}

/// Digest of an object's rendered content (its hash annotation excluded).
pub fn object_hash(object: &DynamicObject) -> String {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(annotations) = value
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(ANNOTATION_HASH);
        if annotations.is_empty()
            && let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut)
        {
            metadata.remove("annotations");
        }
    }
    // serde_json maps are ordered by key here, so the text is canonical.
    let text = value.to_string();
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

fn to_object(template: &str, document: usize, value: Value) -> Result<DynamicObject, RenderError> {
    let err = |message: String| RenderError::Object {
        template: template.to_string(),
        document,
        message,
    };
    for field in ["apiVersion", "kind"] {
        if !value.get(field).is_some_and(Value::is_string) {
            return Err(err(format!("has no {field}")));
        }
    }
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(err("has no metadata.name".into()));
    }
    serde_json::from_value(value).map_err(|e| err(format!("is not a Kubernetes object: {e}")))
}

fn rank_of(
    template: &str,
    document: usize,
    object: &DynamicObject,
) -> Result<(usize, &'static KnownKind), RenderError> {
    let types = object.types.as_ref();
    let api_version = types.map(|t| t.api_version.as_str()).unwrap_or_default();
    let kind = types.map(|t| t.kind.as_str()).unwrap_or_default();
    known_kind(api_version, kind).ok_or_else(|| RenderError::Object {
        template: template.to_string(),
        document,
        message: format!(
            "{api_version} {kind} is not a kind the manager applies and prunes; add it to render::APPLY_ORDER first"
        ),
    })
}

handlebars_helper!(to_yaml: |value: Json| {
    yaml::to_string(&value).map(|s| s.trim_end().to_string()).unwrap_or_default()
});

handlebars_helper!(json_helper: |value: Json| serde_json::to_string(&value).unwrap_or_default());

handlebars_helper!(b64enc: |text: str| base64_encode(text.as_bytes()));

handlebars_helper!(indent: |width: u64, text: str| indent_lines(width, text));

handlebars_helper!(nindent: |width: u64, text: str| format!("\n{}", indent_lines(width, text)));

fn indent_lines(width: u64, text: &str) -> String {
    let pad = " ".repeat(usize::try_from(width).unwrap_or(0));
    text.lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `{{default FALLBACK value}}`: `value` unless it is missing, null, `""`, `false` or empty.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let fallback = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 0))?;
        let chosen = h
            .param(1)
            .filter(|p| !p.is_value_missing())
            .map(|p| p.value())
            .filter(|v| match v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                Value::Number(_) => true,
            })
            .unwrap_or_else(|| fallback.value());
        Ok(ScopedJson::Derived(chosen.clone()))
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every kind in the manifest, for watches and prune.
pub fn kinds_of(manifest: &Manifest) -> BTreeSet<&'static str> {
    manifest
        .objects
        .iter()
        .filter_map(|o| o.types.as_ref())
        .filter_map(|t| known_kind(&t.api_version, &t.kind))
        .map(|(_, k)| k.kind)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, context: Value) -> Result<String, handlebars::RenderError> {
        let source = TemplateSource::default()
            .with_file("values.yaml", "{}")
            .with_file("_part.hbs", "a: 1\nb: 2\n")
            .with_file("t.yaml.hbs", template);
        let renderer = Renderer::new(&source).unwrap();
        renderer.registry.render("t.yaml.hbs", &context)
    }

    #[test]
    fn strict_mode_refuses_missing_values() {
        let err = render("x: {{Values.missing}}", json!({"Values": {}})).unwrap_err();
        assert!(err.to_string().contains("strict"), "{err}");
        assert_eq!(
            render("x: {{#if Values.missing}}y{{/if}}", json!({"Values": {}})).unwrap(),
            "x: "
        );
    }

    #[test]
    fn helpers_write_yaml_safe_output() {
        let ctx = json!({"v": {"a": [1, "two"], "b": "x: y"}, "s": "it's \"q\"", "n": null});
        assert_eq!(
            render("{{json s}}", ctx.clone()).unwrap(),
            r#""it's \"q\"""#
        );
        assert_eq!(render("{{quote v.b}}", ctx.clone()).unwrap(), r#""x: y""#);
        assert_eq!(
            render("k:{{nindent 2 (toYaml v)}}", ctx.clone()).unwrap(),
            "k:\n  a:\n  - 1\n  - two\n  b: 'x: y'"
        );
        assert_eq!(
            render(
                "{{default \"d\" missing}} {{default \"d\" n}} {{default \"d\" s}}",
                ctx.clone()
            )
            .unwrap(),
            "d d it's \"q\""
        );
        assert_eq!(
            render("{{b64enc \"hello\"}}", ctx.clone()).unwrap(),
            "aGVsbG8="
        );
        assert_eq!(
            render("{{indent 4 lines}}", json!({"lines": "a\nb"})).unwrap(),
            "    a\n    b"
        );
        assert_eq!(
            render("<&>{{s}}", ctx).unwrap(),
            "<&>it's \"q\"",
            "no HTML escaping"
        );
    }

    #[test]
    fn standalone_partials_keep_their_indentation() {
        assert_eq!(
            render("x:\n  {{> _part}}\ny: 0\n", json!({})).unwrap(),
            "x:\n  a: 1\n  b: 2\ny: 0\n"
        );
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }
}
