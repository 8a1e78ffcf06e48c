//! Typed model of a Restore's `status.restoreApplication`: the restore plan and its results.
//!
//! `RestoreStatus.restore_application` stays a free-form `Value` in the CRD (no CRD
//! regeneration); the metaprocessor (`tvk-metamover restore-plan` / `restore`) and the restore
//! controller convert it through this model with [`RestorePlan::from_status_value`] and
//! [`RestorePlan::to_value`].
//!
//! Who writes what:
//! - `tvk-metamover restore-plan` (phase `Validation`) writes the plan: `source`, `objects[]`
//!   with an `action` each (in restore order, capped at [`MAX_PLANNED_OBJECTS`] entries with
//!   `objectsTruncated`), `counts`, `volumes[]`, `namespaces[]`, `blocking[]`, `warnings[]`;
//!   the controller fails Validation when `blocking` is non-empty;
//! - the controller creates one PVC per `volumes[]` entry from `pvcMetadata` (DataRestore);
//! - `tvk-metamover restore` (phase `MetadataRestore`) merges each object's `result`/`error`
//!   and the `created[]` list into the plan after every batch.
//!
//! Every struct keeps fields it does not model in `unknown`, so a read-modify-write never drops
//! what another version wrote.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::UnknownFields;

/// At most this many entries in `objects[]`; the rest are only counted.
pub const MAX_PLANNED_OBJECTS: usize = 1000;

/// `status.restoreApplication` of a Restore or ClusterRestore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    /// Where the backup comes from.
    #[serde(default)]
    pub source: PlanSource,
    /// Every object of the backup, in restore order, after namespace mapping and selection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<PlannedObject>,
    /// `objects` was cut at [`MAX_PLANNED_OBJECTS`]; `counts` still counts everything.
    #[serde(default, skip_serializing_if = "is_false")]
    pub objects_truncated: bool,
    /// Number of objects per action (complete even when `objects` is truncated).
    #[serde(default)]
    pub counts: ActionCounts,
    /// Volumes the DataRestore phase creates and hydrates (empty with `onlyMetadata`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<PlannedVolume>,
    /// Destination namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<PlannedNamespace>,
    /// Problems that forbid the restore, each saying what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocking: Vec<String>,
    /// Things the user should know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Objects the metadata restore created (what `cleanupOnFailure` deletes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<CreatedObject>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Kind of the backed-up source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// A namespaced Backup (restored by a Restore).
    #[default]
    Backup,
    /// A ClusterBackup (restored by a ClusterRestore).
    ClusterBackup,
}

/// `source` of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanSource {
    /// `<plan uid>/<backup uid>` on the target.
    #[serde(default)]
    pub location: String,
    /// Name of the backup the metadata was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// Namespace of that backup (Backups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_namespace: Option<String>,
    /// Backup or ClusterBackup.
    #[serde(default)]
    pub kind: SourceKind,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// What the restore does with one object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlanAction {
    /// Created in the destination.
    #[default]
    Create,
    /// Left alone (already there, or restored by another phase).
    Skip,
    /// The existing object is patched with the backed-up one.
    Patch,
    /// Not restored (selection, flags, or never restorable).
    Exclude,
}

/// What happened to one object during the metadata restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectResult {
    /// Created by this restore.
    Created,
    /// Left alone.
    Skipped,
    /// Existing object patched.
    Patched,
    /// Could not be restored; `error` says why.
    Failed,
}

/// One object of the backup and what the restore does with it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedObject {
    /// `apiVersion` of the object.
    pub api_version: String,
    /// `kind` of the object.
    pub kind: String,
    /// Destination namespace (namespaced objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Destination name.
    pub name: String,
    /// Namespace in the backup, when it differs from `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// What the restore does.
    #[serde(default)]
    pub action: PlanAction,
    /// Why (Skip, Patch, Exclude, or a Create with a caveat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Outcome, set by the metadata restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ObjectResult>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Number of objects per action.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ActionCounts {
    /// Objects to create.
    #[serde(default)]
    pub create: u64,
    /// Objects left alone.
    #[serde(default)]
    pub skip: u64,
    /// Existing objects to patch.
    #[serde(default)]
    pub patch: u64,
    /// Objects not restored.
    #[serde(default)]
    pub exclude: u64,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl ActionCounts {
    /// Counts one more object with `action`.
    pub fn add(&mut self, action: PlanAction) {
        match action {
            PlanAction::Create => self.create += 1,
            PlanAction::Skip => self.skip += 1,
            PlanAction::Patch => self.patch += 1,
            PlanAction::Exclude => self.exclude += 1,
        }
    }

    /// Objects counted, all actions.
    pub fn total(&self) -> u64 {
        self.create + self.skip + self.patch + self.exclude
    }
}

/// One volume to restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedVolume {
    /// Destination namespace.
    pub namespace: String,
    /// Destination PVC name.
    pub pvc_name: String,
    /// Namespace of the PVC in the backup.
    pub source_namespace: String,
    /// Name of the PVC in the backup.
    pub source_pvc_name: String,
    /// `<plan uid>/<backup uid>/<pvc uid>`: the datamover's volume path on the target.
    pub location: String,
    /// Size of the volume, a quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<IntOrString>,
    /// `Block` or `Filesystem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// Access modes of the PVC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// Storage class, after `restoreStorageClass` mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The PVC object to create, as a JSON string (cleaned: no volumeName, no dataSource, no
    /// status; destination namespace and restore labels set).
    pub pvc_metadata: String,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One destination namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNamespace {
    /// Name.
    pub name: String,
    /// It exists already (a ClusterRestore creates the missing ones).
    #[serde(default)]
    pub exists: bool,
}

/// An object the metadata restore created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct CreatedObject {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace (namespaced objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RestorePlan {
    /// Reads `status.restoreApplication` (absent or `null` → `None`).
    pub fn from_status_value(value: Option<&Value>) -> Result<Option<Self>, serde_json::Error> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Self::deserialize(v).map(Some),
        }
    }

    /// The JSON value to store in `status.restoreApplication`.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    /// Sets `objects` from the full ordered list: counts every object, keeps the first
    /// [`MAX_PLANNED_OBJECTS`] and marks the list truncated when there were more.
    pub fn set_objects(&mut self, objects: Vec<PlannedObject>) {
        let mut counts = ActionCounts::default();
        for o in &objects {
            counts.add(o.action);
        }
        self.counts = counts;
        self.objects_truncated = objects.len() > MAX_PLANNED_OBJECTS;
        self.objects = objects;
        self.objects.truncate(MAX_PLANNED_OBJECTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_plan() -> Value {
        json!({
            "source": {"location": "p-uid/b-uid", "backupName": "b1", "backupNamespace": "app",
                       "kind": "Backup"},
            "objects": [
                {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "name": "widgets.example.com", "action": "Skip", "reason": "identical CRD exists"},
                {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "dest", "name": "settings",
                 "sourceNamespace": "app", "action": "Create", "result": "Created"},
                {"apiVersion": "v1", "kind": "Pod", "namespace": "dest", "name": "web-1",
                 "action": "Exclude", "reason": "owned by ReplicaSet web", "result": "Skipped"},
                {"apiVersion": "v1", "kind": "Secret", "namespace": "dest", "name": "s",
                 "action": "Patch", "result": "Failed", "error": "forbidden"}
            ],
            "counts": {"create": 1, "skip": 1, "patch": 1, "exclude": 1},
            "volumes": [{"namespace": "dest", "pvcName": "data", "sourceNamespace": "app",
                         "sourcePvcName": "data", "location": "p-uid/b-uid/pvc-uid",
                         "size": "1Gi", "volumeMode": "Filesystem",
                         "accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                         "pvcMetadata": "{\"kind\":\"PersistentVolumeClaim\"}"}],
            "namespaces": [{"name": "dest", "exists": true}],
            "blocking": ["ConfigMap dest/x already exists; set restoreFlags.skipIfAlreadyExists"],
            "warnings": ["w"],
            "created": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "dest",
                         "name": "settings"}],
            "futureField": {"a": 1}
        })
    }

    #[test]
    fn plan_round_trips_through_the_status_value() {
        let original = full_plan();
        let plan = RestorePlan::from_status_value(Some(&original))
            .unwrap()
            .unwrap();
        assert_eq!(plan.source.kind, SourceKind::Backup);
        assert_eq!(plan.objects.len(), 4);
        assert_eq!(plan.objects[0].namespace, None);
        assert_eq!(plan.objects[1].result, Some(ObjectResult::Created));
        assert_eq!(plan.objects[3].action, PlanAction::Patch);
        assert_eq!(
            plan.volumes[0].size,
            Some(IntOrString::String("1Gi".into()))
        );
        assert_eq!(plan.counts.total(), 4);
        assert!(plan.unknown.contains_key("futureField"));
        assert_eq!(plan.to_value().unwrap(), original);
    }

    #[test]
    fn absent_or_null_plan_is_none() {
        assert_eq!(RestorePlan::from_status_value(None).unwrap(), None);
        assert_eq!(
            RestorePlan::from_status_value(Some(&Value::Null)).unwrap(),
            None
        );
    }

    #[test]
    fn unknown_action_is_an_error() {
        let mut v = full_plan();
        v["objects"][0]["action"] = json!("Delete");
        assert!(RestorePlan::from_status_value(Some(&v)).is_err());
    }

    #[test]
    fn long_object_lists_are_truncated_but_fully_counted() {
        let objects: Vec<PlannedObject> = (0..MAX_PLANNED_OBJECTS + 5)
            .map(|i| PlannedObject {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: format!("cm-{i}"),
                action: if i % 2 == 0 {
                    PlanAction::Create
                } else {
                    PlanAction::Skip
                },
                ..Default::default()
            })
            .collect();
        let mut plan = RestorePlan::default();
        plan.set_objects(objects);
        assert!(plan.objects_truncated);
        assert_eq!(plan.objects.len(), MAX_PLANNED_OBJECTS);
        assert_eq!(plan.counts.create, 503);
        assert_eq!(plan.counts.skip, 502);
        let v = plan.to_value().unwrap();
        assert_eq!(v["objectsTruncated"], true);

        let mut small = RestorePlan::default();
        small.set_objects(vec![PlannedObject::default()]);
        assert!(!small.objects_truncated);
        assert!(small.to_value().unwrap().get("objectsTruncated").is_none());
    }
}
