//! Rendering a chart's templates as Helm's engine does.

use std::{collections::BTreeMap, collections::HashMap, io::Write, rc::Rc};

use crate::gotmpl::value::{Func, FuncError, Value};

use crate::{
    Chart, RenderError,
    funcs::{self, ActiveSet},
    gotmpl::{Context, Template, error::ExecError},
    values::{coalesce_values, to_tmpl},
};

/// Largest output one template (or one `include`/`tpl`) may produce before rendering fails.
pub const MAX_OUTPUT_BYTES: usize = 32 * 1024 * 1024;

/// Deepest nesting of actions (`if`/`range`/`with`/`define` blocks, parentheses) a template may
/// have: the parser is recursive, and a hostile template must fail, not overflow the stack.
const MAX_SYNTAX_NESTING: usize = 100;

/// The Helm version templates see in `.Capabilities.HelmVersion`.
const HELM_VERSION: &str = "v3.16.0";

/// What `.Capabilities` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Kubernetes version, `"v1.32.0"`.
    pub kube_version: String,
    /// API versions the cluster serves: `"apps/v1"` and `"apps/v1/Deployment"` forms.
    pub api_versions: Vec<String>,
}

/// One render of a chart.
#[derive(Debug, Clone)]
pub struct RenderRequest<'a> {
    /// `.Release.Name`.
    pub release_name: &'a str,
    /// `.Release.Namespace`.
    pub namespace: &'a str,
    /// `.Release.Revision`.
    pub revision: i64,
    /// `.Release.IsInstall`.
    pub is_install: bool,
    /// `.Release.IsUpgrade`.
    pub is_upgrade: bool,
    /// The release's user-supplied values (`release.config`).
    pub user_values: &'a serde_json::Value,
    /// `.Capabilities`.
    pub capabilities: &'a Capabilities,
}

/// Rendered text per template path as Helm names it: "<chart name>/templates/<file>" (the
/// "# Source:" path in a manifest); partials (`_*`) and NOTES.txt are not outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Template path → rendered text (`<no value>` already replaced by "").
    pub templates: BTreeMap<String, String>,
    /// Templates that called a random or time-dependent function (`randAlphaNum`, `uuidv4`,
    /// `genCA`, …): their output differs on every render, so a chart with any cannot reproduce
    /// its recorded manifest.
    pub nondeterministic: Vec<String>,
}

/// Renders every template of `chart` with the chart's values coalesced with the request's
/// user values, as `helm template` (and an install or upgrade) would.
pub fn render(chart: &Chart, req: &RenderRequest) -> Result<Rendered, RenderError> {
    // The template engine recurses per nesting level; give it a stack that holds the bounded
    // depth (MAX_TEMPLATE_DEPTH, MAX_SYNTAX_NESTING) whatever thread the caller runs on.
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("chart-render".into())
            .stack_size(128 * 1024 * 1024)
            .spawn_scoped(s, || render_on_this_thread(chart, req))
            .map_err(|e| RenderError::Exec {
                template: chart.name().to_string(),
                message: format!("failed to start the render thread: {e}"),
            })?
            .join()
            .map_err(|_| RenderError::Exec {
                template: chart.name().to_string(),
                message: "the renderer failed unexpectedly (a bug: please report the chart)".into(),
            })?
    })
}

fn render_on_this_thread(chart: &Chart, req: &RenderRequest) -> Result<Rendered, RenderError> {
    let chart_name = chart.name().to_string();
    let mut set = Template::default();
    funcs::install(&mut set);

    // Helm parses deepest paths first, and among equal depths in reverse name order, so for a
    // `define` given twice the one parsed last wins.
    let mut paths: Vec<(String, &[u8])> = chart
        .templates
        .iter()
        .map(|t| (format!("{chart_name}/{}", t.name), t.data.as_slice()))
        .collect();
    paths.sort_by(|(a, _), (b, _)| {
        let (ca, cb) = (a.matches('/').count(), b.matches('/').count());
        cb.cmp(&ca).then_with(|| b.cmp(a))
    });
    for (path, data) in &paths {
        let text = std::str::from_utf8(data).map_err(|e| RenderError::Parse {
            template: path.clone(),
            message: format!("not UTF-8 text: {e}"),
        })?;
        check_nesting(path, text)?;
        set.add_template(path.clone(), text)
            .map_err(|e| RenderError::Parse {
                template: path.clone(),
                message: e.to_string(),
            })?;
    }

    let values = coalesce_values(&chart.values, req.user_values);
    let mut top = HashMap::new();
    top.insert("Values".to_string(), to_tmpl(&values));
    top.insert("Release".to_string(), release_object(req));
    top.insert("Chart".to_string(), chart_object(&chart.metadata));
    top.insert(
        "Capabilities".to_string(),
        capabilities_object(req.capabilities),
    );
    top.insert("Files".to_string(), files_object(chart));
    top.insert("Subcharts".to_string(), Value::Map(HashMap::new()));

    let set = Rc::new(set);
    let _active = ActiveSet::push(set.clone());
    funcs::take_nondeterministic();
    let mut out = Rendered::default();
    let base_path = format!("{chart_name}/templates");
    let mut names: Vec<&String> = paths.iter().map(|(p, _)| p).collect();
    names.sort();
    for path in names {
        let base = path.rsplit('/').next().unwrap_or(path);
        if base.starts_with('_') {
            continue;
        }
        let mut template = HashMap::new();
        template.insert("Name".to_string(), Value::String(path.clone()));
        template.insert("BasePath".to_string(), Value::String(base_path.clone()));
        let mut vals = top.clone();
        vals.insert("Template".to_string(), Value::Map(template));
        let mut w = LimitedWriter::default();
        set.execute_named(path, &mut w, &Context::from(Value::Map(vals)))
            .map_err(|e| exec_error(path, &e))?;
        if funcs::take_nondeterministic() {
            out.nondeterministic.push(path.clone());
        }
        if base == "NOTES.txt" {
            continue;
        }
        out.templates
            .insert(path.clone(), w.into_string().replace("<no value>", ""));
    }
    Ok(out)
}

/// Rejects templates nested deeper than the parser can take (hostile input).
fn check_nesting(path: &str, text: &str) -> Result<(), RenderError> {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        let action = after[..end].trim_start_matches('-').trim_start();
        let word = action.split_whitespace().next().unwrap_or("");
        match word {
            "if" | "range" | "with" | "define" | "block" => depth += 1,
            "end" => depth = depth.saturating_sub(1),
            _ => {}
        }
        let mut parens = 0usize;
        for c in after[..end].chars() {
            match c {
                '(' => {
                    parens += 1;
                    max = max.max(depth + parens);
                }
                ')' => parens = parens.saturating_sub(1),
                _ => {}
            }
        }
        max = max.max(depth);
        rest = &after[end.min(after.len())..];
    }
    if max > MAX_SYNTAX_NESTING {
        return Err(RenderError::Parse {
            template: path.to_string(),
            message: format!(
                "actions nested {max} deep; the renderer accepts at most {MAX_SYNTAX_NESTING}"
            ),
        });
    }
    Ok(())
}

/// A template error as "path:line:col" plus what went wrong, innermost location first.
pub(crate) fn exec_message(e: &ExecError) -> String {
    match e {
        ExecError::Structured(s) => {
            let mut msg = format!(
                "{}:{}:{}: {}",
                s.context.name, s.context.line, s.context.col, s.message
            );
            msg = msg
                .replace("HELM_ERR_START", "")
                .replace("HELM_ERR_END", "");
            msg
        }
        other => other.to_string(),
    }
}

fn exec_error(path: &str, e: &ExecError) -> RenderError {
    match e {
        ExecError::Structured(s) => RenderError::Exec {
            template: format!("{}:{}:{}", s.context.name, s.context.line, s.context.col),
            message: s.message.clone(),
        },
        other => RenderError::Exec {
            template: path.to_string(),
            message: other.to_string(),
        },
    }
}

/// Output buffer that fails past [`MAX_OUTPUT_BYTES`] instead of growing without bound.
#[derive(Default)]
pub(crate) struct LimitedWriter {
    buf: Vec<u8>,
}

impl LimitedWriter {
    pub(crate) fn into_string(self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

impl Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other(format!(
                "output exceeds the limit of {MAX_OUTPUT_BYTES} bytes"
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn release_object(req: &RenderRequest) -> Value {
    map(vec![
        ("Name", Value::from(req.release_name)),
        ("Namespace", Value::from(req.namespace)),
        ("Revision", Value::from(req.revision)),
        ("IsInstall", Value::Bool(req.is_install)),
        ("IsUpgrade", Value::Bool(req.is_upgrade)),
        ("Service", Value::from("Helm")),
    ])
}

/// `.Chart`: Helm's `chart.Metadata` with Go's field names; absent fields are Go zero values.
fn chart_object(meta: &serde_json::Value) -> Value {
    let s = |k: &str| Value::from(meta.get(k).and_then(|v| v.as_str()).unwrap_or(""));
    let list = |k: &str| match meta.get(k) {
        Some(v @ serde_json::Value::Array(_)) => to_tmpl(v),
        _ => Value::Array(Vec::new()),
    };
    let maintainers = match meta.get("maintainers") {
        Some(serde_json::Value::Array(a)) => Value::Array(
            a.iter()
                .map(|m| {
                    let f = |k: &str| Value::from(m.get(k).and_then(|v| v.as_str()).unwrap_or(""));
                    map(vec![
                        ("Name", f("name")),
                        ("Email", f("email")),
                        ("URL", f("url")),
                    ])
                })
                .collect(),
        ),
        _ => Value::Array(Vec::new()),
    };
    let dependencies = match meta.get("dependencies") {
        Some(serde_json::Value::Array(a)) => Value::Array(
            a.iter()
                .map(|d| {
                    let f = |k: &str| Value::from(d.get(k).and_then(|v| v.as_str()).unwrap_or(""));
                    map(vec![
                        ("Name", f("name")),
                        ("Version", f("version")),
                        ("Repository", f("repository")),
                        ("Condition", f("condition")),
                        ("Alias", f("alias")),
                        (
                            "Enabled",
                            Value::Bool(
                                d.get("enabled").and_then(|v| v.as_bool()).unwrap_or(false),
                            ),
                        ),
                    ])
                })
                .collect(),
        ),
        _ => Value::Array(Vec::new()),
    };
    let annotations = match meta.get("annotations") {
        Some(v @ serde_json::Value::Object(_)) => to_tmpl(v),
        _ => Value::Map(HashMap::new()),
    };
    map(vec![
        ("Name", s("name")),
        ("Home", s("home")),
        ("Sources", list("sources")),
        ("Version", s("version")),
        ("Description", s("description")),
        ("Keywords", list("keywords")),
        ("Maintainers", maintainers),
        ("Icon", s("icon")),
        ("APIVersion", s("apiVersion")),
        ("Condition", s("condition")),
        ("Tags", s("tags")),
        ("AppVersion", s("appVersion")),
        (
            "Deprecated",
            Value::Bool(
                meta.get("deprecated")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            ),
        ),
        ("Annotations", annotations),
        ("KubeVersion", s("kubeVersion")),
        ("Dependencies", dependencies),
        ("Type", s("type")),
    ])
}

fn capabilities_object(caps: &Capabilities) -> Value {
    let v = caps.kube_version.trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next().unwrap_or("").to_string();
    let minor = parts.next().unwrap_or("").to_string();
    let mut api = HashMap::new();
    for (i, a) in caps.api_versions.iter().enumerate() {
        // Kept as entries so `.Capabilities.APIVersions` can be inspected; `Has` reads them.
        api.insert(format!("{i:06}"), Value::from(a.as_str()));
    }
    api.insert("Has".to_string(), Value::from(api_versions_has as Func));
    map(vec![
        (
            "KubeVersion",
            map(vec![
                ("Version", Value::from(caps.kube_version.as_str())),
                ("GitVersion", Value::from(caps.kube_version.as_str())),
                ("Major", Value::from(major)),
                ("Minor", Value::from(minor)),
                ("String", Value::from(kube_version_string as Func)),
            ]),
        ),
        ("APIVersions", Value::Map(api)),
        (
            "HelmVersion",
            map(vec![
                ("Version", Value::from(HELM_VERSION)),
                ("GitCommit", Value::from("")),
                ("GitTreeState", Value::from("")),
                ("GoVersion", Value::from("")),
            ]),
        ),
    ])
}

/// Helm's `KubeVersion.String()`: the version.
fn kube_version_string(args: &[Value]) -> Result<Value, FuncError> {
    match args.first() {
        Some(Value::Map(m)) => Ok(m.get("Version").cloned().unwrap_or(Value::Nil)),
        _ => Err(FuncError::Generic(
            "KubeVersion.String takes no argument".into(),
        )),
    }
}

fn api_versions_has(args: &[Value]) -> Result<Value, FuncError> {
    let (Some(Value::Map(m)), Some(Value::String(want))) = (args.first(), args.get(1)) else {
        return Err(FuncError::Generic(
            "APIVersions.Has takes one string argument".into(),
        ));
    };
    Ok(Value::Bool(
        m.values()
            .any(|v| matches!(v, Value::String(s) if s == want)),
    ))
}

// ---------------------------------------------------------------- .Files

fn files_object(chart: &Chart) -> Value {
    let mut m: HashMap<String, Value> = chart
        .files
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                Value::String(String::from_utf8_lossy(&f.data).into_owned()),
            )
        })
        .collect();
    add_file_methods(&mut m);
    Value::Map(m)
}

fn add_file_methods(m: &mut HashMap<String, Value>) {
    let methods: [(&str, Func); 6] = [
        ("Get", files_get),
        ("GetBytes", files_get),
        ("Glob", files_glob),
        ("Lines", files_lines),
        ("AsConfig", files_as_config),
        ("AsSecrets", files_as_secrets),
    ];
    for (k, f) in methods {
        m.insert(k.to_string(), Value::from(f));
    }
}

fn file_entries(recv: &Value) -> Vec<(&String, &String)> {
    let mut v: Vec<(&String, &String)> = match recv {
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    v.sort();
    v
}

fn path_arg(args: &[Value], f: &str) -> Result<String, FuncError> {
    match args.get(1) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(FuncError::Generic(format!(
            ".Files.{f} takes one string argument"
        ))),
    }
}

fn files_get(args: &[Value]) -> Result<Value, FuncError> {
    let path = path_arg(args, "Get")?;
    Ok(Value::String(
        file_entries(&args[0])
            .into_iter()
            .find(|(k, _)| **k == path)
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
    ))
}

fn files_lines(args: &[Value]) -> Result<Value, FuncError> {
    let path = path_arg(args, "Lines")?;
    let Some((_, s)) = file_entries(&args[0])
        .into_iter()
        .find(|(k, _)| **k == path)
    else {
        return Ok(Value::Array(Vec::new()));
    };
    let s = s.strip_suffix('\n').unwrap_or(s);
    Ok(Value::Array(s.split('\n').map(Value::from).collect()))
}

fn files_glob(args: &[Value]) -> Result<Value, FuncError> {
    let pattern = path_arg(args, "Glob")?;
    let mut m: HashMap<String, Value> = file_entries(&args[0])
        .into_iter()
        .filter(|(k, _)| glob_match(pattern.as_bytes(), k.as_bytes()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    add_file_methods(&mut m);
    Ok(Value::Map(m))
}

fn config_map(args: &[Value], encode: bool) -> Result<Value, FuncError> {
    use base64::Engine as _;
    let mut m = HashMap::new();
    for (k, v) in file_entries(args.first().unwrap_or(&Value::Nil)) {
        let base = k.rsplit('/').next().unwrap_or(k).to_string();
        let v = if encode {
            base64::engine::general_purpose::STANDARD.encode(v)
        } else {
            v.clone()
        };
        m.insert(base, Value::String(v));
    }
    if m.is_empty() {
        return Ok(Value::String(String::new()));
    }
    Ok(Value::String(
        funcs::yaml_text(&Value::Map(m)).unwrap_or_default(),
    ))
}

fn files_as_config(args: &[Value]) -> Result<Value, FuncError> {
    config_map(args, false)
}

fn files_as_secrets(args: &[Value]) -> Result<Value, FuncError> {
    config_map(args, true)
}

/// Glob as Helm's `.Files.Glob` (gobwas/glob with `/` as separator): `*` and `?` stay within
/// one path segment, `**` crosses segments, `[abc]`/`[a-z]` classes, `{a,b}` alternatives.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            (0..=s.len()).any(|i| glob_match(&p[2..], &s[i..]))
        }
        Some(b'*') => {
            for i in 0..=s.len() {
                if glob_match(&p[1..], &s[i..]) {
                    return true;
                }
                if s.get(i) == Some(&b'/') {
                    break;
                }
            }
            false
        }
        Some(b'?') => matches!(s.first(), Some(c) if *c != b'/') && glob_match(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(close) = p.iter().position(|c| *c == b']') else {
                return s.first() == Some(&b'[') && glob_match(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let class = &p[1..close];
            let (neg, class) = match class.first() {
                Some(b'!') | Some(b'^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != neg && glob_match(&p[close + 1..], &s[1..])
        }
        Some(b'{') => {
            let Some(close) = p.iter().position(|c| *c == b'}') else {
                return s.first() == Some(&b'{') && glob_match(&p[1..], &s[1..]);
            };
            p[1..close].split(|c| *c == b',').any(|alt| {
                let mut q = alt.to_vec();
                q.extend_from_slice(&p[close + 1..]);
                glob_match(&q, s)
            })
        }
        Some(c) => s.first() == Some(c) && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_follows_path_segments() {
        assert!(glob_match(b"files/*.conf", b"files/a.conf"));
        assert!(!glob_match(b"files/*.conf", b"files/sub/a.conf"));
        assert!(glob_match(b"files/**.conf", b"files/sub/a.conf"));
        assert!(glob_match(b"files/{a,b}.txt", b"files/b.txt"));
        assert!(glob_match(b"files/[a-c]?.txt", b"files/bx.txt"));
        assert!(!glob_match(b"files/[!a-c]?.txt", b"files/bx.txt"));
    }
}
