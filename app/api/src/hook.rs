//! `Hook`: commands run in application pods to quiesce them before a backup and unquiesce
//! them after (or after a restore).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::UnknownFields;

/// Commands run before and after a backup in the pods a plan's `hookConfig` selects.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "triliovault.trilio.io",
    version = "v1",
    kind = "Hook",
    namespaced,
    status = "HookStatus",
    shortname = "hk",
    printcolumn(
        name = "Pre Command",
        type_ = "string",
        json_path = ".spec.pre.execAction.command",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HookSpec {
    /// Runs to quiesce the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<HookAction>,
    /// Runs to unquiesce it; required.
    pub post: HookAction,
    /// Fields of other product versions, kept.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// One hook step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookAction {
    /// The command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_action: Option<ExecAction>,
    /// Carry on when the command fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_failure: Option<bool>,
    /// Retries after a failure; defaulted to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retry_count: Option<i64>,
    /// Hard timeout of each attempt; defaulted to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i64>,
}

/// A command executed in a container (not through a shell unless it names one).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ExecAction {
    /// Program and arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

/// Observed state of a hook (none recorded; kept free-form).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HookStatus {
    /// Whatever a controller recorded.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}
