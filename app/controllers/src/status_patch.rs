//! Status writes and the conventions every controller shares: server-side apply of `/status`
//! with one field manager per controller (`force`), written only when something changed, and
//! phase-condition timestamps that move only when a condition's status flips.

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tvk_api::common::PhaseCondition;

use crate::error::{Error, Result};

/// Applies `status` to `obj`'s status subresource as `field_manager`.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    field_manager: &str,
    status: &S,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let name = obj.name_any();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube(format!("write the status of {} {name}", K::kind(&())), e))?;
    Ok(())
}

/// Now, RFC 3339 with second precision (what T4K writes).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

/// Sets the condition of `phase` in `conditions` (one entry per phase). The timestamp moves
/// only when the status or reason changes; returns whether anything changed.
pub fn set_condition<P: PartialEq + Copy, S: PartialEq + Copy>(
    conditions: &mut Vec<PhaseCondition<P, S>>,
    phase: P,
    status: S,
    reason: &str,
    now: &str,
) -> bool {
    if let Some(existing) = conditions.iter_mut().find(|c| c.phase == Some(phase)) {
        if existing.status == Some(status) && existing.reason.as_deref() == Some(reason) {
            return false;
        }
        existing.status = Some(status);
        existing.reason = Some(reason.to_string());
        existing.timestamp = Some(now.to_string());
        return true;
    }
    conditions.push(PhaseCondition {
        phase: Some(phase),
        status: Some(status),
        reason: Some(reason.to_string()),
        timestamp: Some(now.to_string()),
    });
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use tvk_api::target::{TargetPhase, TargetPhaseStatus};

    use super::*;

    #[test]
    fn timestamps_move_only_on_a_flip() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            TargetPhase::Validation,
            TargetPhaseStatus::Completed,
            "ok",
            "t1"
        ));
        assert!(!set_condition(
            &mut c,
            TargetPhase::Validation,
            TargetPhaseStatus::Completed,
            "ok",
            "t2"
        ));
        assert_eq!(c[0].timestamp.as_deref(), Some("t1"));
        assert!(set_condition(
            &mut c,
            TargetPhase::Validation,
            TargetPhaseStatus::Failed,
            "bad",
            "t3"
        ));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].timestamp.as_deref(), Some("t3"));
    }
}
