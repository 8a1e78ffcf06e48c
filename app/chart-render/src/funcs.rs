//! Helm's function map: Sprig's functions (from `gtmpl-ng`, with the ones that departed from
//! Sprig replaced here) plus Helm's own (`include`, `tpl`, `required`, `lookup`, `toYaml`, …).
//!
//! `include` and `tpl` need the template set being rendered, but a template function is a
//! plain `fn`: the set lives in a per-thread stack ([`ACTIVE`]) that [`crate::render`] pushes
//! before executing and `tpl` pushes for its own parsed copy.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use crate::gotmpl::value::{Func, FuncError, Number, Value};
use base64::Engine as _;
use sha2::Digest as _;

use crate::{
    gotmpl::{Context, Template, exec::enter_nested, gofmt},
    values::{to_json, to_tmpl},
};

/// Largest string or list a function may build (`repeat`, `until`, `indent`, …): a chart that
/// asks for more is hostile or broken, and Go would exhaust memory.
pub(crate) const MAX_BUILT: usize = 16 * 1024 * 1024;

thread_local! {
    /// Template sets being executed on this thread, innermost last.
    static ACTIVE: RefCell<Vec<Rc<Template>>> = const { RefCell::new(Vec::new()) };
    /// Set when a function whose result differs from run to run was called.
    static NONDETERMINISTIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes `set` the template set `include` and `tpl` see until the guard is dropped.
pub(crate) struct ActiveSet(());

impl ActiveSet {
    pub(crate) fn push(set: Rc<Template>) -> ActiveSet {
        ACTIVE.with(|a| a.borrow_mut().push(set));
        ActiveSet(())
    }
}

impl Drop for ActiveSet {
    fn drop(&mut self) {
        ACTIVE.with(|a| {
            a.borrow_mut().pop();
        });
    }
}

/// Clears and returns the "a random function was called" flag.
pub(crate) fn take_nondeterministic() -> bool {
    NONDETERMINISTIC.with(|n| n.replace(false))
}

fn active() -> Result<Rc<Template>, FuncError> {
    ACTIVE
        .with(|a| a.borrow().last().cloned())
        .ok_or_else(|| FuncError::Generic("include/tpl called outside a chart render".into()))
}

/// Every function a chart template may call, as Helm's engine offers them.
pub(crate) fn install(t: &mut Template) {
    for (name, f) in BRIDGED {
        t.add_func(name, *f);
    }
    let own: &[(&str, Func)] = &[
        // Helm.
        ("include", include),
        ("tpl", tpl),
        ("required", required),
        ("lookup", lookup),
        ("toYaml", to_yaml),
        ("mustToYaml", must_to_yaml),
        ("fromYaml", from_yaml),
        ("fromYamlArray", from_yaml_array),
        ("toJson", to_json_fn),
        ("mustToJson", must_to_json),
        ("toPrettyJson", to_pretty_json),
        ("fromJson", from_json),
        ("fromJsonArray", from_json_array),
        ("toToml", to_toml),
        ("toRawJson", to_raw_json),
        ("mustToRawJson", must_to_raw_json),
        ("mustToPrettyJson", must_to_pretty_json),
        ("mustFromJson", must_from_json),
        ("tuple", list),
        ("trimall", trim_all_alias),
        ("biggest", max),
        ("all", all),
        ("any", any),
        ("regexQuoteMeta", regex_quote_meta),
        ("splitn", splitn),
        // Sprig, where gtmpl-ng's differs.
        ("fail", fail),
        ("default", default),
        ("empty", empty),
        ("coalesce", coalesce),
        ("ternary", ternary),
        ("quote", quote),
        ("squote", squote),
        ("toString", to_string),
        ("trimSuffix", trim_suffix),
        ("trimPrefix", trim_prefix),
        ("trim", trim),
        ("trunc", trunc),
        ("indent", indent),
        ("nindent", nindent),
        ("repeat", repeat),
        ("upper", upper),
        ("lower", lower),
        ("replace", replace),
        ("contains", contains),
        ("hasPrefix", has_prefix),
        ("hasSuffix", has_suffix),
        ("splitList", split_list),
        ("split", split),
        ("join", join),
        ("sortAlpha", sort_alpha),
        ("cat", cat),
        ("dict", dict),
        ("list", list),
        ("hasKey", has_key),
        ("merge", merge),
        ("mustMerge", merge),
        ("mergeOverwrite", merge_overwrite),
        ("mustMergeOverwrite", merge_overwrite),
        ("b64enc", b64enc),
        ("b64dec", b64dec),
        ("sha256sum", sha256sum),
        ("int", to_int),
        ("int64", to_int),
        ("float64", to_float),
        ("add", add),
        ("sub", sub),
        ("mul", mul),
        ("div", div),
        ("mod", modulo),
        ("add1", add1),
        ("max", max),
        ("min", min),
        ("until", until),
        ("untilStep", until_step),
        ("semverCompare", semver_compare),
        ("kindIs", kind_is),
        ("kindOf", kind_of),
        ("typeOf", type_of),
        ("set", set),
        ("unset", unset),
        ("get", get),
        ("keys", keys),
        ("values", values_fn),
        ("pick", pick),
        ("omit", omit),
        ("deepCopy", deep_copy),
        ("mustDeepCopy", deep_copy),
        ("dig", dig),
        ("pluck", pluck),
        ("first", first),
        ("mustFirst", first),
        ("last", last),
        ("mustLast", last),
        ("rest", rest),
        ("mustRest", rest),
        ("initial", initial),
        ("mustInitial", initial),
        ("append", append),
        ("mustAppend", append),
        ("push", append),
        ("prepend", prepend),
        ("mustPrepend", prepend),
        ("concat", concat),
        ("reverse", reverse),
        ("mustReverse", reverse),
        ("uniq", uniq),
        ("mustUniq", uniq),
        ("has", has),
        ("mustHas", has),
        ("compact", compact),
        ("mustCompact", compact),
        ("without", without),
        ("mustWithout", without),
        ("title", title),
        ("untitle", untitle),
        ("abbrevboth", abbrevboth),
        ("seq", seq),
        ("clean", clean),
        ("camelcase", camelcase),
        ("regexMatch", regex_match),
        ("mustRegexMatch", regex_match),
        ("regexFind", regex_find),
        ("mustRegexFind", regex_find),
        ("regexFindAll", regex_find_all),
        ("mustRegexFindAll", regex_find_all),
        ("regexReplaceAll", regex_replace_all),
        ("mustRegexReplaceAll", regex_replace_all),
        ("regexReplaceAllLiteral", regex_replace_all_literal),
        ("mustRegexReplaceAllLiteral", regex_replace_all_literal),
        ("regexSplit", regex_split),
        ("mustRegexSplit", regex_split),
        // Random: they render, but mark the template as not reproducible.
        ("randAlphaNum", rand_alpha_num),
        ("randAlpha", rand_alpha),
        ("randNumeric", rand_numeric),
        ("randAscii", rand_ascii),
        ("uuidv4", uuidv4),
        ("shuffle", shuffle),
        ("htpasswd", htpasswd),
        ("genCA", gen_ca),
        ("genSelfSignedCert", gen_self_signed_cert),
        ("genSignedCert", gen_signed_cert),
    ];
    for (name, f) in own {
        t.add_func(name, *f);
    }
    // Sprig's TxtFuncMap minus env/expandenv (Helm removes them); gtmpl-ng has neither.
}

fn err(msg: impl Into<String>) -> FuncError {
    FuncError::Generic(msg.into())
}

fn arg<'a>(args: &'a [Value], i: usize, f: &str) -> Result<&'a Value, FuncError> {
    args.get(i)
        .ok_or_else(|| err(format!("wrong number of args for {f}: want {}", i + 1)))
}

fn want(args: &[Value], n: usize, f: &str) -> Result<(), FuncError> {
    if args.len() != n {
        return Err(err(format!(
            "wrong number of args for {f}: want {n} got {}",
            args.len()
        )));
    }
    Ok(())
}

/// Sprig's `strval`: strings as they are, anything else as Go's `%v`.
fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => gofmt::format_nested(other),
    }
}

/// Sprig's `empty`: nil, false, 0, "" and empty collections are empty.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Missing | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Number(n) => as_f64(n) == 0.0,
        Value::Function(_) => false,
    }
}

fn as_f64(n: &Number) -> f64 {
    n.as_f64()
        .or_else(|| n.as_i64().map(|i| i as f64))
        .or_else(|| n.as_u64().map(|u| u as f64))
        .unwrap_or(0.0)
}

/// Sprig's `toInt64` (via cast.ToInt64E, errors ignored → 0).
fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .unwrap_or_else(|| as_f64(n) as i64),
        Value::String(s) => s.trim().parse::<i64>().unwrap_or(0),
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    }
}

fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Number(n) => as_f64(n),
        Value::String(s) => s.trim().parse::<f64>().unwrap_or(0.0),
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

fn cap_len(len: usize, f: &str) -> Result<(), FuncError> {
    if len > MAX_BUILT {
        return Err(err(format!(
            "{f}: result of {len} bytes/items exceeds the limit of {MAX_BUILT}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- Helm

fn include(args: &[Value]) -> Result<Value, FuncError> {
    let name = match arg(args, 0, "include")? {
        Value::String(s) => s.clone(),
        other => {
            return Err(err(format!(
                "include: template name must be a string, got {}",
                strval(other)
            )));
        }
    };
    let data = args.get(1).cloned().unwrap_or(Value::Nil);
    let set = active()?;
    let _nested = enter_nested().map_err(|e| err(format!("include {name:?}: {e}")))?;
    if !set.tree_set.contains_key(&name) {
        return Err(err(format!("include: template {name:?} not defined")));
    }
    let mut out = crate::render::LimitedWriter::default();
    set.execute_named(&name, &mut out, &Context::from(data))
        .map_err(|e| {
            err(format!(
                "error calling include: {}",
                crate::render::exec_message(&e)
            ))
        })?;
    Ok(Value::String(out.into_string()))
}

fn tpl(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "tpl")?;
    let text = strval(&args[0]);
    let vals = args[1].clone();
    let parent = active()?;
    let _nested = enter_nested().map_err(|e| err(format!("tpl: {e}")))?;
    // Helm parses the text under the calling template's name in a copy of the whole set, so
    // the text can use every `define` of the chart.
    let name = match &vals {
        Value::Map(m) => match m.get("Template") {
            Some(Value::Map(t)) => match t.get("Name") {
                Some(Value::String(s)) => s.clone(),
                _ => "tpl".to_string(),
            },
            _ => "tpl".to_string(),
        },
        _ => "tpl".to_string(),
    };
    let mut t = Template {
        funcs: parent.funcs.clone(),
        tree_set: parent.tree_set.clone(),
    };
    t.add_template(name.clone(), text).map_err(|e| {
        err(format!(
            "error calling tpl: cannot parse template {name:?}: {e}"
        ))
    })?;
    let t = Rc::new(t);
    let _active = ActiveSet::push(t.clone());
    let mut out = crate::render::LimitedWriter::default();
    t.execute_named(&name, &mut out, &Context::from(vals))
        .map_err(|e| {
            err(format!(
                "error calling tpl: {}",
                crate::render::exec_message(&e)
            ))
        })?;
    Ok(Value::String(out.into_string().replace("<no value>", "")))
}

fn required(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "required")?;
    let msg = strval(&args[0]);
    match &args[1] {
        Value::Missing | Value::Nil => Err(err(format!("required value missing: {msg}"))),
        Value::String(s) if s.is_empty() => Err(err(format!("required value missing: {msg}"))),
        v => Ok(v.clone()),
    }
}

/// `lookup` returns an empty map, as Helm does without cluster access (`helm template`,
/// `--dry-run`): a re-render must not depend on what the cluster holds now.
fn lookup(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 4, "lookup")?;
    Ok(Value::Map(HashMap::new()))
}

/// Helm's `toYAML`: YAML of the value (keys sorted, as Go's yaml marshals a JSON round trip),
/// without the trailing newline; "" when it cannot be marshalled.
pub(crate) fn yaml_text(v: &Value) -> Result<String, String> {
    let text = crate::goyaml::to_yaml(&to_json(v));
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

fn to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "toYaml")?;
    Ok(Value::String(yaml_text(&args[0]).unwrap_or_default()))
}

fn must_to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "mustToYaml")?;
    yaml_text(&args[0]).map(Value::String).map_err(err)
}

fn parse_yaml(text: &str) -> Result<serde_json::Value, String> {
    let limits = tvk_api::yaml::Limits::default();
    let docs = tvk_api::yaml::parse_documents(text, &limits).map_err(|e| e.to_string())?;
    Ok(docs
        .into_iter()
        .next()
        .map(|d| d.value)
        .unwrap_or(serde_json::Value::Null))
}

fn error_map(e: String) -> Value {
    let mut m = HashMap::new();
    m.insert("Error".to_string(), Value::String(e));
    Value::Map(m)
}

fn from_yaml(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "fromYaml")?;
    Ok(match parse_yaml(&strval(&args[0])) {
        Ok(serde_json::Value::Object(m)) => to_tmpl(&serde_json::Value::Object(m)),
        Ok(serde_json::Value::Null) => Value::Map(HashMap::new()),
        Ok(_) => error_map("error unmarshaling JSON: json: cannot unmarshal into map".into()),
        Err(e) => error_map(e),
    })
}

fn from_yaml_array(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "fromYamlArray")?;
    Ok(match parse_yaml(&strval(&args[0])) {
        Ok(v @ serde_json::Value::Array(_)) => to_tmpl(&v),
        Ok(serde_json::Value::Null) => Value::Array(Vec::new()),
        Ok(_) => Value::Array(vec![Value::String(
            "error unmarshaling JSON: json: cannot unmarshal into array".into(),
        )]),
        Err(e) => Value::Array(vec![Value::String(e)]),
    })
}

fn json_text(v: &Value, pretty: bool) -> Result<String, String> {
    json_text_raw(v, pretty).map(|t| go_html_escape(&t))
}

/// JSON as Go's encoding/json writes it without HTML escaping (Sprig's `toRawJson`).
fn json_text_raw(v: &Value, pretty: bool) -> Result<String, String> {
    let json = to_json(v);
    let text = if pretty {
        serde_json::to_string_pretty(&json)
    } else {
        serde_json::to_string(&json)
    };
    text.map_err(|e| e.to_string())
}

/// Go's json.Marshal escapes `<`, `>`, `&`, U+2028 and U+2029 (they only occur inside
/// strings in JSON text, so replacing them everywhere is exact).
fn go_html_escape(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn to_raw_json(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "toRawJson")?;
    Ok(Value::String(
        json_text_raw(&args[0], false).unwrap_or_default(),
    ))
}

fn must_to_raw_json(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "mustToRawJson")?;
    json_text_raw(&args[0], false)
        .map(Value::String)
        .map_err(err)
}

fn must_to_pretty_json(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "mustToPrettyJson")?;
    json_text(&args[0], true).map(Value::String).map_err(err)
}

fn must_from_json(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "mustFromJson")?;
    match serde_json::from_str::<serde_json::Value>(&strval(&args[0])) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(to_tmpl(&v)),
        Ok(_) => Err(err("mustFromJson: the JSON is not an object")),
        Err(e) => Err(err(format!("mustFromJson: {e}"))),
    }
}

fn all(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(args.iter().all(|v| !is_empty(v))))
}

fn any(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(args.iter().any(|v| !is_empty(v))))
}

fn regex_quote_meta(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "regexQuoteMeta")?;
    Ok(Value::String(regex::escape(&strval(&args[0]))))
}

fn splitn(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "splitn")?;
    let (sep, n, s) = (strval(&args[0]), to_i64(&args[1]), strval(&args[2]));
    let parts: Vec<&str> = if n < 0 {
        s.split(sep.as_str()).collect()
    } else {
        s.splitn(usize::try_from(n).unwrap_or(0), sep.as_str())
            .collect()
    };
    Ok(Value::Map(
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("_{i}"), Value::String(p.to_string())))
            .collect(),
    ))
}

fn to_json_fn(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "toJson")?;
    Ok(Value::String(
        json_text(&args[0], false).unwrap_or_default(),
    ))
}

fn must_to_json(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "mustToJson")?;
    json_text(&args[0], false).map(Value::String).map_err(err)
}

fn to_pretty_json(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "toPrettyJson")?;
    Ok(Value::String(json_text(&args[0], true).unwrap_or_default()))
}

fn from_json(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "fromJson")?;
    Ok(
        match serde_json::from_str::<serde_json::Value>(&strval(&args[0])) {
            Ok(v @ serde_json::Value::Object(_)) => to_tmpl(&v),
            Ok(_) => error_map("json: cannot unmarshal into map".into()),
            Err(e) => error_map(e.to_string()),
        },
    )
}

fn from_json_array(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "fromJsonArray")?;
    Ok(
        match serde_json::from_str::<serde_json::Value>(&strval(&args[0])) {
            Ok(v @ serde_json::Value::Array(_)) => to_tmpl(&v),
            Ok(_) => Value::Array(vec![Value::String(
                "json: cannot unmarshal into array".into(),
            )]),
            Err(e) => Value::Array(vec![Value::String(e.to_string())]),
        },
    )
}

/// `trimall`: Sprig's deprecated spelling of `trimAll`.
fn trim_all_alias(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "trimall")?;
    let cut: Vec<char> = strval(&args[0]).chars().collect();
    Ok(Value::String(
        strval(&args[1])
            .trim_matches(|c| cut.contains(&c))
            .to_string(),
    ))
}

fn to_toml(_args: &[Value]) -> Result<Value, FuncError> {
    Err(err(
        "function \"toToml\" is not supported by this renderer (no TOML encoder matching Helm's)",
    ))
}

// ---------------------------------------------------------------- Sprig

fn fail(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "fail")?;
    Err(err(strval(&args[0])))
}

fn default(args: &[Value]) -> Result<Value, FuncError> {
    let d = arg(args, 0, "default")?;
    // Sprig: `default d` with no given value (a pipeline ending in nil) is the default.
    match args.get(1) {
        Some(given) if !is_empty(given) => Ok(given.clone()),
        _ => Ok(d.clone()),
    }
}

fn empty(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "empty")?;
    Ok(Value::Bool(is_empty(&args[0])))
}

fn coalesce(args: &[Value]) -> Result<Value, FuncError> {
    Ok(args
        .iter()
        .find(|v| !is_empty(v))
        .cloned()
        .unwrap_or(Value::Nil))
}

fn ternary(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "ternary")?;
    match &args[2] {
        Value::Bool(true) => Ok(args[0].clone()),
        Value::Bool(false) => Ok(args[1].clone()),
        other => Err(err(format!(
            "wrong type for value; expected bool; got {}",
            go_type(other)
        ))),
    }
}

fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::Missing))
        .map(|v| gofmt::quote(&strval(v), '"'))
        .collect();
    Ok(Value::String(parts.join(" ")))
}

fn squote(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::Missing))
        .map(|v| gofmt::quote(&strval(v), '\''))
        .collect();
    Ok(Value::String(parts.join(" ")))
}

fn to_string(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "toString")?;
    Ok(Value::String(strval(&args[0])))
}

fn str_fn2(args: &[Value], f: &str, op: fn(&str, &str) -> Value) -> Result<Value, FuncError> {
    want(args, 2, f)?;
    Ok(op(&strval(&args[0]), &strval(&args[1])))
}

fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    str_fn2(args, "trimSuffix", |suf, s| {
        Value::String(s.strip_suffix(suf).unwrap_or(s).to_string())
    })
}

fn trim_prefix(args: &[Value]) -> Result<Value, FuncError> {
    str_fn2(args, "trimPrefix", |pre, s| {
        Value::String(s.strip_prefix(pre).unwrap_or(s).to_string())
    })
}

fn trim(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "trim")?;
    Ok(Value::String(strval(&args[0]).trim().to_string()))
}

fn contains(args: &[Value]) -> Result<Value, FuncError> {
    str_fn2(args, "contains", |sub, s| Value::Bool(s.contains(sub)))
}

fn has_prefix(args: &[Value]) -> Result<Value, FuncError> {
    str_fn2(args, "hasPrefix", |pre, s| Value::Bool(s.starts_with(pre)))
}

fn has_suffix(args: &[Value]) -> Result<Value, FuncError> {
    str_fn2(args, "hasSuffix", |suf, s| Value::Bool(s.ends_with(suf)))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "upper")?;
    Ok(Value::String(strval(&args[0]).to_uppercase()))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "lower")?;
    Ok(Value::String(strval(&args[0]).to_lowercase()))
}

fn replace(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "replace")?;
    let (old, new, s) = (strval(&args[0]), strval(&args[1]), strval(&args[2]));
    if old.is_empty() {
        // Go's strings.Replace with an empty `old` inserts `new` between every rune.
        let mut out = new.clone();
        for c in s.chars() {
            out.push(c);
            out.push_str(&new);
        }
        cap_len(out.len(), "replace")?;
        return Ok(Value::String(out));
    }
    let out = s.replace(&old, &new);
    cap_len(out.len(), "replace")?;
    Ok(Value::String(out))
}

/// Sprig's `trunc`: the first n bytes (the last -n when negative), as Go slices a string.
fn trunc(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "trunc")?;
    let n = to_i64(&args[0]);
    let s = strval(&args[1]);
    let b = s.as_bytes();
    let out: &[u8] = if n < 0 {
        let k = n.unsigned_abs() as usize;
        if k < b.len() { &b[b.len() - k..] } else { b }
    } else {
        let k = n as usize;
        if k < b.len() { &b[..k] } else { b }
    };
    Ok(Value::String(String::from_utf8_lossy(out).into_owned()))
}

fn indent_text(spaces: i64, s: &str) -> Result<String, FuncError> {
    let spaces = usize::try_from(spaces).unwrap_or(0);
    cap_len(spaces.saturating_mul(s.lines().count().max(1)), "indent")?;
    let pad = " ".repeat(spaces);
    Ok(format!("{pad}{}", s.replace('\n', &format!("\n{pad}"))))
}

fn indent(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "indent")?;
    indent_text(to_i64(&args[0]), &strval(&args[1])).map(Value::String)
}

fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "nindent")?;
    indent_text(to_i64(&args[0]), &strval(&args[1])).map(|s| Value::String(format!("\n{s}")))
}

fn repeat(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "repeat")?;
    let n = usize::try_from(to_i64(&args[0])).unwrap_or(0);
    let s = strval(&args[1]);
    cap_len(n.saturating_mul(s.len()), "repeat")?;
    Ok(Value::String(s.repeat(n)))
}

fn split_list(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "splitList")?;
    let (sep, s) = (strval(&args[0]), strval(&args[1]));
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str())
            .map(|p| Value::String(p.to_string()))
            .collect()
    };
    Ok(Value::Array(parts))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "split")?;
    let (sep, s) = (strval(&args[0]), strval(&args[1]));
    let mut m = HashMap::new();
    if sep.is_empty() {
        for (i, c) in s.chars().enumerate() {
            m.insert(format!("_{i}"), Value::String(c.to_string()));
        }
    } else {
        for (i, p) in s.split(sep.as_str()).enumerate() {
            m.insert(format!("_{i}"), Value::String(p.to_string()));
        }
    }
    Ok(Value::Map(m))
}

/// Sprig's `strslice`: a list's elements as strings (nil elements dropped), a string alone.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter(|x| !matches!(x, Value::Nil | Value::Missing))
            .map(strval)
            .collect(),
        Value::Nil | Value::Missing => Vec::new(),
        other => vec![strval(other)],
    }
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "join")?;
    Ok(Value::String(strslice(&args[1]).join(&strval(&args[0]))))
}

fn sort_alpha(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "sortAlpha")?;
    let mut v = strslice(&args[0]);
    v.sort();
    Ok(Value::Array(v.into_iter().map(Value::String).collect()))
}

fn cat(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::Missing))
        .map(strval)
        .collect();
    Ok(Value::String(parts.join(" ")))
}

fn dict(args: &[Value]) -> Result<Value, FuncError> {
    let mut m = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let k = strval(&args[i]);
        let v = args
            .get(i + 1)
            .cloned()
            .unwrap_or(Value::String(String::new()));
        m.insert(k, v);
        i += 2;
    }
    Ok(Value::Map(m))
}

fn list(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Array(args.to_vec()))
}

fn has_key(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "hasKey")?;
    match &args[0] {
        Value::Map(m) => Ok(Value::Bool(m.contains_key(&strval(&args[1])))),
        other => Err(err(format!(
            "wrong type for value; expected map[string]interface {{}}; got {}",
            go_type(other)
        ))),
    }
}

/// mergo.Merge without overwrite: keys missing (or empty) in dst come from src, maps deep.
fn merge_into(dst: &mut HashMap<String, Value>, src: &HashMap<String, Value>, overwrite: bool) {
    for (k, sv) in src {
        match dst.get_mut(k) {
            Some(Value::Map(dm)) => {
                if let Value::Map(sm) = sv {
                    merge_into(dm, sm, overwrite);
                } else if overwrite && !is_empty(sv) {
                    dst.insert(k.clone(), sv.clone());
                }
            }
            Some(dv) => {
                if (overwrite && !is_empty(sv)) || (!overwrite && is_empty(dv)) {
                    *dv = sv.clone();
                }
            }
            None => {
                dst.insert(k.clone(), sv.clone());
            }
        }
    }
}

fn merge_impl(args: &[Value], overwrite: bool, f: &str) -> Result<Value, FuncError> {
    let mut dst = match arg(args, 0, f)? {
        Value::Map(m) => m.clone(),
        other => {
            return Err(err(format!(
                "{f}: first argument must be a map, got {}",
                go_type(other)
            )));
        }
    };
    for src in &args[1..] {
        if let Value::Map(m) = src {
            merge_into(&mut dst, m, overwrite);
        }
    }
    // Sprig's merge changes its first argument in place; values here are copies, so callers
    // that rely on the mutation (`$_ := merge $a $b` then use `$a`) see no change.
    Ok(Value::Map(dst))
}

fn merge(args: &[Value]) -> Result<Value, FuncError> {
    merge_impl(args, false, "merge")
}

fn merge_overwrite(args: &[Value]) -> Result<Value, FuncError> {
    merge_impl(args, true, "mergeOverwrite")
}

fn b64enc(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "b64enc")?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(strval(&args[0])),
    ))
}

fn b64dec(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "b64dec")?;
    Ok(Value::String(
        match base64::engine::general_purpose::STANDARD.decode(strval(&args[0])) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => e.to_string(),
        },
    ))
}

fn sha256sum(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "sha256sum")?;
    let d = sha2::Sha256::digest(strval(&args[0]).as_bytes());
    Ok(Value::String(
        d.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

fn to_int(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "int")?;
    Ok(Value::from(to_i64(&args[0])))
}

fn to_float(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "float64")?;
    Ok(Value::from(to_f64(&args[0])))
}

fn fold(args: &[Value], f: &str, op: fn(i64, i64) -> Option<i64>) -> Result<Value, FuncError> {
    let first = arg(args, 0, f)?;
    let mut acc = to_i64(first);
    for v in &args[1..] {
        acc = op(acc, to_i64(v))
            .ok_or_else(|| err(format!("{f}: integer overflow or division by zero")))?;
    }
    Ok(Value::from(acc))
}

fn add(args: &[Value]) -> Result<Value, FuncError> {
    fold(args, "add", i64::checked_add)
}

fn mul(args: &[Value]) -> Result<Value, FuncError> {
    fold(args, "mul", i64::checked_mul)
}

fn sub(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "sub")?;
    fold(args, "sub", i64::checked_sub)
}

fn div(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "div")?;
    fold(args, "div", i64::checked_div)
}

fn modulo(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "mod")?;
    fold(args, "mod", i64::checked_rem)
}

fn add1(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "add1")?;
    Ok(Value::from(to_i64(&args[0]).saturating_add(1)))
}

fn max(args: &[Value]) -> Result<Value, FuncError> {
    fold(args, "max", |a, b| Some(a.max(b)))
}

fn min(args: &[Value]) -> Result<Value, FuncError> {
    fold(args, "min", |a, b| Some(a.min(b)))
}

fn until(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "until")?;
    let n = to_i64(&args[0]);
    let step = if n < 0 { -1 } else { 1 };
    range_list(0, n, step)
}

fn until_step(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "untilStep")?;
    range_list(to_i64(&args[0]), to_i64(&args[1]), to_i64(&args[2]))
}

fn range_list(start: i64, stop: i64, step: i64) -> Result<Value, FuncError> {
    if step == 0 || (step > 0 && start >= stop) || (step < 0 && start <= stop) {
        return Ok(Value::Array(Vec::new()));
    }
    let count =
        (i128::from(stop) - i128::from(start)).unsigned_abs() / i128::from(step).unsigned_abs();
    cap_len(usize::try_from(count).unwrap_or(usize::MAX), "until")?;
    let mut out = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        out.push(Value::from(i));
        i = match i.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    Ok(Value::Array(out))
}

/// Go's type name of a value as Helm holds it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Missing | Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
        Value::Number(n) if n.as_f64().is_some() => "float64",
        // Template literals are Go `int`s (Sprig's arithmetic gives int64; not told apart).
        Value::Number(_) => "int",
    }
}

fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Missing | Value::Nil => "invalid",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Map(_) => "map",
        Value::Function(_) => "func",
        Value::Number(n) if n.as_f64().is_some() => "float64",
        Value::Number(_) => "int",
    }
}

fn kind_is(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "kindIs")?;
    Ok(Value::Bool(strval(&args[0]) == go_kind(&args[1])))
}

fn kind_of(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "kindOf")?;
    Ok(Value::String(go_kind(&args[0]).to_string()))
}

fn type_of(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "typeOf")?;
    Ok(Value::String(go_type(&args[0]).to_string()))
}

// ---------------------------------------------------------------- dicts and lists
// Native rather than bridged: through gtmpl-ng's values a float64 would lose its type.

fn map_arg<'a>(args: &'a [Value], f: &str) -> Result<&'a HashMap<String, Value>, FuncError> {
    match arg(args, 0, f)? {
        Value::Map(m) => Ok(m),
        other => Err(err(format!(
            "{f}: wrong type for value; expected map[string]interface {{}}; got {}",
            go_type(other)
        ))),
    }
}

fn list_arg<'a>(args: &'a [Value], f: &str) -> Result<&'a [Value], FuncError> {
    match arg(args, 0, f)? {
        Value::Array(a) => Ok(a),
        Value::Nil | Value::Missing => Ok(&[]),
        other => Err(err(format!(
            "{f}: cannot use a {} as a list",
            go_type(other)
        ))),
    }
}

fn set(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "set")?;
    let mut m = map_arg(args, "set")?.clone();
    m.insert(strval(&args[1]), args[2].clone());
    Ok(Value::Map(m))
}

fn unset(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "unset")?;
    let mut m = map_arg(args, "unset")?.clone();
    m.remove(&strval(&args[1]));
    Ok(Value::Map(m))
}

fn get(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "get")?;
    Ok(map_arg(args, "get")?
        .get(&strval(&args[1]))
        .cloned()
        .unwrap_or(Value::String(String::new())))
}

fn keys(args: &[Value]) -> Result<Value, FuncError> {
    // Go's map order is random; charts sort the result (`keys . | sortAlpha`).
    let mut out = Vec::new();
    for (i, _) in args.iter().enumerate() {
        let m = map_arg(&args[i..], "keys")?;
        let mut k: Vec<&String> = m.keys().collect();
        k.sort();
        out.extend(k.into_iter().map(|k| Value::String(k.clone())));
    }
    Ok(Value::Array(out))
}

fn values_fn(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "values")?;
    let m = map_arg(args, "values")?;
    let mut k: Vec<&String> = m.keys().collect();
    k.sort();
    Ok(Value::Array(
        k.into_iter().filter_map(|k| m.get(k).cloned()).collect(),
    ))
}

fn pick(args: &[Value]) -> Result<Value, FuncError> {
    let m = map_arg(args, "pick")?;
    let want: Vec<String> = args[1..].iter().map(strval).collect();
    Ok(Value::Map(
        m.iter()
            .filter(|(k, _)| want.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

fn omit(args: &[Value]) -> Result<Value, FuncError> {
    let m = map_arg(args, "omit")?;
    let drop: Vec<String> = args[1..].iter().map(strval).collect();
    Ok(Value::Map(
        m.iter()
            .filter(|(k, _)| !drop.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

fn deep_copy(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "deepCopy")?;
    Ok(args[0].clone())
}

/// `dig "a" "b" default dict`.
fn dig(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() < 3 {
        return Err(err("dig needs keys, a default and a map"));
    }
    let (path, rest) = args.split_at(args.len() - 2);
    let default = rest[0].clone();
    let mut cur = rest[1].clone();
    for k in path {
        match cur {
            Value::Map(m) => match m.get(&strval(k)) {
                Some(v) => cur = v.clone(),
                None => return Ok(default),
            },
            _ => return Ok(default),
        }
    }
    Ok(cur)
}

fn pluck(args: &[Value]) -> Result<Value, FuncError> {
    let key = strval(arg(args, 0, "pluck")?);
    Ok(Value::Array(
        args[1..]
            .iter()
            .filter_map(|d| match d {
                Value::Map(m) => m.get(&key).cloned(),
                _ => None,
            })
            .collect(),
    ))
}

fn first(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "first")?;
    Ok(list_arg(args, "first")?
        .first()
        .cloned()
        .unwrap_or(Value::Nil))
}

fn last(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "last")?;
    Ok(list_arg(args, "last")?
        .last()
        .cloned()
        .unwrap_or(Value::Nil))
}

fn rest(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "rest")?;
    let l = list_arg(args, "rest")?;
    Ok(if l.is_empty() {
        Value::Nil
    } else {
        Value::Array(l[1..].to_vec())
    })
}

fn initial(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "initial")?;
    let l = list_arg(args, "initial")?;
    Ok(if l.is_empty() {
        Value::Nil
    } else {
        Value::Array(l[..l.len() - 1].to_vec())
    })
}

fn append(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "append")?;
    let mut l = list_arg(args, "append")?.to_vec();
    l.push(args[1].clone());
    Ok(Value::Array(l))
}

fn prepend(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "prepend")?;
    let mut l = vec![args[1].clone()];
    l.extend_from_slice(list_arg(args, "prepend")?);
    Ok(Value::Array(l))
}

fn concat(args: &[Value]) -> Result<Value, FuncError> {
    let mut out = Vec::new();
    for (i, _) in args.iter().enumerate() {
        out.extend_from_slice(list_arg(&args[i..], "concat")?);
    }
    cap_len(out.len(), "concat")?;
    Ok(Value::Array(out))
}

fn reverse(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "reverse")?;
    let mut l = list_arg(args, "reverse")?.to_vec();
    l.reverse();
    Ok(Value::Array(l))
}

fn uniq(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "uniq")?;
    let mut out: Vec<Value> = Vec::new();
    for v in list_arg(args, "uniq")? {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(Value::Array(out))
}

fn has(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "has")?;
    let l = list_arg(&args[1..], "has")?;
    Ok(Value::Bool(l.contains(&args[0])))
}

fn compact(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "compact")?;
    Ok(Value::Array(
        list_arg(args, "compact")?
            .iter()
            .filter(|v| !is_empty(v))
            .cloned()
            .collect(),
    ))
}

fn without(args: &[Value]) -> Result<Value, FuncError> {
    let l = list_arg(args, "without")?;
    Ok(Value::Array(
        l.iter()
            .filter(|v| !args[1..].contains(v))
            .cloned()
            .collect(),
    ))
}

// ---------------------------------------------------------------- strings and regexes

/// Go's strings.Title: the first letter of each word upper-cased.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "title")?;
    let mut out = String::new();
    let mut prev_sep = true;
    for c in strval(&args[0]).chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_');
    }
    Ok(Value::String(out))
}

/// xstrings.ToCamelCase as Sprig uses it: `foo_bar` → `FooBar`.
fn camelcase(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "camelcase")?;
    let mut out = String::new();
    let mut upper_next = true;
    for c in strval(&args[0]).chars() {
        if c == '_' {
            upper_next = true;
            continue;
        }
        if upper_next {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        upper_next = false;
    }
    Ok(Value::String(out))
}

fn compile(re: &str, f: &str) -> Result<regex::Regex, FuncError> {
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| err(format!("{f}: invalid regular expression {re:?}: {e}")))
}

fn regex_match(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "regexMatch")?;
    Ok(Value::Bool(
        compile(&strval(&args[0]), "regexMatch")?.is_match(&strval(&args[1])),
    ))
}

fn regex_find(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "regexFind")?;
    let s = strval(&args[1]);
    Ok(Value::String(
        compile(&strval(&args[0]), "regexFind")?
            .find(&s)
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
    ))
}

fn regex_find_all(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "regexFindAll")?;
    let s = strval(&args[1]);
    let n = to_i64(&args[2]);
    let re = compile(&strval(&args[0]), "regexFindAll")?;
    let all = re
        .find_iter(&s)
        .map(|m| Value::String(m.as_str().to_string()));
    Ok(Value::Array(if n < 0 {
        all.collect()
    } else {
        all.take(usize::try_from(n).unwrap_or(0)).collect()
    }))
}

fn regex_replace_all(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "regexReplaceAll")?;
    let re = compile(&strval(&args[0]), "regexReplaceAll")?;
    let out = re
        .replace_all(&strval(&args[1]), strval(&args[2]).as_str())
        .into_owned();
    cap_len(out.len(), "regexReplaceAll")?;
    Ok(Value::String(out))
}

fn regex_replace_all_literal(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "regexReplaceAllLiteral")?;
    let re = compile(&strval(&args[0]), "regexReplaceAllLiteral")?;
    let repl = strval(&args[2]);
    let out = re
        .replace_all(&strval(&args[1]), regex::NoExpand(&repl))
        .into_owned();
    cap_len(out.len(), "regexReplaceAllLiteral")?;
    Ok(Value::String(out))
}

fn regex_split(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "regexSplit")?;
    let s = strval(&args[1]);
    let n = to_i64(&args[2]);
    let re = compile(&strval(&args[0]), "regexSplit")?;
    let parts: Vec<Value> = if n < 0 {
        re.split(&s).map(|p| Value::String(p.to_string())).collect()
    } else if n == 0 {
        Vec::new()
    } else {
        re.splitn(&s, usize::try_from(n).unwrap_or(0))
            .map(|p| Value::String(p.to_string()))
            .collect()
    };
    Ok(Value::Array(parts))
}

// ---------------------------------------------------------------- more Sprig

/// Sprig's `untitle`: the first letter of each word lower-cased.
fn untitle(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "untitle")?;
    let mut out = String::new();
    let mut prev_space = true;
    for c in strval(&args[0]).chars() {
        if prev_space {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_space = c.is_whitespace();
    }
    Ok(Value::String(out))
}

/// goutils.AbbreviateFull, as Sprig's `abbrev`/`abbrevboth` use it (byte offsets, as Go).
fn abbreviate_full(s: &str, offset: usize, max_width: usize) -> Result<String, FuncError> {
    let marker = "...";
    if max_width < 4 {
        return Err(err("minimum abbreviation width is 4"));
    }
    if s.len() <= max_width {
        return Ok(s.to_string());
    }
    let cut = |s: &str, a: usize, b: usize| -> String {
        String::from_utf8_lossy(&s.as_bytes()[a.min(s.len())..b.min(s.len())]).into_owned()
    };
    let mut offset = offset.min(s.len());
    if s.len() - offset < max_width - 3 {
        offset = s.len() - (max_width - 3);
    }
    if offset <= 4 {
        return Ok(format!("{}{marker}", cut(s, 0, max_width - 3)));
    }
    if max_width < 7 {
        return Err(err("minimum abbreviation width with offset is 7"));
    }
    if offset + max_width - 3 < s.len() {
        let rest = cut(s, offset, s.len());
        return Ok(format!(
            "{marker}{}",
            abbreviate_full(&rest, 0, max_width - 3)?
        ));
    }
    Ok(format!(
        "{marker}{}",
        cut(s, s.len() - (max_width - 3), s.len())
    ))
}

fn abbrevboth(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 3, "abbrevboth")?;
    let left = usize::try_from(to_i64(&args[0])).unwrap_or(0);
    let right = usize::try_from(to_i64(&args[1])).unwrap_or(0);
    // Sprig ignores the error and returns "".
    Ok(Value::String(
        abbreviate_full(&strval(&args[2]), left, right).unwrap_or_default(),
    ))
}

/// Sprig's `seq`: the numbers as one space-separated string, like GNU seq.
fn seq(args: &[Value]) -> Result<Value, FuncError> {
    let p: Vec<i64> = args.iter().map(to_i64).collect();
    let (start, end, step) = match p.as_slice() {
        [end] => {
            let inc = if *end < 1 { -1 } else { 1 };
            (1, end + inc, inc)
        }
        [start, end] => {
            let step = if end < start { -1 } else { 1 };
            (*start, end + step, step)
        }
        [start, step, end] => {
            if end < start {
                if *step > 0 {
                    return Ok(Value::String(String::new()));
                }
                (*start, end - 1, *step)
            } else {
                (*start, end + 1, *step)
            }
        }
        _ => return Ok(Value::String(String::new())),
    };
    let Value::Array(nums) = range_list(start, end, step)? else {
        return Ok(Value::String(String::new()));
    };
    Ok(Value::String(
        nums.iter().map(strval).collect::<Vec<_>>().join(" "),
    ))
}

/// Go's path.Clean (lexical).
fn clean(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 1, "clean")?;
    let p = strval(&args[0]);
    if p.is_empty() {
        return Ok(Value::String(".".into()));
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    Ok(Value::String(match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }))
}

// ---------------------------------------------------------------- semverCompare

/// Sprig's `semverCompare` (Masterminds/semver v3 constraints): `||` alternatives of
/// comma- or space-separated comparisons (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `^`, wildcards
/// `x`/`*`). A constraint without a pre-release does not match a pre-release version.
fn semver_compare(args: &[Value]) -> Result<Value, FuncError> {
    want(args, 2, "semverCompare")?;
    let constraint = strval(&args[0]);
    let version = strval(&args[1]);
    let v = parse_loose(&version).ok_or_else(|| {
        err(format!(
            "semverCompare: invalid semantic version {version:?}"
        ))
    })?;
    let mut any = false;
    for alt in constraint.split("||") {
        let terms = split_terms(alt);
        if terms.is_empty() {
            return Err(err(format!(
                "semverCompare: improper constraint: {constraint}"
            )));
        }
        let mut all = true;
        for t in &terms {
            if !term_matches(t, &v).map_err(|e| err(format!("semverCompare: {e}: {constraint}")))? {
                all = false;
            }
        }
        any |= all;
    }
    Ok(Value::Bool(any))
}

fn split_terms(alt: &str) -> Vec<String> {
    // "op version" pairs: an operator may be followed by spaces before its version.
    let mut terms = Vec::new();
    let mut pending = String::new();
    for tok in alt
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        if tok.chars().all(|c| "=!<>~^".contains(c)) {
            pending.push_str(tok);
            continue;
        }
        terms.push(format!("{pending}{tok}"));
        pending.clear();
    }
    terms
}

/// A version with missing parts as 0; `wild[i]` marks an `x`/`*`/missing part.
struct Loose {
    v: semver::Version,
    wild: [bool; 3],
}

fn parse_loose(s: &str) -> Option<Loose> {
    let s = s.trim().trim_start_matches(['v', 'V']);
    let (core, pre) = match s.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (s, None),
    };
    let (core, build) = match core.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (core, None),
    };
    let (pre, build) = match (pre, build) {
        (Some(p), None) => match p.split_once('+') {
            Some((p, b)) => (Some(p), Some(b)),
            None => (Some(p), None),
        },
        other => other,
    };
    let mut nums = [0u64; 3];
    let mut wild = [true; 3];
    for (i, part) in core.split('.').enumerate() {
        if i > 2 {
            return None;
        }
        if part == "x" || part == "X" || part == "*" {
            continue;
        }
        nums[i] = part.parse().ok()?;
        wild[i] = false;
    }
    let mut v = semver::Version::new(nums[0], nums[1], nums[2]);
    if let Some(p) = pre {
        v.pre = semver::Prerelease::new(p).ok()?;
    }
    if let Some(b) = build {
        v.build = semver::BuildMetadata::new(b).ok()?;
    }
    Some(Loose { v, wild })
}

fn term_matches(term: &str, ver: &Loose) -> Result<bool, String> {
    let op_len = term
        .find(|c: char| !"=!<>~^".contains(c))
        .unwrap_or(term.len());
    let (op, rest) = term.split_at(op_len);
    let c = parse_loose(rest).ok_or_else(|| format!("improper constraint {term:?}"))?;
    let v = &ver.v;
    // Pre-release versions only match constraints that carry a pre-release themselves.
    if !v.pre.is_empty() && c.v.pre.is_empty() {
        return Ok(false);
    }
    let cmp_core = |a: &semver::Version, b: &semver::Version| {
        let mut a = a.clone();
        let mut b = b.clone();
        a.build = semver::BuildMetadata::EMPTY;
        b.build = semver::BuildMetadata::EMPTY;
        a.cmp(&b)
    };
    use std::cmp::Ordering::*;
    let cv = &c.v;
    let wild_match = |v: &semver::Version| {
        v.major == cv.major
            && (c.wild[1] || v.minor == cv.minor)
            && (c.wild[2] || c.wild[1] || v.patch == cv.patch)
    };
    let upper = |major: u64, minor: u64| semver::Version::new(major, minor, 0);
    Ok(match op {
        "" | "=" | "==" => {
            if c.wild[0] {
                true
            } else if c.wild[1] || c.wild[2] {
                wild_match(v)
            } else {
                cmp_core(v, cv) == Equal
            }
        }
        "!=" => {
            if c.wild[1] || c.wild[2] {
                !wild_match(v)
            } else {
                cmp_core(v, cv) != Equal
            }
        }
        ">" => {
            if c.wild[1] {
                v.major > cv.major
            } else if c.wild[2] {
                v.major > cv.major || (v.major == cv.major && v.minor > cv.minor)
            } else {
                cmp_core(v, cv) == Greater
            }
        }
        ">=" | "=>" => cmp_core(v, cv) != Less,
        "<" => cmp_core(v, cv) == Less,
        "<=" | "=<" => {
            if c.wild[1] {
                v.major <= cv.major
            } else if c.wild[2] {
                v.major < cv.major || (v.major == cv.major && v.minor <= cv.minor)
            } else {
                cmp_core(v, cv) != Greater
            }
        }
        "~" | "~>" => {
            let hi = if c.wild[1] {
                upper(cv.major + 1, 0)
            } else {
                upper(cv.major, cv.minor + 1)
            };
            cmp_core(v, cv) != Less && cmp_core(v, &hi) == Less
        }
        "^" => {
            let hi = if cv.major > 0 || c.wild[1] {
                upper(cv.major + 1, 0)
            } else if cv.minor > 0 || c.wild[2] {
                upper(0, cv.minor + 1)
            } else {
                semver::Version::new(0, 0, cv.patch + 1)
            };
            cmp_core(v, cv) != Less && cmp_core(v, &hi) == Less
        }
        other => return Err(format!("unknown operator {other:?}")),
    })
}

// ---------------------------------------------------------------- random

macro_rules! nondeterministic {
    ($($name:ident => $inner:path),* $(,)?) => {
        $(
            fn $name(args: &[Value]) -> Result<Value, FuncError> {
                NONDETERMINISTIC.with(|n| n.set(true));
                if let Some(Value::Number(n)) = args.first() {
                    cap_len(usize::try_from(to_i64(&Value::Number(n.clone()))).unwrap_or(0), stringify!($name))?;
                }
                call_ng($inner, args)
            }
        )*
    };
}

nondeterministic! {
    rand_alpha_num => gtmpl_ng::helm_functions::string::rand_alpha_num,
    rand_alpha => gtmpl_ng::helm_functions::string::rand_alpha,
    rand_numeric => gtmpl_ng::helm_functions::string::rand_numeric,
    rand_ascii => gtmpl_ng::helm_functions::string::rand_ascii,
    uuidv4 => gtmpl_ng::helm_functions::misc::uuidv4,
    shuffle => gtmpl_ng::helm_functions::string::shuffle,
    htpasswd => gtmpl_ng::helm_functions::crypto::htpasswd,
    gen_ca => gtmpl_ng::helm_functions::certs::gen_ca,
    gen_self_signed_cert => gtmpl_ng::helm_functions::certs::gen_self_signed_cert,
    gen_signed_cert => gtmpl_ng::helm_functions::certs::gen_signed_cert,
}

// ---------------------------------------------------------------- gtmpl-ng's functions

/// `gtmpl_value::Value` (gtmpl-ng's functions) from ours. Methods cannot cross and become nil;
/// a float crosses as gtmpl_value's number (which turns integral floats into integers).
fn to_ng(v: &Value) -> gtmpl_value::Value {
    match v {
        Value::Missing => gtmpl_value::Value::NoValue,
        Value::Nil | Value::Function(_) => gtmpl_value::Value::Nil,
        Value::Bool(b) => gtmpl_value::Value::Bool(*b),
        Value::String(s) => gtmpl_value::Value::String(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => gtmpl_value::Value::from(u),
            (_, Some(i), _) => gtmpl_value::Value::from(i),
            (_, _, f) => gtmpl_value::Value::from(f.unwrap_or(0.0)),
        },
        Value::Array(a) => gtmpl_value::Value::Array(a.iter().map(to_ng).collect()),
        Value::Map(m) => gtmpl_value::Value::Map(
            m.iter()
                .filter(|(_, v)| !matches!(v, Value::Function(_)))
                .map(|(k, v)| (k.clone(), to_ng(v)))
                .collect(),
        ),
    }
}

fn from_ng(v: gtmpl_value::Value) -> Value {
    match v {
        gtmpl_value::Value::NoValue => Value::Missing,
        gtmpl_value::Value::Nil | gtmpl_value::Value::Function(_) => Value::Nil,
        gtmpl_value::Value::Bool(b) => Value::Bool(b),
        gtmpl_value::Value::String(s) => Value::String(s),
        gtmpl_value::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (_, Some(i), _) => Value::from(i),
            (_, _, f) => Value::from(f.unwrap_or(0.0)),
        },
        gtmpl_value::Value::Array(a) => Value::Array(a.into_iter().map(from_ng).collect()),
        gtmpl_value::Value::Map(m) | gtmpl_value::Value::Object(m) => {
            Value::Map(m.into_iter().map(|(k, v)| (k, from_ng(v))).collect())
        }
    }
}

fn call_ng(
    f: fn(&[gtmpl_value::Value]) -> Result<gtmpl_value::Value, gtmpl_value::FuncError>,
    args: &[Value],
) -> Result<Value, FuncError> {
    let args: Vec<gtmpl_value::Value> = args.iter().map(to_ng).collect();
    f(&args).map(from_ng).map_err(|e| err(e.to_string()))
}

macro_rules! bridged {
    ($(($name:literal, $wrapper:ident, $inner:path),)*) => {
        $(
            fn $wrapper(args: &[Value]) -> Result<Value, FuncError> {
                call_ng($inner, args)
            }
        )*
        /// gtmpl-ng's functions that are not replaced here, adapted to our values.
        const BRIDGED: &[(&str, Func)] = &[$(($name, $wrapper as Func),)*];
    };
}

bridged! {
    ("trimAll", bridged_trim_all, gtmpl_ng::helm_functions::string::trim_all),
    ("substr", bridged_substr, gtmpl_ng::helm_functions::string::substr),
    ("nospace", bridged_nospace, gtmpl_ng::helm_functions::string::nospace),
    ("abbrev", bridged_abbrev, gtmpl_ng::helm_functions::string::abbrev),
    ("initials", bridged_initials, gtmpl_ng::helm_functions::string::initials),
    ("plural", bridged_plural, gtmpl_ng::helm_functions::string::plural),
    ("snakecase", bridged_snakecase, gtmpl_ng::helm_functions::string::snakecase),
    ("kebabcase", bridged_kebabcase, gtmpl_ng::helm_functions::string::kebabcase),
    ("swapcase", bridged_swapcase, gtmpl_ng::helm_functions::string::swapcase),
    ("sha1sum", bridged_sha1sum, gtmpl_ng::helm_functions::crypto::sha1sum),
    ("sha512sum", bridged_sha512sum, gtmpl_ng::helm_functions::crypto::sha512sum),
    ("md5sum", bridged_md5sum, gtmpl_ng::helm_functions::crypto::md5sum),
    ("b32enc", bridged_b32enc, gtmpl_ng::helm_functions::encoding::b32enc),
    ("b32dec", bridged_b32dec, gtmpl_ng::helm_functions::encoding::b32dec),
    ("pow", bridged_math_power, gtmpl_ng::helm_functions::math::math_power),
    ("addf", bridged_addf, gtmpl_ng::helm_functions::math::addf),
    ("add1f", bridged_add1f, gtmpl_ng::helm_functions::math::add1f),
    ("subf", bridged_subf, gtmpl_ng::helm_functions::math::subf),
    ("divf", bridged_divf, gtmpl_ng::helm_functions::math::divf),
    ("mulf", bridged_mulf, gtmpl_ng::helm_functions::math::mulf),
    ("maxf", bridged_maxf, gtmpl_ng::helm_functions::math::maxf),
    ("minf", bridged_minf, gtmpl_ng::helm_functions::math::minf),
    ("floor", bridged_floor, gtmpl_ng::helm_functions::math::floor),
    ("ceil", bridged_ceil, gtmpl_ng::helm_functions::math::ceil),
    ("round", bridged_round, gtmpl_ng::helm_functions::math::round),
    ("atoi", bridged_atoi, gtmpl_ng::helm_functions::types::atoi),
    ("toStrings", bridged_to_strings, gtmpl_ng::helm_functions::types::to_strings),
    ("typeIs", bridged_type_is, gtmpl_ng::helm_functions::types::type_is),
    ("deepEqual", bridged_deep_equal, gtmpl_ng::helm_functions::types::deep_equal),
    ("slice", bridged_slice, gtmpl_ng::helm_functions::lists::slice),
    ("mustSlice", bridged_must_slice, gtmpl_ng::helm_functions::lists::must_slice),
    ("base", bridged_base, gtmpl_ng::helm_functions::paths::base),
    ("dir", bridged_dir, gtmpl_ng::helm_functions::paths::dir),
    ("ext", bridged_ext, gtmpl_ng::helm_functions::paths::ext),
    ("isAbs", bridged_is_abs, gtmpl_ng::helm_functions::paths::is_abs),
}
