//! The rules of each kind (see the parent module's docs for the decisions behind them).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use serde_json::{Map, Value, json};

use super::check::{Check, join};
use crate::admission::{FieldError, GroupVersionKind, KindAdmission, Operation, Request};

type Object = Map<String, Value>;

/// The rules of one kind; a blanket impl turns them into a [`KindAdmission`].
pub(crate) trait KindRules: Send + Sync {
    const KIND: &'static str;
    const PLURAL: &'static str;
    const NAMESPACED: bool;
    /// Known top-level spec fields (others are warned about).
    const SPEC_FIELDS: &'static [&'static str];

    /// Checks the spec.
    fn spec(spec: &Object, check: &mut Check);

    /// Checks an UPDATE against the stored object.
    fn update(_old: &Object, _new: &Object, _check: &mut Check) {}

    /// Adds default operations for `spec` (paths relative to `/spec`).
    fn defaults(_spec: &Object, _ops: &mut Defaults) {}
}

/// Collects `add` operations for absent fields.
#[derive(Default)]
pub(crate) struct Defaults {
    ops: Vec<PatchOperation>,
}

impl Defaults {
    /// Adds `value` at `/spec/<path…>/<key>` when `parent` lacks `key`.
    fn add_if_absent(&mut self, parent: &Object, path: &[&str], key: &str, value: Value) {
        if parent.get(key).is_some_and(|v| !v.is_null()) {
            return;
        }
        let mut pointer = PointerBuf::from_tokens(["spec"]);
        for token in path {
            pointer.push_back(*token);
        }
        pointer.push_back(key);
        // `add` on an existing null member replaces it, which is what a default should do.
        self.ops.push(PatchOperation::Add(AddOperation {
            path: pointer,
            value,
        }));
    }

    fn hook_config(&mut self, hook_config: &Object, path: &[&str]) {
        self.add_if_absent(hook_config, path, "mode", json!("Sequential"));
        self.add_if_absent(hook_config, path, "podReadyWaitSeconds", json!(120));
    }
}

impl<T: KindRules> KindAdmission for T {
    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind {
            group: crate::common::GROUP.to_string(),
            version: crate::common::VERSION.to_string(),
            kind: T::KIND.to_string(),
        }
    }

    fn plural(&self) -> &'static str {
        T::PLURAL
    }

    fn namespaced(&self) -> bool {
        T::NAMESPACED
    }

    fn validate(&self, request: &Request<'_>) -> Result<Vec<String>, Vec<FieldError>> {
        let mut check = Check::default();
        // A deletion only needs the object to be ours; its content was validated on the way in.
        if request.operation != Operation::Delete
            && let Some(spec) = envelope::<T>(request.object, &mut check)
        {
            check.known_fields(spec, "spec", T::SPEC_FIELDS);
            T::spec(spec, &mut check);
            if request.operation == Operation::Update
                && let Some(old_spec) = request
                    .old_object
                    .and_then(|o| o.get("spec"))
                    .and_then(Value::as_object)
            {
                T::update(old_spec, spec, &mut check);
            }
        }
        if check.errors.is_empty() {
            Ok(check.warnings)
        } else {
            Err(check.errors)
        }
    }

    fn default_patch(&self, object: &Value) -> Result<Patch, Vec<FieldError>> {
        let Some(root) = object.as_object() else {
            return Err(vec![FieldError::new(
                "",
                format!("a {} must be an object", T::KIND),
            )]);
        };
        let mut defaults = Defaults::default();
        if let Some(spec) = root.get("spec").and_then(Value::as_object) {
            T::defaults(spec, &mut defaults);
        }
        Ok(Patch(defaults.ops))
    }
}

/// Checks apiVersion, kind, metadata and that `spec` is an object; returns the spec.
fn envelope<'a, T: KindRules>(object: &'a Value, check: &mut Check) -> Option<&'a Object> {
    let Some(root) = object.as_object() else {
        check.error("", format!("a {} must be an object", T::KIND));
        return None;
    };
    match root.get("apiVersion").and_then(Value::as_str) {
        Some(crate::common::API_VERSION) => {}
        Some(other) => check.error(
            "apiVersion",
            format!(
                "{other:?} is not served: use {}",
                crate::common::API_VERSION
            ),
        ),
        None => check.error(
            "apiVersion",
            format!("required: {}", crate::common::API_VERSION),
        ),
    }
    match root.get("kind").and_then(Value::as_str) {
        Some(kind) if kind == T::KIND => {}
        other => check.error(
            "kind",
            format!("must be {}, found {}", T::KIND, other.unwrap_or("nothing")),
        ),
    }
    if let Some(metadata) = check.object(root, "", "metadata", true) {
        let name = check.string(metadata, "metadata", "name", false);
        let generate_name = check.string(metadata, "metadata", "generateName", false);
        match (name, generate_name) {
            (Some(name), _) => check.dns_subdomain("metadata.name", name),
            (None, Some(_)) => {}
            (None, None) => check.error("metadata.name", "required: the object's name"),
        }
        if let Some(namespace) = check.string(metadata, "metadata", "namespace", false) {
            if T::NAMESPACED {
                check.dns_label("metadata.namespace", namespace);
            } else if !namespace.is_empty() {
                check.warn(
                    "metadata.namespace",
                    format!("{} is cluster-scoped; the namespace is ignored", T::KIND),
                );
            }
        }
    }
    check.object(root, "", "spec", true)
}

fn hook_config(parent: &Object, parent_path: &str, check: &mut Check) {
    let Some(config) = check.object(parent, parent_path, "hookConfig", false) else {
        return;
    };
    let path = join(parent_path, "hookConfig");
    check.one_of(config, &path, "mode", false, &["Sequential", "Parallel"]);
    check.integer(
        config,
        &path,
        "podReadyWaitSeconds",
        false,
        Some(1),
        Some(600),
    );
    let hooks_path = join(&path, "hooks");
    let hooks = check.list(config, &path, "hooks", true, 1);
    for (item_path, hook) in check.object_items(hooks, &hooks_path) {
        check.reference(hook, &item_path, "hook", true);
        if let Some(selector) = check.object(hook, &item_path, "podSelector", true) {
            let selector_path = join(&item_path, "podSelector");
            let labels_path = join(&selector_path, "labels");
            let labels = check.list(selector, &selector_path, "labels", false, 1);
            let has_labels = labels.is_some();
            for (label_path, label_selector) in check.object_items(labels, &labels_path) {
                check.label_selector(label_selector, &label_path);
            }
            let has_regex = selector.get("regex").is_some_and(|r| !r.is_null());
            check.regex(selector, &selector_path, "regex");
            if !has_labels && !has_regex {
                check.error(
                    &selector_path,
                    "must select pods by `labels` (label selectors) or `regex` (pod name pattern)",
                );
            }
            check.known_fields(selector, &selector_path, &["labels", "regex"]);
        }
        check.regex(hook, &item_path, "containerRegex");
        check.known_fields(hook, &item_path, &["hook", "podSelector", "containerRegex"]);
    }
    check.known_fields(config, &path, &["mode", "podReadyWaitSeconds", "hooks"]);
}

fn encryption(parent: &Object, parent_path: &str, check: &mut Check) {
    if let Some(encryption) = check.object(parent, parent_path, "encryption", false) {
        let path = join(parent_path, "encryption");
        check.reference(encryption, &path, "encryptionSecret", true);
        check.known_fields(encryption, &path, &["encryptionSecret"]);
    }
}

fn bool_flags(parent: &Object, parent_path: &str, key: &str, flags: &[&str], check: &mut Check) {
    if let Some(object) = check.object(parent, parent_path, key, false) {
        let path = join(parent_path, key);
        for flag in flags {
            check.boolean(object, &path, flag, false);
        }
        check.known_fields(object, &path, flags);
    }
}

/// `(namespace, name)` of a reference, the namespace defaulting to empty.
fn reference_key(reference: Option<&Value>) -> Option<(String, String)> {
    let reference = reference?.as_object()?;
    let text = |k: &str| {
        reference
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some((text("namespace"), text("name")))
}

fn spec_immutable(kind: &str, old: &Object, new: &Object, check: &mut Check) {
    if old != new {
        let changed: Vec<&str> = old
            .keys()
            .chain(new.keys())
            .filter(|k| old.get(*k) != new.get(*k))
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        check.error(
            "spec",
            format!(
                "a {kind}'s spec cannot change after creation (changed: {}); create a new {kind}",
                changed.join(", ")
            ),
        );
    }
}

// ---------------------------------------------------------------- Target

/// Admission of `Target`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TargetAdmission;

const VENDORS: &[&str] = &[
    "AWS",
    "RedhatCeph",
    "Ceph",
    "IBMCleversafe",
    "Cloudian",
    "Scality",
    "NetApp",
    "Cohesity",
    "SwiftStack",
    "Wasabi",
    "Wassabi",
    "MinIO",
    "DellEMC",
    "Azure",
    "DigitalOcean",
    "OVH",
    "Other",
];

/// Host names of cloud metadata services (instance credentials live behind them).
const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
    "metadata.platformequinix.com",
];

impl KindRules for TargetAdmission {
    const KIND: &'static str = "Target";
    const PLURAL: &'static str = "targets";
    const NAMESPACED: bool = true;
    const SPEC_FIELDS: &'static [&'static str] = &[
        "type",
        "vendor",
        "objectStoreCredentials",
        "nfsCredentials",
        "thresholdCapacity",
        "enableBrowsing",
    ];

    fn spec(spec: &Object, check: &mut Check) {
        let type_ = check.one_of(spec, "spec", "type", true, &["ObjectStore", "NFS"]);
        check.one_of(spec, "spec", "vendor", true, VENDORS);
        check.boolean(spec, "spec", "enableBrowsing", false);
        match spec.get("thresholdCapacity") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64().is_some() => {}
            Some(Value::String(s)) if is_quantity(s) => {}
            Some(other) => check.error(
                "spec.thresholdCapacity",
                format!("{other} is not a quantity: use a size such as 100Gi or 500G"),
            ),
        }
        let object_store = check.object(spec, "spec", "objectStoreCredentials", false);
        let nfs = check.object(spec, "spec", "nfsCredentials", false);
        if let Some(object_store) = object_store {
            object_store_credentials(object_store, check);
        }
        if let Some(nfs) = nfs {
            let path = "spec.nfsCredentials";
            if let Some(export) = check.string(nfs, path, "nfsExport", true)
                && !is_nfs_export(export)
            {
                check.error(
                    join(path, "nfsExport"),
                    format!(
                        "{export:?} is not an NFS export: use server:/path (e.g. nfs.example.com:/exports/backups, [fd00::10]:/backups)"
                    ),
                );
            }
            check.string(nfs, path, "nfsOptions", false);
            check.known_fields(nfs, path, &["nfsExport", "nfsOptions"]);
        }
        match type_ {
            Some("ObjectStore") => {
                if object_store.is_none() && spec.get("objectStoreCredentials").is_none() {
                    check.error(
                        "spec.objectStoreCredentials",
                        "required when type is ObjectStore: bucketName and credentialSecret",
                    );
                }
                if let Some(object_store) = object_store
                    && object_store.get("credentialSecret").is_none()
                {
                    check.error(
                        "spec.objectStoreCredentials.credentialSecret",
                        "required when type is ObjectStore: a Secret with keys accessKey and secretKey",
                    );
                }
                if spec.get("nfsCredentials").is_some() {
                    check.error(
                        "spec.nfsCredentials",
                        "only allowed when type is NFS; remove it or set type: NFS",
                    );
                }
            }
            Some("NFS") => {
                if nfs.is_none() && spec.get("nfsCredentials").is_none() {
                    check.error(
                        "spec.nfsCredentials",
                        "required when type is NFS: nfsExport (server:/path)",
                    );
                }
                if spec.get("objectStoreCredentials").is_some() {
                    check.error(
                        "spec.objectStoreCredentials",
                        "only allowed when type is ObjectStore; remove it or set type: ObjectStore",
                    );
                }
            }
            _ => {}
        }
    }

    fn update(old: &Object, new: &Object, check: &mut Check) {
        for field in ["type", "vendor"] {
            if old.get(field) != new.get(field) {
                check.error(
                    join("spec", field),
                    format!(
                        "cannot change after creation (was {}); create a new Target instead",
                        old.get(field).unwrap_or(&Value::Null)
                    ),
                );
            }
        }
    }

    fn defaults(spec: &Object, ops: &mut Defaults) {
        ops.add_if_absent(spec, &[], "enableBrowsing", json!(false));
    }
}

fn object_store_credentials(credentials: &Object, check: &mut Check) {
    let path = "spec.objectStoreCredentials";
    check.string(credentials, path, "bucketName", true);
    check.string(credentials, path, "region", false);
    check.reference(credentials, path, "credentialSecret", false);
    for flag in [
        "skipCertVerification",
        "objectLockingEnabled",
        "enableDedup",
    ] {
        check.boolean(credentials, path, flag, false);
    }
    if let Some(ssl) = check.object(credentials, path, "sslCertConfig", false) {
        let ssl_path = join(path, "sslCertConfig");
        check.reference(ssl, &ssl_path, "certConfigMap", false);
        check.string(ssl, &ssl_path, "certKey", false);
        check.known_fields(ssl, &ssl_path, &["certConfigMap", "certKey"]);
    }
    if let Some(url) = check.string(credentials, path, "url", false) {
        object_store_url(url, &join(path, "url"), check);
    }
    check.known_fields(
        credentials,
        path,
        &[
            "bucketName",
            "region",
            "url",
            "credentialSecret",
            "skipCertVerification",
            "sslCertConfig",
            "objectLockingEnabled",
            "enableDedup",
        ],
    );
}

fn object_store_url(text: &str, path: &str, check: &mut Check) {
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            check.error(
                path,
                format!("{text:?} is not a valid URL ({e}): use https://host[:port]"),
            );
            return;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" => check.warn(
            path,
            "plain http sends data and request signatures unencrypted; use https unless the endpoint is inside the cluster",
        ),
        other => {
            check.error(path, format!("scheme {other:?} is not allowed: use https:// (or http://)"));
            return;
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        check.error(
            path,
            "must not contain credentials; put them in the Secret named by credentialSecret",
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        check.error(
            path,
            "must not have a query or fragment: use https://host[:port][/path]",
        );
    }
    let blocked = match url.host() {
        None => {
            check.error(path, "has no host: use https://host[:port]");
            return;
        }
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            METADATA_HOSTS.contains(&domain.as_str())
        }
        Some(url::Host::Ipv4(ip)) => is_blocked_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_blocked_ip(IpAddr::V6(ip)),
    };
    if blocked {
        check.error(
            path,
            "points at a link-local or cloud metadata address, which is never an object store: use the storage endpoint",
        );
    }
}

fn is_blocked_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_blocked_v4(v4);
            }
            let first = v6.segments()[0];
            (first & 0xffc0) == 0xfe80 || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    ip.is_link_local() || ip == Ipv4Addr::new(100, 100, 100, 200)
}

fn is_nfs_export(export: &str) -> bool {
    let (server, path) = if let Some(rest) = export.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((v6, path)) if v6.parse::<Ipv6Addr>().is_ok() => (v6, path),
            _ => return false,
        }
    } else {
        match export.split_once(':') {
            Some(parts) => parts,
            None => return false,
        }
    };
    !server.is_empty()
        && !server.contains(['/', ' ', '\t'])
        && path.starts_with('/')
        && !path.chars().any(char::is_whitespace)
}

fn is_quantity(text: &str) -> bool {
    crate::quantity::bytes(text).is_some()
}

// ---------------------------------------------------------------- Policy

/// Admission of `Policy`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyAdmission;

impl KindRules for PolicyAdmission {
    const KIND: &'static str = "Policy";
    const PLURAL: &'static str = "policies";
    const NAMESPACED: bool = true;
    const SPEC_FIELDS: &'static [&'static str] = &[
        "type",
        "default",
        "retentionConfig",
        "scheduleConfig",
        "cleanupConfig",
        "timeoutConfig",
        "securityScanConfig",
        "continuousRestoreConfig",
    ];

    fn spec(spec: &Object, check: &mut Check) {
        use crate::policy::PolicyType;
        let names: Vec<&str> = PolicyType::ALL.iter().map(|t| t.as_str()).collect();
        let type_ = check.one_of(spec, "spec", "type", true, &names);
        check.boolean(spec, "spec", "default", false);

        if let Some(retention) = check.object(spec, "spec", "retentionConfig", false) {
            let path = "spec.retentionConfig";
            let mut counts = 0;
            for count in ["latest", "weekly", "monthly", "yearly"] {
                if check
                    .integer(retention, path, count, false, Some(1), None)
                    .is_some()
                {
                    counts += 1;
                }
            }
            check.one_of(
                retention,
                path,
                "dayOfWeek",
                false,
                &[
                    "Monday",
                    "Tuesday",
                    "Wednesday",
                    "Thursday",
                    "Friday",
                    "Saturday",
                    "Sunday",
                ],
            );
            check.integer(retention, path, "dateOfMonth", false, Some(1), Some(28));
            check.one_of(
                retention,
                path,
                "monthOfYear",
                false,
                &[
                    "January",
                    "February",
                    "March",
                    "April",
                    "May",
                    "June",
                    "July",
                    "August",
                    "September",
                    "October",
                    "November",
                    "December",
                ],
            );
            if counts == 0
                && !["latest", "weekly", "monthly", "yearly"]
                    .iter()
                    .any(|k| retention.contains_key(*k))
            {
                check.error(
                    path,
                    "must keep something: set at least one of latest, weekly, monthly, yearly",
                );
            }
            check.known_fields(
                retention,
                path,
                &[
                    "latest",
                    "weekly",
                    "dayOfWeek",
                    "monthly",
                    "dateOfMonth",
                    "yearly",
                    "monthOfYear",
                ],
            );
        }
        if let Some(schedule) = check.object(spec, "spec", "scheduleConfig", false) {
            let path = "spec.scheduleConfig";
            for (item_path, expression) in check.string_list(schedule, path, "schedule", true, 1) {
                cron(expression, &item_path, check);
            }
            check.known_fields(schedule, path, &["schedule"]);
        }
        if let Some(cleanup) = check.object(spec, "spec", "cleanupConfig", false) {
            let path = "spec.cleanupConfig";
            check.integer(cleanup, path, "days", true, Some(0), None);
            if check
                .integer(cleanup, path, "backupDays", false, Some(0), None)
                .is_some()
            {
                check.warn(&join(path, "backupDays"), "deprecated: use days");
            }
            check.known_fields(cleanup, path, &["days", "backupDays"]);
        }
        check.object(spec, "spec", "timeoutConfig", false);
        if let Some(scan) = check.object(spec, "spec", "securityScanConfig", false) {
            let path = "spec.securityScanConfig";
            for (item_path, expression) in check.string_list(scan, path, "schedule", false, 1) {
                cron(expression, &item_path, check);
            }
            check.integer(scan, path, "retention", false, Some(1), None);
            check.known_fields(scan, path, &["schedule", "retention"]);
        }
        if let Some(continuous) = check.object(spec, "spec", "continuousRestoreConfig", false) {
            let path = "spec.continuousRestoreConfig";
            check.integer(continuous, path, "consistentSets", true, Some(1), Some(10));
            check.known_fields(continuous, path, &["consistentSets"]);
        }

        let Some(type_) = type_ else { return };
        let Some(own) = PolicyType::ALL.iter().find(|t| t.as_str() == type_) else {
            return;
        };
        let needs_config = matches!(
            own,
            PolicyType::Retention
                | PolicyType::Schedule
                | PolicyType::Cleanup
                | PolicyType::ContinuousRestore
        );
        if needs_config && spec.get(own.config_field()).is_none_or(Value::is_null) {
            check.error(
                join("spec", own.config_field()),
                format!("required when type is {type_}"),
            );
        }
        for other in PolicyType::ALL {
            if other != *own && spec.get(other.config_field()).is_some_and(|v| !v.is_null()) {
                check.error(
                    join("spec", other.config_field()),
                    format!(
                        "only allowed when type is {}; this policy's type is {type_} (use {})",
                        other.as_str(),
                        own.config_field()
                    ),
                );
            }
        }
    }
}

/// Checks a standard 5-field cron expression.
fn cron(expression: &str, path: &str, check: &mut Check) {
    let fields = expression.split_whitespace().count();
    if fields != 5 {
        check.error(
            path,
            format!(
                "{expression:?} has {fields} field(s): use 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\""
            ),
        );
        return;
    }
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .sloppy_ranges(true)
        .build();
    if let Err(e) = parser.parse(expression) {
        check.error(
            path,
            format!(
                "{expression:?} is not a valid cron expression: {}",
                e.to_string().trim_end_matches('.')
            ),
        );
    }
}

// ---------------------------------------------------------------- Hook

/// Admission of `Hook`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HookAdmission;

impl KindRules for HookAdmission {
    const KIND: &'static str = "Hook";
    const PLURAL: &'static str = "hooks";
    const NAMESPACED: bool = true;
    const SPEC_FIELDS: &'static [&'static str] = &["pre", "post"];

    fn spec(spec: &Object, check: &mut Check) {
        for (step, required) in [("pre", false), ("post", true)] {
            let Some(action) = check.object(spec, "spec", step, required) else {
                continue;
            };
            let path = join("spec", step);
            if let Some(exec) = check.object(action, &path, "execAction", true) {
                let exec_path = join(&path, "execAction");
                check.string_list(exec, &exec_path, "command", true, 1);
                check.known_fields(exec, &exec_path, &["command"]);
            }
            check.boolean(action, &path, "ignoreFailure", false);
            check.integer(action, &path, "maxRetryCount", false, Some(0), Some(10));
            check.integer(action, &path, "timeoutSeconds", false, Some(1), Some(300));
            check.known_fields(
                action,
                &path,
                &[
                    "execAction",
                    "ignoreFailure",
                    "maxRetryCount",
                    "timeoutSeconds",
                ],
            );
        }
    }

    fn defaults(spec: &Object, ops: &mut Defaults) {
        for step in ["pre", "post"] {
            if let Some(action) = spec.get(step).and_then(Value::as_object) {
                ops.add_if_absent(action, &[step], "maxRetryCount", json!(0));
                ops.add_if_absent(action, &[step], "timeoutSeconds", json!(30));
                ops.add_if_absent(action, &[step], "ignoreFailure", json!(false));
            }
        }
    }
}

// ---------------------------------------------------------------- plans

fn backup_config(spec: &Object, check: &mut Check) {
    let Some(config) = check.object(spec, "spec", "backupConfig", true) else {
        return;
    };
    let path = "spec.backupConfig";
    check.reference(config, path, "target", true);
    check.reference(config, path, "retentionPolicy", false);
    if let Some(schedule) = check.object(config, path, "schedulePolicy", false) {
        let schedule_path = join(path, "schedulePolicy");
        check.reference(schedule, &schedule_path, "fullBackupPolicy", false);
        check.reference(schedule, &schedule_path, "incrementalBackupPolicy", false);
        check.known_fields(
            schedule,
            &schedule_path,
            &["fullBackupPolicy", "incrementalBackupPolicy"],
        );
    }
    check.integer(
        config,
        path,
        "maxIncrBackupsPerFullBackup",
        false,
        Some(1),
        Some(15),
    );
    check.known_fields(
        config,
        path,
        &[
            "target",
            "retentionPolicy",
            "schedulePolicy",
            "maxIncrBackupsPerFullBackup",
        ],
    );
}

fn snapshot_config(spec: &Object, check: &mut Check) {
    let Some(config) = check.object(spec, "spec", "snapshotConfig", false) else {
        return;
    };
    let path = "spec.snapshotConfig";
    check.reference(config, path, "target", true);
    check.reference(config, path, "retentionPolicy", false);
    if let Some(schedule) = check.object(config, path, "schedulePolicy", false) {
        let schedule_path = join(path, "schedulePolicy");
        check.reference(schedule, &schedule_path, "snapshotPolicy", false);
        check.known_fields(schedule, &schedule_path, &["snapshotPolicy"]);
    }
    check.known_fields(
        config,
        path,
        &["target", "retentionPolicy", "schedulePolicy"],
    );
}

fn plan_target_immutable(old: &Object, new: &Object, check: &mut Check) {
    let target =
        |spec: &Object| reference_key(spec.get("backupConfig").and_then(|c| c.get("target")));
    if let (Some(before), Some(after)) = (target(old), target(new))
        && before != after
    {
        check.error(
            "spec.backupConfig.target",
            format!(
                "cannot change after creation (was {}/{}): the plan's backups live on that target; create a new plan to use another target",
                before.0, before.1
            ),
        );
    }
}

/// Admission of `BackupPlan`.
#[derive(Debug, Default, Clone, Copy)]
pub struct BackupPlanAdmission;

impl KindRules for BackupPlanAdmission {
    const KIND: &'static str = "BackupPlan";
    const PLURAL: &'static str = "backupplans";
    const NAMESPACED: bool = true;
    const SPEC_FIELDS: &'static [&'static str] = &[
        "backupConfig",
        "snapshotConfig",
        "backupPlanComponents",
        "includeResources",
        "excludeResources",
        "hookConfig",
        "encryption",
        "backupPlanFlags",
        "continuousRestoreConfig",
    ];

    fn spec(spec: &Object, check: &mut Check) {
        backup_config(spec, check);
        snapshot_config(spec, check);
        if let Some(components) = check.object(spec, "spec", "backupPlanComponents", false) {
            let path = "spec.backupPlanComponents";
            check.string_list(components, path, "helmReleases", false, 1);
            let operators_path = join(path, "operators");
            let operators = check.list(components, path, "operators", false, 1);
            let mut ids = BTreeSet::new();
            for (item_path, operator) in check.object_items(operators, &operators_path) {
                if let Some(id) = check.string(operator, &item_path, "operatorId", true)
                    && !ids.insert(id.to_string())
                {
                    check.error(
                        join(&item_path, "operatorId"),
                        format!("{id:?} is used twice: operator ids must be unique in a plan"),
                    );
                }
                check.reference(operator, &item_path, "subscription", false);
                check.string(operator, &item_path, "helmRelease", false);
                let crs_path = join(&item_path, "customResources");
                let crs = check.list(operator, &item_path, "customResources", false, 1);
                for (cr_path, cr) in check.object_items(crs, &crs_path) {
                    check.gvk_resource(cr, &cr_path);
                }
                for selector in [
                    "operatorResources",
                    "applicationResources",
                    "excludeResources",
                ] {
                    check.resource_selector(operator, &item_path, selector);
                }
                check.known_fields(
                    operator,
                    &item_path,
                    &[
                        "operatorId",
                        "subscription",
                        "helmRelease",
                        "customResources",
                        "operatorResources",
                        "applicationResources",
                        "excludeResources",
                    ],
                );
            }
            if let Some(custom) = check.object(components, path, "customSelector", false) {
                let custom_path = join(path, "customSelector");
                check.resource_selector(custom, &custom_path, "selectResources");
                check.resource_selector(custom, &custom_path, "excludeResources");
                check.known_fields(
                    custom,
                    &custom_path,
                    &["selectResources", "excludeResources"],
                );
            }
            check.known_fields(
                components,
                path,
                &["helmReleases", "operators", "customSelector"],
            );
        }
        check.resource_selector(spec, "spec", "includeResources");
        check.resource_selector(spec, "spec", "excludeResources");
        hook_config(spec, "spec", check);
        encryption(spec, "spec", check);
        bool_flags(
            spec,
            "spec",
            "backupPlanFlags",
            &["pauseSchedule", "retainHelmApps", "skipImageBackup"],
            check,
        );
        check.object(spec, "spec", "continuousRestoreConfig", false);
    }

    fn update(old: &Object, new: &Object, check: &mut Check) {
        plan_target_immutable(old, new, check);
    }

    fn defaults(spec: &Object, ops: &mut Defaults) {
        if let Some(config) = spec.get("hookConfig").and_then(Value::as_object) {
            ops.hook_config(config, &["hookConfig"]);
        }
    }
}

/// Admission of `ClusterBackupPlan`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterBackupPlanAdmission;

impl KindRules for ClusterBackupPlanAdmission {
    const KIND: &'static str = "ClusterBackupPlan";
    const PLURAL: &'static str = "clusterbackupplans";
    const NAMESPACED: bool = false;
    const SPEC_FIELDS: &'static [&'static str] = &[
        "backupConfig",
        "backupComponents",
        "namespaceSelector",
        "includeResources",
        "excludeResources",
        "clusterBackupPlanFlags",
        "encryption",
        "snapshotConfig",
    ];

    fn spec(spec: &Object, check: &mut Check) {
        backup_config(spec, check);
        snapshot_config(spec, check);
        let components_path = "spec.backupComponents";
        let components = check.list(spec, "spec", "backupComponents", false, 1);
        let has_components = components.is_some();
        let mut namespaces = BTreeSet::new();
        for (item_path, component) in check.object_items(components, components_path) {
            if let Some(namespace) = check.string(component, &item_path, "namespace", true) {
                check.dns_label(&join(&item_path, "namespace"), namespace);
                if !namespaces.insert(namespace.to_string()) {
                    check.error(
                        join(&item_path, "namespace"),
                        format!("namespace {namespace:?} is listed twice"),
                    );
                }
            }
            check.resource_selector(component, &item_path, "includeResources");
            check.resource_selector(component, &item_path, "excludeResources");
            hook_config(component, &item_path, check);
            check.boolean(component, &item_path, "retainHelmApps", false);
        }
        let selectors_path = "spec.namespaceSelector";
        let selectors = check.list(spec, "spec", "namespaceSelector", false, 1);
        let has_selectors = selectors.is_some();
        for (item_path, selector) in check.object_items(selectors, selectors_path) {
            check.string(selector, &item_path, "name", true);
            let labels_path = join(&item_path, "labelSelector");
            let labels = check.list(selector, &item_path, "labelSelector", false, 1);
            for (label_path, label_selector) in check.object_items(labels, &labels_path) {
                check.label_selector(label_selector, &label_path);
            }
        }
        if !has_components
            && !has_selectors
            && spec.get("backupComponents").is_none()
            && spec.get("namespaceSelector").is_none()
        {
            check.error(
                "spec",
                "select namespaces with backupComponents (by name) or namespaceSelector (by labels)",
            );
        }
        check.resource_selector(spec, "spec", "includeResources");
        check.resource_selector(spec, "spec", "excludeResources");
        encryption(spec, "spec", check);
        bool_flags(
            spec,
            "spec",
            "clusterBackupPlanFlags",
            &["pauseSchedule", "retainHelmApps", "skipImageBackup"],
            check,
        );
    }

    fn update(old: &Object, new: &Object, check: &mut Check) {
        plan_target_immutable(old, new, check);
    }

    fn defaults(spec: &Object, ops: &mut Defaults) {
        let Some(components) = spec.get("backupComponents").and_then(Value::as_array) else {
            return;
        };
        for (i, component) in components.iter().enumerate() {
            if let Some(config) = component.get("hookConfig").and_then(Value::as_object) {
                let i = i.to_string();
                ops.hook_config(config, &["backupComponents", &i, "hookConfig"]);
            }
        }
    }
}

// ---------------------------------------------------------------- backups

/// The spec both backup kinds share: a backup type and a reference to the plan, whose field
/// name is the only difference between `Backup` and `ClusterBackup`.
fn backup_spec(spec: &Object, plan_field: &str, check: &mut Check) {
    check.one_of(
        spec,
        "spec",
        "type",
        true,
        &["Full", "Incremental", "Mixed"],
    );
    check.reference(spec, "spec", plan_field, true);
}

/// Admission of `Backup`.
#[derive(Debug, Default, Clone, Copy)]
pub struct BackupAdmission;

impl KindRules for BackupAdmission {
    const KIND: &'static str = "Backup";
    const PLURAL: &'static str = "backups";
    const NAMESPACED: bool = true;
    const SPEC_FIELDS: &'static [&'static str] = &["type", "backupPlan"];

    fn spec(spec: &Object, check: &mut Check) {
        backup_spec(spec, "backupPlan", check);
    }

    fn update(old: &Object, new: &Object, check: &mut Check) {
        spec_immutable(Self::KIND, old, new, check);
    }
}

/// Admission of `ClusterBackup`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterBackupAdmission;

impl KindRules for ClusterBackupAdmission {
    const KIND: &'static str = "ClusterBackup";
    const PLURAL: &'static str = "clusterbackups";
    const NAMESPACED: bool = false;
    const SPEC_FIELDS: &'static [&'static str] = &["type", "clusterBackupPlan"];

    fn spec(spec: &Object, check: &mut Check) {
        backup_spec(spec, "clusterBackupPlan", check);
    }

    fn update(old: &Object, new: &Object, check: &mut Check) {
        spec_immutable(Self::KIND, old, new, check);
    }
}

// ---------------------------------------------------------------- restores

/// The source field each restore source type needs.
const RESTORE_SOURCES: &[(&str, &str)] = &[
    ("Backup", "backup"),
    ("Snapshot", "snapshot"),
    ("BackupPlan", "backupPlan"),
    ("ConsistentSet", "consistentSet"),
    ("ContinuousRestorePlan", "continuousRestorePlan"),
    ("Location", "location"),
];

const CLUSTER_RESTORE_SOURCES: &[(&str, &str)] = &[
    ("ClusterBackup", "clusterBackup"),
    ("ClusterSnapshot", "clusterSnapshot"),
    ("ClusterBackupPlan", "clusterBackupPlan"),
    ("Location", "location"),
];

fn restore_source(spec: &Object, sources: &[(&str, &str)], check: &mut Check) {
    let Some(source) = check.object(spec, "spec", "source", true) else {
        return;
    };
    let path = "spec.source";
    let types: Vec<&str> = sources.iter().map(|(t, _)| *t).collect();
    let type_ = check.one_of(source, path, "type", true, &types);
    for (_, field) in sources {
        if *field != "location" {
            check.reference(source, path, field, false);
        }
    }
    check.reference(source, path, "target", false);
    if let Some(location) = check.string(source, path, "location", false) {
        location_path(location, &join(path, "location"), check);
    }
    let mut known: Vec<&str> = sources.iter().map(|(_, f)| *f).collect();
    known.extend(["type", "target"]);
    check.known_fields(source, path, &known);

    let Some(type_) = type_ else { return };
    let present = |field: &str| source.get(field).is_some_and(|v| !v.is_null());
    for (source_type, field) in sources {
        if *source_type == type_ {
            if !present(field) {
                let what = if *field == "location" {
                    "the path of a backup on the target".to_string()
                } else {
                    format!("a reference to the {source_type}")
                };
                check.error(
                    join(path, field),
                    format!("required when type is {type_}: {what}"),
                );
            }
        } else if present(field) {
            check.error(
                join(path, field),
                format!("only allowed when type is {source_type}; this source's type is {type_}"),
            );
        }
    }
    match (type_, present("target")) {
        ("Location", false) => check.error(
            join(path, "target"),
            "required when type is Location: the Target holding the backup",
        ),
        ("Location", true) => {}
        (_, true) => check.error(
            join(path, "target"),
            format!("only allowed when type is Location; this source's type is {type_}"),
        ),
        _ => {}
    }
}

/// A path of a backup on a target: relative, no `..`, no backslashes or control characters.
fn location_path(location: &str, path: &str, check: &mut Check) {
    if location.trim().is_empty() {
        check.error(path, "must not be empty");
    } else if location.starts_with('/') {
        check.error(
            path,
            format!("{location:?} is absolute: give the backup's path relative to the target root (as in the Backup's status.location)"),
        );
    } else if location.split('/').any(|segment| segment == "..") {
        check.error(
            path,
            format!("{location:?} contains `..`: paths may not leave the target"),
        );
    } else if location.contains('\\') || location.chars().any(char::is_control) {
        check.error(
            path,
            "must not contain backslashes or control characters: use `/`-separated names",
        );
    }
}

fn action_flags_and_registry(spec: &Object, check: &mut Check) {
    let image_restore = check
        .object(spec, "spec", "actionFlags", false)
        .and_then(|flags| {
            for flag in ["cleanupOnFailure", "protectRestoredApp"] {
                check.boolean(flags, "spec.actionFlags", flag, false);
            }
            check.known_fields(
                flags,
                "spec.actionFlags",
                &["cleanupOnFailure", "imageRestore", "protectRestoredApp"],
            );
            check.boolean(flags, "spec.actionFlags", "imageRestore", false)
        })
        .unwrap_or(false);
    let registry = check.object(spec, "spec", "imageRegistry", image_restore);
    if let Some(registry) = registry {
        let path = "spec.imageRegistry";
        if let Some(host) = check.string(registry, path, "registry", true)
            && !is_registry_host(host)
        {
            check.error(
                join(path, "registry"),
                format!("{host:?} is not a registry host: use host[:port] without a scheme, e.g. registry.example.com:5000"),
            );
        }
        if let Some(repository) = check.string(registry, path, "repository", true)
            && !is_repository(repository)
        {
            check.error(
                join(path, "repository"),
                format!("{repository:?} is not a repository path: lower-case letters, digits and . _ - separated by /"),
            );
        }
        check.reference(registry, path, "registryAuthSecret", true);
        check.boolean(registry, path, "skipTLSVerify", false);
        check.known_fields(
            registry,
            path,
            &[
                "registry",
                "repository",
                "registryAuthSecret",
                "skipTLSVerify",
            ],
        );
        if !image_restore {
            check.warn(path, "ignored unless spec.actionFlags.imageRestore is true");
        }
    } else if image_restore && spec.get("imageRegistry").is_none() {
        // `object(.., required = true)` already reported it.
    }
}

fn is_registry_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || port.chars().all(|c| c.is_ascii_digit()) => {
            (name, Some(port))
        }
        _ => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    !name.is_empty()
        && port_ok
        && !host.contains("://")
        && !name.contains('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}

fn is_repository(repository: &str) -> bool {
    repository.split('/').all(|component| {
        !component.is_empty()
            && component.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && component
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

fn transform_components(spec: &Object, check: &mut Check) {
    let Some(transforms) = check.object(spec, "spec", "transformComponents", false) else {
        return;
    };
    let path = "spec.transformComponents";
    let mut names = BTreeSet::new();
    let mut unique = |check: &mut Check, item_path: &str, name: Option<&str>| {
        if let Some(name) = name
            && !names.insert(name.to_string())
        {
            check.error(
                join(item_path, "transformName"),
                format!("{name:?} is used twice: transform names must be unique"),
            );
        }
    };
    let helm_path = join(path, "helm");
    let helm = check.list(transforms, path, "helm", false, 1);
    for (item_path, transform) in check.object_items(helm, &helm_path) {
        let name = check.string(transform, &item_path, "transformName", true);
        unique(check, &item_path, name);
        check.string(transform, &item_path, "release", true);
        for list in ["set", "setString"] {
            let list_path = join(&item_path, list);
            let pairs = check.list(transform, &item_path, list, false, 0);
            for (pair_path, pair) in check.object_items(pairs, &list_path) {
                check.string(pair, &pair_path, "key", true);
                if check.string(pair, &pair_path, "value", false).is_none()
                    && pair.get("value").is_none()
                {
                    check.error(join(&pair_path, "value"), "required: a string value");
                }
            }
        }
        check.known_fields(
            transform,
            &item_path,
            &["transformName", "release", "set", "setString"],
        );
    }
    let custom_path = join(path, "custom");
    let custom = check.list(transforms, path, "custom", false, 1);
    for (item_path, transform) in check.object_items(custom, &custom_path) {
        let name = check.string(transform, &item_path, "transformName", true);
        unique(check, &item_path, name);
        if let Some(resources) = check.object(transform, &item_path, "resources", true) {
            check.gvk_resource(resources, &join(&item_path, "resources"));
        }
        let patches_path = join(&item_path, "jsonPatches");
        let patches = check.list(transform, &item_path, "jsonPatches", true, 1);
        for (patch_path, patch) in check.object_items(patches, &patches_path) {
            json_patch_operation(patch, &patch_path, check);
        }
        check.known_fields(
            transform,
            &item_path,
            &["transformName", "resources", "jsonPatches"],
        );
    }
    check.known_fields(transforms, path, &["helm", "custom"]);
}

/// One RFC 6902 operation: `op`, `path` (a JSON pointer), `from` for copy/move, `value` for
/// add/replace/test.
fn json_patch_operation(patch: &Object, path: &str, check: &mut Check) {
    let op = check.one_of(
        patch,
        path,
        "op",
        true,
        &["add", "remove", "replace", "move", "copy", "test"],
    );
    if let Some(pointer) = check.string(patch, path, "path", false) {
        json_pointer(pointer, &join(path, "path"), check);
    } else if !patch.contains_key("path") {
        check.error(
            join(path, "path"),
            "required: a JSON pointer such as /spec/replicas",
        );
    }
    let from = check.string(patch, path, "from", false);
    if let Some(from) = from {
        json_pointer(from, &join(path, "from"), check);
    }
    let has_value = patch.contains_key("value");
    match op {
        Some("move" | "copy") if from.is_none() && !patch.contains_key("from") => check.error(
            join(path, "from"),
            format!(
                "required when op is {}: the JSON pointer to copy or move from",
                op.unwrap_or_default()
            ),
        ),
        Some("add" | "replace" | "test") if !has_value => check.error(
            join(path, "value"),
            format!("required when op is {}", op.unwrap_or_default()),
        ),
        Some(op @ ("remove" | "move" | "copy")) if has_value => {
            check.warn(&join(path, "value"), format!("ignored when op is {op}"))
        }
        _ => {}
    }
    check.known_fields(patch, path, &["op", "path", "from", "value"]);
}

/// RFC 6901: empty (the whole document) or `/`-prefixed tokens where `~` is only `~0` or `~1`.
fn json_pointer(pointer: &str, path: &str, check: &mut Check) {
    if json_patch::jsonptr::Pointer::parse(pointer).is_err() {
        check.error(
            path,
            format!("{pointer:?} is not a JSON pointer: start with / and escape ~ as ~0 and / as ~1, e.g. /spec/template/spec/containers/0/image"),
        );
    }
}

fn restore_common(spec: &Object, check: &mut Check) {
    action_flags_and_registry(spec, check);
    encryption(spec, "spec", check);
}

/// Admission of `Restore`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestoreAdmission;

impl KindRules for RestoreAdmission {
    const KIND: &'static str = "Restore";
    const PLURAL: &'static str = "restores";
    const NAMESPACED: bool = true;
    const SPEC_FIELDS: &'static [&'static str] = &[
        "source",
        "restoreFlags",
        "actionFlags",
        "transformComponents",
        "resourceSelector",
        "excludeResourceSelector",
        "excludeResources",
        "hookConfig",
        "encryption",
        "env",
        "resourcesReadyWaitSeconds",
        "cleanupConfig",
        "imageRegistry",
    ];

    fn spec(spec: &Object, check: &mut Check) {
        restore_source(spec, RESTORE_SOURCES, check);
        if let Some(flags) = check.object(spec, "spec", "restoreFlags", false) {
            let path = "spec.restoreFlags";
            let flag = |check: &mut Check, name: &str| check.boolean(flags, path, name, false);
            for name in [
                "patchCRD",
                "omitMetadata",
                "overrideImageIfExist",
                "restoreStorageClass",
                "retainHelmReleaseName",
                "skipOperatorResources",
                "disableIgnoreResources",
                "restoreVMMACAddress",
                "useOCPNamespaceUIDRange",
            ] {
                flag(check, name);
            }
            let only_data = flag(check, "onlyData") == Some(true);
            let only_metadata = flag(check, "onlyMetadata") == Some(true);
            if only_data && only_metadata {
                check.error(
                    join(path, "onlyMetadata"),
                    "cannot be true together with onlyData: choose one, or neither to restore both",
                );
            }
            let skip = flag(check, "skipIfAlreadyExists") == Some(true);
            let patch = flag(check, "patchIfAlreadyExists") == Some(true);
            if skip && patch {
                check.error(
                    join(path, "patchIfAlreadyExists"),
                    "cannot be true together with skipIfAlreadyExists: an existing object is either skipped or patched",
                );
            }
            check.one_of(
                flags,
                path,
                "restoreNamespaceLabelsAnnotations",
                false,
                &["Override", "Append", "Replace"],
            );
        }
        restore_common(spec, check);
        transform_components(spec, check);
        check.resource_selector(spec, "spec", "resourceSelector");
        check.resource_selector(spec, "spec", "excludeResourceSelector");
        let excluded_path = "spec.excludeResources";
        let excluded = check.list(spec, "spec", "excludeResources", false, 1);
        if excluded.is_some() {
            check.warn(
                excluded_path,
                "deprecated: use excludeResourceSelector.gvkSelector",
            );
        }
        for (item_path, resource) in check.object_items(excluded, excluded_path) {
            check.gvk_resource(resource, &item_path);
        }
        hook_config(spec, "spec", check);
        let env = check.list(spec, "spec", "env", false, 0);
        for (item_path, variable) in check.object_items(env, "spec.env") {
            check.string(variable, &item_path, "name", true);
            check.string(variable, &item_path, "value", false);
            check.object(variable, &item_path, "valueFrom", false);
        }
        check.integer(
            spec,
            "spec",
            "resourcesReadyWaitSeconds",
            false,
            Some(0),
            Some(1200),
        );
        if let Some(cleanup) = check.object(spec, "spec", "cleanupConfig", false) {
            let path = "spec.cleanupConfig";
            check.boolean(cleanup, path, "enabled", true);
            check.integer(
                cleanup,
                path,
                "gracefulDeletionTimeoutSeconds",
                false,
                Some(60),
                Some(1800),
            );
            check.known_fields(
                cleanup,
                path,
                &["enabled", "gracefulDeletionTimeoutSeconds"],
            );
        }
    }

    fn update(old: &Object, new: &Object, check: &mut Check) {
        spec_immutable(Self::KIND, old, new, check);
    }

    fn defaults(spec: &Object, ops: &mut Defaults) {
        ops.add_if_absent(spec, &[], "resourcesReadyWaitSeconds", json!(600));
        if let Some(config) = spec.get("hookConfig").and_then(Value::as_object) {
            ops.hook_config(config, &["hookConfig"]);
        }
    }
}

/// Admission of `ClusterRestore`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterRestoreAdmission;

impl KindRules for ClusterRestoreAdmission {
    const KIND: &'static str = "ClusterRestore";
    const PLURAL: &'static str = "clusterrestores";
    const NAMESPACED: bool = false;
    const SPEC_FIELDS: &'static [&'static str] = &[
        "source",
        "components",
        "globalConfig",
        "excludeComponents",
        "actionFlags",
        "encryption",
        "imageRegistry",
    ];

    fn spec(spec: &Object, check: &mut Check) {
        restore_source(spec, CLUSTER_RESTORE_SOURCES, check);
        let components = check.list(spec, "spec", "components", false, 0);
        let mut targets = BTreeSet::new();
        for (item_path, component) in check.object_items(components, "spec.components") {
            let backup_namespace = check.string(component, &item_path, "backupNamespace", true);
            if let Some(namespace) = backup_namespace {
                check.dns_label(&join(&item_path, "backupNamespace"), namespace);
            }
            let restore_namespace = check
                .string(component, &item_path, "restoreNamespace", false)
                .or(backup_namespace);
            if let Some(namespace) = check.string(component, &item_path, "restoreNamespace", false)
            {
                check.dns_label(&join(&item_path, "restoreNamespace"), namespace);
            }
            if let Some(namespace) = restore_namespace
                && !targets.insert(namespace.to_string())
            {
                check.error(
                    join(&item_path, "restoreNamespace"),
                    format!("two components restore into namespace {namespace:?}"),
                );
            }
            hook_config(component, &item_path, check);
            check.object(component, &item_path, "restoreConfig", false);
        }
        check.object(spec, "spec", "globalConfig", false);
        check.string_list(spec, "spec", "excludeComponents", false, 0);
        restore_common(spec, check);
    }

    fn update(old: &Object, new: &Object, check: &mut Check) {
        spec_immutable(Self::KIND, old, new, check);
    }

    fn defaults(spec: &Object, ops: &mut Defaults) {
        let Some(components) = spec.get("components").and_then(Value::as_array) else {
            return;
        };
        for (i, component) in components.iter().enumerate() {
            if let Some(config) = component.get("hookConfig").and_then(Value::as_object) {
                let i = i.to_string();
                ops.hook_config(config, &["components", &i, "hookConfig"]);
            }
        }
    }
}
