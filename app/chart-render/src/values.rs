//! Values: Helm's coalescing, and conversion between JSON and template values.

use std::collections::HashMap;

use crate::gotmpl::value::{Number, Value as TValue};
use serde_json::{Map, Value};

/// Helm's value coalescing: chart values overlaid by user values; a user `null` deletes a key.
///
/// As Helm's `CoalesceValues`: a key the user set wins; maps on both sides merge recursively;
/// a user value of a different kind than the chart's (a map against a scalar) keeps the user's;
/// a user `null` for a key the chart has removes it.
pub fn coalesce_values(chart_values: &Value, user_values: &Value) -> Value {
    let mut dst = match user_values {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Value::Object(src) = chart_values {
        coalesce_tables(&mut dst, src);
    }
    Value::Object(dst)
}

fn coalesce_tables(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (key, val) in src {
        match dst.get_mut(key) {
            Some(Value::Null) => {
                dst.remove(key);
            }
            Some(Value::Object(d)) => {
                if let Value::Object(s) = val {
                    coalesce_tables(d, s);
                }
            }
            Some(_) => {}
            None => {
                dst.insert(key.clone(), val.clone());
            }
        }
    }
}

/// JSON → template value, as Helm sees a decoded release: every number is a `float64`,
/// objects are `map[string]interface{}`.
pub(crate) fn to_tmpl(v: &Value) -> TValue {
    match v {
        Value::Null => TValue::Nil,
        Value::Bool(b) => TValue::Bool(*b),
        Value::Number(n) => TValue::Number(Number::from(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => TValue::String(s.clone()),
        Value::Array(a) => TValue::Array(a.iter().map(to_tmpl).collect()),
        Value::Object(m) => TValue::Map(
            m.iter()
                .map(|(k, v)| (k.clone(), to_tmpl(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// Template value → JSON, as Go's `encoding/json` would marshal it: integral floats print as
/// integers (`1`, not `1.0`), map keys sorted, methods (functions in maps) left out.
pub(crate) fn to_json(v: &TValue) -> Value {
    match v {
        TValue::Missing | TValue::Nil | TValue::Function(_) => Value::Null,
        TValue::Bool(b) => Value::Bool(*b),
        TValue::String(s) => Value::String(s.clone()),
        TValue::Number(n) => number_to_json(n),
        TValue::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        TValue::Map(m) => {
            let mut keys: Vec<&String> = m
                .iter()
                .filter(|(_, v)| !matches!(v, TValue::Function(_)))
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(val) = m.get(k) {
                    out.insert(k.clone(), to_json(val));
                }
            }
            Value::Object(out)
        }
    }
}

fn number_to_json(n: &Number) -> Value {
    if let Some(u) = n.as_u64() {
        return Value::from(u);
    }
    if let Some(i) = n.as_i64() {
        return Value::from(i);
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 && f.abs() < 1e21 {
        if f >= 0.0 && f < u64::MAX as f64 {
            return Value::from(f as u64);
        }
        if f < 0.0 && f > i64::MIN as f64 {
            return Value::from(f as i64);
        }
    }
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn coalesce_overlays_merges_and_deletes() {
        let chart = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": "x", "f": {"g": 1}});
        let user = json!({"a": 5, "b": {"c": null, "z": 9}, "e": null, "f": "scalar"});
        assert_eq!(
            coalesce_values(&chart, &user),
            json!({"a": 5, "b": {"d": 3, "z": 9}, "f": "scalar"})
        );
    }
}
