#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! One valid and one invalid case per rule: each case edits a valid base object and states the
//! field path the error must name (or `None` when the edit must be accepted).

use serde_json::{Value, json};
use tvk_api::admission::{FieldError, KindAdmission, Operation, Request, app_admission, identify};

fn base(kind: &str) -> Value {
    let spec = match kind {
        "Target" => json!({"type": "ObjectStore", "vendor": "AWS",
            "objectStoreCredentials": {"bucketName": "b", "region": "us-east-1",
                "credentialSecret": {"name": "s3", "namespace": "ns"}}}),
        "Policy" => json!({"type": "Retention", "retentionConfig": {"latest": 3}}),
        "Hook" => json!({"pre": {"execAction": {"command": ["sh", "-c", "sync"]}},
                         "post": {"execAction": {"command": ["true"]}}}),
        "BackupPlan" => json!({"backupConfig": {"target": {"name": "t", "namespace": "ns"}},
            "hookConfig": {"hooks": [{"hook": {"name": "h"},
                "podSelector": {"labels": [{"matchLabels": {"app": "db"}}]}}]}}),
        "ClusterBackupPlan" => json!({"backupConfig": {"target": {"name": "t", "namespace": "ns"}},
            "backupComponents": [{"namespace": "a"}]}),
        "Backup" => json!({"type": "Full", "backupPlan": {"name": "plan"}}),
        "ClusterBackup" => json!({"type": "Full", "clusterBackupPlan": {"name": "plan"}}),
        "Restore" => {
            json!({"source": {"type": "Backup", "backup": {"name": "b", "namespace": "ns"}}})
        }
        "ClusterRestore" => {
            json!({"source": {"type": "ClusterBackup", "clusterBackup": {"name": "cb"}},
            "components": [{"backupNamespace": "a", "restoreNamespace": "b"}]})
        }
        other => panic!("{other}"),
    };
    json!({"apiVersion": "triliovault.trilio.io/v1", "kind": kind,
           "metadata": {"name": "example", "namespace": "ns"}, "spec": spec})
}

/// Sets (or with `Value::Null`, removes) the member at a JSON pointer, creating objects.
fn edit(mut value: Value, pointer: &str, new: Value) -> Value {
    let tokens: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let (last, parents) = tokens.split_last().unwrap();
    let mut at = &mut value;
    for token in parents {
        at = match at {
            Value::Array(items) => &mut items[token.parse::<usize>().unwrap()],
            Value::Object(map) => map.entry(token.to_string()).or_insert_with(|| json!({})),
            _ => panic!("cannot descend into {at}"),
        };
    }
    match (at, new) {
        (Value::Object(map), Value::Null) => {
            map.remove(*last);
        }
        (Value::Object(map), new) => {
            map.insert(last.to_string(), new);
        }
        (Value::Array(items), new) => items[last.parse::<usize>().unwrap()] = new,
        (other, _) => panic!("cannot set in {other}"),
    }
    value
}

fn validate(kind: &str, object: &Value) -> Result<Vec<String>, Vec<FieldError>> {
    let registry = app_admission();
    registry
        .find("triliovault.trilio.io", kind)
        .unwrap()
        .validate(&Request {
            operation: Operation::Create,
            object,
            old_object: None,
        })
}

struct Case {
    kind: &'static str,
    edits: &'static [(&'static str, &'static str)],
    /// The path an error must name; `None`: accepted.
    error_at: Option<&'static str>,
}

const fn ok(kind: &'static str, edits: &'static [(&'static str, &'static str)]) -> Case {
    Case {
        kind,
        edits,
        error_at: None,
    }
}

const fn bad(
    kind: &'static str,
    edits: &'static [(&'static str, &'static str)],
    at: &'static str,
) -> Case {
    Case {
        kind,
        edits,
        error_at: Some(at),
    }
}

const CASES: &[Case] = &[
    // envelope
    bad(
        "Target",
        &[("/apiVersion", r#""triliovault.trilio.io/v1beta1""#)],
        "apiVersion",
    ),
    bad(
        "Target",
        &[("/metadata/name", r#""Not_A_Name""#)],
        "metadata.name",
    ),
    bad("Target", &[("/spec", "null")], "spec"),
    bad("Target", &[("/spec", r#""text""#)], "spec"),
    // Target: required, enums, types
    bad("Target", &[("/spec/type", "null")], "spec.type"),
    bad("Target", &[("/spec/vendor", r#""Amazon""#)], "spec.vendor"),
    ok("Target", &[("/spec/vendor", r#""Wassabi""#)]),
    bad(
        "Target",
        &[("/spec/enableBrowsing", r#""yes""#)],
        "spec.enableBrowsing",
    ),
    ok("Target", &[("/spec/thresholdCapacity", r#""100Gi""#)]),
    bad(
        "Target",
        &[("/spec/thresholdCapacity", r#""a lot""#)],
        "spec.thresholdCapacity",
    ),
    // Target: ObjectStore needs bucket and secret, no NFS
    bad(
        "Target",
        &[("/spec/objectStoreCredentials", "null")],
        "spec.objectStoreCredentials",
    ),
    bad(
        "Target",
        &[("/spec/objectStoreCredentials/bucketName", "null")],
        "spec.objectStoreCredentials.bucketName",
    ),
    bad(
        "Target",
        &[("/spec/objectStoreCredentials/bucketName", "42")],
        "spec.objectStoreCredentials.bucketName",
    ),
    bad(
        "Target",
        &[("/spec/objectStoreCredentials/credentialSecret", "null")],
        "spec.objectStoreCredentials.credentialSecret",
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/credentialSecret",
            r#"{"namespace": "x"}"#,
        )],
        "spec.objectStoreCredentials.credentialSecret.name",
    ),
    bad(
        "Target",
        &[("/spec/nfsCredentials", r#"{"nfsExport": "nfs:/x"}"#)],
        "spec.nfsCredentials",
    ),
    // Target: URL rules
    ok(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""https://s3.example.com:9000""#,
        )],
    ),
    ok(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""http://minio.minio.svc:9000""#,
        )],
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""ftp://s3.example.com""#,
        )],
        "spec.objectStoreCredentials.url",
    ),
    bad(
        "Target",
        &[("/spec/objectStoreCredentials/url", r#""not a url""#)],
        "spec.objectStoreCredentials.url",
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""http://169.254.169.254/latest""#,
        )],
        "spec.objectStoreCredentials.url",
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""http://[fe80::1]:9000""#,
        )],
        "spec.objectStoreCredentials.url",
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""http://[fd00:ec2::254]""#,
        )],
        "spec.objectStoreCredentials.url",
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""http://metadata.google.internal""#,
        )],
        "spec.objectStoreCredentials.url",
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""http://100.100.100.200""#,
        )],
        "spec.objectStoreCredentials.url",
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""http://[::ffff:169.254.169.254]""#,
        )],
        "spec.objectStoreCredentials.url",
    ),
    bad(
        "Target",
        &[(
            "/spec/objectStoreCredentials/url",
            r#""https://key:secret@s3.example.com""#,
        )],
        "spec.objectStoreCredentials.url",
    ),
    // Target: NFS
    ok(
        "Target",
        &[
            ("/spec/type", r#""NFS""#),
            ("/spec/objectStoreCredentials", "null"),
            (
                "/spec/nfsCredentials",
                r#"{"nfsExport": "10.0.0.5:/exports/tvk"}"#,
            ),
        ],
    ),
    ok(
        "Target",
        &[
            ("/spec/type", r#""NFS""#),
            ("/spec/objectStoreCredentials", "null"),
            (
                "/spec/nfsCredentials",
                r#"{"nfsExport": "[fd00::5]:/exports"}"#,
            ),
        ],
    ),
    bad(
        "Target",
        &[
            ("/spec/type", r#""NFS""#),
            ("/spec/objectStoreCredentials", "null"),
        ],
        "spec.nfsCredentials",
    ),
    bad(
        "Target",
        &[
            ("/spec/type", r#""NFS""#),
            ("/spec/objectStoreCredentials", "null"),
            ("/spec/nfsCredentials", r#"{"nfsExport": "/exports/tvk"}"#),
        ],
        "spec.nfsCredentials.nfsExport",
    ),
    bad(
        "Target",
        &[
            ("/spec/type", r#""NFS""#),
            ("/spec/objectStoreCredentials", "null"),
            (
                "/spec/nfsCredentials",
                r#"{"nfsExport": "server:relative"}"#,
            ),
        ],
        "spec.nfsCredentials.nfsExport",
    ),
    bad(
        "Target",
        &[
            ("/spec/type", r#""NFS""#),
            ("/spec/nfsCredentials", r#"{"nfsExport": "s:/e"}"#),
        ],
        "spec.objectStoreCredentials",
    ),
    // Policy
    bad("Policy", &[("/spec/type", r#""Weekly""#)], "spec.type"),
    bad(
        "Policy",
        &[("/spec/retentionConfig", "null")],
        "spec.retentionConfig",
    ),
    bad(
        "Policy",
        &[("/spec/retentionConfig/latest", "0")],
        "spec.retentionConfig.latest",
    ),
    bad(
        "Policy",
        &[("/spec/retentionConfig/latest", r#""3""#)],
        "spec.retentionConfig.latest",
    ),
    bad(
        "Policy",
        &[("/spec/retentionConfig/dateOfMonth", "29")],
        "spec.retentionConfig.dateOfMonth",
    ),
    ok(
        "Policy",
        &[
            ("/spec/retentionConfig/dateOfMonth", "28"),
            ("/spec/retentionConfig/dayOfWeek", r#""Sunday""#),
        ],
    ),
    bad(
        "Policy",
        &[("/spec/retentionConfig/dayOfWeek", r#""Sun""#)],
        "spec.retentionConfig.dayOfWeek",
    ),
    bad(
        "Policy",
        &[("/spec/retentionConfig/monthOfYear", r#""Jan""#)],
        "spec.retentionConfig.monthOfYear",
    ),
    bad(
        "Policy",
        &[("/spec/retentionConfig", "{}")],
        "spec.retentionConfig",
    ),
    bad(
        "Policy",
        &[("/spec/scheduleConfig", r#"{"schedule": ["0 1 * * *"]}"#)],
        "spec.scheduleConfig",
    ),
    ok(
        "Policy",
        &[
            ("/spec/type", r#""Schedule""#),
            ("/spec/retentionConfig", "null"),
            (
                "/spec/scheduleConfig",
                r#"{"schedule": ["0 1 * * *", "10 4 * 1/3 *", "*/15 8-18 * * 1-5"]}"#,
            ),
        ],
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""Schedule""#),
            ("/spec/retentionConfig", "null"),
        ],
        "spec.scheduleConfig",
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""Schedule""#),
            ("/spec/retentionConfig", "null"),
            ("/spec/scheduleConfig", r#"{"schedule": []}"#),
        ],
        "spec.scheduleConfig.schedule",
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""Schedule""#),
            ("/spec/retentionConfig", "null"),
            ("/spec/scheduleConfig", r#"{"schedule": ["0 1 * *"]}"#),
        ],
        "spec.scheduleConfig.schedule[0]",
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""Schedule""#),
            ("/spec/retentionConfig", "null"),
            ("/spec/scheduleConfig", r#"{"schedule": ["0 0 1 * * *"]}"#),
        ],
        "spec.scheduleConfig.schedule[0]",
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""Schedule""#),
            ("/spec/retentionConfig", "null"),
            (
                "/spec/scheduleConfig",
                r#"{"schedule": ["0 1 * * *", "61 * * * *"]}"#,
            ),
        ],
        "spec.scheduleConfig.schedule[1]",
    ),
    ok(
        "Policy",
        &[
            ("/spec/type", r#""Cleanup""#),
            ("/spec/retentionConfig", "null"),
            ("/spec/cleanupConfig", r#"{"days": 0}"#),
        ],
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""Cleanup""#),
            ("/spec/retentionConfig", "null"),
            ("/spec/cleanupConfig", r#"{"days": -1}"#),
        ],
        "spec.cleanupConfig.days",
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""Cleanup""#),
            ("/spec/retentionConfig", "null"),
            ("/spec/cleanupConfig", r#"{"backupDays": 3}"#),
        ],
        "spec.cleanupConfig.days",
    ),
    ok(
        "Policy",
        &[
            ("/spec/type", r#""ContinuousRestore""#),
            ("/spec/retentionConfig", "null"),
            ("/spec/continuousRestoreConfig", r#"{"consistentSets": 10}"#),
        ],
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""ContinuousRestore""#),
            ("/spec/retentionConfig", "null"),
            ("/spec/continuousRestoreConfig", r#"{"consistentSets": 11}"#),
        ],
        "spec.continuousRestoreConfig.consistentSets",
    ),
    bad(
        "Policy",
        &[
            ("/spec/type", r#""ContinuousRestore""#),
            ("/spec/retentionConfig", "null"),
        ],
        "spec.continuousRestoreConfig",
    ),
    ok(
        "Policy",
        &[
            ("/spec/type", r#""Timeout""#),
            ("/spec/retentionConfig", "null"),
        ],
    ),
    // Hook
    bad("Hook", &[("/spec/post", "null")], "spec.post"),
    bad(
        "Hook",
        &[("/spec/post/execAction", "null")],
        "spec.post.execAction",
    ),
    bad(
        "Hook",
        &[("/spec/pre/execAction/command", "[]")],
        "spec.pre.execAction.command",
    ),
    bad(
        "Hook",
        &[("/spec/pre/execAction/command", r#""sync""#)],
        "spec.pre.execAction.command",
    ),
    ok(
        "Hook",
        &[
            ("/spec/pre/maxRetryCount", "10"),
            ("/spec/pre/timeoutSeconds", "300"),
        ],
    ),
    bad(
        "Hook",
        &[("/spec/pre/maxRetryCount", "11")],
        "spec.pre.maxRetryCount",
    ),
    bad(
        "Hook",
        &[("/spec/post/timeoutSeconds", "0")],
        "spec.post.timeoutSeconds",
    ),
    bad(
        "Hook",
        &[("/spec/post/timeoutSeconds", "301")],
        "spec.post.timeoutSeconds",
    ),
    bad(
        "Hook",
        &[("/spec/post/ignoreFailure", r#""no""#)],
        "spec.post.ignoreFailure",
    ),
    // BackupPlan
    bad(
        "BackupPlan",
        &[("/spec/backupConfig", "null")],
        "spec.backupConfig",
    ),
    bad(
        "BackupPlan",
        &[("/spec/backupConfig/target", "null")],
        "spec.backupConfig.target",
    ),
    bad(
        "BackupPlan",
        &[("/spec/backupConfig/target/name", r#""""#)],
        "spec.backupConfig.target.name",
    ),
    ok(
        "BackupPlan",
        &[("/spec/backupConfig/maxIncrBackupsPerFullBackup", "15")],
    ),
    bad(
        "BackupPlan",
        &[("/spec/backupConfig/maxIncrBackupsPerFullBackup", "16")],
        "spec.backupConfig.maxIncrBackupsPerFullBackup",
    ),
    bad(
        "BackupPlan",
        &[("/spec/backupConfig/maxIncrBackupsPerFullBackup", "0")],
        "spec.backupConfig.maxIncrBackupsPerFullBackup",
    ),
    bad(
        "BackupPlan",
        &[("/spec/hookConfig/mode", r#""Random""#)],
        "spec.hookConfig.mode",
    ),
    bad(
        "BackupPlan",
        &[("/spec/hookConfig/podReadyWaitSeconds", "601")],
        "spec.hookConfig.podReadyWaitSeconds",
    ),
    bad(
        "BackupPlan",
        &[("/spec/hookConfig/hooks", "[]")],
        "spec.hookConfig.hooks",
    ),
    bad(
        "BackupPlan",
        &[("/spec/hookConfig/hooks/0/hook", "null")],
        "spec.hookConfig.hooks[0].hook",
    ),
    bad(
        "BackupPlan",
        &[("/spec/hookConfig/hooks/0/podSelector", "{}")],
        "spec.hookConfig.hooks[0].podSelector",
    ),
    ok(
        "BackupPlan",
        &[
            (
                "/spec/hookConfig/hooks/0/podSelector",
                r#"{"regex": "^mysql-[0-9]+$"}"#,
            ),
            ("/spec/hookConfig/hooks/0/containerRegex", r#""^db$""#),
        ],
    ),
    bad(
        "BackupPlan",
        &[(
            "/spec/hookConfig/hooks/0/podSelector",
            r#"{"regex": "mysql-(["}"#,
        )],
        "spec.hookConfig.hooks[0].podSelector.regex",
    ),
    bad(
        "BackupPlan",
        &[("/spec/hookConfig/hooks/0/containerRegex", r#""*db""#)],
        "spec.hookConfig.hooks[0].containerRegex",
    ),
    bad(
        "BackupPlan",
        &[(
            "/spec/hookConfig/hooks/0/podSelector/labels/0",
            r#"{"matchExpressions": [{"key": "a", "operator": "In"}]}"#,
        )],
        "spec.hookConfig.hooks[0].podSelector.labels[0].matchExpressions[0].values",
    ),
    bad(
        "BackupPlan",
        &[("/spec/backupPlanComponents", r#"{"helmReleases": []}"#)],
        "spec.backupPlanComponents.helmReleases",
    ),
    bad(
        "BackupPlan",
        &[(
            "/spec/backupPlanComponents",
            r#"{"operators": [{"operatorId": "a"}, {"operatorId": "a"}]}"#,
        )],
        "spec.backupPlanComponents.operators[1].operatorId",
    ),
    bad(
        "BackupPlan",
        &[("/spec/encryption", r#"{}"#)],
        "spec.encryption.encryptionSecret",
    ),
    bad(
        "BackupPlan",
        &[(
            "/spec/includeResources",
            r#"{"gvkSelector": [{"objects": ["x"]}]}"#,
        )],
        "spec.includeResources.gvkSelector[0].groupVersionKind",
    ),
    // ClusterBackupPlan
    bad(
        "ClusterBackupPlan",
        &[("/spec/backupComponents", "null")],
        "spec",
    ),
    ok(
        "ClusterBackupPlan",
        &[
            ("/spec/backupComponents", "null"),
            (
                "/spec/namespaceSelector",
                r#"[{"name": "gold", "labelSelector": [{"matchLabels": {"tier": "gold"}}]}]"#,
            ),
        ],
    ),
    bad(
        "ClusterBackupPlan",
        &[("/spec/backupComponents/0/namespace", r#""Bad_NS""#)],
        "spec.backupComponents[0].namespace",
    ),
    bad(
        "ClusterBackupPlan",
        &[(
            "/spec/backupComponents",
            r#"[{"namespace": "a"}, {"namespace": "a"}]"#,
        )],
        "spec.backupComponents[1].namespace",
    ),
    // Backup / ClusterBackup
    bad(
        "Backup",
        &[("/spec/type", r#""Differential""#)],
        "spec.type",
    ),
    ok("Backup", &[("/spec/type", r#""Incremental""#)]),
    bad("Backup", &[("/spec/backupPlan", "null")], "spec.backupPlan"),
    bad(
        "ClusterBackup",
        &[("/spec/clusterBackupPlan", "null")],
        "spec.clusterBackupPlan",
    ),
    // Restore: source vs type
    bad("Restore", &[("/spec/source", "null")], "spec.source"),
    bad(
        "Restore",
        &[("/spec/source/type", r#""Tape""#)],
        "spec.source.type",
    ),
    bad(
        "Restore",
        &[("/spec/source/backup", "null")],
        "spec.source.backup",
    ),
    bad(
        "Restore",
        &[("/spec/source/location", r#""a/b""#)],
        "spec.source.location",
    ),
    ok(
        "Restore",
        &[(
            "/spec/source",
            r#"{"type": "Location", "location": "plan-uid/backup-uid", "target": {"name": "t", "namespace": "ns"}}"#,
        )],
    ),
    bad(
        "Restore",
        &[(
            "/spec/source",
            r#"{"type": "Location", "location": "plan-uid/backup-uid"}"#,
        )],
        "spec.source.target",
    ),
    bad(
        "Restore",
        &[(
            "/spec/source",
            r#"{"type": "Location", "target": {"name": "t"}}"#,
        )],
        "spec.source.location",
    ),
    bad(
        "Restore",
        &[(
            "/spec/source",
            r#"{"type": "Location", "location": "/etc/passwd", "target": {"name": "t"}}"#,
        )],
        "spec.source.location",
    ),
    bad(
        "Restore",
        &[(
            "/spec/source",
            r#"{"type": "Location", "location": "a/../../b", "target": {"name": "t"}}"#,
        )],
        "spec.source.location",
    ),
    ok(
        "Restore",
        &[(
            "/spec/source",
            r#"{"type": "BackupPlan", "backupPlan": {"name": "p"}}"#,
        )],
    ),
    bad(
        "Restore",
        &[("/spec/source", r#"{"type": "Snapshot"}"#)],
        "spec.source.snapshot",
    ),
    // Restore: flags, ranges
    ok(
        "Restore",
        &[
            ("/spec/resourcesReadyWaitSeconds", "1200"),
            (
                "/spec/cleanupConfig",
                r#"{"enabled": true, "gracefulDeletionTimeoutSeconds": 60}"#,
            ),
        ],
    ),
    bad(
        "Restore",
        &[("/spec/resourcesReadyWaitSeconds", "1201")],
        "spec.resourcesReadyWaitSeconds",
    ),
    bad(
        "Restore",
        &[("/spec/resourcesReadyWaitSeconds", "-1")],
        "spec.resourcesReadyWaitSeconds",
    ),
    bad(
        "Restore",
        &[(
            "/spec/cleanupConfig",
            r#"{"enabled": true, "gracefulDeletionTimeoutSeconds": 59}"#,
        )],
        "spec.cleanupConfig.gracefulDeletionTimeoutSeconds",
    ),
    bad(
        "Restore",
        &[(
            "/spec/cleanupConfig",
            r#"{"enabled": true, "gracefulDeletionTimeoutSeconds": 1801}"#,
        )],
        "spec.cleanupConfig.gracefulDeletionTimeoutSeconds",
    ),
    bad(
        "Restore",
        &[(
            "/spec/cleanupConfig",
            r#"{"gracefulDeletionTimeoutSeconds": 100}"#,
        )],
        "spec.cleanupConfig.enabled",
    ),
    bad(
        "Restore",
        &[(
            "/spec/restoreFlags",
            r#"{"onlyData": true, "onlyMetadata": true}"#,
        )],
        "spec.restoreFlags.onlyMetadata",
    ),
    bad(
        "Restore",
        &[(
            "/spec/restoreFlags",
            r#"{"skipIfAlreadyExists": true, "patchIfAlreadyExists": true}"#,
        )],
        "spec.restoreFlags.patchIfAlreadyExists",
    ),
    bad(
        "Restore",
        &[(
            "/spec/restoreFlags",
            r#"{"restoreNamespaceLabelsAnnotations": "Merge"}"#,
        )],
        "spec.restoreFlags.restoreNamespaceLabelsAnnotations",
    ),
    // Restore: image registry
    bad(
        "Restore",
        &[("/spec/actionFlags", r#"{"imageRestore": true}"#)],
        "spec.imageRegistry",
    ),
    ok(
        "Restore",
        &[
            ("/spec/actionFlags", r#"{"imageRestore": true}"#),
            (
                "/spec/imageRegistry",
                r#"{"registry": "registry.example.com:5000", "repository": "restored/app", "registryAuthSecret": {"name": "push"}}"#,
            ),
        ],
    ),
    bad(
        "Restore",
        &[
            ("/spec/actionFlags", r#"{"imageRestore": true}"#),
            (
                "/spec/imageRegistry",
                r#"{"registry": "https://registry.example.com", "repository": "r", "registryAuthSecret": {"name": "push"}}"#,
            ),
        ],
        "spec.imageRegistry.registry",
    ),
    bad(
        "Restore",
        &[
            ("/spec/actionFlags", r#"{"imageRestore": true}"#),
            (
                "/spec/imageRegistry",
                r#"{"registry": "r.io", "repository": "Upper/Case", "registryAuthSecret": {"name": "push"}}"#,
            ),
        ],
        "spec.imageRegistry.repository",
    ),
    bad(
        "Restore",
        &[
            ("/spec/actionFlags", r#"{"imageRestore": true}"#),
            (
                "/spec/imageRegistry",
                r#"{"registry": "r.io", "repository": "r"}"#,
            ),
        ],
        "spec.imageRegistry.registryAuthSecret",
    ),
    // Restore: transforms and RFC 6902 patches
    ok(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"custom": [{"transformName": "t", "resources": {"groupVersionKind": {"version": "v1", "kind": "Service"}}, "jsonPatches": [{"op": "add", "path": "/metadata/labels/a~1b", "value": "x"}, {"op": "move", "from": "/a", "path": "/b"}, {"op": "remove", "path": "/spec/clusterIP"}]}]}"#,
        )],
    ),
    bad(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"custom": [{"transformName": "t", "resources": {"groupVersionKind": {"kind": "Service"}}, "jsonPatches": [{"op": "merge", "path": "/a"}]}]}"#,
        )],
        "spec.transformComponents.custom[0].jsonPatches[0].op",
    ),
    bad(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"custom": [{"transformName": "t", "resources": {"groupVersionKind": {"kind": "Service"}}, "jsonPatches": [{"op": "add", "path": "spec/a", "value": 1}]}]}"#,
        )],
        "spec.transformComponents.custom[0].jsonPatches[0].path",
    ),
    bad(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"custom": [{"transformName": "t", "resources": {"groupVersionKind": {"kind": "Service"}}, "jsonPatches": [{"op": "add", "path": "/a~2"}]}]}"#,
        )],
        "spec.transformComponents.custom[0].jsonPatches[0].path",
    ),
    bad(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"custom": [{"transformName": "t", "resources": {"groupVersionKind": {"kind": "Service"}}, "jsonPatches": [{"op": "replace", "path": "/a"}]}]}"#,
        )],
        "spec.transformComponents.custom[0].jsonPatches[0].value",
    ),
    bad(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"custom": [{"transformName": "t", "resources": {"groupVersionKind": {"kind": "Service"}}, "jsonPatches": [{"op": "copy", "path": "/a"}]}]}"#,
        )],
        "spec.transformComponents.custom[0].jsonPatches[0].from",
    ),
    bad(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"custom": [{"transformName": "t", "resources": {"groupVersionKind": {"kind": "Service"}}, "jsonPatches": []}]}"#,
        )],
        "spec.transformComponents.custom[0].jsonPatches",
    ),
    bad(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"helm": [{"transformName": "t"}]}"#,
        )],
        "spec.transformComponents.helm[0].release",
    ),
    bad(
        "Restore",
        &[(
            "/spec/transformComponents",
            r#"{"helm": [{"transformName": "t", "release": "a"}, {"transformName": "t", "release": "b"}]}"#,
        )],
        "spec.transformComponents.helm[1].transformName",
    ),
    // ClusterRestore
    bad(
        "ClusterRestore",
        &[("/spec/source/type", r#""Backup""#)],
        "spec.source.type",
    ),
    bad(
        "ClusterRestore",
        &[("/spec/source/clusterBackup", "null")],
        "spec.source.clusterBackup",
    ),
    bad(
        "ClusterRestore",
        &[("/spec/components/0/backupNamespace", "null")],
        "spec.components[0].backupNamespace",
    ),
    bad(
        "ClusterRestore",
        &[(
            "/spec/components",
            r#"[{"backupNamespace": "a", "restoreNamespace": "x"}, {"backupNamespace": "b", "restoreNamespace": "x"}]"#,
        )],
        "spec.components[1].restoreNamespace",
    ),
    bad(
        "ClusterRestore",
        &[("/spec/actionFlags", r#"{"imageRestore": true}"#)],
        "spec.imageRegistry",
    ),
];

#[test]
fn every_base_object_is_valid() {
    for (kind, _, _) in tvk_api::validation::KINDS {
        let result = validate(kind, &base(kind));
        assert!(result.is_ok(), "{kind}: {result:?}");
    }
}

#[test]
fn rule_table() {
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let mut object = base(case.kind);
        for (pointer, value) in case.edits {
            object = edit(object, pointer, serde_json::from_str(value).unwrap());
        }
        let result = validate(case.kind, &object);
        match (case.error_at, &result) {
            (None, Ok(_)) => {}
            (Some(path), Err(errors)) if errors.iter().any(|e| e.path == path) => {
                for e in errors {
                    assert!(!e.message.is_empty() && !e.message.ends_with('.'), "{e}");
                }
            }
            _ => failures.push(format!(
                "case {i} {} {:?}: expected {:?}, got {result:?}",
                case.kind, case.edits, case.error_at
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn plain_http_and_unknown_fields_are_warnings() {
    let object = edit(
        edit(
            base("Target"),
            "/spec/objectStoreCredentials/url",
            json!("http://minio:9000"),
        ),
        "/spec/enableBrowsng",
        json!(true),
    );
    let warnings = validate("Target", &object).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("spec.objectStoreCredentials.url: plain http")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("spec.enableBrowsng: unknown field")),
        "{warnings:?}"
    );
}

#[test]
fn wrong_types_everywhere_are_field_errors_not_panics() {
    for (kind, _, _) in tvk_api::validation::KINDS {
        for garbage in [
            json!(null),
            json!(1),
            json!("x"),
            json!([1, 2]),
            json!({"a": {"b": []}}),
        ] {
            let mut object = base(kind);
            let spec_keys: Vec<String> = object["spec"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            for key in spec_keys {
                object["spec"][key.as_str()] = garbage.clone();
            }
            let _ = validate(kind, &object);
            let _ = validate(kind, &garbage);
            let registry = app_admission();
            let admission = registry.find("triliovault.trilio.io", kind).unwrap();
            let _ = admission.default_patch(&object);
        }
    }
}

fn update(kind: &str, old: &Value, new: &Value) -> Result<Vec<String>, Vec<FieldError>> {
    let registry = app_admission();
    registry
        .find("triliovault.trilio.io", kind)
        .unwrap()
        .validate(&Request {
            operation: Operation::Update,
            object: new,
            old_object: Some(old),
        })
}

#[test]
fn immutable_fields_on_update() {
    let target = base("Target");
    assert!(
        update(
            "Target",
            &target,
            &edit(target.clone(), "/spec/thresholdCapacity", json!("1Ti"))
        )
        .is_ok()
    );
    let errors = update(
        "Target",
        &target,
        &edit(target.clone(), "/spec/vendor", json!("MinIO")),
    )
    .unwrap_err();
    assert_eq!(errors[0].path, "spec.vendor");
    let plan = base("BackupPlan");
    assert!(
        update(
            "BackupPlan",
            &plan,
            &edit(
                plan.clone(),
                "/spec/backupConfig/maxIncrBackupsPerFullBackup",
                json!(3)
            )
        )
        .is_ok()
    );
    let errors = update(
        "BackupPlan",
        &plan,
        &edit(
            plan.clone(),
            "/spec/backupConfig/target/name",
            json!("other"),
        ),
    )
    .unwrap_err();
    assert_eq!(errors[0].path, "spec.backupConfig.target");
    for kind in ["Backup", "Restore", "ClusterBackup", "ClusterRestore"] {
        let object = base(kind);
        let relabelled = edit(object.clone(), "/metadata/labels", json!({"a": "b"}));
        assert!(
            update(kind, &object, &relabelled).is_ok(),
            "{kind}: metadata may change"
        );
        let changed = edit(
            object.clone(),
            "/spec/encryption",
            json!({"encryptionSecret": {"name": "k"}}),
        );
        let errors = update(kind, &object, &changed).unwrap_err();
        assert_eq!(errors[0].path, "spec", "{kind}");
        assert!(
            errors[0].message.contains("encryption"),
            "{kind}: {}",
            errors[0].message
        );
    }
}

#[test]
fn defaults_are_add_operations_and_idempotent() {
    let registry = app_admission();
    let cases = [
        ("Target", vec!["/spec/enableBrowsing"]),
        (
            "Hook",
            vec![
                "/spec/pre/maxRetryCount",
                "/spec/pre/timeoutSeconds",
                "/spec/pre/ignoreFailure",
                "/spec/post/maxRetryCount",
                "/spec/post/timeoutSeconds",
                "/spec/post/ignoreFailure",
            ],
        ),
        (
            "BackupPlan",
            vec![
                "/spec/hookConfig/mode",
                "/spec/hookConfig/podReadyWaitSeconds",
            ],
        ),
        ("Restore", vec!["/spec/resourcesReadyWaitSeconds"]),
        ("Policy", vec![]),
        ("Backup", vec![]),
    ];
    for (kind, expected) in cases {
        let admission = registry.find("triliovault.trilio.io", kind).unwrap();
        let object = base(kind);
        let patch = admission.default_patch(&object).unwrap();
        let paths: Vec<String> = patch
            .0
            .iter()
            .map(|op| match op {
                json_patch::PatchOperation::Add(add) => add.path.to_string(),
                other => panic!("{kind}: not an add operation: {other:?}"),
            })
            .collect();
        assert_eq!(paths, expected, "{kind}");
        let mut defaulted = object.clone();
        json_patch::patch(&mut defaulted, &patch).unwrap();
        assert!(
            admission.default_patch(&defaulted).unwrap().0.is_empty(),
            "{kind}"
        );
        assert!(validate(kind, &defaulted).is_ok(), "{kind}");
    }
    // A value the user set is never overwritten.
    let admission = registry.find("triliovault.trilio.io", "Restore").unwrap();
    let object = edit(base("Restore"), "/spec/resourcesReadyWaitSeconds", json!(0));
    assert!(admission.default_patch(&object).unwrap().0.is_empty());
}

#[test]
fn identify_names_kind_or_problem() {
    let (gvk, name, namespace) = identify(&base("Restore")).unwrap();
    assert_eq!(
        (gvk.kind.as_str(), gvk.api_version().as_str()),
        ("Restore", "triliovault.trilio.io/v1")
    );
    assert_eq!(
        (name.as_str(), namespace.as_deref()),
        ("example", Some("ns"))
    );
    let (gvk, _, _) =
        identify(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}))
            .unwrap();
    assert_eq!((gvk.group.as_str(), gvk.kind.as_str()), ("", "Secret"));
    let wrong_version = edit(
        base("Target"),
        "/apiVersion",
        json!("triliovault.trilio.io/v1alpha1"),
    );
    assert_eq!(identify(&wrong_version).unwrap_err().path, "apiVersion");
    let unknown_kind = edit(base("Target"), "/kind", json!("Tagret"));
    let error = identify(&unknown_kind).unwrap_err();
    assert_eq!(error.path, "kind");
    assert!(error.message.contains("Target"), "{error}");
    assert_eq!(
        identify(&json!({"kind": "Target"})).unwrap_err().path,
        "apiVersion"
    );
    assert_eq!(identify(&json!([1])).unwrap_err().path, "");
    let nameless = edit(base("Target"), "/metadata/name", Value::Null);
    assert_eq!(identify(&nameless).unwrap_err().path, "metadata.name");
}

#[test]
fn registry_serves_nine_kinds_with_plurals_and_scope() {
    let registry = app_admission();
    let served: Vec<(String, &str, bool)> = registry
        .iter()
        .map(|k: &dyn KindAdmission| (k.gvk().kind, k.plural(), k.namespaced()))
        .collect();
    let expected: Vec<(String, &str, bool)> = tvk_api::validation::KINDS
        .iter()
        .map(|(k, p, n)| (k.to_string(), *p, *n))
        .collect();
    assert_eq!(served, expected);
    let crd_plurals: Vec<String> = tvk_api::crd::all()
        .iter()
        .map(|c| c.spec.names.plural.clone())
        .collect();
    for (_, plural, _) in tvk_api::validation::KINDS {
        assert!(crd_plurals.contains(&plural.to_string()), "{plural}");
    }
}
