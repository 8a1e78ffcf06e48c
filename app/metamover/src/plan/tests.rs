#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use tvk_api::snapshot::{CustomSnapshot, DataSnapshot};

const UID: &str = "rst-uid";

/// [`super::prepare`] without Helm re-rendering.
fn prepare(
    objects: &[BackupObject],
    map: &NamespaceMap,
    facts: &BackupFacts,
    uid: &str,
) -> Vec<Prepared> {
    super::prepare(objects, map, facts, &render::HelmPlan::default(), uid)
}

fn obj(v: Value) -> BackupObject {
    BackupObject {
        obj: v,
        helm_storage: false,
    }
}

fn cm(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"},
            "annotations": {"note": "x"}}, "data": {"k": "v"}})
}

fn settings(c: Value) -> Settings {
    Settings::compile(&RestoreConfig::from_value(Some(&c), "test").unwrap()).unwrap()
}

fn restore_map(c: Value) -> NamespaceMap {
    let mut m = NamespaceMap::restore("dest", settings(c));
    m.backed_up = BTreeSet::from(["app".to_owned()]);
    m
}

fn sample() -> Vec<BackupObject> {
    vec![
        obj(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1", "namespace": "app"}, "spec": {}})),
        obj(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "app"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}})),
        obj(cm("app", "settings")),
        obj(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "app"},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"]}}),
        ),
        obj(
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"},
                "scope": "Namespaced"}}),
        ),
        obj(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}})),
        obj(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rb", "namespace": "app"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "app"},
                         {"kind": "ServiceAccount", "name": "x", "namespace": "other"}],
            "roleRef": {"kind": "Role", "name": "r"}}),
        ),
        obj(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "app"}}),
        ),
        obj(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "app"}, "spec": {"storageClassName": "fast"}})),
        obj(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "scratch", "namespace": "app"},
            "spec": {"volumeName": "pv-9", "dataSource": {"kind": "VolumeSnapshot", "name": "s"}}})),
    ]
}

fn facts() -> BackupFacts {
    BackupFacts {
        volume_pvcs: HashSet::from([("app".to_owned(), "data".to_owned())]),
        ..BackupFacts::default()
    }
}

fn find<'a>(ps: &'a [Prepared], kind: &str, name: &str) -> &'a Prepared {
    ps.iter()
        .find(|p| p.dest.kind == kind && p.dest.name == name)
        .unwrap_or_else(|| panic!("{kind} {name} not prepared"))
}

#[test]
fn objects_come_in_restore_order() {
    let ps = prepare(&sample(), &restore_map(json!({})), &facts(), UID);
    let kinds: Vec<&str> = ps.iter().map(|p| p.dest.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition",
            "Namespace",
            "ServiceAccount",
            "RoleBinding",
            "ConfigMap",
            "PersistentVolumeClaim",
            "PersistentVolumeClaim",
            "Service",
            "Deployment",
            "Widget"
        ]
    );
}

#[test]
fn a_restore_rewrites_into_its_namespace() {
    let ps = prepare(&sample(), &restore_map(json!({})), &facts(), UID);
    let c = find(&ps, "ConfigMap", "settings");
    assert_eq!(c.dest.namespace.as_deref(), Some("dest"));
    assert_eq!(c.source.namespace.as_deref(), Some("app"));
    let o = c.object.as_ref().unwrap();
    assert_eq!(o["metadata"]["namespace"], "dest");
    assert_eq!(o["metadata"]["labels"][RESTORE_UID_LABEL], UID);
    assert_eq!(o["metadata"]["labels"]["app"], "web");
    let planned = c.planned(PlanAction::Create, None);
    assert_eq!(planned.source_namespace.as_deref(), Some("app"));
    // The Restore's own namespace is never created.
    let ns = find(&ps, "Namespace", "dest");
    assert_eq!(ns.action, PlanAction::Skip);
    // Binding subjects in the backed-up namespace follow it; others stay.
    let rb = find(&ps, "RoleBinding", "rb").object.as_ref().unwrap();
    assert_eq!(rb["subjects"][0]["namespace"], "dest");
    assert_eq!(rb["subjects"][1]["namespace"], "other");
    // Cluster-specific fields.
    let svc = find(&ps, "Service", "web").object.as_ref().unwrap();
    assert!(svc["spec"].get("clusterIP").is_none() && svc["spec"].get("clusterIPs").is_none());
    let pvc = find(&ps, "PersistentVolumeClaim", "scratch");
    assert_eq!(pvc.action, PlanAction::Create);
    let pvc = pvc.object.as_ref().unwrap();
    assert!(pvc["spec"].get("volumeName").is_none());
    assert!(pvc["spec"].get("dataSource").is_none());
    // A PVC with data is made by the DataRestore phase.
    let data = find(&ps, "PersistentVolumeClaim", "data");
    assert_eq!(data.action, PlanAction::Skip);
}

#[test]
fn omit_metadata_drops_labels_and_annotations_but_not_the_restore_label() {
    let ps = prepare(
        &sample(),
        &restore_map(json!({"restoreFlags": {"omitMetadata": true}})),
        &facts(),
        UID,
    );
    let o = find(&ps, "ConfigMap", "settings").object.as_ref().unwrap();
    assert_eq!(o["metadata"]["labels"], json!({RESTORE_UID_LABEL: UID}));
    assert!(o["metadata"].get("annotations").is_none());
}

#[test]
fn selection_flags_exclude_with_a_reason() {
    struct Case {
        config: Value,
        kind: &'static str,
        name: &'static str,
        action: PlanAction,
        reason: &'static str,
    }
    let cases = [
        Case {
            config: json!({"resourceSelector": {"gvkSelector": [{"groupVersionKind": {"group": "apps", "kind": "Deployment"}}]}}),
            kind: "ConfigMap",
            name: "settings",
            action: PlanAction::Exclude,
            reason: "resourceSelector",
        },
        Case {
            config: json!({"resourceSelector": {"gvkSelector": [{"groupVersionKind": {"group": "apps", "kind": "Deployment"}}]}}),
            kind: "Deployment",
            name: "web",
            action: PlanAction::Create,
            reason: "",
        },
        Case {
            config: json!({"resourceSelector": {"labelSelector": [{"matchLabels": {"app": "web"}}]}}),
            kind: "ConfigMap",
            name: "settings",
            action: PlanAction::Create,
            reason: "",
        },
        Case {
            config: json!({"excludeResourceSelector": {"labelSelector": [{"matchLabels": {"app": "web"}}]}}),
            kind: "ConfigMap",
            name: "settings",
            action: PlanAction::Exclude,
            reason: "excludeResourceSelector",
        },
        Case {
            config: json!({"excludeResources": [{"groupVersionKind": {"group": "", "kind": "Service"}, "objects": ["web"]}]}),
            kind: "Service",
            name: "web",
            action: PlanAction::Exclude,
            reason: "excludeResources",
        },
        Case {
            config: json!({"restoreFlags": {"onlyData": true}}),
            kind: "Deployment",
            name: "web",
            action: PlanAction::Exclude,
            reason: "onlyData",
        },
        Case {
            config: json!({"restoreFlags": {"skipOperatorResources": true}}),
            kind: "ServiceAccount",
            name: "web",
            action: PlanAction::Exclude,
            reason: "skipOperatorResources",
        },
        Case {
            config: json!({"restoreFlags": {"skipOperatorResources": false}}),
            kind: "ServiceAccount",
            name: "web",
            action: PlanAction::Create,
            reason: "",
        },
    ];
    let mut f = facts();
    f.operator_resources = vec![
        serde_json::from_value(
            json!({"groupVersionKind": {"group": "", "kind": "ServiceAccount"}, "objects": ["web"]}),
        )
        .unwrap(),
    ];
    for c in cases {
        let ps = prepare(&sample(), &restore_map(c.config.clone()), &f, UID);
        let p = find(&ps, c.kind, c.name);
        assert_eq!(p.action, c.action, "{}", c.config);
        assert!(
            p.reason.as_deref().unwrap_or("").contains(c.reason),
            "{:?} for {}",
            p.reason,
            c.config
        );
    }
    // CRDs are not cut by a resourceSelector (custom resources need them).
    let ps = prepare(
        &sample(),
        &restore_map(
            json!({"resourceSelector": {"gvkSelector": [{"groupVersionKind": {"group": "example.com", "kind": "Widget"}}]}}),
        ),
        &f,
        UID,
    );
    assert_eq!(
        find(&ps, "CustomResourceDefinition", "widgets.example.com").action,
        PlanAction::Create
    );
}

#[test]
fn cluster_restore_maps_components_and_excludes() {
    let mut map = NamespaceMap {
        components: BTreeMap::from([("app".to_owned(), "app-copy".to_owned())]),
        excluded: BTreeSet::from(["skipped".to_owned()]),
        backed_up: BTreeSet::from(["app".to_owned(), "skipped".to_owned(), "same".to_owned()]),
        ..NamespaceMap::default()
    };
    map.per_namespace.insert(
        "same".into(),
        settings(json!({"restoreFlags": {"onlyData": true}})),
    );
    assert_eq!(map.map("app").as_deref(), Some("app-copy"));
    assert_eq!(map.map("same").as_deref(), Some("same"));
    assert_eq!(map.map("skipped"), None);
    let objects = vec![
        obj(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}})),
        obj(cm("app", "a")),
        obj(cm("skipped", "b")),
        obj(cm("same", "c")),
        obj(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "crb"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "app"}],
            "roleRef": {"kind": "ClusterRole", "name": "r"}}),
        ),
    ];
    let ps = prepare(&objects, &map, &BackupFacts::default(), UID);
    let ns = find(&ps, "Namespace", "app-copy");
    assert_eq!(ns.action, PlanAction::Create);
    assert_eq!(ns.object.as_ref().unwrap()["metadata"]["name"], "app-copy");
    assert_eq!(
        find(&ps, "ConfigMap", "a").dest.namespace.as_deref(),
        Some("app-copy")
    );
    let b = find(&ps, "ConfigMap", "b");
    assert_eq!(b.action, PlanAction::Exclude);
    assert!(b.reason.as_deref().unwrap().contains("excludeComponents"));
    assert_eq!(find(&ps, "ConfigMap", "c").action, PlanAction::Exclude);
    let crb = find(&ps, "ClusterRoleBinding", "crb")
        .object
        .as_ref()
        .unwrap();
    assert_eq!(crb["subjects"][0]["namespace"], "app-copy");
}

#[test]
fn global_config_is_overridden_per_field() {
    let global = RestoreConfig::from_value(
        Some(&json!({"restoreFlags": {"omitMetadata": true}, "resourcesReadyWaitSeconds": 5})),
        "g",
    )
    .unwrap();
    let comp =
        RestoreConfig::from_value(Some(&json!({"restoreFlags": {"onlyData": true}})), "c").unwrap();
    let merged = global.overridden_by(&comp);
    assert_eq!(merged.restore_flags.unwrap().only_data, Some(true));
    assert_eq!(merged.resources_ready_wait_seconds, Some(5));
    assert!(RestoreConfig::from_value(Some(&json!({"restoreFlags": 3})), "bad").is_err());
    let bad = RestoreConfig::from_value(
        Some(&json!({"resourceSelector": {"labelSelector": [{"matchExpressions": [{"key": "a", "operator": "Bogus"}]}]}})),
        "x",
    )
    .unwrap();
    let err = Settings::compile(&bad).unwrap_err();
    assert!(err.contains("fix the Restore"), "{err}");
}

fn live_with(objects: Vec<(DestKey, Value)>) -> Live {
    let mut served: HashSet<(String, String)> = [
        ("", "ConfigMap"),
        ("", "Namespace"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ]
    .iter()
    .map(|(g, k)| ((*g).to_owned(), (*k).to_owned()))
    .collect();
    served.insert(("apps".into(), "Deployment".into()));
    Live {
        objects: objects.into_iter().collect(),
        served,
        storage_classes: Some(BTreeSet::from(["fast".to_owned()])),
    }
}

#[test]
fn conflicts_are_judged_by_the_flags() {
    let objects = sample();
    let crds = crd_kinds(&objects);
    struct Case {
        flags: Value,
        kind: &'static str,
        existing: Option<Value>,
        action: PlanAction,
        blocking: Option<&'static str>,
    }
    let crd_spec = sample()[4].obj["spec"].clone();
    let cases = [
        Case {
            flags: json!({}),
            kind: "ConfigMap",
            existing: None,
            action: PlanAction::Create,
            blocking: None,
        },
        Case {
            flags: json!({}),
            kind: "ConfigMap",
            existing: Some(json!({})),
            action: PlanAction::Create,
            blocking: Some("skipIfAlreadyExists or patchIfAlreadyExists"),
        },
        Case {
            flags: json!({"skipIfAlreadyExists": true}),
            kind: "ConfigMap",
            existing: Some(json!({})),
            action: PlanAction::Skip,
            blocking: None,
        },
        Case {
            flags: json!({"patchIfAlreadyExists": true}),
            kind: "ConfigMap",
            existing: Some(json!({})),
            action: PlanAction::Patch,
            blocking: None,
        },
        Case {
            flags: json!({}),
            kind: "ConfigMap",
            existing: Some(json!({"metadata": {"labels": {RESTORE_UID_LABEL: UID}}})),
            action: PlanAction::Skip,
            blocking: None,
        },
        Case {
            flags: json!({}),
            kind: "CustomResourceDefinition",
            existing: Some(json!({"spec": crd_spec})),
            action: PlanAction::Skip,
            blocking: None,
        },
        Case {
            flags: json!({}),
            kind: "CustomResourceDefinition",
            existing: Some(json!({"spec": {"group": "example.com", "scope": "Cluster"}})),
            action: PlanAction::Create,
            blocking: Some("patchCRD"),
        },
        Case {
            flags: json!({"patchCRD": true}),
            kind: "CustomResourceDefinition",
            existing: Some(json!({"spec": {"group": "example.com"}})),
            action: PlanAction::Patch,
            blocking: None,
        },
        Case {
            flags: json!({}),
            kind: "Service",
            existing: None,
            action: PlanAction::Create,
            blocking: Some("does not serve"),
        },
        // Served once the backup's CRD is restored.
        Case {
            flags: json!({}),
            kind: "Widget",
            existing: None,
            action: PlanAction::Create,
            blocking: None,
        },
    ];
    for c in cases {
        let map = restore_map(json!({"restoreFlags": c.flags}));
        let ps = prepare(&objects, &map, &facts(), UID);
        let p = ps.iter().find(|p| p.dest.kind == c.kind).unwrap();
        let live = live_with(
            c.existing
                .clone()
                .map(|e| (p.dest.clone(), e))
                .into_iter()
                .collect(),
        );
        let (planned, blocking) = judge(p, &live, map.settings(Some("app")), &crds, UID);
        assert_eq!(planned.action, c.action, "{} {}", c.kind, c.flags);
        match (c.blocking, blocking) {
            (None, None) => {}
            (Some(want), Some(got)) => {
                assert!(got.contains(want), "{got}");
                assert!(got.contains(&p.dest.name), "names the object: {got}");
            }
            (want, got) => panic!("{} {}: blocking {want:?} vs {got:?}", c.kind, c.flags),
        }
    }
}

#[test]
fn cleanup_config_replaces_existing_objects_but_never_crds_or_namespaces() {
    let objects = sample();
    let crds = crd_kinds(&objects);
    let judged = |config: Value, kind: &str, existing: Value| {
        let map = restore_map(config);
        let ps = prepare(&objects, &map, &facts(), UID);
        let p = ps.iter().find(|p| p.dest.kind == kind).unwrap();
        let live = live_with(vec![(p.dest.clone(), existing)]);
        judge(p, &live, map.settings(Some("app")), &crds, UID)
    };
    let on = json!({"cleanupConfig": {"enabled": true, "gracefulDeletionTimeoutSeconds": 60}});
    // An existing object of the backup: created after the control plane deleted it.
    let (planned, blocking) = judged(on.clone(), "ConfigMap", json!({}));
    assert_eq!(planned.action, PlanAction::Create);
    assert_eq!(planned.reason.as_deref(), Some(CLEANUP_REPLACES));
    assert!(blocking.is_none(), "{blocking:?}");
    // cleanupConfig wins over skip/patch: the object will not exist any more.
    let mut both = on.clone();
    both["restoreFlags"] = json!({"skipIfAlreadyExists": true});
    let (planned, _) = judged(both, "Deployment", json!({}));
    assert_eq!(planned.action, PlanAction::Create);
    // Disabled: the usual conflict, whose message now names cleanupConfig too.
    let (planned, blocking) = judged(
        json!({"cleanupConfig": {"enabled": false}}),
        "ConfigMap",
        json!({}),
    );
    assert_eq!(planned.action, PlanAction::Create);
    assert!(blocking.unwrap().contains("enable cleanupConfig"));
    // Made by an earlier attempt of this restore: kept.
    let (planned, _) = judged(
        on.clone(),
        "ConfigMap",
        json!({"metadata": {"labels": {RESTORE_UID_LABEL: UID}}}),
    );
    assert_eq!(planned.action, PlanAction::Skip);
    // A CRD is never replaced (deleting it would delete every custom resource of its kind).
    let (planned, blocking) = judged(
        on.clone(),
        "CustomResourceDefinition",
        json!({"spec": {"group": "example.com", "scope": "Cluster"}}),
    );
    assert_eq!(planned.action, PlanAction::Create);
    assert!(blocking.unwrap().contains("patchCRD"));

    // A Restore never replaces a cluster-scoped object (it deletes nothing outside its
    // namespace): the usual conflict rules apply.
    let rbac = vec![obj(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "reader"}, "rules": []}),
    )];
    let map = restore_map(on.clone());
    let ps = prepare(&rbac, &map, &facts(), UID);
    let mut live = live_with(vec![(ps[0].dest.clone(), json!({}))]);
    live.served
        .insert(("rbac.authorization.k8s.io".into(), "ClusterRole".into()));
    let (planned, blocking) = judge(&ps[0], &live, map.settings(None), &crds, UID);
    assert_eq!(planned.action, PlanAction::Create);
    let blocking = blocking.unwrap();
    assert!(
        blocking.contains("ClusterRole") && blocking.contains("already exists"),
        "{blocking}"
    );
    // A ClusterRestore's globalConfig covers them.
    let cluster = NamespaceMap {
        global: settings(on.clone()),
        ..NamespaceMap::default()
    };
    let ps = prepare(&rbac, &cluster, &facts(), UID);
    let (planned, blocking) = judge(&ps[0], &live, cluster.settings(None), &crds, UID);
    assert_eq!(planned.reason.as_deref(), Some(CLEANUP_REPLACES));
    assert!(blocking.is_none());

    // A ClusterRestore component can turn it off for its namespace only.
    let global: RestoreConfig = RestoreConfig::from_value(Some(&on), "g").unwrap();
    let off: RestoreConfig =
        RestoreConfig::from_value(Some(&json!({"cleanupConfig": {"enabled": false}})), "c")
            .unwrap();
    assert!(Settings::compile(&global).unwrap().cleanup);
    assert!(
        !Settings::compile(&global.overridden_by(&off))
            .unwrap()
            .cleanup
    );
    assert!(
        Settings::compile(&global.overridden_by(&RestoreConfig::default()))
            .unwrap()
            .cleanup
    );
}

#[test]
fn json_patch_transforms_apply_every_op_and_failures_name_transform_and_object() {
    let config = json!({"transformComponents": {"custom": [
    {"transformName": "image", "resources": {"groupVersionKind": {"group": "apps", "kind": "Deployment"},
        "objects": ["web"]},
     "jsonPatches": [
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:2"},
        {"op": "add", "path": "/spec/replicas", "value": 3},
        {"op": "copy", "from": "/spec/replicas", "path": "/spec/minReadySeconds"},
        {"op": "move", "from": "/spec/minReadySeconds", "path": "/spec/revisionHistoryLimit"},
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
        {"op": "remove", "path": "/metadata/annotations"}
     ]}]}});
    let ps = prepare(&sample(), &restore_map(config), &facts(), UID);
    let d = find(&ps, "Deployment", "web").object.as_ref().unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 3);
    assert!(d["spec"].get("minReadySeconds").is_none());
    assert!(d["metadata"].get("annotations").is_none());
    // Not applied to other objects.
    assert!(find(&ps, "ConfigMap", "settings").object.as_ref().unwrap()["spec"].is_null());

    let failing = json!({"transformComponents": {"custom": [
        {"transformName": "bad-one", "resources": {"groupVersionKind": {"group": "apps", "kind": "Deployment"}},
         "jsonPatches": [{"op": "remove", "path": "/spec/nothing/here"}]}]}});
    let map = restore_map(failing);
    let ps = prepare(&sample(), &map, &facts(), UID);
    let p = find(&ps, "Deployment", "web");
    let err = p.object.as_ref().unwrap_err();
    assert!(
        err.contains("bad-one") && err.contains("Deployment.apps dest/web"),
        "{err}"
    );
    let (_, blocking) = judge(
        p,
        &live_with(vec![]),
        map.settings(Some("app")),
        &HashSet::new(),
        UID,
    );
    assert_eq!(blocking.as_deref(), Some(err.as_str()));
}

fn snapshot_with(ds: Vec<DataSnapshot>) -> Snapshot {
    Snapshot {
        custom: Some(CustomSnapshot {
            data_snapshots: ds,
            ..CustomSnapshot::default()
        }),
        ..Snapshot::default()
    }
}

fn ds(name: &str, location: Option<&str>, class: &str) -> DataSnapshot {
    DataSnapshot {
        persistent_volume_claim_name: name.into(),
        persistent_volume_claim_metadata: Some(
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "app"},
                "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                    "volumeName": "pv-1", "dataSource": {"name": "x"},
                    "resources": {"requests": {"storage": "1Gi"}}}})
            .to_string(),
        ),
        size: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("1Gi".into())),
        volume_mode: Some("Block".into()),
        location: location.map(str::to_owned),
        ..DataSnapshot::default()
    }
}

#[test]
fn volumes_carry_the_pvc_to_create_and_block_on_problems() {
    let snap = snapshot_with(vec![
        ds("data", Some("p/b/uid-1"), "fast"),
        ds("mapped", Some("p/b/uid-2"), "old"),
    ]);
    let map = restore_map(json!({"restoreFlags": {"storageClassMapping": {"old": "fast"}}}));
    let VolumePlan {
        volumes: vols,
        blocking,
        warnings,
        ..
    } = volumes(
        &snap,
        "p/b",
        Some("app"),
        &map,
        &live_with(vec![]),
        &BTreeSet::new(),
        UID,
    );
    assert!(
        blocking.is_empty() && warnings.is_empty(),
        "{blocking:?} {warnings:?}"
    );
    assert_eq!(vols.len(), 2);
    let v = &vols[0];
    assert_eq!(
        (v.namespace.as_str(), v.pvc_name.as_str()),
        ("dest", "data")
    );
    assert_eq!(v.source_namespace, "app");
    assert_eq!(v.location, "p/b/uid-1");
    assert_eq!(v.volume_mode.as_deref(), Some("Block"));
    assert_eq!(v.access_modes, ["ReadWriteOnce"]);
    let pvc: Value = serde_json::from_str(&v.pvc_metadata).unwrap();
    assert_eq!(pvc["metadata"]["namespace"], "dest");
    assert_eq!(pvc["metadata"]["labels"][RESTORE_UID_LABEL], UID);
    assert!(pvc["spec"].get("volumeName").is_none() && pvc["spec"].get("dataSource").is_none());
    assert_eq!(vols[1].storage_class_name.as_deref(), Some("fast"));

    // A missing class, a missing or foreign location, an existing PVC.
    let snap = snapshot_with(vec![
        ds("a", Some("p/b/u1"), "gold"),
        ds("b", None, "fast"),
        ds("c", Some("other/b/u3"), "fast"),
        ds("d", Some("p/b/../x"), "fast"),
        ds("e", Some("p/b/u5"), "fast"),
    ]);
    let live = live_with(vec![(
        DestKey {
            api_version: "v1".into(),
            kind: "PersistentVolumeClaim".into(),
            namespace: Some("dest".into()),
            name: "e".into(),
        },
        json!({}),
    )]);
    let VolumePlan {
        volumes: vols,
        blocking,
        ..
    } = volumes(
        &snap,
        "p/b",
        Some("app"),
        &restore_map(json!({})),
        &live,
        &BTreeSet::new(),
        UID,
    );
    assert_eq!(
        vols.len(),
        1,
        "only the class problem still yields a volume"
    );
    assert_eq!(blocking.len(), 5, "{blocking:#?}");
    assert!(blocking[0].contains("storage class gold"));
    assert!(blocking[1].contains("PVC app/b") && blocking[1].contains("onlyMetadata"));
    assert!(blocking[2].contains("not under this backup's location"));
    assert!(blocking[3].contains("not under this backup's location"));
    assert!(blocking[4].contains("dest/e already exists"));
    let VolumePlan {
        volumes: vols,
        blocking,
        warnings,
        ..
    } = volumes(
        &snap,
        "p/b",
        Some("app"),
        &restore_map(json!({"restoreFlags": {"skipIfAlreadyExists": true}})),
        &live,
        &BTreeSet::new(),
        UID,
    );
    assert!(!vols.iter().any(|v| v.pvc_name == "e"));
    assert_eq!(blocking.len(), 4);
    assert!(warnings[0].contains("data is not restored"));
    // cleanupConfig: the existing claim is replaced by the backed-up one (deleted first).
    let VolumePlan {
        volumes: vols,
        blocking,
        warnings,
        ..
    } = volumes(
        &snap,
        "p/b",
        Some("app"),
        &restore_map(json!({"cleanupConfig": {"enabled": true}})),
        &live,
        &BTreeSet::new(),
        UID,
    );
    assert!(
        vols.iter()
            .any(|v| v.pvc_name == "e" && v.namespace == "dest")
    );
    assert_eq!(blocking.len(), 4, "{blocking:#?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("dest/e") && w.contains("cleanupConfig")),
        "{warnings:?}"
    );
    // onlyMetadata: no volumes at all.
    let VolumePlan {
        volumes: vols,
        blocking,
        ..
    } = volumes(
        &snap,
        "p/b",
        Some("app"),
        &restore_map(json!({"restoreFlags": {"onlyMetadata": true}})),
        &live,
        &BTreeSet::new(),
        UID,
    );
    assert!(vols.is_empty() && blocking.is_empty());
}

#[test]
fn helm_transforms_naming_a_missing_release_block_and_others_say_they_re_render() {
    let objects = vec![
        BackupObject {
            obj: crate::helm::tests::release_secret("app", "web", 1, "deployed", "---\n"),
            helm_storage: true,
        },
        BackupObject {
            obj: crate::helm::tests::release_secret("other", "db", 1, "deployed", "---\n"),
            helm_storage: true,
        },
    ];
    let map = restore_map(json!({"transformComponents": {"helm": [
        {"transformName": "tag", "release": "web", "set": [{"key": "image.tag", "value": "2"}]},
        {"transformName": "typo", "release": "wbe", "set": [{"key": "x", "value": "1"}]}]}}));
    let (blocking, warnings) = helm_transform_notes(&objects, &map);
    assert_eq!(blocking.len(), 1, "{blocking:?}");
    assert!(
        blocking[0].contains("typo")
            && blocking[0].contains("release wbe")
            && blocking[0].contains("releases: db, web"),
        "{}",
        blocking[0]
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("tag (release web)")
            && warnings[0].contains("re-rendered with the transformed values"),
        "{}",
        warnings[0]
    );
    // A ClusterRestore: a global transform inherited by a component whose namespace lacks the
    // release is fine as long as some namespace it applies to holds it; an excluded namespace's
    // releases do not count.
    let cluster = NamespaceMap {
        global: settings(json!({"transformComponents": {"helm": [
            {"transformName": "tag", "release": "web", "set": [{"key": "a", "value": "1"}]},
            {"transformName": "dbt", "release": "db", "set": [{"key": "a", "value": "1"}]}]}})),
        per_namespace: BTreeMap::from([(
            "other".to_owned(),
            settings(json!({"transformComponents": {"helm": [
                {"transformName": "tag", "release": "web", "set": [{"key": "a", "value": "1"}]}]}})),
        )]),
        excluded: BTreeSet::from(["other".to_owned()]),
        ..NamespaceMap::default()
    };
    let (blocking, warnings) = helm_transform_notes(&objects, &cluster);
    assert_eq!(blocking.len(), 1, "{blocking:?}");
    assert!(
        blocking[0].contains("dbt names release db") && blocking[0].contains("(releases: web)"),
        "{}",
        blocking[0]
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // No transforms: nothing to say.
    let (b, w) = helm_transform_notes(&objects, &restore_map(json!({})));
    assert!(b.is_empty() && w.is_empty());
}

#[test]
fn helm_storage_gets_the_namespace_and_the_release_edit() {
    let secret = crate::helm::tests::release_secret("app", "web", 2, "deployed", "---\n");
    let old = crate::helm::tests::release_secret("app", "web", 1, "superseded", "---\n");
    let objects = vec![
        BackupObject {
            obj: secret,
            helm_storage: true,
        },
        BackupObject {
            obj: old,
            helm_storage: true,
        },
        obj(cm("app", "settings")),
    ];
    let map = restore_map(json!({"restoreFlags": {"omitMetadata": true}}));
    // No edit: only the namespace changes.
    let ps = prepare(&objects, &map, &BackupFacts::default(), UID);
    assert_eq!(ps.last().unwrap().rank, 18, "Helm storage last");
    let p = find(&ps, "Secret", "sh.helm.release.v1.web.v2");
    let o = p.object.as_ref().unwrap();
    assert_eq!(o["metadata"]["namespace"], "dest");
    assert_eq!(
        o["metadata"]["labels"]["owner"], "helm",
        "Helm's labels survive omitMetadata"
    );
    let rel =
        crate::helm::decode_release_value(&crate::helm::storage_payload(o).unwrap(), "x").unwrap();
    assert_eq!(rel["namespace"], "dest");
    assert_eq!(rel["manifest"], "---\n");
    // Renamed and re-rendered: every revision renamed, the deployed one gets values and manifest.
    let mut helm = render::HelmPlan::default();
    helm.releases.insert(
        ("app".into(), "web".into()),
        render::ReleaseEdit {
            name: "web-rst-u".into(),
            renamed: true,
            revision: 2,
            rendered: Some((json!({"replicas": 3}), "---\n# Source: x\nkind: A\n".into())),
            note: Some("renamed because".into()),
        },
    );
    let ps = super::prepare(&objects, &map, &BackupFacts::default(), &helm, UID);
    assert!(ps.iter().all(|p| !p.dest.name.contains(".web.v")));
    let p = find(&ps, "Secret", "sh.helm.release.v1.web-rst-u.v2");
    assert_eq!(p.reason.as_deref(), Some("renamed because"));
    assert_eq!(p.source.name, "sh.helm.release.v1.web.v2");
    let o = p.object.as_ref().unwrap();
    assert_eq!(o["metadata"]["labels"]["name"], "web-rst-u");
    let rel =
        crate::helm::decode_release_value(&crate::helm::storage_payload(o).unwrap(), "x").unwrap();
    assert_eq!(
        (
            &rel["name"],
            &rel["namespace"],
            &rel["config"],
            &rel["manifest"]
        ),
        (
            &json!("web-rst-u"),
            &json!("dest"),
            &json!({"replicas": 3}),
            &json!("---\n# Source: x\nkind: A\n")
        )
    );
    let p1 = find(&ps, "Secret", "sh.helm.release.v1.web-rst-u.v1");
    let rel1 = crate::helm::decode_release_value(
        &crate::helm::storage_payload(p1.object.as_ref().unwrap()).unwrap(),
        "x",
    )
    .unwrap();
    assert_eq!(rel1["name"], "web-rst-u");
    assert_eq!(
        rel1["manifest"], "---\n",
        "only the deployed revision is re-rendered"
    );
    assert!(rel1.get("config").is_none());
}

#[test]
fn rank_orders_kinds() {
    let order = [
        rank(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            false,
            false,
        ),
        rank("", "Namespace", false, false),
        rank("rbac.authorization.k8s.io", "ClusterRole", false, false),
        rank(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            false,
            false,
        ),
        rank("", "ServiceAccount", false, false),
        rank("rbac.authorization.k8s.io", "Role", false, false),
        rank("rbac.authorization.k8s.io", "RoleBinding", false, false),
        rank("", "ConfigMap", false, false),
        rank("", "Secret", false, false),
        rank("", "PersistentVolumeClaim", false, false),
        rank("", "Service", false, false),
        rank("apps", "Deployment", false, false),
        rank("apps", "StatefulSet", false, false),
        rank("apps", "DaemonSet", false, false),
        rank("batch", "Job", false, false),
        rank("batch", "CronJob", false, false),
        rank("networking.k8s.io", "Ingress", false, false),
        rank("example.com", "Widget", true, false),
        rank("", "Secret", false, true),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(
        rank("storage.k8s.io", "StorageClass", false, false)
            < rank("", "PersistentVolumeClaim", false, false)
    );
    assert!(
        is_builtin_group("") && is_builtin_group("apps") && is_builtin_group("networking.k8s.io")
    );
    assert!(!is_builtin_group("example.com"));
}

fn class(name: &str) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name, "uid": "sc-uid", "resourceVersion": "7",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true", "team": "db"}},
        "provisioner": "example.com/fast", "reclaimPolicy": "Delete"})
}

#[test]
fn restore_storage_class_creates_missing_held_classes_after_mapping() {
    let snap = snapshot_with(vec![
        ds("a", Some("p/b/u1"), "gold"),
        ds("b", Some("p/b/u2"), "fast"),
        ds("c", Some("p/b/u3"), "old"),
    ]);
    let held = BTreeSet::from(["gold".to_owned(), "old".to_owned()]);
    let live = live_with(vec![]);
    let run = |c: Value, held: &BTreeSet<String>| {
        volumes(&snap, "p/b", Some("app"), &restore_map(c), &live, held, UID)
    };
    // Without the flag: blocking, and the message names the flag when the backup holds it.
    let vp = run(json!({}), &held);
    assert!(vp.create_classes.is_empty());
    assert_eq!(vp.blocking.len(), 2, "{:#?}", vp.blocking);
    assert!(
        vp.blocking[0].contains("storage class gold")
            && vp.blocking[0]
                .contains("or set restoreFlags.restoreStorageClass to create it from the backup"),
        "{}",
        vp.blocking[0]
    );
    // Not held by the backup: the old message, no flag suggested.
    let vp = run(json!({}), &BTreeSet::new());
    assert!(
        !vp.blocking[0].contains("restoreStorageClass"),
        "{}",
        vp.blocking[0]
    );
    // With the flag: created, not blocking; existing `fast` is not created.
    let vp = run(
        json!({"restoreFlags": {"restoreStorageClass": true}}),
        &held,
    );
    assert!(vp.blocking.is_empty(), "{:#?}", vp.blocking);
    assert_eq!(
        vp.create_classes,
        BTreeSet::from(["gold".to_owned(), "old".to_owned()])
    );
    assert_eq!(vp.volumes.len(), 3);
    // Mapping first: a mapped class is not created (`old` → existing `fast`).
    let vp = run(
        json!({"restoreFlags": {"restoreStorageClass": true,
            "storageClassMapping": {"old": "fast"}}}),
        &held,
    );
    assert!(vp.blocking.is_empty(), "{:#?}", vp.blocking);
    assert_eq!(vp.create_classes, BTreeSet::from(["gold".to_owned()]));
    // Mapped to a class neither the destination nor the backup has: blocking, saying why the
    // flag cannot help.
    let vp = run(
        json!({"restoreFlags": {"restoreStorageClass": true,
            "storageClassMapping": {"gold": "silver"}}}),
        &held,
    );
    assert_eq!(vp.blocking.len(), 1, "{:#?}", vp.blocking);
    assert!(
        vp.blocking[0].contains("storage class silver")
            && vp.blocking[0].contains("the backup does not hold it"),
        "{}",
        vp.blocking[0]
    );
    assert!(!vp.create_classes.contains("gold"));
    // Classes could not be listed: nothing planned, a warning as before.
    let unlisted = Live {
        storage_classes: None,
        ..live_with(vec![])
    };
    let vp = volumes(
        &snap,
        "p/b",
        Some("app"),
        &restore_map(json!({"restoreFlags": {"restoreStorageClass": true}})),
        &unlisted,
        &held,
        UID,
    );
    assert!(vp.create_classes.is_empty() && vp.blocking.is_empty());
    assert_eq!(vp.warnings.len(), 3);
}

#[test]
fn restore_storage_class_follows_cluster_restore_settings_per_component() {
    let mut a = ds("a", Some("p/b/u1"), "gold");
    a.namespace = Some("app".into());
    let mut b = ds("b", Some("p/b/u2"), "slow");
    b.namespace = Some("other".into());
    let snap = snapshot_with(vec![a, b]);
    let mut map = NamespaceMap {
        backed_up: BTreeSet::from(["app".to_owned(), "other".to_owned()]),
        ..NamespaceMap::default()
    };
    map.global = settings(json!({"restoreFlags": {"restoreStorageClass": true}}));
    map.per_namespace.insert(
        "other".into(),
        settings(json!({"restoreFlags": {"restoreStorageClass": false}})),
    );
    let held = BTreeSet::from(["gold".to_owned(), "slow".to_owned()]);
    let vp = volumes(&snap, "p/b", None, &map, &live_with(vec![]), &held, UID);
    assert_eq!(vp.create_classes, BTreeSet::from(["gold".to_owned()]));
    assert_eq!(vp.blocking.len(), 1, "{:#?}", vp.blocking);
    assert!(vp.blocking[0].contains("storage class slow") && vp.blocking[0].contains("other/b"));
}

#[test]
fn claims_restored_as_objects_get_their_class_with_the_flag() {
    let objects = vec![obj(
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "scratch", "namespace": "app"},
        "spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1Gi"}}}}),
    )];
    let held = BTreeSet::from(["gold".to_owned()]);
    for (flags, want) in [
        (json!({"restoreFlags": {"restoreStorageClass": true}}), true),
        (json!({}), false),
    ] {
        let map = restore_map(flags);
        let ps = prepare(&objects, &map, &BackupFacts::default(), UID);
        let actions: Vec<PlanAction> = ps.iter().map(|p| p.action).collect();
        assert_eq!(actions, [PlanAction::Create]);
        let got = object_claim_classes(&ps, &actions, &map, &live_with(vec![]), &held);
        assert_eq!(got.contains("gold"), want);
        // Skipped claims need nothing.
        let got = object_claim_classes(&ps, &[PlanAction::Skip], &map, &live_with(vec![]), &held);
        assert!(got.is_empty());
    }
}

#[test]
fn storage_class_objects_are_cleaned_labelled_and_never_default() {
    let backup = vec![class("old"), class("gold")];
    let names = BTreeSet::from(["gold".to_owned(), "old".to_owned(), "absent".to_owned()]);
    let out = storage_class_objects(&names, &backup, UID);
    let got: Vec<&str> = out.iter().map(|(p, _)| p.name.as_str()).collect();
    assert_eq!(
        got,
        ["gold", "old"],
        "name order; a class the backup lacks is not made up"
    );
    let (planned, o) = &out[0];
    assert_eq!(
        (
            planned.api_version.as_str(),
            planned.kind.as_str(),
            planned.namespace.as_deref()
        ),
        ("storage.k8s.io/v1", "StorageClass", None)
    );
    assert_eq!(planned.action, PlanAction::Create);
    assert_eq!(planned.reason.as_deref(), Some(STORAGE_CLASS_REASON));
    assert_eq!(o["provisioner"], "example.com/fast");
    assert_eq!(o["metadata"]["labels"][RESTORE_UID_LABEL], UID);
    assert_eq!(o["metadata"]["annotations"], json!({"team": "db"}));
    assert!(o["metadata"].get("uid").is_none() && o["metadata"].get("resourceVersion").is_none());
}
