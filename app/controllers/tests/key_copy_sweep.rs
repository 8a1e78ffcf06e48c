#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The key copy sweep against tvk-test-apiserver: copies made by the control plane's own
//! `encryption::job_secret` are deleted only when no Job mounts them and no backup, retention
//! or restore in flight uses their key; fresh copies and Secrets that are not ours stay.

mod common;

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use serde_json::{Value, json};
use tvk_api::common::ObjectReference;
use tvk_control_plane::{
    context::Context,
    encryption::{self, copy_name},
    key_copy_sweep,
};
use tvk_test_apiserver::ApiServer;

const NS: &str = common::NS;
const APP: &str = "app";
const V1: &str = "triliovault.trilio.io/v1";

fn plan(name: &str, secret: &str) -> Value {
    json!({"apiVersion": V1, "kind": "BackupPlan", "metadata": {"name": name, "namespace": APP},
        "spec": {"backupConfig": {"target": {"name": "s3", "namespace": NS}},
            "encryption": {"encryptionSecret": {"name": secret}}}})
}

fn backup(name: &str, plan: &str, status: Value) -> Value {
    json!({"apiVersion": V1, "kind": "Backup", "metadata": {"name": name, "namespace": APP},
        "spec": {"type": "Full", "backupPlan": {"name": plan}}, "status": status})
}

fn restore(name: &str, spec: Value, status: Value) -> Value {
    json!({"apiVersion": V1, "kind": "Restore", "metadata": {"name": name, "namespace": APP},
        "spec": spec, "status": status})
}

fn secret_names(server: &ApiServer) -> Vec<String> {
    server
        .list("v1", "Secret", Some(NS))
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn unused_copies_go_and_every_copy_in_use_stays() {
    tvk_control_plane::install_tls_provider();
    let server = ApiServer::start().await.unwrap();
    for crd in tvk_api::crd::all() {
        server.create(serde_json::to_value(crd).unwrap()).unwrap();
    }
    for ns in [NS, APP] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .unwrap();
    }
    let ctx = Arc::new(Context::new(
        server.client(),
        common::config("Cluster"),
        None,
    ));
    // One user Secret per case, each copied into the install namespace as for a Job.
    let cases = [
        "running",
        "done",
        "mounted",
        "restoring",
        "restored",
        "source",
        "coalescing",
        "deleting",
    ];
    for k in cases {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("key {k}"));
        server
            .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": k, "namespace": APP},
                "type": "Opaque", "data": {"encryptionKey": b64}}))
            .unwrap();
        let reference = ObjectReference {
            name: Some(k.into()),
            ..ObjectReference::default()
        };
        let copy = encryption::job_secret(&ctx, &reference, APP, NS, "test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(copy, copy_name(APP, k));
    }
    // A Secret of the same shape that is not ours.
    server
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tvk-encryption-foreign", "namespace": NS}, "data": {}}))
        .unwrap();
    for k in cases {
        server.create(plan(k, k)).unwrap();
    }
    server
        .create(backup(
            "b-running",
            "running",
            json!({"status": "InProgress"}),
        ))
        .unwrap();
    server
        .create(backup("b-done", "done", json!({"status": "Available"})))
        .unwrap();
    server
        .create(backup("b-source", "source", json!({"status": "Available"})))
        .unwrap();
    server
        .create(backup(
            "b-coalescing",
            "coalescing",
            json!({"status": "Coalescing"}),
        ))
        .unwrap();
    let mut deleting = backup("b-deleting", "deleting", json!({"status": "Available"}));
    deleting["metadata"]["finalizers"] = json!(["triliovault.trilio.io/backup-data"]);
    server.create(deleting).unwrap();
    // Deleted: it stays, with a deletionTimestamp, while its finalizer runs.
    server
        .delete(V1, "Backup", Some(APP), "b-deleting")
        .unwrap();
    assert!(
        server.get(V1, "Backup", Some(APP), "b-deleting").unwrap()["metadata"]["deletionTimestamp"]
            .is_string()
    );
    server
        .create(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": NS},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}],
                "volumes": [{"name": "encryption-key", "secret": {"secretName": copy_name(APP, "mounted")}}]}}}}))
        .unwrap();
    let location =
        json!({"type": "Location", "location": "p/b", "target": {"name": "s3", "namespace": NS}});
    server
        .create(restore(
            "r-running",
            json!({"source": location, "encryption": {"encryptionSecret": {"name": "restoring"}}}),
            json!({"status": "InProgress"}),
        ))
        .unwrap();
    server
        .create(restore(
            "r-done",
            json!({"source": location, "encryption": {"encryptionSecret": {"name": "restored"}}}),
            json!({"status": "Completed"}),
        ))
        .unwrap();
    server
        .create(restore(
            "r-source",
            json!({"source": {"type": "Backup", "backup": {"name": "b-source", "namespace": APP}}}),
            json!({}),
        ))
        .unwrap();

    // Within the grace period nothing goes.
    let deleted = key_copy_sweep::sweep(&ctx, key_copy_sweep::GRACE)
        .await
        .unwrap();
    assert!(deleted.is_empty(), "{deleted:?}");
    assert_eq!(secret_names(&server).len(), cases.len() + 1);

    // Refresh times are written to the second (rounded): let them all be in the past.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut deleted = key_copy_sweep::sweep(&ctx, Duration::ZERO).await.unwrap();
    deleted.sort();
    let mut expected = vec![copy_name(APP, "done"), copy_name(APP, "restored")];
    expected.sort();
    assert_eq!(deleted, expected);
    let left = secret_names(&server);
    for k in [
        "running",
        "mounted",
        "restoring",
        "source",
        "coalescing",
        "deleting",
    ] {
        assert!(left.contains(&copy_name(APP, k)), "{k}: {left:?}");
    }
    assert!(left.contains(&"tvk-encryption-foreign".to_string()));
    assert_eq!(left.len(), 7, "{left:?}");
    // A Job needing a deleted copy gets it back, as before every Job.
    let reference = ObjectReference {
        name: Some("done".into()),
        ..ObjectReference::default()
    };
    encryption::job_secret(&ctx, &reference, APP, NS, "test")
        .await
        .unwrap()
        .unwrap();
    assert!(secret_names(&server).contains(&copy_name(APP, "done")));
    // Once the last user is over, its copy goes too.
    let backups: kube::Api<tvk_api::Backup> = kube::Api::namespaced(server.client(), APP);
    backups
        .patch_status(
            "b-running",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"status": "Available"}})),
        )
        .await
        .unwrap();
    let deleted = key_copy_sweep::sweep(&ctx, Duration::ZERO).await.unwrap();
    assert!(deleted.contains(&copy_name(APP, "running")), "{deleted:?}");
}
