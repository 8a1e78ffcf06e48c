//! Typed reads of raw JSON that record a [`FieldError`] instead of failing: the building blocks
//! of every kind's validator. Each reader names the field path and what is allowed.

use serde_json::{Map, Value};

use crate::admission::FieldError;

/// Errors and warnings collected while walking one object.
#[derive(Debug, Default)]
pub(crate) struct Check {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Check {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    pub fn warn(&mut self, path: &str, message: impl AsRef<str>) {
        self.warnings.push(format!("{path}: {}", message.as_ref()));
    }

    fn required(&mut self, path: &str, what: &str) {
        self.error(path, format!("required: {what}"));
    }

    /// The object at `parent.key`; `None` (and an error when required or of the wrong type)
    /// otherwise.
    pub fn object<'a>(
        &mut self,
        parent: &'a Map<String, Value>,
        parent_path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'a Map<String, Value>> {
        let path = join(parent_path, key);
        match parent.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.required(&path, "an object");
                }
                None
            }
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                self.error(
                    &path,
                    format!("must be an object, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The string at `parent.key` (non-empty when required).
    pub fn string<'a>(
        &mut self,
        parent: &'a Map<String, Value>,
        parent_path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'a str> {
        let path = join(parent_path, key);
        match parent.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.required(&path, "a non-empty string");
                }
                None
            }
            Some(Value::String(s)) if required && s.trim().is_empty() => {
                self.error(&path, "must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.error(
                    &path,
                    format!("must be a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The boolean at `parent.key`.
    pub fn boolean(
        &mut self,
        parent: &Map<String, Value>,
        parent_path: &str,
        key: &str,
        required: bool,
    ) -> Option<bool> {
        let path = join(parent_path, key);
        match parent.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.required(&path, "true or false");
                }
                None
            }
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.error(
                    &path,
                    format!("must be true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The integer at `parent.key`, checked against an inclusive range.
    pub fn integer(
        &mut self,
        parent: &Map<String, Value>,
        parent_path: &str,
        key: &str,
        required: bool,
        min: Option<i64>,
        max: Option<i64>,
    ) -> Option<i64> {
        let path = join(parent_path, key);
        let range = match (min, max) {
            (Some(lo), Some(hi)) => format!("an integer from {lo} to {hi}"),
            (Some(lo), None) => format!("an integer of at least {lo}"),
            (None, Some(hi)) => format!("an integer of at most {hi}"),
            (None, None) => "an integer".to_string(),
        };
        match parent.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.required(&path, &range);
                }
                None
            }
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if min.is_some_and(|lo| v < lo) || max.is_some_and(|hi| v > hi) => {
                    self.error(&path, format!("{v} is out of range: must be {range}"));
                    None
                }
                Some(v) => Some(v),
                None => {
                    self.error(&path, format!("{n} is not {range}"));
                    None
                }
            },
            Some(other) => {
                self.error(
                    &path,
                    format!("must be {range}, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The string at `parent.key`, which must be one of `allowed`.
    pub fn one_of<'a>(
        &mut self,
        parent: &'a Map<String, Value>,
        parent_path: &str,
        key: &str,
        required: bool,
        allowed: &[&str],
    ) -> Option<&'a str> {
        let path = join(parent_path, key);
        let listing = allowed.join(", ");
        match parent.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.required(&path, &format!("one of {listing}"));
                }
                None
            }
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Some(s),
            Some(Value::String(s)) => {
                self.error(
                    &path,
                    format!("unsupported value {s:?}: must be one of {listing}"),
                );
                None
            }
            Some(other) => {
                self.error(
                    &path,
                    format!("must be one of {listing}, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The list at `parent.key`, with at least `min_items` entries.
    pub fn list<'a>(
        &mut self,
        parent: &'a Map<String, Value>,
        parent_path: &str,
        key: &str,
        required: bool,
        min_items: usize,
    ) -> Option<&'a Vec<Value>> {
        let path = join(parent_path, key);
        match parent.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.required(&path, "a list");
                }
                None
            }
            Some(Value::Array(items)) if items.len() < min_items => {
                self.error(&path, format!("must have at least {min_items} item(s)"));
                None
            }
            Some(Value::Array(items)) => Some(items),
            Some(other) => {
                self.error(&path, format!("must be a list, found {}", type_name(other)));
                None
            }
        }
    }

    /// A list of non-empty strings.
    pub fn string_list<'a>(
        &mut self,
        parent: &'a Map<String, Value>,
        parent_path: &str,
        key: &str,
        required: bool,
        min_items: usize,
    ) -> Vec<(String, &'a str)> {
        let path = join(parent_path, key);
        let mut out = Vec::new();
        for (i, item) in self
            .list(parent, parent_path, key, required, min_items)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let item_path = index(&path, i);
            match item {
                Value::String(s) if !s.trim().is_empty() => out.push((item_path, s.as_str())),
                Value::String(_) => self.error(item_path, "must not be empty"),
                other => self.error(
                    item_path,
                    format!("must be a string, found {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// Items of a list that are objects (others get an error).
    pub fn object_items<'a>(
        &mut self,
        items: Option<&'a Vec<Value>>,
        path: &str,
    ) -> Vec<(String, &'a Map<String, Value>)> {
        let mut out = Vec::new();
        for (i, item) in items.into_iter().flatten().enumerate() {
            let item_path = index(path, i);
            match item {
                Value::Object(map) => out.push((item_path, map)),
                other => self.error(
                    item_path,
                    format!("must be an object, found {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// An object reference (`{name, namespace, kind, apiVersion, uid, resourceVersion}`),
    /// `name` required.
    pub fn reference<'a>(
        &mut self,
        parent: &'a Map<String, Value>,
        parent_path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'a Map<String, Value>> {
        let reference = self.object(parent, parent_path, key, required)?;
        let path = join(parent_path, key);
        let name = self.string(reference, &path, "name", true);
        if let Some(name) = name {
            self.dns_subdomain(&join(&path, "name"), name);
        }
        if let Some(namespace) = self.string(reference, &path, "namespace", false)
            && !namespace.is_empty()
        {
            self.dns_label(&join(&path, "namespace"), namespace);
        }
        for field in ["kind", "apiVersion", "uid", "resourceVersion", "fieldPath"] {
            self.string(reference, &path, field, false);
        }
        self.known_fields(
            reference,
            &path,
            &[
                "name",
                "namespace",
                "kind",
                "apiVersion",
                "uid",
                "resourceVersion",
                "fieldPath",
            ],
        );
        name.map(|_| reference)
    }

    /// Warns about fields this API does not know (kept, but most likely a typo).
    pub fn known_fields(&mut self, object: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                self.warn(
                    &join(path, key),
                    format!(
                        "unknown field (known: {}); it is kept but ignored",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    /// A Kubernetes object name (RFC 1123 subdomain).
    pub fn dns_subdomain(&mut self, path: &str, name: &str) {
        let valid = name.len() <= 253 && name.split('.').all(|part| is_dns_label(part, 253));
        if !valid {
            self.error(
                path,
                format!(
                    "{name:?} is not a valid name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
                ),
            );
        }
    }

    /// A namespace name (RFC 1123 label).
    pub fn dns_label(&mut self, path: &str, name: &str) {
        if !is_dns_label(name, 63) {
            self.error(
                path,
                format!(
                    "{name:?} is not a valid namespace name: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
                ),
            );
        }
    }

    /// A Kubernetes label selector (`matchLabels`, `matchExpressions`).
    pub fn label_selector(&mut self, selector: &Map<String, Value>, path: &str) {
        if let Some(labels) = self.object(selector, path, "matchLabels", false) {
            let labels_path = join(path, "matchLabels");
            for (key, value) in labels {
                if !value.is_string() {
                    self.error(
                        join(&labels_path, key),
                        format!("label values must be strings, found {}", type_name(value)),
                    );
                }
            }
        }
        let expressions_path = join(path, "matchExpressions");
        let expressions = self.list(selector, path, "matchExpressions", false, 0);
        for (item_path, expression) in self.object_items(expressions, &expressions_path) {
            self.string(expression, &item_path, "key", true);
            let operator = self.one_of(
                expression,
                &item_path,
                "operator",
                true,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            );
            let values = self.string_list(expression, &item_path, "values", false, 0);
            match operator {
                Some("In" | "NotIn") if values.is_empty() => self.error(
                    join(&item_path, "values"),
                    "must not be empty when operator is In or NotIn",
                ),
                Some("Exists" | "DoesNotExist") if !values.is_empty() => self.error(
                    join(&item_path, "values"),
                    "must be empty when operator is Exists or DoesNotExist",
                ),
                _ => {}
            }
        }
        self.known_fields(selector, path, &["matchLabels", "matchExpressions"]);
    }

    /// `{groupVersionKind*, objects}`.
    pub fn gvk_resource(&mut self, resource: &Map<String, Value>, path: &str) {
        if let Some(gvk) = self.object(resource, path, "groupVersionKind", true) {
            let gvk_path = join(path, "groupVersionKind");
            for field in ["group", "version"] {
                self.string(gvk, &gvk_path, field, false);
            }
            self.string(gvk, &gvk_path, "kind", true);
        }
        self.string_list(resource, path, "objects", false, 0);
        self.known_fields(resource, path, &["groupVersionKind", "objects"]);
    }

    /// `{gvkSelector[], labelSelector[]}` at `parent.key`.
    pub fn resource_selector(&mut self, parent: &Map<String, Value>, parent_path: &str, key: &str) {
        let Some(selector) = self.object(parent, parent_path, key, false) else {
            return;
        };
        let path = join(parent_path, key);
        let gvks_path = join(&path, "gvkSelector");
        let gvks = self.list(selector, &path, "gvkSelector", false, 1);
        for (item_path, resource) in self.object_items(gvks, &gvks_path) {
            self.gvk_resource(resource, &item_path);
        }
        let labels_path = join(&path, "labelSelector");
        let labels = self.list(selector, &path, "labelSelector", false, 1);
        for (item_path, label_selector) in self.object_items(labels, &labels_path) {
            self.label_selector(label_selector, &item_path);
        }
        self.known_fields(selector, &path, &["gvkSelector", "labelSelector"]);
    }

    /// A regular expression that must compile.
    pub fn regex(&mut self, parent: &Map<String, Value>, parent_path: &str, key: &str) -> bool {
        let Some(pattern) = self.string(parent, parent_path, key, false) else {
            return false;
        };
        match regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
        {
            Ok(_) => true,
            Err(e) => {
                let message = e.to_string().replace('\n', " ");
                let message = message.trim_end_matches('.');
                self.error(
                    join(parent_path, key),
                    format!("invalid regular expression: {message}"),
                );
                false
            }
        }
    }
}

fn is_dns_label(part: &str, max: usize) -> bool {
    !part.is_empty()
        && part.len() <= max
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}
