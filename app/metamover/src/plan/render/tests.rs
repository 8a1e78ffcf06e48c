#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use crate::plan::{Prepared, RestoreConfig, prepare};
use tvk_api::restore_plan::PlanAction;

mod fixture {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/charts/fixture.rs"
    ));
}

const UID: &str = "abcdef12-3456-7890";

fn caps() -> Capabilities {
    Capabilities {
        kube_version: "v1.32.0".into(),
        api_versions: vec!["v1".into(), "apps/v1".into(), "apps/v1/Deployment".into()],
    }
}

/// The manifest Helm recorded at install: rendered by Go's engine (the oracle), or — when the
/// oracle is skipped (no `go` outside CI) — by our renderer.
fn recorded_manifest(chart: &Value, release: &str, ns: &str, config: &Value) -> String {
    if let Some(m) = fixture::oracle_manifest(chart, release, ns, config) {
        return m;
    }
    let c = Chart::from_release_json(chart).unwrap();
    let caps = caps();
    let req = RenderRequest {
        release_name: release,
        namespace: ns,
        revision: 1,
        is_install: true,
        is_upgrade: false,
        user_values: config,
        capabilities: &caps,
    };
    let rendered = tvk_chart_render::render(&c, &req).unwrap();
    let (docs, _) = tvk_chart_render::manifest_docs(&rendered).unwrap();
    manifest_text(
        &docs
            .iter()
            .map(|d| (d.source.as_str(), &d.object))
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

/// A backup of release `web` of the `webapp` chart in namespace `app`: its storage Secret and
/// its objects as they lived in the cluster (Helm's ownership annotations, fields the chart
/// never set).
fn backup(config: Value, manifest: Option<String>) -> Vec<BackupObject> {
    let chart = fixture::chart_json("webapp");
    let manifest = manifest.unwrap_or_else(|| recorded_manifest(&chart, "web", "app", &config));
    let record = fixture::release_json("web", "app", 1, &chart, &config, &manifest);
    let mut out = vec![BackupObject {
        obj: fixture::release_storage_secret(&record, "deployed"),
        helm_storage: true,
    }];
    for d in tvk_chart_render::split_manifest(&manifest).unwrap() {
        let mut o = d.object.clone();
        o["metadata"]["namespace"] = json!("app");
        o["metadata"]["annotations"][RELEASE_NAME_ANNOTATION] = json!("web");
        o["metadata"]["annotations"][RELEASE_NAMESPACE_ANNOTATION] = json!("app");
        if o["kind"] == "Deployment" {
            o["spec"]["revisionHistoryLimit"] = json!(7);
            o["spec"]["template"]["spec"]["dnsPolicy"] = json!("ClusterFirst");
        }
        out.push(BackupObject {
            obj: o,
            helm_storage: false,
        });
    }
    out
}

fn restore_map(config: Value) -> NamespaceMap {
    let s = Settings::compile(&RestoreConfig::from_value(Some(&config), "test").unwrap()).unwrap();
    let mut m = NamespaceMap::restore("dest", s);
    m.backed_up = BTreeSet::from(["app".to_owned()]);
    m
}

fn namespaced(_: &str, _: &str) -> Option<bool> {
    Some(true)
}

fn plan_with(
    objects: &[BackupObject],
    map: &NamespaceMap,
    renames: &BTreeMap<ReleaseId, String>,
    facts: &BackupFacts,
) -> HelmPlan {
    plan_releases(
        objects,
        map,
        &HelmInputs {
            capabilities: &caps(),
            scope: &namespaced,
            renames,
            facts,
        },
    )
}

fn find<'a>(ps: &'a [Prepared], kind: &str, name: &str) -> &'a Prepared {
    ps.iter()
        .find(|p| p.dest.kind == kind && p.dest.name == name)
        .unwrap_or_else(|| {
            panic!(
                "{kind} {name} not prepared: {:?}",
                ps.iter().map(|p| p.dest.to_string()).collect::<Vec<_>>()
            )
        })
}

/// Every field `part` sets has that value in `whole`.
fn contains(whole: &Value, part: &Value) -> bool {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p
            .iter()
            .all(|(k, v)| w.get(k).is_some_and(|wv| contains(wv, v))),
        (Value::Array(w), Value::Array(p)) => {
            w.len() == p.len() && w.iter().zip(p).all(|(a, b)| contains(a, b))
        }
        _ => whole == part,
    }
}

fn record_of(p: &Prepared) -> Value {
    let o = p.object.as_ref().unwrap();
    helm::decode_release_value(&helm::storage_payload(o).unwrap(), "t").unwrap()
}

#[test]
fn helm_set_re_renders_and_applies_the_difference_to_the_backed_up_objects() {
    let objects = backup(json!({}), None);
    let map = restore_map(
        json!({"transformComponents": {"helm": [{"transformName": "up",
        "release": "web",
        "set": [{"key": "image.tag", "value": "1.26.1"}, {"key": "replicaCount", "value": "3"},
                {"key": "extraConfig.enabled", "value": "true"},
                {"key": "service.enabled", "value": "false"}],
        "setString": [{"key": "config.greeting", "value": "007"}]}]}}),
    );
    let hp = plan_with(&objects, &map, &BTreeMap::new(), &BackupFacts::default());
    assert!(hp.blocking.is_empty(), "{:?}", hp.blocking);
    let ps = prepare(&objects, &map, &BackupFacts::default(), &hp, UID);

    let dep = find(&ps, "Deployment", "web-webapp");
    assert_eq!(dep.action, PlanAction::Create);
    let d = dep.object.as_ref().unwrap();
    assert_eq!(d["metadata"]["namespace"], "dest");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26.1"
    );
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 7, "live field kept");
    assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(
        d["metadata"]["annotations"][RELEASE_NAMESPACE_ANNOTATION],
        "dest"
    );
    assert_eq!(d["metadata"]["annotations"][RELEASE_NAME_ANNOTATION], "web");
    let cm = find(&ps, "ConfigMap", "web-webapp")
        .object
        .as_ref()
        .unwrap();
    assert_eq!(cm["data"]["greeting"], "007");
    // The checksum annotation follows the ConfigMap.
    let backed_dep = objects
        .iter()
        .find(|o| o.obj["kind"] == "Deployment")
        .unwrap();
    assert_ne!(
        d["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
        backed_dep.obj["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    );
    // Toggled off: not restored; toggled on: restored as rendered.
    let svc = find(&ps, "Service", "web-webapp");
    assert_eq!(svc.action, PlanAction::Exclude);
    assert!(
        svc.reason.as_deref().unwrap().contains("no longer renders"),
        "{:?}",
        svc.reason
    );
    let extra = find(&ps, "ConfigMap", "web-webapp-extra");
    assert_eq!(extra.action, PlanAction::Create);
    let e = extra.object.as_ref().unwrap();
    assert_eq!(e["data"]["mode"], "fast");
    assert_eq!(e["metadata"]["namespace"], "dest");
    assert_eq!(e["metadata"]["annotations"][RELEASE_NAME_ANNOTATION], "web");
    assert_eq!(e["metadata"]["labels"][crate::plan::RESTORE_UID_LABEL], UID);

    // The record: new values, and a manifest whose objects are the restored ones.
    let rec = record_of(find(&ps, "Secret", "sh.helm.release.v1.web.v1"));
    assert_eq!(rec["namespace"], "dest");
    assert_eq!(
        rec["config"],
        json!({"image": {"tag": "1.26.1"}, "replicaCount": 3,
            "extraConfig": {"enabled": true}, "service": {"enabled": false},
            "config": {"greeting": "007"}})
    );
    let docs = tvk_chart_render::split_manifest(rec["manifest"].as_str().unwrap()).unwrap();
    let mut in_manifest: Vec<String> = Vec::new();
    for doc in &docs {
        let kind = doc.object["kind"].as_str().unwrap();
        let n = name(&doc.object).unwrap();
        let restored = find(&ps, kind, n);
        assert_eq!(restored.action, PlanAction::Create);
        assert!(
            contains(restored.object.as_ref().unwrap(), &doc.object),
            "{kind}/{n}: restored {} does not hold the manifest's {}",
            restored.object.as_ref().unwrap(),
            doc.object
        );
        in_manifest.push(format!("{kind}/{n}"));
    }
    in_manifest.sort();
    let mut restored: Vec<String> = ps
        .iter()
        .filter(|p| !p.helm_storage && p.action == PlanAction::Create)
        .map(|p| format!("{}/{}", p.dest.kind, p.dest.name))
        .collect();
    restored.sort();
    assert_eq!(in_manifest, restored);
}

#[test]
fn a_manifest_the_chart_does_not_reproduce_blocks_naming_the_template_and_field() {
    let chart = fixture::chart_json("webapp");
    let tampered =
        recorded_manifest(&chart, "web", "app", &json!({})).replace("replicas: 1", "replicas: 2");
    let objects = backup(json!({}), Some(tampered));
    let map = restore_map(
        json!({"transformComponents": {"helm": [{"transformName": "t",
        "release": "web", "set": [{"key": "image.tag", "value": "2"}]}]}}),
    );
    let hp = plan_with(&objects, &map, &BTreeMap::new(), &BackupFacts::default());
    let b = hp.blocking.join("\n");
    assert!(
        b.contains("webapp/templates/deployment.yaml")
            && b.contains("/spec/replicas")
            && b.contains("recorded 2, rendered 1")
            && b.contains("transformComponents.custom"),
        "{b}"
    );
    assert!(hp.releases.is_empty());
}

#[test]
fn subchart_keys_and_render_errors_block() {
    let objects = backup(json!({}), None);
    let map = restore_map(
        json!({"transformComponents": {"helm": [{"transformName": "cache",
        "release": "web", "set": [{"key": "redis.auth.enabled", "value": "false"}]}]}}),
    );
    let hp = plan_with(&objects, &map, &BTreeMap::new(), &BackupFacts::default());
    let b = hp.blocking.join("\n");
    assert!(
        b.contains("redis.auth.enabled")
            && b.contains("subchart redis")
            && b.contains("release record"),
        "{b}"
    );
    // `required` failing with the new values: the renderer's message.
    let map = restore_map(
        json!({"transformComponents": {"helm": [{"transformName": "bad",
        "release": "web", "set": [{"key": "image.repository", "value": "null"}]}]}}),
    );
    let hp = plan_with(&objects, &map, &BTreeMap::new(), &BackupFacts::default());
    let b = hp.blocking.join("\n");
    assert!(
        b.contains("image.repository is required") && b.contains("transformed values"),
        "{b}"
    );
    // A release whose record is excluded is not rendered: nothing blocks.
    let map = restore_map(
        json!({"transformComponents": {"helm": [{"transformName": "bad",
        "release": "web", "set": [{"key": "image.repository", "value": "null"}]}]},
        "excludeResources": [{"groupVersionKind": {"group": "", "kind": "Secret"}}]}),
    );
    let hp = plan_with(&objects, &map, &BTreeMap::new(), &BackupFacts::default());
    assert!(
        hp.blocking.is_empty() && hp.releases.is_empty(),
        "{:?}",
        hp.blocking
    );
    // A key Helm cannot parse names the transform.
    let map = restore_map(
        json!({"transformComponents": {"helm": [{"transformName": "broken",
        "release": "web", "set": [{"key": "a..b", "value": "1"}]}]}}),
    );
    let hp = plan_with(&objects, &map, &BTreeMap::new(), &BackupFacts::default());
    let b = hp.blocking.join("\n");
    assert!(b.contains("broken") && b.contains("release web"), "{b}");
}

#[test]
fn a_release_name_taken_in_the_destination_is_renamed_unless_retained() {
    let objects = backup(json!({}), None);
    let chart = fixture::chart_json("webapp");
    let theirs = fixture::release_storage_secret(
        &fixture::release_json("web", "dest", 1, &chart, &json!({}), "---\n"),
        "deployed",
    );
    let existing = BTreeMap::from([("dest".to_owned(), vec![theirs.clone()])]);
    let id = ("app".to_owned(), "web".to_owned());
    let renames = decide_renames(&objects, &restore_map(json!({})), &existing, UID);
    assert_eq!(
        renames,
        BTreeMap::from([(id.clone(), "web-abcde".to_owned())])
    );
    // Retained; or the existing release is this restore's own; or cleanupConfig replaces it.
    let retain = restore_map(json!({"restoreFlags": {"retainHelmReleaseName": true}}));
    assert!(decide_renames(&objects, &retain, &existing, UID).is_empty());
    // Flags that say how to treat existing objects keep the name too (no second copy).
    for flag in ["skipIfAlreadyExists", "patchIfAlreadyExists"] {
        let kept = restore_map(json!({"restoreFlags": {flag: true}}));
        assert!(
            decide_renames(&objects, &kept, &existing, UID).is_empty(),
            "{flag}"
        );
    }
    let mut mine = theirs.clone();
    mine["metadata"]["labels"][crate::plan::RESTORE_UID_LABEL] = json!(UID);
    let own = BTreeMap::from([("dest".to_owned(), vec![mine])]);
    assert!(decide_renames(&objects, &restore_map(json!({})), &own, UID).is_empty());
    let cleanup = restore_map(json!({"cleanupConfig": {"enabled": true}}));
    assert!(decide_renames(&objects, &cleanup, &existing, UID).is_empty());

    let map = restore_map(json!({}));
    assert!(needs_render(&objects, &map, &renames));
    let hp = plan_with(&objects, &map, &renames, &BackupFacts::default());
    assert!(hp.blocking.is_empty(), "{:?}", hp.blocking);
    let ps = prepare(&objects, &map, &BackupFacts::default(), &hp, UID);
    let dep = find(&ps, "Deployment", "web-abcde-webapp");
    assert!(
        dep.reason
            .as_deref()
            .unwrap()
            .contains("restored as web-abcde")
            && dep
                .reason
                .as_deref()
                .unwrap()
                .contains("renamed from web-webapp"),
        "{:?}",
        dep.reason
    );
    let d = dep.object.as_ref().unwrap();
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "web-abcde"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "web-abcde-webapp"
    );
    assert_eq!(
        d["metadata"]["annotations"][RELEASE_NAME_ANNOTATION],
        "web-abcde"
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 7);
    find(&ps, "Service", "web-abcde-webapp");
    find(&ps, "ConfigMap", "web-abcde-webapp");
    assert!(!ps.iter().any(|p| p.dest.name == "web-webapp"));
    let storage = find(&ps, "Secret", "sh.helm.release.v1.web-abcde.v1");
    assert_eq!(
        storage.object.as_ref().unwrap()["metadata"]["labels"]["name"],
        "web-abcde"
    );
    let rec = record_of(storage);
    assert_eq!(rec["name"], "web-abcde");
    assert!(
        rec["manifest"]
            .as_str()
            .unwrap()
            .contains("name: web-abcde-webapp")
    );
    // The restore phase reads the same decision back from the plan's entries.
    let planned: Vec<PlannedObject> = ps.iter().map(|p| p.planned(p.action, None)).collect();
    assert_eq!(renames_from_plan(&objects, &map, &planned, UID), renames);
    let unrenamed = super::super::prepare(
        &objects,
        &map,
        &BackupFacts::default(),
        &HelmPlan::default(),
        UID,
    );
    let planned: Vec<PlannedObject> = unrenamed
        .iter()
        .map(|p| p.planned(p.action, None))
        .collect();
    assert!(renames_from_plan(&objects, &map, &planned, UID).is_empty());
}

#[test]
fn renaming_is_refused_when_data_is_restored_under_the_old_names() {
    let objects = backup(json!({"cache": {"enabled": true}}), None);
    assert!(
        objects
            .iter()
            .any(|o| o.obj["kind"] == "StatefulSet" && name(&o.obj) == Some("web-webapp-cache"))
    );
    let renames = BTreeMap::from([(("app".to_owned(), "web".to_owned()), "web-abcde".to_owned())]);
    let map = restore_map(json!({}));
    let facts = BackupFacts {
        volume_pvcs: [("app".to_owned(), "data-web-webapp-cache-0".to_owned())].into(),
        ..BackupFacts::default()
    };
    let hp = plan_with(&objects, &map, &renames, &facts);
    let b = hp.blocking.join("\n");
    assert!(
        b.contains("StatefulSet web-webapp-cache")
            && b.contains("volumeClaimTemplates")
            && b.contains("retainHelmReleaseName"),
        "{b}"
    );
    // Without its data (onlyMetadata) the rename goes ahead.
    let hp = plan_with(&objects, &map, &renames, &BackupFacts::default());
    assert!(hp.blocking.is_empty(), "{:?}", hp.blocking);
}

#[test]
fn three_way_changes_what_the_chart_changed_and_keeps_the_rest() {
    let old = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": true, "same": 1});
    let new = json!({"a": 1, "b": {"c": [1], "d": "x", "e": null}, "added": {"k": "v"}, "same": 1});
    let mut live = json!({"a": 1, "b": {"c": [1, 2], "d": "x", "live": 5}, "gone": true});
    three_way(&mut live, &old, &new);
    // `same` was removed from the live object and the chart did not change it: stays removed.
    assert_eq!(
        live,
        json!({"a": 1, "b": {"c": [1], "d": "x", "live": 5}, "added": {"k": "v"}})
    );
    // Named lists merge by name: the chart's image change reaches the container, the live-only
    // env var and sidecar stay, a container the chart dropped goes, a new one comes.
    let old = json!({"containers": [
        {"name": "app", "image": "web:1", "env": [{"name": "A", "value": "1"}]},
        {"name": "old", "image": "o:1"}]});
    let new = json!({"containers": [
        {"name": "app", "image": "web:2", "env": [{"name": "A", "value": "1"}]},
        {"name": "new", "image": "n:1"}]});
    let mut live = json!({"containers": [
        {"name": "app", "image": "web:1", "terminationMessagePath": "/dev/termination-log",
            "env": [{"name": "A", "value": "1"}, {"name": "HAND", "value": "x"}]},
        {"name": "old", "image": "o:1"},
        {"name": "sidecar", "image": "proxy:1"}]});
    three_way(&mut live, &old, &new);
    assert_eq!(
        live,
        json!({"containers": [
            {"name": "app", "image": "web:2", "terminationMessagePath": "/dev/termination-log",
                "env": [{"name": "A", "value": "1"}, {"name": "HAND", "value": "x"}]},
            {"name": "new", "image": "n:1"},
            {"name": "sidecar", "image": "proxy:1"}]})
    );
    // Unnamed lists are replaced when the chart changed them, kept when it did not.
    let mut live = json!({"args": ["--a", "--live"]});
    three_way(
        &mut live,
        &json!({"args": ["--a"]}),
        &json!({"args": ["--b"]}),
    );
    assert_eq!(live, json!({"args": ["--b"]}));
    let mut live = json!({"args": ["--a", "--live"]});
    three_way(
        &mut live,
        &json!({"args": ["--a"]}),
        &json!({"args": ["--a"]}),
    );
    assert_eq!(live, json!({"args": ["--a", "--live"]}));
    assert_eq!(renamed_release("web", "abcdef"), "web-abcde");
    let long = "r".repeat(60);
    let n = renamed_release(&long, "abcdef");
    assert_eq!(n.len(), MAX_RELEASE_NAME);
    assert!(n.ends_with("-abcde"));
    assert!(is_subchart_source("webapp/charts/redis/templates/x.yaml"));
    assert!(!is_subchart_source("webapp/templates/charts.yaml"));
}

#[test]
fn a_self_check_failure_says_when_the_template_is_random() {
    let chart = fixture::chart_json("random");
    let manifest = recorded_manifest(&chart, "db", "app", &json!({}));
    let record = fixture::release_json("db", "app", 1, &chart, &json!({}), &manifest);
    let mut objects = vec![BackupObject {
        obj: fixture::release_storage_secret(&record, "deployed"),
        helm_storage: true,
    }];
    for d in tvk_chart_render::split_manifest(&manifest).unwrap() {
        let mut o = d.object;
        o["metadata"]["namespace"] = json!("app");
        objects.push(BackupObject {
            obj: o,
            helm_storage: false,
        });
    }
    let map = restore_map(
        json!({"transformComponents": {"helm": [{"transformName": "u",
        "release": "db", "set": [{"key": "user", "value": "root"}]}]}}),
    );
    let hp = plan_with(&objects, &map, &BTreeMap::new(), &BackupFacts::default());
    let b = hp.blocking.join("\n");
    assert!(
        b.contains("random/templates/secret.yaml")
            && b.contains("/stringData/password")
            && b.contains("nondeterministic"),
        "{b}"
    );
}
