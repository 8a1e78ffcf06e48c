//! `Target`: where backups are stored, an S3-compatible bucket or an NFS share.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ObjectReference, PhaseCondition, UnknownFields, quantity};

/// A backup storage location.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "Target",
    namespaced,
    status = "TargetStatus",
    shortname = "tgt",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Threshold Capacity",
        type_ = "string",
        json_path = ".spec.thresholdCapacity"
    ),
    printcolumn(name = "Vendor", type_ = "string", json_path = ".spec.vendor"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Browsing Enabled",
        type_ = "string",
        json_path = ".status.browsingEnabled"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// ObjectStore or NFS.
    #[serde(rename = "type")]
    pub type_: TargetType,
    /// Who hosts the storage (spellings as in the original product, `Wassabi` included).
    pub vendor: Vendor,
    /// Bucket and credentials; required for ObjectStore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store_credentials: Option<ObjectStoreCredentials>,
    /// Export and mount options; required for NFS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_credentials: Option<NfsCredentials>,
    /// Most data the target may hold (a quantity such as `100Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub threshold_capacity: Option<IntOrString>,
    /// Whether the target browser is enabled; defaulted to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_browsing: Option<bool>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Kind of storage.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TargetType {
    /// S3-compatible object storage.
    ObjectStore,
    /// An NFS export.
    #[serde(rename = "NFS")]
    Nfs,
}

/// Storage vendor.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum Vendor {
    #[serde(rename = "AWS")]
    Aws,
    RedhatCeph,
    Ceph,
    #[serde(rename = "IBMCleversafe")]
    IbmCleversafe,
    Cloudian,
    Scality,
    NetApp,
    Cohesity,
    SwiftStack,
    Wasabi,
    // The original product's misspelling, still accepted.
    Wassabi,
    #[serde(rename = "MinIO")]
    MinIo,
    #[serde(rename = "DellEMC")]
    DellEmc,
    Azure,
    DigitalOcean,
    #[serde(rename = "OVH")]
    Ovh,
    Other,
}

/// S3-compatible bucket settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreCredentials {
    /// The bucket.
    pub bucket_name: String,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL; AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Secret with keys `accessKey` and `secretKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_secret: Option<ObjectReference>,
    /// Skip TLS certificate verification (self-signed endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_cert_verification: Option<bool>,
    /// CA certificate of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_cert_config: Option<SslCertConfig>,
    /// The bucket has S3 object lock (immutable backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_locking_enabled: Option<bool>,
    /// Deduplicate data across backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_dedup: Option<bool>,
}

/// Where the endpoint's CA certificate is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SslCertConfig {
    /// ConfigMap holding the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_config_map: Option<ObjectReference>,
    /// Key of the certificate in the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_key: Option<String>,
}

/// NFS share settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NfsCredentials {
    /// `server:/path`.
    pub nfs_export: String,
    /// Mount options (`nfsvers=4,hard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_options: Option<String>,
}

/// Availability of a target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum TargetState {
    InProgress,
    Available,
    Unavailable,
}

/// Phases of target validation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum TargetPhase {
    Validation,
    TargetBrowsing,
    EventTarget,
}

/// Status of a target phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum TargetPhaseStatus {
    InProgress,
    Error,
    Completed,
    Failed,
}

/// Observed state of a target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// Available once a probe object was written, read and deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TargetState>,
    /// Per-phase history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Vec<PhaseCondition<TargetPhase, TargetPhaseStatus>>>,
    /// Target browser running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browsing_enabled: Option<bool>,
    /// Event target running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_target_enabled: Option<bool>,
    /// Retention (days) enforced by an object-locked bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_retention_period: Option<i64>,
    /// PersistentVolume of the NFS share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_persistent_volume: Option<ObjectReference>,
    /// PersistentVolumeClaim bound to the NFS share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_persistent_volume_claim: Option<ObjectReference>,
    /// Capacity figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<TargetStats>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Capacity figures of a target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStats {
    /// Capacity available to applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub application_capacity: Option<IntOrString>,
    /// Capacity consumed by applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub application_capacity_consumed: Option<IntOrString>,
    /// Bytes occupied by backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    pub capacity_occupied: Option<IntOrString>,
    /// Number of plans using the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_backup_plans: Option<i64>,
}
