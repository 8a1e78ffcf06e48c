//! The HTTP edge: URL routing as the Kubernetes API lays it out, query parameters, content
//! types, the request log, `Status` error bodies and watch streams (newline-delimited JSON).

use crate::{
    error::ApiError,
    registry::{ResourceDef, ResourceKey},
    selector::{FieldSelector, LabelSelector},
    store::{Event, EventKind, PatchKind, RecordedRequest, State, WriteOpts},
};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, State as AxState, ws::WebSocketUpgrade},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};
use tokio::sync::{broadcast, watch};

/// Everything the handlers share.
#[derive(Debug)]
pub struct Shared {
    /// The cluster state.
    pub state: Mutex<State>,
    /// Closed (set to true) when the server shuts down: open watches end.
    pub stop: watch::Receiver<bool>,
    /// The `pods/exec` handler and the execs served.
    pub exec: Arc<crate::exec::ExecState>,
    /// The `GET /version` answer (`version.Info`).
    pub version: Value,
}

impl Shared {
    /// Locks the state (a panic in another holder does not make the state unusable for tests).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The router: one handler that routes by path itself (the API's paths are ambiguous for a
/// pattern router: `/api/v1/namespaces/x/pods` vs `/api/v1/namespaces/x/status`).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn json_response(code: u16, value: &Value) -> Response {
    json_typed(code, value, "application/json")
}

fn json_typed(code: u16, value: &Value, content_type: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, content_type.to_string())],
        value.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

/// What a path names.
#[derive(Debug, PartialEq)]
enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    Resource(ResourcePath),
    OpenApi,
}

#[derive(Debug, PartialEq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => return Some(Route::Health),
        ["openapi", ..] => return Some(Route::OpenApi),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => return Some(Route::Group((*g).to_string())),
        ["api", v] => return Some(Route::Resources(String::new(), (*v).to_string())),
        ["apis", g, v] => return Some(Route::Resources((*g).to_string(), (*v).to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let s = |x: &&str| (*x).to_string();
    let (namespace, plural, name, sub) = match rest {
        [p] => (None, s(p), None, None),
        [p, n] => (None, s(p), Some(s(n)), None),
        ["namespaces", ns, sub @ ("status" | "finalize")] => {
            (None, "namespaces".to_string(), Some(s(ns)), Some(s(sub)))
        }
        ["namespaces", ns, p] => (Some(s(ns)), s(p), None, None),
        [p, n, sub] => (None, s(p), Some(s(n)), Some(s(sub))),
        ["namespaces", ns, p, n] => (Some(s(ns)), s(p), Some(s(n)), None),
        ["namespaces", ns, p, n, sub] => (Some(s(ns)), s(p), Some(s(n)), Some(s(sub))),
        _ => return None,
    };
    Some(Route::Resource(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        plural,
        name,
        sub,
    }))
}

fn parse_query(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

async fn handle(AxState(app): AxState<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let (method, uri, headers) = (
        parts.method.clone(),
        parts.uri.clone(),
        parts.headers.clone(),
    );
    let path = uri.path().to_string();
    let raw_query = uri.query().unwrap_or_default().to_string();
    let query = parse_query(&raw_query);
    let header_str = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_str(header::CONTENT_TYPE);
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    app.lock().requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        field_manager: query.get("fieldManager").cloned(),
        content_type: content_type.clone(),
        dry_run,
    });
    let Some(route) = route(&path) else {
        return error_response(&ApiError::no_route());
    };
    if let Route::Resource(rp) = &route
        && rp.sub.as_deref() == Some("exec")
        && rp.plural == "pods"
        && rp.group.is_empty()
    {
        return exec(&app, rp, &mut parts, &raw_query).await;
    }
    // The body only now: an exec upgrade has none to read.
    let body = match Bytes::from_request(axum::extract::Request::from_parts(parts, body), &()).await
    {
        Ok(b) => b,
        Err(rejection) => return rejection.into_response(),
    };
    let accept = header_str(header::ACCEPT).unwrap_or_default();
    if !matches!(route, Route::Resource(_)) && method != Method::GET {
        return error_response(&ApiError::method_not_allowed(method.as_str()));
    }
    let st = app.lock();
    match route {
        Route::Version => json_response(200, &app.version),
        Route::Health => (StatusCode::OK, "ok").into_response(),
        Route::OpenApi => error_response(&ApiError::no_route()),
        Route::CoreVersions if accept.contains("as=APIGroupDiscoveryList") => {
            json_typed(200, &st.registry.aggregated(true), AGGREGATED)
        }
        Route::CoreVersions => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        Route::Groups if accept.contains("as=APIGroupDiscoveryList") => {
            json_typed(200, &st.registry.aggregated(false), AGGREGATED)
        }
        Route::Groups => json_response(200, &st.registry.api_group_list()),
        Route::Group(g) => match st.registry.api_group(&g) {
            Some(v) => json_response(200, &v),
            None => error_response(&ApiError::no_route()),
        },
        Route::Resources(g, v) => match st.registry.api_resource_list(&g, &v) {
            Some(v) => json_response(200, &v),
            None => error_response(&ApiError::no_route()),
        },
        Route::Resource(rp) => {
            let Some(res) = st
                .registry
                .by_plural(&rp.group, &rp.version, &rp.plural)
                .cloned()
            else {
                return error_response(&ApiError::no_route());
            };
            drop(st);
            let request = Request {
                method,
                query,
                content_type,
                user_agent: header_str(header::USER_AGENT),
                body,
                dry_run,
            };
            match resource(&app, &res, &rp, request) {
                Ok(Reply::Json(code, v)) => json_response(code, &v),
                Ok(Reply::Text(t)) => (StatusCode::OK, t).into_response(),
                Ok(Reply::Watch(body)) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response(),
                Err(e) => error_response(&e),
            }
        }
    }
}

/// `pods/{name}/exec`: checks the pod and the parameters, then upgrades to a WebSocket with a
/// channel.k8s.io subprotocol and serves the command (see [`crate::exec`]). Errors before the
/// upgrade are plain `Status` answers (a client sees only the HTTP code, as with a real
/// apiserver).
async fn exec(
    app: &Arc<Shared>,
    rp: &ResourcePath,
    parts: &mut axum::http::request::Parts,
    raw_query: &str,
) -> Response {
    let (Some(ns), Some(name)) = (rp.namespace.as_deref(), rp.name.as_deref()) else {
        return error_response(&ApiError::no_route());
    };
    if parts.method != Method::GET && parts.method != Method::POST {
        return error_response(&ApiError::method_not_allowed(parts.method.as_str()));
    }
    let pod = {
        let st = app.lock();
        let Some(res) = st.registry.by_plural("", "v1", "pods").cloned() else {
            return error_response(&ApiError::no_route());
        };
        match st.get(&res, Some(ns), name) {
            Ok(p) => p,
            Err(e) => return error_response(&e),
        }
    };
    let request = match crate::exec::parse_request(ns, &pod, raw_query) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    // kube sends GET with the upgrade headers (kubectl's POST is SPDY, which is not served).
    let method = std::mem::replace(&mut parts.method, Method::GET);
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &()).await;
    parts.method = method;
    let Ok(upgrade) = upgrade else {
        return error_response(&ApiError::bad_request(
            "Upgrade request required: exec is served over a WebSocket (v5.channel.k8s.io or v4.channel.k8s.io)",
        ));
    };
    let requested: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = match crate::exec::pick_protocol(&requested) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let state = app.exec.clone();
    upgrade
        .protocols([protocol.clone()])
        .on_upgrade(move |socket| crate::exec::serve(socket, protocol, request, state))
}

struct Request {
    method: Method,
    query: HashMap<String, String>,
    content_type: Option<String>,
    user_agent: Option<String>,
    body: Bytes,
    dry_run: bool,
}

enum Reply {
    Json(u16, Value),
    Text(String),
    Watch(Body),
}

/// Rewrites `apiVersion` to the version the client asked for (no conversion: versions of one
/// resource share one stored shape).
fn present(mut obj: Value, res: &ResourceDef, version: &str) -> Value {
    if obj.is_object() {
        obj["apiVersion"] = json!(res.api_version(version));
    }
    obj
}

fn resource(
    app: &Arc<Shared>,
    res: &ResourceDef,
    rp: &ResourcePath,
    req: Request,
) -> Result<Reply, ApiError> {
    let ns = rp.namespace.as_deref();
    if ns.is_some() && !res.namespaced {
        // A cluster-scoped resource has no namespaced URL.
        return Err(ApiError::no_route());
    }
    if let Some(sub) = &rp.sub
        && !res.subresources.iter().any(|s| s == sub)
    {
        return Err(ApiError::no_route());
    }
    let manager = req.query.get("fieldManager").cloned().or_else(|| {
        // A real apiserver names a non-apply writer after its User-Agent.
        req.user_agent
            .as_deref()
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    let opts = WriteOpts {
        field_manager: manager,
        dry_run: req.dry_run,
        subresource: rp.sub.clone(),
        force: req.query.get("force").is_some_and(|v| v == "true"),
        keep_status: false,
    };
    let body_json = || -> Result<Value, ApiError> {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    };
    let out = |v: Value| present(v, res, &rp.version);
    match (&rp.name, rp.sub.as_deref(), &req.method) {
        (None, None, &Method::GET) => {
            if req
                .query
                .get("watch")
                .is_some_and(|v| v == "true" || v == "1")
            {
                return watch(app, res, rp, &req.query).map(Reply::Watch);
            }
            list(app, res, rp, &req.query).map(|v| Reply::Json(200, v))
        }
        (None, None, &Method::POST) => {
            let created = app.lock().create(res, ns, body_json()?, &opts)?;
            Ok(Reply::Json(201, out(created)))
        }
        (None, None, &Method::DELETE) => {
            let items = {
                let mut st = app.lock();
                let matching = filter(st.list(res, ns), &req.query)?;
                let mut deleted = Vec::new();
                for obj in matching {
                    let name = obj
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let ons = obj.pointer("/metadata/namespace").and_then(Value::as_str);
                    deleted.push(out(st.delete(
                        res,
                        ons,
                        &name,
                        req.query.get("propagationPolicy").map(String::as_str),
                        None,
                        req.dry_run,
                    )?));
                }
                deleted
            };
            Ok(Reply::Json(
                200,
                json!({"apiVersion": res.api_version(&rp.version), "kind": res.list_kind, "metadata": {}, "items": items}),
            ))
        }
        (Some(name), None | Some("status"), &Method::GET) => {
            Ok(Reply::Json(200, out(app.lock().get(res, ns, name)?)))
        }
        (Some(name), None | Some("status"), &Method::PUT) => {
            let v = app.lock().replace(res, ns, name, body_json()?, &opts)?;
            Ok(Reply::Json(200, out(v)))
        }
        (Some(name), None | Some("status"), &Method::PATCH) => {
            let ct = req.content_type.clone().unwrap_or_default();
            let kind = PatchKind::from_content_type(&ct)
                .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
            let mut st = app.lock();
            let existed = st.get(res, ns, name).is_ok();
            let v = st.patch(res, ns, name, kind, &req.body, &opts)?;
            Ok(Reply::Json(if existed { 200 } else { 201 }, out(v)))
        }
        (Some(name), None, &Method::DELETE) => {
            let options: Value = if req.body.is_empty() {
                json!({})
            } else {
                body_json()?
            };
            let policy = req.query.get("propagationPolicy").cloned().or_else(|| {
                options
                    .get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let dry_run = req.dry_run
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|v| v == "All"));
            let v = app.lock().delete(
                res,
                ns,
                name,
                policy.as_deref(),
                options.get("preconditions"),
                dry_run,
            )?;
            Ok(Reply::Json(200, out(v)))
        }
        (Some(name), Some("log"), &Method::GET) => {
            let pod = app.lock().get(res, ns, name)?;
            crate::logs::pod_log(&pod, &req.query).map(Reply::Text)
        }
        (Some(_), Some(sub @ ("scale" | "finalize")), _) => Err(ApiError::bad_request(format!(
            "the {sub} subresource is listed in discovery but not implemented by the test apiserver"
        ))),
        (_, _, m) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

fn selectors(query: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn filter(objects: Vec<Value>, query: &HashMap<String, String>) -> Result<Vec<Value>, ApiError> {
    let (labels, fields) = selectors(query)?;
    Ok(objects
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect())
}

fn list(
    app: &Arc<Shared>,
    res: &ResourceDef,
    rp: &ResourcePath,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (objects, rv) = {
        let st = app.lock();
        (st.list(res, rp.namespace.as_deref()), st.resource_version())
    };
    let mut items = filter(objects, query)?;
    // Pagination: the continue token is the offset of the next item.
    let offset: usize = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => c.parse().map_err(|_| ApiError {
            code: 410,
            reason: "Expired".to_string(),
            message: format!(
                "the provided continue parameter {c:?} is not valid; list again without it"
            ),
            details: json!({}),
        })?,
        None => 0,
    };
    items = items.into_iter().skip(offset).collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        metadata["remainingItemCount"] = json!(items.len() - limit);
        metadata["continue"] = json!((offset + limit).to_string());
        items.truncate(limit);
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| present(o, res, &rp.version))
        .collect();
    Ok(json!({
        "apiVersion": res.api_version(&rp.version),
        "kind": res.list_kind,
        "metadata": metadata,
        "items": items,
    }))
}

/// Which events one watch sends.
struct WatchFilter {
    key: ResourceKey,
    res: ResourceDef,
    version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.namespace.as_deref().is_none_or(|want| {
            obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(want)
        });
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn line(&self, typ: &str, obj: &Value) -> Bytes {
        let mut text =
            json!({"type": typ, "object": present(obj.clone(), &self.res, &self.version)})
                .to_string();
        text.push('\n');
        Bytes::from(text)
    }

    /// The line for an event, with selector transitions turned into ADDED/DELETED as a real
    /// apiserver does.
    fn event_line(&self, ev: &Event) -> Option<Bytes> {
        if ev.key != self.key {
            return None;
        }
        let now = self.matches(&ev.object);
        let typ = match ev.kind {
            EventKind::Added => now.then_some("ADDED"),
            EventKind::Deleted => now.then_some("DELETED"),
            EventKind::Modified => {
                let was = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (was, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }?;
        Some(self.line(typ, &ev.object))
    }
}

struct LiveWatch {
    rx: broadcast::Receiver<Arc<Event>>,
    stop: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    filter: WatchFilter,
    start_rv: u64,
    done: bool,
}

fn watch(
    app: &Arc<Shared>,
    res: &ResourceDef,
    rp: &ResourcePath,
    query: &HashMap<String, String>,
) -> Result<Body, ApiError> {
    let (labels, fields) = selectors(query)?;
    let filter = WatchFilter {
        key: res.key(),
        res: res.clone(),
        version: rp.version.clone(),
        namespace: rp.namespace.clone(),
        labels,
        fields,
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let rv_param = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or_default();
    let mut lines: Vec<Bytes> = Vec::new();
    let mut done = false;
    let (rx, start_rv) = {
        let st = app.lock();
        let rx = st.subscribe();
        let current = st.resource_version();
        if send_initial || rv_param.is_empty() || rv_param == "0" {
            for obj in st.list(res, rp.namespace.as_deref()) {
                if filter.matches(&obj) {
                    lines.push(filter.line("ADDED", &obj));
                }
            }
            if send_initial && bookmarks {
                let mark = json!({
                    "kind": res.kind,
                    "apiVersion": res.api_version(&rp.version),
                    "metadata": {
                        "resourceVersion": current.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                });
                lines.push(filter.line("BOOKMARK", &mark));
            }
        } else {
            let asked: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion {rv_param:?} is not a resourceVersion this server issued (a decimal number)"
                ))
            })?;
            match st.events_since(asked) {
                Ok(events) => lines.extend(events.iter().filter_map(|e| filter.event_line(e))),
                Err(e) => {
                    let mut text = json!({"type": "ERROR", "object": e.status()}).to_string();
                    text.push('\n');
                    lines.push(Bytes::from(text));
                    done = true;
                }
            }
        }
        (rx, current)
    };
    let live = LiveWatch {
        rx,
        stop: app.stop.clone(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        filter,
        start_rv,
        done,
    };
    let initial = futures::stream::iter(lines.into_iter().map(Ok::<Bytes, Infallible>));
    let rest = futures::stream::unfold(live, |mut live| async move {
        loop {
            if live.done || *live.stop.borrow() {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep_until(live.deadline) => return None,
                changed = live.stop.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                received = live.rx.recv() => match received {
                    Ok(ev) => {
                        if ev.rv > live.start_rv
                            && let Some(line) = live.filter.event_line(&ev)
                        {
                            return Some((Ok(line), live));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        live.done = true;
                        let status = ApiError::expired(live.start_rv, live.start_rv).status();
                        let mut text = json!({"type": "ERROR", "object": status}).to_string();
                        text.push('\n');
                        return Some((Ok(Bytes::from(text)), live));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    });
    use futures::StreamExt;
    Ok(Body::from_stream(initial.chain(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |p: &str| route(p);
        assert_eq!(r("/api"), Some(Route::CoreVersions));
        assert_eq!(
            r("/api/v1/namespaces/x/pods"),
            Some(Route::Resource(ResourcePath {
                group: String::new(),
                version: "v1".into(),
                namespace: Some("x".into()),
                plural: "pods".into(),
                name: None,
                sub: None
            }))
        );
        assert!(
            matches!(r("/api/v1/namespaces/x"), Some(Route::Resource(ResourcePath { name: Some(n), namespace: None, .. })) if n == "x")
        );
        assert!(
            matches!(r("/api/v1/namespaces/x/status"), Some(Route::Resource(ResourcePath { sub: Some(s), .. })) if s == "status")
        );
        assert!(
            matches!(r("/apis/apps/v1/namespaces/a/deployments/d/status"), Some(Route::Resource(ResourcePath { sub: Some(s), name: Some(n), .. })) if s == "status" && n == "d")
        );
        assert_eq!(r("/nothing"), None);
        assert_eq!(
            parse_query("labelSelector=a%3Db%2Cc+in+%28x%29").get("labelSelector"),
            Some(&"a=b,c in (x)".to_string())
        );
    }
}
