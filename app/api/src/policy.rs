//! `Policy`: retention, schedule, cleanup, timeout, security-scan and continuous-restore
//! policies that plans refer to.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{UnknownFields, preserve_unknown_object};

/// A reusable policy; `type` says which config it carries.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "Policy",
    plural = "policies",
    namespaced,
    status = "PolicyStatus",
    shortname = "pol",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Default", type_ = "string", json_path = ".spec.default"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Which kind of policy this is; must match the config present.
    #[serde(rename = "type")]
    pub type_: PolicyType,
    /// The default policy of its type for the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
    /// Retention config (type Retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_config: Option<RetentionConfig>,
    /// Cron schedules (type Schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_config: Option<ScheduleConfig>,
    /// Age-based cleanup (type Cleanup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_config: Option<CleanupConfig>,
    /// Timeout config (type Timeout); free-form in the original product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub timeout_config: Option<serde_json::Value>,
    /// Security scan config (type SecurityScan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_scan_config: Option<SecurityScanConfig>,
    /// Continuous restore config (type ContinuousRestore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous_restore_config: Option<ContinuousRestoreConfig>,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Kinds of policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum PolicyType {
    Timeout,
    Retention,
    Cleanup,
    Schedule,
    SecurityScan,
    ContinuousRestore,
}

impl PolicyType {
    /// Every type, in API order.
    pub const ALL: [PolicyType; 6] = [
        Self::Timeout,
        Self::Retention,
        Self::Cleanup,
        Self::Schedule,
        Self::SecurityScan,
        Self::ContinuousRestore,
    ];

    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "Timeout",
            Self::Retention => "Retention",
            Self::Cleanup => "Cleanup",
            Self::Schedule => "Schedule",
            Self::SecurityScan => "SecurityScan",
            Self::ContinuousRestore => "ContinuousRestore",
        }
    }

    /// The spec field holding this type's config.
    pub fn config_field(self) -> &'static str {
        match self {
            Self::Timeout => "timeoutConfig",
            Self::Retention => "retentionConfig",
            Self::Cleanup => "cleanupConfig",
            Self::Schedule => "scheduleConfig",
            Self::SecurityScan => "securityScanConfig",
            Self::ContinuousRestore => "continuousRestoreConfig",
        }
    }
}

/// How many backups to keep.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionConfig {
    /// Latest backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub latest: Option<i64>,
    /// Weekly backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub weekly: Option<i64>,
    /// Day whose backup counts as the weekly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_week: Option<DayOfWeek>,
    /// Monthly backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub monthly: Option<i64>,
    /// Date whose backup counts as the monthly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 28))]
    pub date_of_month: Option<i64>,
    /// Yearly backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub yearly: Option<i64>,
    /// Month whose backup counts as the yearly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month_of_year: Option<MonthOfYear>,
}

/// Day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum DayOfWeek {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// Month of the year.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(missing_docs)]
pub enum MonthOfYear {
    January,
    February,
    March,
    April,
    May,
    June,
    July,
    August,
    September,
    October,
    November,
    December,
}

/// Cron schedules.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ScheduleConfig {
    /// Standard 5-field cron expressions (minute hour day-of-month month day-of-week).
    pub schedule: Vec<String>,
}

/// Age-based cleanup of backups and restores.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupConfig {
    /// Delete backups and restores older than this many days.
    #[schemars(range(min = 0))]
    pub days: i64,
    /// Deprecated name of `days`, still accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backup_days: Option<i64>,
}

/// Periodic security scans of backups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecurityScanConfig {
    /// Cron schedules of the scans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub schedule: Option<Vec<String>>,
    /// Scan reports kept per backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retention: Option<i64>,
}

/// Continuous restore settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContinuousRestoreConfig {
    /// Consistent sets kept per backup.
    #[schemars(range(min = 1, max = 10))]
    pub consistent_sets: i64,
}

/// Observed state of a policy (the original product records none; kept free-form).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PolicyStatus {
    /// Whatever a controller recorded.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}
