//! The test apiserver driven by real clients: kube's typed and dynamic Api, kube::runtime's
//! watcher and Controller, Discovery, and kubectl as a child process.

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::ConfigMap},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams, WatchEvent, WatchParams,
    },
    discovery::Discovery,
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};
use tvk_test_apiserver::{ApiServer, Options, version_info};

fn cm(name: &str, labels: Value, data: Value) -> Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": data,
    }))?)
}

fn api_error(e: kube::Error) -> Result<kube::core::Status> {
    match e {
        kube::Error::Api(s) => Ok(*s),
        other => Err(anyhow!("expected an API error, got {other}")),
    }
}

/// Polls until `check` holds (the garbage collector runs in the background).
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    for _ in 0..100 {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for: {what}")
}

#[tokio::test]
async fn typed_api_create_get_list_replace_patch_delete() -> Result<()> {
    let server = ApiServer::start().await?;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();

    let a = api
        .create(
            &pp,
            &cm(
                "a",
                json!({"app": "web", "tier": "front"}),
                json!({"k": "1"}),
            )?,
        )
        .await?;
    api.create(&pp, &cm("b", json!({"app": "db"}), json!({}))?)
        .await?;
    let uid = a.uid().context("uid set")?;
    assert_eq!(a.metadata.generation, Some(1));
    assert!(a.metadata.creation_timestamp.is_some());

    let dup = api_error(
        api.create(&pp, &cm("a", json!({}), json!({}))?)
            .await
            .err()
            .context("duplicate create fails")?,
    )?;
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    let got = api.get("a").await?;
    assert_eq!(got.uid().as_deref(), Some(uid.as_str()));
    for (selector, want) in [
        ("app=web", vec!["a"]),
        ("app!=web", vec!["b"]),
        ("app in (web,db)", vec!["a", "b"]),
        ("app notin (web)", vec!["b"]),
        ("tier", vec!["a"]),
        ("!tier", vec!["b"]),
    ] {
        let names: Vec<String> = api
            .list(&ListParams::default().labels(selector))
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        assert_eq!(names, want, "selector {selector}");
    }
    let by_field = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await?;
    assert_eq!(by_field.items.len(), 1);
    let page = api.list(&ListParams::default().limit(1)).await?;
    assert_eq!(page.items.len(), 1);
    let token = page.metadata.continue_.clone().context("continue token")?;
    let rest = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await?;
    assert_eq!(
        rest.items.first().map(ResourceExt::name_any).as_deref(),
        Some("b")
    );

    // Replace with a stale resourceVersion: 409 Conflict; with the current one: accepted.
    let mut stale = got.clone();
    let mut fresh = got.clone();
    fresh.data = Some([("k".to_string(), "2".to_string())].into());
    let replaced = api.replace("a", &pp, &fresh).await?;
    assert_ne!(replaced.resource_version(), got.resource_version());
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let conflict = api_error(
        api.replace("a", &pp, &stale)
            .await
            .err()
            .context("stale replace fails")?,
    )?;
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    let merged = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "x"}})),
        )
        .await?;
    assert_eq!(
        merged
            .data
            .as_ref()
            .and_then(|d| d.get("m"))
            .map(String::as_str),
        Some("x")
    );
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/data/k", "value": "json"},
        {"op": "remove", "path": "/data/m"},
    ]))?;
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await?;
    assert_eq!(
        patched.data,
        Some([("k".to_string(), "json".to_string())].into())
    );
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/data/missing"}]))?;
    let invalid = api_error(
        api.patch("a", &PatchParams::default(), &Patch::<()>::Json(bad))
            .await
            .err()
            .context("bad json patch fails")?,
    )?;
    assert_eq!(invalid.code, 422);

    api.delete("a", &DeleteParams::default()).await?;
    let gone = api_error(api.get("a").await.err().context("deleted object is gone")?)?;
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
    assert_eq!(gone.message, "configmaps \"a\" not found");

    let ns_resource = ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&());
    let wrong_scope =
        Api::<DynamicObject>::namespaced_with(server.client(), "default", &ns_resource);
    let e = api_error(
        wrong_scope
            .list(&ListParams::default())
            .await
            .err()
            .context("cluster-scoped resource under a namespace")?,
    )?;
    assert_eq!(e.code, 404);

    let missing_ns: Api<ConfigMap> = Api::namespaced(server.client(), "nowhere");
    let e = api_error(
        missing_ns
            .create(&pp, &cm("x", json!({}), json!({}))?)
            .await
            .err()
            .context("create in a missing namespace fails")?,
    )?;
    assert_eq!(e.code, 404);
    let bad_name = api_error(
        api.create(&pp, &cm("Bad_Name", json!({}), json!({}))?)
            .await
            .err()
            .context("invalid name fails")?,
    )?;
    assert_eq!((bad_name.code, bad_name.reason.as_str()), (422, "Invalid"));
    Ok(())
}

#[tokio::test]
async fn status_subresource_and_generation() -> Result<()> {
    let server = ApiServer::start().await?;
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"a": "1"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 9},
    }))?;
    let created = api.create(&PostParams::default(), &deploy).await?;
    assert!(
        created.status.is_none(),
        "status is dropped on create: {:?}",
        created.status
    );

    let with_status = api
        .patch_status(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 1}, "spec": {"replicas": 5}})),
        )
        .await?;
    assert_eq!(
        with_status.status.as_ref().and_then(|s| s.ready_replicas),
        Some(1)
    );
    assert_eq!(
        with_status.spec.as_ref().and_then(|s| s.replicas),
        Some(1),
        "a status write changes only status"
    );
    assert_eq!(with_status.metadata.generation, Some(1));

    let relabelled = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"b": "2"}}, "status": {"readyReplicas": 7}}),
            ),
        )
        .await?;
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );
    assert_eq!(
        relabelled.status.as_ref().and_then(|s| s.ready_replicas),
        Some(1),
        "main-resource writes ignore status"
    );

    let scaled = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    assert_eq!(scaled.metadata.generation, Some(2));

    // Status by server-side apply (STYLE.md 5): conditions merge by type per manager, and a
    // condition the manager stops applying is removed.
    let status_doc = |conditions: Value| json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"conditions": conditions}});
    let cond = |t: &str| json!({"type": t, "status": "True", "reason": "R", "message": "m"});
    let pp = PatchParams::apply("status-writer").force();
    api.patch_status(
        "d",
        &pp,
        &Patch::Apply(status_doc(json!([cond("Available"), cond("Progressing")]))),
    )
    .await?;
    api.patch_status(
        "d",
        &PatchParams::apply("other").force(),
        &Patch::Apply(status_doc(json!([cond("ReplicaFailure")]))),
    )
    .await?;
    let applied = api
        .patch_status(
            "d",
            &pp,
            &Patch::Apply(status_doc(json!([cond("Available")]))),
        )
        .await?;
    let mut types: Vec<String> = applied
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    types.sort();
    assert_eq!(types, ["Available", "ReplicaFailure"]);
    assert_eq!(
        applied.spec.as_ref().and_then(|s| s.replicas),
        Some(3),
        "status apply leaves spec"
    );
    let status_entry = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("status-writer"))
        .context("status manager recorded")?;
    assert_eq!(status_entry.subresource.as_deref(), Some("status"));

    // A no-op write keeps the resourceVersion.
    let before_noop = api.get("d").await?;
    let again = api
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    assert_eq!(again.resource_version(), before_noop.resource_version());
    Ok(())
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() -> Result<()> {
    let server = ApiServer::start().await?;
    let client = server.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &cm("before", json!({"w": "y"}), json!({}))?,
    )
    .await?;

    for streaming in [false, true] {
        let mut cfg = watcher::Config::default().labels("w=y");
        if streaming {
            cfg = cfg.streaming_lists();
        }
        let mut stream = watcher(api.clone(), cfg).boxed();
        let mut seen: Vec<String> = Vec::new();
        let name = format!("after-{streaming}");
        let writer = {
            let api = api.clone();
            let name = name.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                api.create(
                    &PostParams::default(),
                    &cm(&name, json!({"w": "y"}), json!({}))?,
                )
                .await?;
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"x": "1"}})),
                )
                .await?;
                // Leaves the selector: the watch sees a deletion.
                api.create(
                    &PostParams::default(),
                    &cm(&format!("{name}-other"), json!({"w": "n"}), json!({}))?,
                )
                .await?;
                api.delete(&name, &DeleteParams::default()).await?;
                anyhow::Ok(())
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !seen.iter().any(|s| s == &format!("Delete {name}")) {
            let ev = tokio::time::timeout_at(deadline, stream.try_next())
                .await
                .context("watch events in time")??
                .context("stream open")?;
            seen.push(match ev {
                watcher::Event::Apply(o) => format!("Apply {}", o.name_any()),
                watcher::Event::Delete(o) => format!("Delete {}", o.name_any()),
                watcher::Event::Init => "Init".to_string(),
                watcher::Event::InitApply(o) => format!("InitApply {}", o.name_any()),
                watcher::Event::InitDone => "InitDone".to_string(),
            });
        }
        writer.await??;
        // kube's streaming-list mode has no Init event: the stream starts with the objects.
        let want: &[&str] = if streaming {
            &["InitApply before", "InitDone"]
        } else {
            &["Init", "InitApply before", "InitDone"]
        };
        let head: Vec<&str> = seen.iter().map(String::as_str).take(want.len()).collect();
        assert_eq!(head, want, "streaming={streaming}: {seen:?}");
        assert!(seen.contains(&format!("Apply {name}")), "{seen:?}");
        assert!(
            !seen.iter().any(|s| s.contains("other")),
            "selector applied to watch: {seen:?}"
        );
    }
    let streamed = server
        .requests()
        .into_iter()
        .any(|r| r.query.contains("sendInitialEvents=true"));
    assert!(
        streamed,
        "the streaming-list watcher used sendInitialEvents"
    );
    Ok(())
}

#[tokio::test]
async fn watch_from_a_forgotten_resource_version_is_gone() -> Result<()> {
    let server = ApiServer::start_with(Options {
        history: 5,
        ..Options::default()
    })
    .await?;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for i in 0..10 {
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), json!({}), json!({}))?,
        )
        .await?;
    }
    let mut stream = api.watch(&WatchParams::default(), "1").await?.boxed();
    match stream.try_next().await? {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => bail!("expected a 410 Gone error event, got {other:?}"),
    }
    // A recent resourceVersion replays what followed it.
    let rv = server.resource_version();
    let mut stream = api
        .watch(&WatchParams::default().timeout(2), &(rv - 1).to_string())
        .await?
        .boxed();
    match stream.try_next().await? {
        Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), "c9"),
        other => bail!("expected the last ADDED event, got {other:?}"),
    }
    // timeoutSeconds ends the stream.
    let started = std::time::Instant::now();
    while stream.try_next().await?.is_some() {}
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test]
async fn controller_reconciles_an_object_created_after_it_starts() -> Result<()> {
    let server = ApiServer::start().await?;
    let client = server.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    async fn reconcile(
        obj: Arc<ConfigMap>,
        api: Arc<Api<ConfigMap>>,
    ) -> Result<Action, kube::Error> {
        let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"reconciled": "yes"}});
        api.patch(
            &obj.name_any(),
            &PatchParams::apply("test-controller").force(),
            &Patch::Apply(patch),
        )
        .await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Api<ConfigMap>>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(api.clone()))
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.create(
        &PostParams::default(),
        &cm("late", json!({}), json!({"user": "data"}))?,
    )
    .await?;
    eventually("the controller reconciled the new object", || {
        let api = api.clone();
        async move {
            let o = api.get("late").await?;
            Ok(o.data.and_then(|d| d.get("reconciled").cloned()).as_deref() == Some("yes"))
        }
    })
    .await?;
    handle.abort();
    let applies: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(
        applies
            .iter()
            .all(|r| r.field_manager.as_deref() == Some("test-controller")
                && r.content_type.as_deref() == Some("application/apply-patch+yaml"))
    );
    let live = api.get("late").await?;
    let managers: Vec<String> = live
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"test-controller".to_string()),
        "{managers:?}"
    );
    Ok(())
}

fn widget_crd(scope: &str) -> Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
            ],
        },
    }))?)
}

#[tokio::test]
async fn discovery_finds_a_crd_created_at_runtime_and_loses_it_on_delete() -> Result<()> {
    let server = ApiServer::start().await?;
    let client = server.client();
    let before = Discovery::new(client.clone()).run().await?;
    assert!(!before.has_group("example.com"));
    let (ar, caps) = before
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .context("built-in deployments discovered")?;
    assert_eq!(ar.plural, "deployments");
    assert!(caps.subresources.iter().any(|(a, _)| a.plural == "status"));
    let (_, pods) = before
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Pod"))
        .context("pods discovered")?;
    for sub in ["exec", "log"] {
        assert!(
            pods.subresources.iter().any(|(a, _)| a.plural == sub),
            "{sub} listed"
        );
    }

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .create(&PostParams::default(), &widget_crd("Namespaced")?)
        .await?;
    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    for t in ["Established", "NamesAccepted"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True"),
            "{t} set: {conditions:?}"
        );
    }

    for aggregated in [false, true] {
        let d = if aggregated {
            Discovery::new(client.clone()).run_aggregated().await?
        } else {
            Discovery::new(client.clone()).run().await?
        };
        let (ar, caps) = d
            .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
            .context("the CRD's kind is discovered")?;
        assert_eq!(ar.plural, "widgets");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        assert!(caps.subresources.iter().any(|(a, _)| a.plural == "status"));
        let group = d.get("example.com").context("group")?;
        assert_eq!(group.preferred_version_or_latest(), "v1");
        assert!(
            d.resolve_gvk(&GroupVersionKind::gvk("example.com", "v1beta1", "Widget"))
                .is_some()
        );
    }

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}))?;
    widgets.create(&PostParams::default(), &w).await?;
    let beta = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1beta1", "Widget"),
        "widgets",
    );
    let as_beta = Api::<DynamicObject>::namespaced_with(client.clone(), "default", &beta)
        .get("w1")
        .await?;
    assert_eq!(
        as_beta.types.map(|t| t.api_version).as_deref(),
        Some("example.com/v1beta1")
    );

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await?;
    let after = Discovery::new(client.clone()).run().await?;
    assert!(!after.has_group("example.com"));
    assert!(server.list("example.com/v1", "Widget", None).is_empty());
    let e = api_error(widgets.get("w1").await.err().context("served no more")?)?;
    assert_eq!(e.code, 404);
    Ok(())
}

#[tokio::test]
async fn server_side_apply_owns_removes_and_conflicts() -> Result<()> {
    let server = ApiServer::start().await?;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let apply = |manager: &'static str, force: bool, body: Value| {
        let api = api.clone();
        async move {
            let mut pp = PatchParams::apply(manager);
            pp.force = force;
            api.patch("s", &pp, &Patch::Apply(body)).await
        }
    };
    let doc = |labels: Value, data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s", "labels": labels}, "data": data});
    apply(
        "alice",
        false,
        doc(json!({"a": "1", "b": "2"}), json!({"x": "1", "y": "2"})),
    )
    .await?;
    apply("bob", false, doc(json!({}), json!({"z": "3"}))).await?;
    // Same value as alice: shared ownership, no conflict.
    apply("bob", false, doc(json!({}), json!({"z": "3", "x": "1"}))).await?;

    // alice stops applying label b and data y: removed; x stays (bob co-owns it), z is bob's.
    let now = apply("alice", false, doc(json!({"a": "1"}), json!({}))).await?;
    let labels = now.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"));
    assert!(
        !labels.contains_key("b"),
        "dropped label removed: {labels:?}"
    );
    let data = now.data.clone().unwrap_or_default();
    assert!(!data.contains_key("y"), "dropped field removed: {data:?}");
    assert_eq!(
        data.get("z").map(String::as_str),
        Some("3"),
        "other manager's field kept"
    );
    assert_eq!(
        data.get("x").map(String::as_str),
        Some("1"),
        "co-owned field kept"
    );

    // A different value for a field alice owns: conflict unless forced.
    let e = api_error(
        apply("bob", false, doc(json!({"a": "bob"}), json!({"z": "3"})))
            .await
            .err()
            .context("conflict")?,
    )?;
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"alice\""),
        "{}",
        e.message
    );
    let forced = apply("bob", true, doc(json!({"a": "bob"}), json!({"z": "3"}))).await?;
    assert_eq!(forced.labels().get("a").map(String::as_str), Some("bob"));
    let fields = forced.metadata.managed_fields.clone().unwrap_or_default();
    let alice = fields
        .iter()
        .find(|m| m.manager.as_deref() == Some("alice"));
    let alice_owns_a = alice
        .and_then(|m| m.fields_v1.as_ref())
        .is_some_and(|f| f.0.pointer("/f:metadata/f:labels/f:a").is_some());
    assert!(
        !alice_owns_a,
        "a forced apply takes the field over: {fields:?}"
    );
    assert!(
        fields
            .iter()
            .all(|m| m.operation.as_deref() == Some("Apply"))
    );

    // An Update by another writer takes ownership too (no conflict for updates).
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"z": "edited"}})),
    )
    .await?;
    let now = apply("bob", false, doc(json!({"a": "bob"}), json!({}))).await?;
    assert_eq!(
        now.data.unwrap_or_default().get("z").map(String::as_str),
        Some("edited"),
        "a field another writer took over is not removed when bob drops it"
    );

    // Apply needs a field manager; dry run stores nothing.
    let dry = api
        .patch(
            "s",
            &PatchParams::apply("carol").dry_run(),
            &Patch::Apply(doc(json!({"dry": "1"}), json!({}))),
        )
        .await?;
    assert_eq!(dry.labels().get("dry").map(String::as_str), Some("1"));
    assert!(!api.get("s").await?.labels().contains_key("dry"));
    let created_dry = api
        .patch(
            "t",
            &PatchParams::apply("carol").dry_run(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}}),
            ),
        )
        .await?;
    assert_eq!(created_dry.name_any(), "t");
    assert!(api.get_opt("t").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn apply_of_associative_lists_merges_by_name() -> Result<()> {
    let server = ApiServer::start().await?;
    let api: Api<Deployment> = Api::namespaced(server.client(), "default");
    let doc = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}})
    };
    api.patch(
        "d",
        &PatchParams::apply("one"),
        &Patch::Apply(doc(json!([{"name": "a", "image": "a:1"}]))),
    )
    .await?;
    api.patch(
        "d",
        &PatchParams::apply("two"),
        &Patch::Apply(doc(json!([{"name": "b", "image": "b:1"}]))),
    )
    .await?;
    let d = api
        .patch(
            "d",
            &PatchParams::apply("one"),
            &Patch::Apply(doc(json!([{"name": "a", "image": "a:2"}]))),
        )
        .await?;
    let images: Vec<String> = d
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers.into_iter().filter_map(|c| c.image).collect())
        .unwrap_or_default();
    assert_eq!(images, ["a:2", "b:1"]);
    assert_eq!(d.metadata.generation, Some(3));
    Ok(())
}

#[tokio::test]
async fn finalizers_and_garbage_collection() -> Result<()> {
    let server = ApiServer::start().await?;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();
    let owned = |name: &str, owner: &ConfigMap| -> Result<ConfigMap> {
        let mut c = cm(name, json!({}), json!({}))?;
        c.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: owner.name_any(),
                uid: owner.uid().unwrap_or_default(),
                ..Default::default()
            },
        ]);
        Ok(c)
    };

    // Finalizer: deletion only marks; removing the finalizer completes it.
    let mut f = cm("fin", json!({}), json!({}))?;
    f.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    api.create(&pp, &f).await?;
    api.delete("fin", &DeleteParams::default()).await?;
    let marked = api.get("fin").await?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    let e = api_error(
        api.patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/cleanup", "new/one"]}})),
        )
        .await
        .err()
        .context("new finalizer refused")?,
    )?;
    assert_eq!(e.code, 422);
    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert!(api.get_opt("fin").await?.is_none());

    // Background: the owner goes now, dependents in the background.
    let owner = api.create(&pp, &cm("owner", json!({}), json!({}))?).await?;
    api.create(&pp, &owned("dep", &owner)?).await?;
    let dep = api.get("dep").await?;
    api.create(&pp, &owned("dep2", &dep)?).await?;
    api.delete("owner", &DeleteParams::background()).await?;
    eventually("dependents of dependents collected", || {
        let api = api.clone();
        async move { Ok(api.get_opt("dep").await?.is_none() && api.get_opt("dep2").await?.is_none()) }
    })
    .await?;

    // Foreground: the owner stays (with foregroundDeletion) until its dependents are gone.
    let owner = api.create(&pp, &cm("fg", json!({}), json!({}))?).await?;
    let mut blocker = owned("fg-dep", &owner)?;
    blocker.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&pp, &blocker).await?;
    api.delete("fg", &DeleteParams::foreground()).await?;
    server.collect_garbage();
    let held = api.get("fg").await?;
    assert!(
        held.finalizers()
            .contains(&"foregroundDeletion".to_string())
    );
    assert!(
        api.get("fg-dep")
            .await?
            .metadata
            .deletion_timestamp
            .is_some()
    );
    api.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    eventually("foreground owner deleted after its dependent", || {
        let api = api.clone();
        async move { Ok(api.get_opt("fg").await?.is_none()) }
    })
    .await?;

    // Orphan: dependents stay, without the owner reference.
    let owner = api.create(&pp, &cm("or", json!({}), json!({}))?).await?;
    api.create(&pp, &owned("or-dep", &owner)?).await?;
    api.delete("or", &DeleteParams::orphan()).await?;
    eventually("orphaned dependent released", || {
        let api = api.clone();
        async move {
            let dep = api.get("or-dep").await?;
            Ok(api.get_opt("or").await?.is_none() && dep.owner_references().is_empty())
        }
    })
    .await?;
    server.collect_garbage();
    assert!(api.get_opt("or-dep").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn json_patch_test_of_a_missing_member_against_null_passes_as_on_a_real_server() -> Result<()>
{
    // The exact patch kube::runtime::finalizer sends to add the first finalizer.
    let server = ApiServer::start().await?;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    api.create(
        &PostParams::default(),
        &cm("first-fin", json!({}), json!({}))?,
    )
    .await?;
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/first"]},
    ]))?;
    let patched = api
        .patch(
            "first-fin",
            &PatchParams::default(),
            &Patch::<()>::Json(ops),
        )
        .await?;
    assert_eq!(patched.finalizers(), ["example.com/first"]);
    // A `test` that really fails still fails the whole patch.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/second"},
    ]))?;
    let e = api_error(
        api.patch(
            "first-fin",
            &PatchParams::default(),
            &Patch::<()>::Json(ops),
        )
        .await
        .err()
        .context("a failing test op must fail the patch")?,
    )?;
    assert_eq!(e.code, 422);
    assert_eq!(
        api.get("first-fin").await?.finalizers(),
        ["example.com/first"]
    );
    Ok(())
}

#[tokio::test]
async fn namespace_deletion_removes_its_content() -> Result<()> {
    let server = ApiServer::start().await?;
    let client = server.client();
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "gone"}}))?,
    )
    .await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    api.create(&PostParams::default(), &cm("c", json!({}), json!({}))?)
        .await?;
    let terminating = nss.delete("gone", &DeleteParams::default()).await?;
    let phase = terminating
        .left()
        .and_then(|n| n.status)
        .and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Terminating"));
    eventually("namespace and its content gone", || {
        let (api, nss) = (api.clone(), nss.clone());
        async move { Ok(api.get_opt("c").await?.is_none() && nss.get_opt("gone").await?.is_none()) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn seeding_helpers_and_request_log() -> Result<()> {
    let server = ApiServer::start().await?;
    server.create(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}},
        "status": {"succeeded": 1}}))?;
    let job = server
        .get("batch/v1", "Job", Some("default"), "j")
        .context("seeded job")?;
    assert_eq!(
        job.pointer("/status/succeeded"),
        Some(&json!(1)),
        "seeding keeps status"
    );
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed"}, "data": {"a": "b"}}))?;
    assert_eq!(server.list("v1", "ConfigMap", Some("default")).len(), 1);

    let mark = server.mark();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    api.get("seed").await?;
    api.patch(
        "seed",
        &PatchParams::apply("mgr").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}})),
    )
    .await?;
    assert_eq!(server.writes_since(mark), 1);
    let reqs = server.requests_since(mark);
    let patch = reqs
        .iter()
        .find(|r| r.method == "PATCH")
        .context("patch recorded")?;
    assert_eq!(patch.path, "/api/v1/namespaces/default/configmaps/seed");
    assert_eq!(patch.field_manager.as_deref(), Some("mgr"));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(reqs.iter().any(|r| r.method == "GET"));
    Ok(())
}

fn tool(name: &str) -> Result<bool> {
    match tvk_testkit::require_tool(name, "install it (apt-get install kubectl / curl)") {
        Ok(()) => Ok(true),
        Err(e) => tvk_testkit::skip_unless_ci("a_child_process_reaches_the_server", &e)
            .map_err(|e| anyhow!(e)),
    }
}

#[tokio::test]
async fn a_child_process_reaches_the_server_through_the_kubeconfig() -> Result<()> {
    let server = ApiServer::start().await?;
    server.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-test"}, "data": {"k": "v"}}))?;
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    if tool("curl")? {
        let text = std::fs::read_to_string(&kubeconfig)?;
        let cfg: Value = serde_json::from_str(&text)?;
        let url = cfg
            .pointer("/clusters/0/cluster/server")
            .and_then(Value::as_str)
            .context("server url")?;
        let out = tokio::process::Command::new("curl")
            .args([
                "-sf",
                &format!("{url}/api/v1/namespaces/default/configmaps/from-test"),
            ])
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(got.pointer("/data/k"), Some(&json!("v")));
    }
    if tool("kubectl")? {
        let run = |args: Vec<&'static str>, stdin: Option<&'static str>| {
            let kubeconfig = kubeconfig.clone();
            async move {
                let mut cmd = tokio::process::Command::new("kubectl");
                cmd.arg("--kubeconfig").arg(&kubeconfig).args(&args);
                cmd.stdin(std::process::Stdio::piped());
                cmd.stdout(std::process::Stdio::piped());
                cmd.stderr(std::process::Stdio::piped());
                let mut child = cmd.spawn()?;
                if let Some(mut s) = child.stdin.take() {
                    use tokio::io::AsyncWriteExt;
                    s.write_all(stdin.unwrap_or_default().as_bytes()).await?;
                }
                let out = child.wait_with_output().await?;
                ensure!(
                    out.status.success(),
                    "kubectl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
        };
        let names = run(vec!["get", "configmaps", "-o", "name"], None).await?;
        assert_eq!(names.trim(), "configmap/from-test");
        run(
            vec![
                "apply",
                "--server-side",
                "--field-manager=kubectl-test",
                "--validate=false",
                "-f",
                "-",
            ],
            Some(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-kubectl\ndata:\n  a: b\n",
            ),
        )
        .await?;
        let stored = server
            .get("v1", "ConfigMap", Some("default"), "from-kubectl")
            .context("kubectl's apply stored")?;
        assert_eq!(stored.pointer("/data/a"), Some(&json!("b")));
        let fm = stored.pointer("/metadata/managedFields/0/manager").cloned();
        assert_eq!(fm, Some(json!("kubectl-test")));
        run(
            vec!["delete", "configmap", "from-kubectl", "--wait=false"],
            None,
        )
        .await?;
        assert!(
            server
                .get("v1", "ConfigMap", Some("default"), "from-kubectl")
                .is_none()
        );
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_ends_open_watches() -> Result<()> {
    let server = ApiServer::start().await?;
    let client: Client = server.client();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = api.watch(&WatchParams::default(), "0").await?.boxed();
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = stream.try_next().await {} });
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .context("shutdown finishes although a watch is open")?;
    tokio::time::timeout(Duration::from_secs(5), reader).await??;
    Ok(())
}

#[tokio::test]
async fn version_answers_as_a_real_apiserver_and_is_configurable() -> Result<()> {
    let server = ApiServer::start().await?;
    let info = server.client().apiserver_version().await?;
    assert_eq!(
        (
            info.git_version.as_str(),
            info.major.as_str(),
            info.minor.as_str()
        ),
        ("v1.32.0", "1", "32")
    );
    assert_eq!(info.platform, "linux/amd64");
    assert_eq!(info.compiler, "gc");
    assert_eq!(info.git_tree_state, "clean");
    // The raw body carries every field of version.Info under its JSON name.
    let body: Value = server
        .client()
        .request(axum::http::Request::get("/version").body(Vec::new())?)
        .await?;
    for field in [
        "major",
        "minor",
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
    ] {
        ensure!(body[field].is_string(), "/version lacks {field}: {body}");
    }

    let vendor = ApiServer::start_with(Options {
        version: version_info("v1.30.2-eks-1"),
        ..Options::default()
    })
    .await?;
    let info = vendor.client().apiserver_version().await?;
    assert_eq!(
        (
            info.git_version.as_str(),
            info.major.as_str(),
            info.minor.as_str()
        ),
        ("v1.30.2-eks-1", "1", "30")
    );
    Ok(())
}
