//! Post-restore hooks (phases HookTargetIdentification and Unquiesce of a restore): after the
//! metaprocessor recreated the application, the `post` steps of the restore's `hookConfig`
//! (a ClusterRestore: of each component's, in its destination namespace) run in the restored
//! pods through the API, with the same machinery as the backup's hooks ([`crate::hooks`]).
//!
//! HookTargetIdentification waits up to `podReadyWaitSeconds` (default 120) for the selected
//! pods: restored workloads start their pods only now, so while a hook matches no pod yet or a
//! selected pod is still `Pending`, the phase polls; when the wait is over the hooks run where
//! pods are running, and a hook that still matches nothing is a warning (as for backups).
//! Unquiesce identifies the pods again and runs the post steps — `Sequential` in plan order,
//! `Parallel` at most [`crate::hooks::MAX_PARALLEL_EXECS`] at a time; every failure is in the
//! reason (hook, pod, container, attempts and why), which fails the restore.

use tvk_api::{
    common::HookConfig,
    restore::{RestorePhase, RestorePhaseStatus},
};

use super::Progress;
use crate::{
    context::Context,
    error::Result,
    hooks::{self, HookReport, HookTargets},
};

/// Default of `hookConfig.podReadyWaitSeconds`.
pub const DEFAULT_POD_READY_WAIT_SECONDS: i64 = 120;

/// One `hookConfig` and the namespace its pods are in.
#[derive(Debug, Clone, PartialEq)]
pub struct HookSite {
    /// Destination namespace (where the restored pods run).
    pub namespace: String,
    /// Where Hook references without a namespace are looked up.
    pub hooks_namespace: String,
    /// The configuration (at least one hook).
    pub config: HookConfig,
    /// How messages name it (`Restore ns/name`, `ClusterRestore name components[1]`).
    pub owner: String,
}

impl HookSite {
    /// `podReadyWaitSeconds`, defaulted and clamped to the API's 1..600.
    pub fn pod_ready_wait_seconds(&self) -> i64 {
        self.config
            .pod_ready_wait_seconds
            .unwrap_or(DEFAULT_POD_READY_WAIT_SECONDS)
            .clamp(1, 600)
    }
}

/// The HookTargetIdentification reason while it waits (constant, so the condition's timestamp
/// marks the start of the wait).
pub fn waiting_reason(sites: &[HookSite]) -> String {
    let wait = sites
        .iter()
        .map(HookSite::pod_ready_wait_seconds)
        .max()
        .unwrap_or(DEFAULT_POD_READY_WAIT_SECONDS);
    let namespaces: Vec<&str> = sites.iter().map(|s| s.namespace.as_str()).collect();
    format!(
        "waiting up to {wait}s (podReadyWaitSeconds) for the pods the post-restore hooks select in {}",
        namespaces.join(", ")
    )
}

/// What identification found.
#[derive(Debug)]
pub enum Identified {
    /// Pods are still missing or Pending and the wait is not over.
    Waiting,
    /// The targets of every site.
    Ready(Vec<HookTargets>),
    /// A Hook or selector the user must fix.
    Failed(String),
}

/// Seconds since the HookTargetIdentification phase began (0 when unknown).
fn waited_seconds(progress: &Progress) -> i64 {
    let began = progress
        .status
        .condition
        .iter()
        .flatten()
        .find(|c| {
            c.phase == Some(RestorePhase::HookTargetIdentification)
                && c.status == Some(RestorePhaseStatus::InProgress)
        })
        .and_then(|c| c.timestamp.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match (began, progress.now.parse::<jiff::Timestamp>()) {
        (Some(a), Ok(b)) => b.duration_since(a).as_secs(),
        _ => 0,
    }
}

/// Identifies the hooks' pods of every site, waiting for missing or Pending pods while the
/// site's `podReadyWaitSeconds` since the phase began has not passed.
pub async fn identify(
    ctx: &Context,
    sites: &[HookSite],
    progress: &Progress,
) -> Result<Identified> {
    let waited = waited_seconds(progress);
    let mut all = Vec::new();
    let mut waiting = false;
    for site in sites {
        let targets = match identify_site(ctx, site).await? {
            Ok(t) => t,
            Err(reason) => return Ok(Identified::Failed(reason)),
        };
        let incomplete =
            !targets.pending_pods().is_empty() || targets.hooks.iter().any(|h| h.pods.is_empty());
        if incomplete && waited < site.pod_ready_wait_seconds() {
            waiting = true;
        }
        all.push(targets);
    }
    Ok(if waiting {
        Identified::Waiting
    } else {
        Identified::Ready(all)
    })
}

async fn identify_site(
    ctx: &Context,
    site: &HookSite,
) -> Result<std::result::Result<HookTargets, String>> {
    hooks::identify_config(
        ctx,
        &site.namespace,
        &site.hooks_namespace,
        Some(&site.config),
        &site.owner,
    )
    .await
}

/// The HookTargetIdentification reason once done (pure).
pub fn identified_summary(targets: &[HookTargets], warnings: usize) -> String {
    let hooks: usize = targets.iter().map(|t| t.hooks.len()).sum();
    let pods: std::collections::BTreeSet<(&str, &str)> = targets
        .iter()
        .flat_map(|t| {
            t.hooks.iter().flat_map(|h| {
                h.pods
                    .iter()
                    .map(|p| (t.namespace.as_str(), p.name.as_str()))
            })
        })
        .collect();
    let mut out = format!(
        "{hooks} post-restore hook(s) apply to {} pod(s)",
        pods.len()
    );
    if warnings > 0 {
        out.push_str(&format!(
            "; {warnings} warning(s) (hooks matching no running pod or skipped pods, see the Events)"
        ));
    }
    out
}

/// Runs the post steps of every site in the pods identified now. `Ok(Err)` lists every failed
/// step (hook, pod, container, why) after all ran.
pub async fn run(
    ctx: &Context,
    sites: &[HookSite],
) -> Result<std::result::Result<HookReport, String>> {
    let mut report = HookReport::default();
    let mut failures = Vec::new();
    for site in sites {
        let targets = match identify_site(ctx, site).await? {
            Ok(t) => t,
            Err(reason) => return Ok(Err(reason)),
        };
        match post_steps_off_thread(ctx, in_reverse(targets)).await? {
            Ok(r) => report.executions.extend(r.executions),
            Err(reason) => failures.push(format!("{}: {reason}", site.owner)),
        }
    }
    Ok(if failures.is_empty() {
        Ok(report)
    } else {
        Err(failures.join("; "))
    })
}

/// The targets in reverse order (hooks, their pods, their containers): `hooks::unquiesce`
/// unwinds a backup's quiesce by running `Sequential` post steps in reverse order, and a
/// restore's post hooks must run in plan order (pure).
pub fn in_reverse(mut targets: HookTargets) -> HookTargets {
    targets.hooks.reverse();
    for run in &mut targets.hooks {
        run.pods.reverse();
        for pod in &mut run.pods {
            pod.containers.reverse();
        }
    }
    targets
}

/// Runs `hooks::unquiesce` on a blocking thread: the exec futures are not provably `Send` for
/// the controller's generic bound (as in the backup controller).
async fn post_steps_off_thread(
    ctx: &Context,
    targets: HookTargets,
) -> Result<std::result::Result<HookReport, String>> {
    hooks::off_thread(ctx, move |ctx| async move {
        hooks::unquiesce(&ctx, &targets).await
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::hooks::{HookRun, HookStep, PodTarget};

    fn run(hook: &str, pods: &[(&str, &[&str])]) -> HookRun {
        HookRun {
            hook: hook.into(),
            pre: None,
            post: HookStep {
                command: vec!["true".into()],
                ignore_failure: false,
                max_retry_count: 0,
                timeout_seconds: 30,
            },
            pods: pods
                .iter()
                .map(|(name, containers)| PodTarget {
                    name: (*name).into(),
                    uid: format!("uid-{name}"),
                    containers: containers.iter().map(|c| (*c).to_string()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn reversing_twice_gives_back_the_plan_order() {
        let targets = HookTargets {
            namespace: "dest".into(),
            hooks: vec![
                run("a", &[("p1", &["c1", "c2"]), ("p2", &["c1"])]),
                run("b", &[("p3", &["x"])]),
            ],
            ..HookTargets::default()
        };
        let reversed = in_reverse(targets.clone());
        assert_eq!(reversed.hooks[0].hook, "b");
        assert_eq!(reversed.hooks[1].pods[0].name, "p2");
        assert_eq!(reversed.hooks[1].pods[1].containers, vec!["c2", "c1"]);
        assert_eq!(in_reverse(reversed), targets);
    }

    #[test]
    fn the_wait_is_defaulted_and_clamped() {
        let site = |wait: Option<i64>| HookSite {
            namespace: "dest".into(),
            hooks_namespace: "dest".into(),
            config: HookConfig {
                pod_ready_wait_seconds: wait,
                ..HookConfig::default()
            },
            owner: "Restore dest/r".into(),
        };
        assert_eq!(site(None).pod_ready_wait_seconds(), 120);
        assert_eq!(site(Some(0)).pod_ready_wait_seconds(), 1);
        assert_eq!(site(Some(5000)).pod_ready_wait_seconds(), 600);
        assert!(waiting_reason(&[site(Some(30)), site(Some(45))]).contains("up to 45s"));
    }
}
