//! The object store and its write semantics: create, replace, patch, server-side apply, delete
//! with finalizers and propagation policies, status subresources, generations, managed fields,
//! one global resourceVersion counter, a bounded event history for watches, and the garbage
//! collector (owner references, foreground/orphan deletion, namespace termination).
//!
//! Every entry point (HTTP handler or seeding helper) goes through these functions, so a test's
//! seed data is stored exactly as a client's writes are.

use crate::{
    error::ApiError,
    fieldset::{self, FieldSet},
    registry::{Registry, ResourceDef, ResourceKey, crd_resource},
};
use serde_json::{Map, Value, json};
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
};
use tokio::sync::{Notify, broadcast};

/// Field manager the server's own controllers (garbage collector, namespace and CRD
/// controllers) write as, like kube-controller-manager does.
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed from the store.
    Deleted,
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// Which resource.
    pub key: ResourceKey,
    /// What happened.
    pub kind: EventKind,
    /// The object after the change (the last state for a deletion).
    pub object: Value,
    /// The object before the change (MODIFIED only), for selector transitions.
    pub old: Option<Value>,
}

/// One request the server answered, for tests that assert exact calls.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// `dryRun=All` was asked.
    pub dry_run: bool,
}

impl RecordedRequest {
    /// POST, PUT, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// Options of one write.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// Field manager (`fieldManager`, or the default derived from the User-Agent).
    pub field_manager: Option<String>,
    /// `dryRun=All`: validate and compute, store nothing.
    pub dry_run: bool,
    /// `Some("status")` for writes to the status subresource.
    pub subresource: Option<String>,
    /// `force=true` (server-side apply).
    pub force: bool,
    /// Keep `status` on create even when the resource has a status subresource (seeding only).
    pub keep_status: bool,
}

/// The patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// application/merge-patch+json (RFC 7386).
    Merge,
    /// application/strategic-merge-patch+json, approximated by a merge patch.
    Strategic,
    /// application/json-patch+json (RFC 6902).
    Json,
    /// application/apply-patch+yaml (server-side apply).
    Apply,
}

impl PatchKind {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// A `managedFields` entry.
#[derive(Debug, Clone)]
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl ManagedEntry {
    fn parse(v: &Value) -> Option<Self> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Self {
            manager: text("manager")?,
            operation: text("operation").unwrap_or_else(|| "Update".to_string()),
            api_version: text("apiVersion").unwrap_or_default(),
            time: text("time").unwrap_or_default(),
            subresource: text("subresource"),
            fields: v
                .get("fieldsV1")
                .map(fieldset::from_fields_v1)
                .unwrap_or_default(),
        })
    }

    fn to_value(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fieldset::to_fields_v1(&self.fields),
        });
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    fn is(&self, manager: &str, operation: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == sub
    }
}

fn entries_of(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(ManagedEntry::parse).collect())
        .unwrap_or_default()
}

fn encode_entries(entries: &[ManagedEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(ManagedEntry::to_value)
            .collect(),
    )
}

/// How a write's managedFields are decided.
enum Managed {
    /// An Update operation by this manager: it takes the fields it changed.
    Update(String),
    /// Already computed (server-side apply).
    Preset(Vec<ManagedEntry>),
    /// Leave as they are (the server's own bookkeeping writes).
    Keep,
}

/// Whether the resource is `customresourcedefinitions.apiextensions.k8s.io`.
fn is_crd_resource(res: &ResourceDef) -> bool {
    res.crd.is_none()
        && res.group == "apiextensions.k8s.io"
        && res.plural == "customresourcedefinitions"
}

/// RFC 3339 now, seconds precision, as Kubernetes writes `Time`.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let n = fastrand::u128(..);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    if !obj.get("metadata").is_some_and(Value::is_object)
        && let Some(root) = obj.as_object_mut()
    {
        root.insert("metadata".to_string(), json!({}));
    }
    obj.get_mut("metadata").and_then(Value::as_object_mut)
}

fn set_meta(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = meta_mut(obj) {
        m.insert(key.to_string(), value);
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, fins: &[String]) {
    let mut scratch = Map::new();
    let m = meta_mut(obj).unwrap_or(&mut scratch);
    if fins.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".to_string(), json!(fins));
    }
}

fn deleting(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.contains_key("deletionTimestamp"))
}

fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The part of an object whose fields managers own: labels, annotations, finalizers and owner
/// references of metadata, plus the spec-like body (status only when it has no subresource),
/// or only `status` for the status subresource.
fn owned_part(obj: &Value, res: &ResourceDef, sub: Option<&str>) -> Value {
    if sub == Some("status") {
        return match obj.get("status") {
            Some(s) => json!({"status": s}),
            None => json!({}),
        };
    }
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        if res.has_status() {
            map.remove("status");
        }
        if let Some(Value::Object(m)) = map.get_mut("metadata") {
            m.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences"
                )
            });
            if m.is_empty() {
                map.remove("metadata");
            }
        }
    }
    out
}

/// Whether `generation` moves: anything but metadata (and status, when it is a subresource).
fn spec_changed(res: &ResourceDef, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("apiVersion");
            m.remove("kind");
            if res.has_status() {
                m.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

type ObjectKey = (String, String);

/// The whole server state, behind one mutex.
pub struct State {
    /// Served resources.
    pub registry: Registry,
    objects: HashMap<ResourceKey, BTreeMap<ObjectKey, Value>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Events at or below this resourceVersion are no longer kept.
    floor: u64,
    /// Every request answered, in order.
    pub requests: Vec<RecordedRequest>,
    events: broadcast::Sender<Arc<Event>>,
    gc: Arc<Notify>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("rv", &self.rv)
            .field(
                "objects",
                &self.objects.values().map(BTreeMap::len).sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

impl State {
    /// An empty cluster with the `default`, `kube-system` and `kube-public` namespaces.
    pub fn new(history_cap: usize, events: broadcast::Sender<Arc<Event>>, gc: Arc<Notify>) -> Self {
        let mut st = Self {
            registry: Registry::default(),
            objects: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            floor: 0,
            requests: Vec::new(),
            events,
            gc,
        };
        if let Some(ns) = st.registry.by_plural("", "v1", "namespaces").cloned() {
            for name in ["default", "kube-system", "kube-public"] {
                // Cannot fail on an empty store; ignoring keeps `new` infallible.
                let _ = st.create(
                    &ns,
                    None,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                    &WriteOpts::default(),
                );
            }
        }
        st
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Subscribes to changes after now (call under the same lock as a history read).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Events after `rv`, or 410 Expired when some of them are no longer kept.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, ApiError> {
        if rv < self.floor {
            return Err(ApiError::expired(rv, self.floor + 1));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    fn emit(&mut self, kind: EventKind, key: ResourceKey, object: Value, old: Option<Value>) {
        let event = Arc::new(Event {
            rv: self.rv,
            key,
            kind,
            object,
            old,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.floor = e.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.events.send(event);
    }

    fn check_scope(res: &ResourceDef, ns: Option<&str>) -> Result<(), ApiError> {
        match (res.namespaced, ns) {
            (true, None) => Err(ApiError::bad_request(format!(
                "{} is namespaced: the request must name a namespace (/namespaces/NS/{})",
                res.plural, res.plural
            ))),
            (false, Some(_)) => Err(ApiError::no_route()),
            _ => Ok(()),
        }
    }

    fn ns_key(ns: Option<&str>, name: &str) -> ObjectKey {
        (ns.unwrap_or_default().to_string(), name.to_string())
    }

    /// One object.
    pub fn get(&self, res: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        Self::check_scope(res, ns)?;
        self.objects
            .get(&res.key())
            .and_then(|m| m.get(&Self::ns_key(ns, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Objects of a resource in one namespace (or all), in name order, and the list's
    /// resourceVersion.
    pub fn list(&self, res: &ResourceDef, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&res.key())
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn resource_of_key(&self, key: &ResourceKey) -> Option<ResourceDef> {
        self.registry
            .all()
            .iter()
            .find(|r| r.key() == *key)
            .cloned()
    }

    fn check_kind(res: &ResourceDef, body: &Value) -> Result<(), ApiError> {
        if let Some(kind) = body.get("kind").and_then(Value::as_str)
            && kind != res.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind {kind:?} of the object does not match the resource {} (kind {:?}); send it to its own resource's URL",
                res.plural, res.kind
            )));
        }
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
            let (g, v) = crate::registry::split_api_version(av);
            if g != res.group || !res.versions.iter().any(|x| x == v) {
                return Err(ApiError::bad_request(format!(
                    "the apiVersion {av:?} of the object does not match the resource {} (served as {})",
                    res.plural,
                    res.storage_api_version()
                )));
            }
        }
        Ok(())
    }

    fn check_namespace_usable(&self, res: &ResourceDef, ns: Option<&str>) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| res.namespaced) else {
            return Ok(());
        };
        let namespace = self
            .objects
            .get(&ResourceKey {
                group: String::new(),
                plural: "namespaces".to_string(),
            })
            .and_then(|m| m.get(&(String::new(), ns.to_string())));
        match namespace {
            None => Err(ApiError {
                code: 404,
                reason: "NotFound".to_string(),
                message: format!("namespaces \"{ns}\" not found"),
                details: json!({"name": ns, "kind": "namespaces"}),
            }),
            Some(n) if deleting(n) => Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                res.plural, "",
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Creates an object (POST).
    pub fn create(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        Self::check_scope(res, ns)?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        Self::check_kind(res, &body)?;
        if let (Some(want), Some(got)) = (ns, meta_str(&body, "namespace"))
            && want != got
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({got}) does not match the namespace sent on the request ({want})"
            )));
        }
        let mut name = meta_str(&body, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            let prefix = meta_str(&body, "generateName").unwrap_or_default();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    res,
                    "",
                    &[(
                        "metadata.name",
                        "Required value: name or generateName is required".to_string(),
                    )],
                ));
            }
            const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let suffix: String = (0..5)
                .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
                .collect();
            name = format!("{prefix}{suffix}");
        }
        if !is_dns_subdomain(&name) {
            return Err(ApiError::invalid(
                res,
                &name,
                &[(
                    "metadata.name",
                    format!(
                        "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                )],
            ));
        }
        self.check_namespace_usable(res, ns)?;
        if self
            .objects
            .get(&res.key())
            .is_some_and(|m| m.contains_key(&Self::ns_key(ns, &name)))
        {
            return Err(ApiError::already_exists(res, &name));
        }
        body["apiVersion"] = json!(res.storage_api_version());
        body["kind"] = json!(res.kind);
        if res.has_status()
            && !opts.keep_status
            && let Some(m) = body.as_object_mut()
        {
            m.remove("status");
        }
        let manager = opts.field_manager.clone();
        let mut scratch = Map::new();
        let m = meta_mut(&mut body).unwrap_or(&mut scratch);
        m.insert("name".to_string(), json!(name));
        match ns {
            Some(ns) => m.insert("namespace".to_string(), json!(ns)),
            None => m.remove("namespace"),
        };
        for k in [
            "uid",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            m.remove(k);
        }
        m.insert("uid".to_string(), json!(new_uid()));
        m.insert("creationTimestamp".to_string(), json!(now()));
        m.insert("generation".to_string(), json!(1));
        if let Some(manager) = manager {
            let entry = ManagedEntry {
                manager,
                operation: "Update".to_string(),
                api_version: res.storage_api_version(),
                time: now(),
                subresource: None,
                fields: fieldset::paths_of(&owned_part(&body, res, None)),
            };
            set_meta(&mut body, "managedFields", encode_entries(&[entry]));
        }
        self.insert_new(res, ns, &name, body, opts.dry_run)
    }

    /// Stores a new object whose metadata is complete.
    fn insert_new(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if res.plural == "namespaces" && res.group.is_empty() {
            body["spec"] = json!({"finalizers": ["kubernetes"]});
            body["status"] = json!({"phase": "Active"});
        }
        let is_crd = is_crd_resource(res);
        if is_crd {
            self.accept_crd(res, name, &mut body, None)?;
        }
        if dry_run {
            return Ok(body);
        }
        self.rv += 1;
        set_meta(&mut body, "resourceVersion", json!(self.rv.to_string()));
        self.objects
            .entry(res.key())
            .or_default()
            .insert(Self::ns_key(ns, name), body.clone());
        if is_crd {
            self.register_crd_from(&body);
        }
        if !owner_uids(&body).is_empty() {
            self.gc.notify_one();
        }
        self.emit(EventKind::Added, res.key(), body.clone(), None);
        Ok(body)
    }

    /// Validates a CRD, registers its resource and sets Established / NamesAccepted.
    fn accept_crd(
        &mut self,
        res: &ResourceDef,
        name: &str,
        body: &mut Value,
        previous: Option<&Value>,
    ) -> Result<(), ApiError> {
        let def = crd_resource(body).map_err(|m| {
            let (field, msg) = m.split_once(": ").unwrap_or(("spec", m.as_str()));
            ApiError::invalid(res, name, &[(field, msg.to_string())])
        })?;
        if let Some(other) = self.registry.all().iter().find(|r| {
            r.group == def.group && r.plural == def.plural && r.crd.as_deref() != Some(name)
        }) {
            return Err(ApiError::invalid(
                res,
                name,
                &[(
                    "spec.names.plural",
                    format!(
                        "Invalid value: \"{}\": already served by {}",
                        other.plural,
                        other.storage_api_version()
                    ),
                )],
            ));
        }
        if let Some(prev) = previous
            && let Ok(old) = crd_resource(prev)
            && (old.namespaced != def.namespaced)
        {
            return Err(ApiError::invalid(
                res,
                name,
                &[(
                    "spec.scope",
                    "Invalid value: field is immutable".to_string(),
                )],
            ));
        }
        let time = now();
        let names = body.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let stored: Vec<String> = body
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let prev_status = previous.and_then(|p| p.get("status")).cloned();
        let cond = |t: &str, reason: &str, message: &str| {
            let since = prev_status
                .as_ref()
                .and_then(|s| s.get("conditions"))
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
                })
                .and_then(|c| c.get("lastTransitionTime"))
                .cloned()
                .unwrap_or(json!(time));
            json!({"type": t, "status": "True", "reason": reason, "message": message, "lastTransitionTime": since})
        };
        body["status"] = json!({
            "acceptedNames": names,
            "storedVersions": stored,
            "conditions": [
                cond("NamesAccepted", "NoConflicts", "no conflicts found"),
                cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
        });
        if let Some(old) = self
            .registry
            .all()
            .iter()
            .find(|r| r.crd.as_deref() == Some(name))
            .cloned()
            && (old.group != def.group || old.plural != def.plural)
        {
            return Err(ApiError::invalid(
                res,
                name,
                &[(
                    "spec.group",
                    "Invalid value: field is immutable".to_string(),
                )],
            ));
        }
        Ok(())
    }

    fn register_crd_from(&mut self, body: &Value) {
        if let Ok(def) = crd_resource(body) {
            self.registry.register_crd(def);
        }
    }

    /// Replaces an object (PUT).
    pub fn replace(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let live = self.get(res, ns, name)?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        Self::check_kind(res, &body)?;
        let manager = opts
            .field_manager
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        self.commit_update(res, ns, name, live, body, opts, Managed::Update(manager))
    }

    /// Patches an object (PATCH), server-side apply included.
    pub fn patch(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        if kind == PatchKind::Apply {
            let config = parse_apply_body(body)?;
            return self.apply(res, ns, name, config, opts);
        }
        let live = self.get(res, ns, name)?;
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
        let mut patched = live.clone();
        match kind {
            PatchKind::Merge | PatchKind::Strategic => json_patch::merge(&mut patched, &patch),
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                    ApiError::bad_request(format!(
                        "the JSON patch is not a list of RFC 6902 operations: {e}"
                    ))
                })?;
                // Like the real apiserver (evanphx/json-patch), a `test` of a missing member
                // against null succeeds: kube's finalizer helper adds a first finalizer with
                // `test /metadata/finalizers == null` followed by `add`.
                let ops = json_patch::Patch(
                    ops.0
                        .into_iter()
                        .filter(|op| match op {
                            json_patch::PatchOperation::Test(test) => {
                                !(test.value.is_null()
                                    && patched.pointer(&test.path.to_string()).is_none())
                            }
                            _ => true,
                        })
                        .collect(),
                );
                json_patch::patch(&mut patched, &ops).map_err(|e| ApiError {
                    code: 422,
                    reason: "Invalid".to_string(),
                    message: format!(
                        "the server rejected our request due to an error in our request: {e}"
                    ),
                    details: json!({"name": name, "group": res.group, "kind": res.kind}),
                })?;
            }
            PatchKind::Apply => {}
        }
        let manager = opts
            .field_manager
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        self.commit_update(res, ns, name, live, patched, opts, Managed::Update(manager))
    }

    /// Server-side apply: creates when missing; owned fields per field manager; conflicts
    /// unless forced; fields the manager applied before and omits now are removed unless
    /// another manager owns them.
    pub fn apply(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        config: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        Self::check_scope(res, ns)?;
        let Some(manager) = opts.field_manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                res,
                name,
                &[(
                    "fieldManager",
                    "Required value: is required for apply patch".to_string(),
                )],
            ));
        };
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
        for field in ["apiVersion", "kind"] {
            if config
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::invalid(
                    res,
                    name,
                    &[(
                        field,
                        "Required value: must be set in an applied configuration".to_string(),
                    )],
                ));
            }
        }
        Self::check_kind(res, &config)?;
        if let Some(n) = meta_str(&config, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let sub = opts.subresource.as_deref();
        let live = match self.get(res, ns, name) {
            Ok(v) => Some(v),
            Err(e) if e.code == 404 && sub.is_none() => None,
            Err(e) => return Err(e),
        };
        let applied = owned_part(&config, res, sub);
        let new_set = fieldset::paths_of(&applied);
        let mut base = live.clone().unwrap_or_else(|| {
            let mut b = json!({"apiVersion": res.storage_api_version(), "kind": res.kind, "metadata": {"name": name}});
            if let Some(ns) = ns {
                b["metadata"]["namespace"] = json!(ns);
            }
            b
        });
        let mut entries = entries_of(&base);
        let mut conflicts: Vec<(String, String)> = Vec::new();
        let mut taken: Vec<(usize, fieldset::Path)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.is(&manager, "Apply", sub) || e.subresource.as_deref() != sub {
                continue;
            }
            for p in e.fields.intersection(&new_set) {
                // An element or a map in the configuration merges into the live value: only
                // the leaves under it can conflict, and those are checked on their own.
                if matches!(p.last(), Some(fieldset::Seg::Key(_)))
                    || fieldset::get(&config, p).is_some_and(Value::is_object)
                {
                    continue;
                }
                if fieldset::get(&base, p) != fieldset::get(&config, p) {
                    conflicts.push((e.manager.clone(), fieldset::display(p)));
                    taken.push((i, p.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !opts.force {
            return Err(ApiError::apply_conflict(res, name, &conflicts));
        }
        for (i, p) in taken {
            if let Some(e) = entries.get_mut(i) {
                e.fields.remove(&p);
            }
        }
        let mine = entries.iter().position(|e| e.is(&manager, "Apply", sub));
        let previous: FieldSet = mine
            .and_then(|i| entries.get(i))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        fieldset::merge(&mut base, &applied);
        let mut removed: Vec<&fieldset::Path> = previous.difference(&new_set).collect();
        // Shortest first: removing a list element removes everything under it, and its
        // descendants (whose key fields are gone with it) are skipped.
        removed.sort_by_key(|p| p.len());
        let mut gone: Vec<&fieldset::Path> = Vec::new();
        for p in removed {
            if gone.iter().any(|g| p.starts_with(g)) {
                continue;
            }
            let owned_elsewhere = entries
                .iter()
                .enumerate()
                .any(|(i, e)| Some(i) != mine && e.fields.iter().any(|q| q.starts_with(p)));
            let still_applied = new_set.iter().any(|q| q.starts_with(p));
            if !owned_elsewhere && !still_applied && fieldset::remove(&mut base, p) {
                gone.push(p);
            }
        }
        let api_version = config
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match mine.and_then(|i| entries.get_mut(i)) {
            Some(e) => {
                if e.fields != new_set || e.api_version != api_version {
                    e.fields = new_set;
                    e.time = now();
                    e.api_version = api_version;
                }
            }
            None => entries.push(ManagedEntry {
                manager,
                operation: "Apply".to_string(),
                api_version,
                time: now(),
                subresource: sub.map(str::to_string),
                fields: new_set,
            }),
        }
        entries.retain(|e| !e.fields.is_empty());
        match live {
            None => {
                self.check_namespace_usable(res, ns)?;
                let mut scratch = Map::new();
                let m = meta_mut(&mut base).unwrap_or(&mut scratch);
                m.insert("uid".to_string(), json!(new_uid()));
                m.insert("creationTimestamp".to_string(), json!(now()));
                m.insert("generation".to_string(), json!(1));
                m.insert("managedFields".to_string(), encode_entries(&entries));
                if res.has_status()
                    && let Some(map) = base.as_object_mut()
                {
                    map.remove("status");
                }
                if !is_dns_subdomain(name) {
                    return Err(ApiError::invalid(
                        res,
                        name,
                        &[(
                            "metadata.name",
                            format!(
                                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
                            ),
                        )],
                    ));
                }
                self.insert_new(res, ns, name, base, opts.dry_run)
            }
            Some(live) => {
                self.commit_update(res, ns, name, live, base, opts, Managed::Preset(entries))
            }
        }
    }

    /// The common tail of PUT, PATCH and apply on an existing object.
    #[allow(clippy::too_many_arguments)]
    fn commit_update(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        live: Value,
        new: Value,
        opts: &WriteOpts,
        managed: Managed,
    ) -> Result<Value, ApiError> {
        let sub = opts.subresource.as_deref();
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|s| !s.is_empty())
            && Some(rv) != meta_str(&live, "resourceVersion")
        {
            return Err(ApiError::conflict(
                res,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if let Some(uid) = meta_str(&new, "uid").filter(|s| !s.is_empty())
            && Some(uid) != meta_str(&live, "uid")
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&live, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(n) = meta_str(&new, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if let (Some(want), Some(got)) = (ns, meta_str(&new, "namespace"))
            && want != got
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({got}) does not match the namespace sent on the request ({want})"
            )));
        }
        let mut result = if sub == Some("status") {
            let mut r = live.clone();
            match new.get("status") {
                Some(s) => r["status"] = s.clone(),
                None => {
                    if let Some(m) = r.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            r
        } else {
            let mut r = new;
            if res.has_status()
                && let Some(m) = r.as_object_mut()
            {
                match live.get("status") {
                    Some(s) => {
                        m.insert("status".to_string(), s.clone());
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
            if deleting(&live) {
                let before = finalizers(&live);
                if let Some(extra) = finalizers(&r).into_iter().find(|f| !before.contains(f)) {
                    return Err(ApiError::invalid(
                        res,
                        name,
                        &[(
                            "metadata.finalizers",
                            format!(
                                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{extra}\"]"
                            ),
                        )],
                    ));
                }
            }
            r
        };
        result["apiVersion"] = json!(res.storage_api_version());
        result["kind"] = json!(res.kind);
        {
            let live_meta = meta(&live).cloned().unwrap_or_default();
            let mut scratch = Map::new();
            let m = meta_mut(&mut result).unwrap_or(&mut scratch);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
                "managedFields",
            ] {
                match live_meta.get(k) {
                    Some(v) => m.insert(k.to_string(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        if res.plural == "namespaces" && res.group.is_empty() {
            // The namespace's spec.finalizers and phase are the namespace controller's.
            if let Some(s) = live.get("spec") {
                result["spec"] = s.clone();
            }
        }
        if spec_changed(res, &live, &result) {
            let gen_ = meta(&live)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            set_meta(&mut result, "generation", json!(gen_ + 1));
        }
        let entries = match managed {
            Managed::Preset(entries) => Some(entries),
            Managed::Keep => None,
            Managed::Update(manager) => {
                let old_set = fieldset::paths_of(&owned_part(&live, res, sub));
                let new_set = fieldset::paths_of(&owned_part(&result, res, sub));
                let changed: FieldSet = new_set
                    .iter()
                    .filter(|p| fieldset::get(&live, p) != fieldset::get(&result, p))
                    .cloned()
                    .collect();
                let gone: FieldSet = old_set.difference(&new_set).cloned().collect();
                let mut entries = entries_of(&live);
                for e in &mut entries {
                    e.fields
                        .retain(|p| !changed.contains(p) && !gone.contains(p));
                }
                if !changed.is_empty() {
                    match entries.iter_mut().find(|e| e.is(&manager, "Update", sub)) {
                        Some(e) => {
                            e.fields.extend(changed);
                            e.time = now();
                        }
                        None => entries.push(ManagedEntry {
                            manager,
                            operation: "Update".to_string(),
                            api_version: res.storage_api_version(),
                            time: now(),
                            subresource: sub.map(str::to_string),
                            fields: changed,
                        }),
                    }
                }
                Some(entries)
            }
        };
        if let Some(entries) = entries {
            let encoded = encode_entries(&entries);
            let mut scratch = Map::new();
            let m = meta_mut(&mut result).unwrap_or(&mut scratch);
            if encoded.as_array().is_some_and(Vec::is_empty) {
                m.remove("managedFields");
            } else {
                m.insert("managedFields".to_string(), encoded);
            }
        }
        let is_crd = is_crd_resource(res);
        if is_crd && sub.is_none() {
            self.accept_crd(res, name, &mut result, Some(&live))?;
        }
        if result == live {
            // A no-op write: no new resourceVersion, no event (as a real apiserver).
            return Ok(live);
        }
        if opts.dry_run {
            return Ok(result);
        }
        self.rv += 1;
        set_meta(&mut result, "resourceVersion", json!(self.rv.to_string()));
        if deleting(&result) && finalizers(&result).is_empty() {
            self.remove_object(res, ns, name, result.clone());
            return Ok(result);
        }
        self.objects
            .entry(res.key())
            .or_default()
            .insert(Self::ns_key(ns, name), result.clone());
        if is_crd {
            self.register_crd_from(&result);
        }
        if !owner_uids(&result).is_empty() {
            self.gc.notify_one();
        }
        self.emit(EventKind::Modified, res.key(), result.clone(), Some(live));
        Ok(result)
    }

    /// Removes an object from the store now (the last step of a deletion).
    fn remove_object(&mut self, res: &ResourceDef, ns: Option<&str>, name: &str, mut last: Value) {
        if let Some(m) = self.objects.get_mut(&res.key()) {
            m.remove(&Self::ns_key(ns, name));
        }
        self.rv += 1;
        set_meta(&mut last, "resourceVersion", json!(self.rv.to_string()));
        self.emit(EventKind::Deleted, res.key(), last, None);
        let is_crd = is_crd_resource(res);
        if is_crd && let Some(def) = self.registry.unregister_crd(name) {
            let objects = self.objects.remove(&def.key()).unwrap_or_default();
            for ((_, _), mut obj) in objects {
                self.rv += 1;
                set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
                self.emit(EventKind::Deleted, def.key(), obj, None);
            }
        }
        self.gc.notify_one();
    }

    /// Deletes an object (DELETE): with finalizers (or a Foreground/Orphan policy, or a
    /// namespace) it only gets a deletionTimestamp; otherwise it is removed now and the garbage
    /// collector deletes its dependents in the background.
    pub fn delete(
        &mut self,
        res: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        propagation: Option<&str>,
        preconditions: Option<&Value>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let live = self.get(res, ns, name)?;
        if let Some(pre) = preconditions {
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = pre.get(field).and_then(Value::as_str)
                    && Some(want) != meta_str(&live, field)
                {
                    return Err(ApiError::conflict(
                        res,
                        name,
                        &format!(
                            "Precondition failed: {label} in precondition: {want}, {label} in object meta: {}",
                            meta_str(&live, field).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        let mut fins = finalizers(&live);
        match propagation {
            None | Some("Background" | "") => {}
            Some("Foreground") => {
                if !fins.iter().any(|f| f == "foregroundDeletion") {
                    fins.push("foregroundDeletion".to_string());
                }
            }
            Some("Orphan") => {
                if !fins.iter().any(|f| f == "orphan") {
                    fins.push("orphan".to_string());
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy {other:?} is not one of Background, Foreground, Orphan"
                )));
            }
        }
        let is_namespace = res.plural == "namespaces" && res.group.is_empty();
        if fins.is_empty() && !is_namespace {
            if !dry_run {
                self.remove_object(res, ns, name, live.clone());
            }
            return Ok(live);
        }
        let mut obj = live.clone();
        set_finalizers(&mut obj, &fins);
        let mut scratch = Map::new();
        let m = meta_mut(&mut obj).unwrap_or(&mut scratch);
        if !m.contains_key("deletionTimestamp") {
            m.insert("deletionTimestamp".to_string(), json!(now()));
            m.insert("deletionGracePeriodSeconds".to_string(), json!(0));
        }
        if is_namespace {
            obj["status"] = json!({"phase": "Terminating"});
        }
        if obj == live || dry_run {
            return Ok(obj);
        }
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
        self.objects
            .entry(res.key())
            .or_default()
            .insert(Self::ns_key(ns, name), obj.clone());
        self.emit(EventKind::Modified, res.key(), obj.clone(), Some(live));
        self.gc.notify_one();
        Ok(obj)
    }

    /// Writes an object the server's own controllers changed (finalizer removal, owner
    /// reference removal), with the usual rv, event and final-removal handling.
    fn controller_update(&mut self, res: &ResourceDef, ns: Option<&str>, name: &str, new: Value) {
        let Ok(live) = self.get(res, ns, name) else {
            return;
        };
        let opts = WriteOpts {
            field_manager: Some(CONTROLLER_MANAGER.to_string()),
            ..WriteOpts::default()
        };
        // The server's own write of a value derived from the live object: cannot conflict.
        let _ = self.commit_update(res, ns, name, live, new, &opts, Managed::Keep);
    }

    /// One pass of the garbage collector and namespace controller, repeated until nothing
    /// changes. Returns how many actions it took.
    pub fn collect_garbage(&mut self) -> usize {
        let mut actions = 0;
        for _ in 0..1000 {
            let acted = self.collect_once();
            if acted == 0 {
                break;
            }
            actions += acted;
        }
        actions
    }

    fn collect_once(&mut self) -> usize {
        let mut all: Vec<(ResourceDef, Value)> = Vec::new();
        for (key, objs) in &self.objects {
            let Some(def) = self.resource_of_key(key) else {
                continue;
            };
            for obj in objs.values() {
                all.push((def.clone(), obj.clone()));
            }
        }
        let uids: HashSet<String> = all
            .iter()
            .filter_map(|(_, o)| meta_str(o, "uid").map(str::to_string))
            .collect();
        let mut by_owner: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, (_, o)) in all.iter().enumerate() {
            for owner in owner_uids(o) {
                by_owner.entry(owner).or_default().push(i);
            }
        }
        let mut acted = 0;
        let loc = |o: &Value| {
            (
                meta_str(o, "namespace").map(str::to_string),
                meta_str(o, "name").unwrap_or_default().to_string(),
            )
        };
        for (def, obj) in &all {
            let uid = meta_str(obj, "uid").unwrap_or_default().to_string();
            let (ns, name) = loc(obj);
            let dependents: Vec<&(ResourceDef, Value)> = by_owner
                .get(uid.as_str())
                .map(|idx| idx.iter().filter_map(|i| all.get(*i)).collect())
                .unwrap_or_default();
            if deleting(obj) {
                let fins = finalizers(obj);
                if fins.iter().any(|f| f == "foregroundDeletion") {
                    if dependents.is_empty() {
                        let mut new = obj.clone();
                        let rest: Vec<String> = fins
                            .iter()
                            .filter(|f| *f != "foregroundDeletion")
                            .cloned()
                            .collect();
                        set_finalizers(&mut new, &rest);
                        self.controller_update(def, ns.as_deref(), &name, new);
                        acted += 1;
                        continue;
                    }
                    for (ddef, d) in &dependents {
                        if !deleting(d) {
                            let (dns, dname) = loc(d);
                            let _ = self.delete(
                                ddef,
                                dns.as_deref(),
                                &dname,
                                Some("Foreground"),
                                None,
                                false,
                            );
                            acted += 1;
                        }
                    }
                }
                if fins.iter().any(|f| f == "orphan") {
                    for (ddef, d) in &dependents {
                        let (dns, dname) = loc(d);
                        let mut new = d.clone();
                        if let Some(refs) = new
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| {
                                r.get("uid").and_then(Value::as_str) != Some(uid.as_str())
                            });
                            if refs.is_empty()
                                && let Some(m) = meta_mut(&mut new)
                            {
                                m.remove("ownerReferences");
                            }
                        }
                        self.controller_update(ddef, dns.as_deref(), &dname, new);
                        acted += 1;
                    }
                    let mut new = obj.clone();
                    let rest: Vec<String> =
                        fins.iter().filter(|f| *f != "orphan").cloned().collect();
                    set_finalizers(&mut new, &rest);
                    self.controller_update(def, ns.as_deref(), &name, new);
                    acted += 1;
                    continue;
                }
                if def.plural == "namespaces" && def.group.is_empty() {
                    let contents: Vec<&(ResourceDef, Value)> = all
                        .iter()
                        .filter(|(d, o)| {
                            d.namespaced && meta_str(o, "namespace") == Some(name.as_str())
                        })
                        .collect();
                    for (cdef, c) in &contents {
                        if !deleting(c) {
                            let (cns, cname) = loc(c);
                            let _ = self.delete(cdef, cns.as_deref(), &cname, None, None, false);
                            acted += 1;
                        }
                    }
                    if contents.is_empty()
                        && fins.is_empty()
                        && let Ok(live) = self.get(def, None, &name)
                    {
                        self.remove_object(def, None, &name, live);
                        acted += 1;
                    }
                }
                continue;
            }
            let owners = owner_uids(obj);
            if !owners.is_empty() && owners.iter().all(|u| !uids.contains(u)) {
                let _ = self.delete(def, ns.as_deref(), &name, None, None, false);
                acted += 1;
            }
        }
        acted
    }
}

/// An apply body: JSON (what kube sends) or YAML (kubectl, curl), through the workspace's
/// bounded YAML module.
fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the applied configuration is not UTF-8 text"))?;
    tvk_api::yaml::parse_single(text, &tvk_api::yaml::Limits::default()).map_err(|e| {
        ApiError::bad_request(format!(
            "the applied configuration is neither JSON nor a single YAML document: {e}"
        ))
    })
}
