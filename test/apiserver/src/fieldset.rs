//! Field ownership for server-side apply: sets of field paths, their `FieldsV1` encoding in
//! `metadata.managedFields`, and the merge of an applied configuration into a live object.
//!
//! The model follows structured-merge-diff with one approximation: without OpenAPI schemas,
//! which lists are associative (merged per element) is decided by [`list_keys`] — a table of
//! the well-known Kubernetes list fields plus "every element is an object with a unique
//! string `name`". Every other list is atomic (owned and replaced as a whole), as are scalars
//! and empty maps.

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    /// A map field (`f:name`).
    Field(String),
    /// An element of an associative list, by its key fields (`k:{"name":"a"}`), canonical JSON.
    Key(String),
}

/// A path from the object root.
pub type Path = Vec<Seg>;

/// A set of owned paths.
pub type FieldSet = BTreeSet<Path>;

/// The key fields of an associative list, or None when the list is atomic.
pub fn list_keys(field: &str, items: &[Value]) -> Option<Vec<&'static str>> {
    if items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    let all_have = |k: &str| items.iter().all(|i| i.get(k).is_some_and(|v| !v.is_null()));
    let keys: Vec<&'static str> = match field {
        "volumeMounts" | "volumeDevices" if all_have("mountPath") || all_have("devicePath") => {
            if all_have("mountPath") {
                vec!["mountPath"]
            } else {
                vec!["devicePath"]
            }
        }
        "ports" if all_have("containerPort") => vec!["containerPort"],
        "ports" if all_have("port") => vec!["port"],
        "conditions" if all_have("type") => vec!["type"],
        "ownerReferences" if all_have("uid") => vec!["uid"],
        "topologySpreadConstraints" if all_have("topologyKey") => vec!["topologyKey"],
        _ if all_have("name") => vec!["name"],
        _ => return None,
    };
    // Keys must be unique, or the list cannot be associative.
    let mut seen = BTreeSet::new();
    for item in items {
        if !seen.insert(element_key(item, &keys)) {
            return None;
        }
    }
    Some(keys)
}

/// Canonical JSON of an element's key fields.
fn element_key(item: &Value, keys: &[&str]) -> String {
    let mut m = Map::new();
    for k in keys {
        m.insert(
            (*k).to_string(),
            item.get(*k).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(m).to_string()
}

/// Every owned path of a (stripped) configuration: leaves, atomic lists, empty maps and the
/// elements of associative lists.
pub fn paths_of(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), &mut out);
    out
}

fn collect(value: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (k, v) in map {
        prefix.push(Seg::Field(k.clone()));
        match v {
            Value::Object(m) if !m.is_empty() => collect(v, prefix, out),
            Value::Array(items) => match list_keys(k, items) {
                Some(keys) => {
                    for item in items {
                        prefix.push(Seg::Key(element_key(item, &keys)));
                        out.insert(prefix.clone());
                        collect(item, prefix, out);
                        prefix.pop();
                    }
                }
                None => {
                    out.insert(prefix.clone());
                }
            },
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

/// The value at a path, if present.
pub fn get<'a>(value: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = value;
    let mut last_field = "";
    for seg in path {
        match seg {
            Seg::Field(f) => {
                cur = cur.get(f)?;
                last_field = f;
            }
            Seg::Key(k) => {
                let items = cur.as_array()?;
                let pos = find_key(items, last_field, k)?;
                cur = items.get(pos)?;
            }
        }
    }
    Some(cur)
}

fn find_key(items: &[Value], field: &str, key: &str) -> Option<usize> {
    if let Some(keys) = list_keys(field, items)
        && let Some(p) = items.iter().position(|i| element_key(i, &keys) == key)
    {
        return Some(p);
    }
    let parsed: Value = serde_json::from_str(key).ok()?;
    let want = parsed.as_object()?;
    items
        .iter()
        .position(|i| want.iter().all(|(k, v)| i.get(k) == Some(v)))
}

/// Removes the value at a path (a map field or a list element). Returns whether it existed.
pub fn remove(value: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let parent_field = parent_path.iter().rev().find_map(|s| match s {
        Seg::Field(f) => Some(f.clone()),
        Seg::Key(_) => None,
    });
    let Some(parent) = get_mut(value, parent_path) else {
        return false;
    };
    match last {
        Seg::Field(f) => parent
            .as_object_mut()
            .is_some_and(|m| m.remove(f).is_some()),
        Seg::Key(k) => {
            let field = parent_field.unwrap_or_default();
            let Some(items) = parent.as_array_mut() else {
                return false;
            };
            match find_key(items, &field, k) {
                Some(pos) => {
                    items.remove(pos);
                    true
                }
                None => false,
            }
        }
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = value;
    let mut last_field = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                cur = cur.get_mut(f)?;
                last_field.clone_from(f);
            }
            Seg::Key(k) => {
                let pos = find_key(cur.as_array()?, &last_field, k)?;
                cur = cur.as_array_mut()?.get_mut(pos)?;
            }
        }
    }
    Some(cur)
}

/// Merges an applied configuration into a live object: maps recursively, associative lists
/// per element (new elements appended in the configuration's order), everything else replaced.
pub fn merge(base: &mut Value, config: &Value) {
    match (base, config) {
        (Value::Object(b), Value::Object(c)) => {
            for (k, cv) in c {
                match b.get_mut(k) {
                    Some(bv) => merge_field(k, bv, cv),
                    None => {
                        b.insert(k.clone(), cv.clone());
                    }
                }
            }
        }
        (b, c) => *b = c.clone(),
    }
}

fn merge_field(field: &str, base: &mut Value, config: &Value) {
    match (base, config) {
        (Value::Array(b), Value::Array(c)) => {
            let keys =
                list_keys(field, c).filter(|_| list_keys(field, b).is_some() || b.is_empty());
            match keys {
                Some(keys) if list_keys_consistent(field, b, &keys) => {
                    for item in c {
                        let k = element_key(item, &keys);
                        match b.iter_mut().find(|i| element_key(i, &keys) == k) {
                            Some(existing) => merge(existing, item),
                            None => b.push(item.clone()),
                        }
                    }
                }
                _ => *b = c.clone(),
            }
        }
        (b @ Value::Object(_), c @ Value::Object(_)) => merge(b, c),
        (b, c) => *b = c.clone(),
    }
}

fn list_keys_consistent(field: &str, items: &[Value], keys: &[&str]) -> bool {
    items.is_empty() || list_keys(field, items).is_some_and(|k| k == keys)
}

/// Encodes a field set as `FieldsV1` (`{"f:spec":{"f:replicas":{}}}`, `"."` marking an owned
/// list element that also has owned children).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        insert_path(&mut root, path);
    }
    Value::Object(root)
}

fn insert_path(node: &mut Map<String, Value>, path: &[Seg]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let name = match first {
        Seg::Field(f) => format!("f:{f}"),
        Seg::Key(k) => format!("k:{k}"),
    };
    let child = node
        .entry(name)
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(child) = child {
        if rest.is_empty() {
            if matches!(first, Seg::Key(_)) {
                child.insert(".".to_string(), Value::Object(Map::new()));
            }
        } else {
            insert_path(child, rest);
        }
    }
}

/// Decodes `FieldsV1` back into a field set (unknown prefixes such as `v:` are kept as
/// atomic leaves under their own name).
pub fn from_fields_v1(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    decode(value, &mut Vec::new(), &mut out);
    out
}

fn decode(value: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (k, v) in map {
        if k == "." {
            out.insert(prefix.clone());
            continue;
        }
        let seg = if let Some(f) = k.strip_prefix("f:") {
            Seg::Field(f.to_string())
        } else if let Some(key) = k.strip_prefix("k:") {
            Seg::Key(key.to_string())
        } else {
            Seg::Field(k.clone())
        };
        prefix.push(seg);
        let is_leaf = v.as_object().is_none_or(Map::is_empty);
        if is_leaf {
            out.insert(prefix.clone());
        } else {
            decode(v, prefix, out);
        }
        prefix.pop();
    }
}

/// Human form of a path for conflict messages: `.spec.containers[name="a"].image`.
pub fn display(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Seg::Key(k) => {
                s.push('[');
                s.push_str(k);
                s.push(']');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_round_trip_through_fields_v1() {
        let cfg = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2,
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}, "args": ["x"]}});
        let set = paths_of(&cfg);
        assert!(set.contains(&vec![Seg::Field("spec".into()), Seg::Field("args".into())]));
        let encoded = to_fields_v1(&set);
        assert_eq!(
            encoded.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"c\"}/f:image"),
            Some(&json!({}))
        );
        assert_eq!(from_fields_v1(&encoded), set);
    }

    #[test]
    fn merge_associative_and_atomic_lists() {
        let mut live = json!({"spec": {"containers": [{"name": "a", "image": "1", "x": 1}],
            "args": ["old", "older"]}});
        merge(
            &mut live,
            &json!({"spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b"}],
                "args": ["new"]}}),
        );
        assert_eq!(
            live,
            json!({"spec": {"containers": [{"name": "a", "image": "2", "x": 1}, {"name": "b"}],
                "args": ["new"]}})
        );
        let path = vec![
            Seg::Field("spec".into()),
            Seg::Field("containers".into()),
            Seg::Key(json!({"name": "b"}).to_string()),
        ];
        assert!(remove(&mut live, &path));
        assert_eq!(live["spec"]["containers"].as_array().map(Vec::len), Some(1));
    }
}
