//! Pre/post hooks of a backup (phases HookTargetIdentification, Quiesce and Unquiesce): the
//! commands of the plan's `Hook`s, exec'd through the API (`pods/exec`, WebSocket) in the
//! application's pods, never in a Job.
//!
//! [`identify`] turns the plan's `hookConfig` and the cluster into [`HookTargets`]: for each
//! hook, in plan order, the Running pods its `podSelector` picks (any of the label selectors,
//! or the name regex) and their containers that `containerRegex` matches, together with the
//! hook's commands as read now. It is pure given the cluster state: same pods and Hooks, same
//! result (pods by name, containers in spec order), so a caller may either keep the targets
//! (they serialize to a few hundred bytes per pod) or call it again after a restart. Keeping
//! them is the safer choice for unquiesce: it runs the exact post commands for the exact pods
//! that were quiesced even if a Hook or a pod label changed in between.
//!
//! [`quiesce`] runs the pre steps, [`unquiesce`] the post steps. Each step is one exec per
//! (pod, container), with `1 + maxRetryCount` attempts (exponential backoff between them),
//! each attempt bounded by `timeoutSeconds` (the exec connection is dropped when it expires),
//! and `ignoreFailure` turning a failure into a warning in the [`HookReport`]. `Sequential`
//! runs the steps one at a time in plan order (post steps in reverse order, unwinding);
//! `Parallel` runs them all at once, at most [`MAX_PARALLEL_EXECS`] at a time. The exit status
//! is the `Status` the apiserver sends on the exec's status channel; a failure's reason names
//! the hook, pod, container and attempts, with the tail of the command's stderr.
//!
//! Outer `Err` is an API error before anything ran (retry the phase); inner `Err(reason)` is a
//! hook failure, terminal for the backup. Exec transport failures after the request was sent
//! count as failed attempts, never as an outer error: retrying a whole phase would run pre
//! commands twice in pods already quiesced.

use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{AttachParams, ListParams},
    core::{Selector, SelectorExt},
};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tvk_api::{
    backup_plan::BackupPlan,
    common::{HookConfig, HookMode, HookTarget},
    hook::{Hook, HookAction},
};

use crate::{
    context::Context,
    error::{Error, Result},
};

/// Runs `work` (hook execs: [`quiesce`], [`unquiesce`]) on a blocking thread that drives it
/// with the runtime's handle: the exec futures are not provably `Send` for the controllers'
/// generic bounds. One helper for the backup and the restore phase machines.
pub async fn off_thread<T, F, Fut>(ctx: &Context, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(std::sync::Arc<Context>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let ctx = std::sync::Arc::new(ctx.clone());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(work(ctx)))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// At most this many execs run at once in `Parallel` mode.
pub const MAX_PARALLEL_EXECS: usize = 8;
/// Bytes of a command's stderr (or stdout, when stderr is empty) kept for a failure's reason.
const OUTPUT_TAIL: usize = 512;
/// Attempts to open an exec connection that failed before the command could start (the
/// apiserver answered 429/5xx or could not be reached); they do not count as hook attempts.
const CONNECT_ATTEMPTS: u32 = 3;
/// Default `timeoutSeconds` of a step (the webhook defaults it too).
const DEFAULT_TIMEOUT_SECONDS: i64 = 30;

/// What [`identify`] found: the hooks of a plan, resolved against the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HookTargets {
    /// Namespace of the pods.
    pub namespace: String,
    /// `hookConfig.mode`; Sequential when unset.
    pub mode: Option<HookMode>,
    /// One entry per `hookConfig.hooks[]` item, in plan order.
    pub hooks: Vec<HookRun>,
    /// Pods or containers a selector matched that cannot run a hook now (not Running,
    /// terminating, container not running): no step runs there.
    pub skipped: Vec<SkippedTarget>,
}

/// One hook of the plan and where it runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HookRun {
    /// `namespace/name` of the Hook.
    pub hook: String,
    /// The pre (quiesce) step; None when the Hook has none.
    pub pre: Option<HookStep>,
    /// The post (unquiesce) step.
    pub post: HookStep,
    /// The pods, by name, with the containers to exec in.
    pub pods: Vec<PodTarget>,
}

/// One pod a hook runs in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodTarget {
    /// Pod name.
    pub name: String,
    /// Pod uid when it was identified (a pod recreated under the same name has another).
    pub uid: String,
    /// Containers, in the pod spec's order.
    pub containers: Vec<String>,
}

/// A Hook's pre or post step with its defaults applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HookStep {
    /// Program and arguments (no shell unless they name one).
    pub command: Vec<String>,
    /// A failure is a warning, not a failure of the backup.
    pub ignore_failure: bool,
    /// Retries after a failed attempt (0..=10).
    pub max_retry_count: u32,
    /// Bound of each attempt (1..=300 s).
    pub timeout_seconds: u64,
}

/// A pod or container that matched a selector but runs no step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SkippedTarget {
    /// `namespace/name` of the Hook.
    pub hook: String,
    /// Pod name.
    pub pod: String,
    /// The container, when only one container of the pod is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Why, e.g. "pod phase is Pending".
    pub reason: String,
}

/// Pre (quiesce) or post (unquiesce).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookStage {
    /// Quiesce.
    Pre,
    /// Unquiesce.
    Post,
}

/// How one step ended in one container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum StepResult {
    /// The command exited 0.
    Succeeded,
    /// It failed after its attempts, and the Hook says to ignore failures.
    FailureIgnored {
        /// Why.
        reason: String,
    },
    /// It failed after its attempts.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One step run in one container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StepExecution {
    /// `namespace/name` of the Hook.
    pub hook: String,
    /// Pre or post.
    pub stage: HookStage,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Attempts made.
    pub attempts: u32,
    /// The outcome.
    #[serde(flatten)]
    pub result: StepResult,
}

/// What [`quiesce`] or [`unquiesce`] ran, in the order the steps finished.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HookReport {
    /// Every step run.
    pub executions: Vec<StepExecution>,
}

impl HookReport {
    /// Failures that were ignored (`ignoreFailure`), as messages for a warning Event.
    pub fn warnings(&self) -> Vec<String> {
        self.executions
            .iter()
            .filter_map(|e| match &e.result {
                StepResult::FailureIgnored { reason } => {
                    Some(format!("{reason} (ignored: the Hook sets ignoreFailure)"))
                }
                _ => None,
            })
            .collect()
    }
}

impl HookTargets {
    /// True when no step would run anywhere.
    pub fn is_empty(&self) -> bool {
        self.hooks.iter().all(|h| h.pods.is_empty())
    }

    /// Messages about hooks that run nowhere and targets that were skipped, for a warning
    /// Event (a hook that matches no running pod does not fail a backup).
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .hooks
            .iter()
            .filter(|h| h.pods.is_empty())
            .map(|h| {
                format!(
                    "Hook {} matches no running pod in namespace {}: it does not run",
                    h.hook, self.namespace
                )
            })
            .collect();
        out.extend(self.skipped.iter().map(|s| match &s.container {
            Some(c) => format!(
                "Hook {} skips container {c} of pod {}: {}",
                s.hook, s.pod, s.reason
            ),
            None => format!("Hook {} skips pod {}: {}", s.hook, s.pod, s.reason),
        }));
        out
    }

    /// Pods skipped only because they are not Running yet (phase Pending): a caller honouring
    /// `hookConfig.podReadyWaitSeconds` calls [`identify`] again until this is empty or the
    /// wait is over.
    pub fn pending_pods(&self) -> Vec<String> {
        let mut pods: Vec<String> = self
            .skipped
            .iter()
            .filter(|s| s.container.is_none() && s.reason == PENDING_REASON)
            .map(|s| s.pod.clone())
            .collect();
        pods.sort();
        pods.dedup();
        pods
    }
}

const PENDING_REASON: &str = "pod phase is Pending";

/// Pods/containers each hook of the plan applies to (HookTargetIdentification).
///
/// Inner `Err` names what the user must fix: a Hook that does not exist, a step without a
/// command, an invalid selector or regex.
pub async fn identify(
    ctx: &Context,
    backup_ns: &str,
    plan: &BackupPlan,
) -> Result<std::result::Result<HookTargets, String>> {
    let plan_ns = plan.namespace().unwrap_or_else(|| backup_ns.to_string());
    let owner = format!("BackupPlan {plan_ns}/{}", plan.name_any());
    identify_config(
        ctx,
        backup_ns,
        &plan_ns,
        plan.spec.hook_config.as_ref(),
        &owner,
    )
    .await
}

/// [`identify`] for any `hookConfig` (a ClusterBackupPlan component's, a restore's): pods of
/// `backup_ns`, Hook references without a namespace looked up in `hooks_ns`, `owner` naming
/// the configuration in messages (e.g. "ClusterBackupPlan all components[2]").
pub async fn identify_config(
    ctx: &Context,
    backup_ns: &str,
    hooks_ns: &str,
    config: Option<&HookConfig>,
    owner: &str,
) -> Result<std::result::Result<HookTargets, String>> {
    let Some(config) = config else {
        return Ok(Ok(HookTargets {
            namespace: backup_ns.to_string(),
            ..HookTargets::default()
        }));
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), backup_ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("list the pods of namespace {backup_ns}"), e))?;
    let mut pods = pods.items;
    pods.sort_by_key(ResourceExt::name_any);

    let mut targets = HookTargets {
        namespace: backup_ns.to_string(),
        mode: config.mode,
        ..HookTargets::default()
    };
    for (index, item) in config.hooks.iter().enumerate() {
        let at = format!("{owner} hookConfig.hooks[{index}]");
        let Some(name) = item.hook.name.as_deref().filter(|n| !n.is_empty()) else {
            return Ok(Err(format!("{at}.hook has no name: name the Hook to run")));
        };
        let hook_ns = item
            .hook
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(hooks_ns);
        let hook_key = format!("{hook_ns}/{name}");
        let hook = Api::<Hook>::namespaced(ctx.client.clone(), hook_ns)
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("get Hook {hook_key}"), e))?;
        let Some(hook) = hook else {
            return Ok(Err(format!(
                "{at} names Hook {hook_key}, which does not exist: create it or remove it from the plan"
            )));
        };
        let pre = match hook.spec.pre.as_ref() {
            Some(action) => match step(action, &hook_key, "pre") {
                Ok(s) => Some(s),
                Err(reason) => return Ok(Err(reason)),
            },
            None => None,
        };
        let post = match step(&hook.spec.post, &hook_key, "post") {
            Ok(s) => s,
            Err(reason) => return Ok(Err(reason)),
        };
        let selection = match PodSelection::compile(item, &at) {
            Ok(s) => s,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut run = HookRun {
            hook: hook_key.clone(),
            pre,
            post,
            pods: Vec::new(),
        };
        for pod in pods.iter().filter(|p| selection.selects(p)) {
            match selection.containers(pod) {
                Ok((containers, skipped)) => {
                    targets
                        .skipped
                        .extend(
                            skipped
                                .into_iter()
                                .map(|(container, reason)| SkippedTarget {
                                    hook: hook_key.clone(),
                                    pod: pod.name_any(),
                                    container: Some(container),
                                    reason,
                                }),
                        );
                    if !containers.is_empty() {
                        run.pods.push(PodTarget {
                            name: pod.name_any(),
                            uid: pod.uid().unwrap_or_default(),
                            containers,
                        });
                    }
                }
                Err(reason) => targets.skipped.push(SkippedTarget {
                    hook: hook_key.clone(),
                    pod: pod.name_any(),
                    container: None,
                    reason,
                }),
            }
        }
        targets.hooks.push(run);
    }
    Ok(Ok(targets))
}

/// A step of a Hook with defaults and bounds applied.
fn step(action: &HookAction, hook: &str, which: &str) -> std::result::Result<HookStep, String> {
    let command = action
        .exec_action
        .as_ref()
        .and_then(|e| e.command.clone())
        .unwrap_or_default();
    if command.is_empty() || command[0].is_empty() {
        return Err(format!(
            "Hook {hook} has no {which}.execAction.command: give the program and its arguments"
        ));
    }
    Ok(HookStep {
        command,
        ignore_failure: action.ignore_failure.unwrap_or(false),
        max_retry_count: u32::try_from(action.max_retry_count.unwrap_or(0).clamp(0, 10))
            .unwrap_or(0),
        timeout_seconds: u64::try_from(
            action
                .timeout_seconds
                .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
                .clamp(1, 300),
        )
        .unwrap_or(30),
    })
}

fn compile_regex(pattern: &str, at: &str) -> std::result::Result<Regex, String> {
    // The same bound the admission webhook checks with.
    RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            format!(
                "{at} is not a valid regular expression ({}): fix the plan",
                e.to_string().replace('\n', " ")
            )
        })
}

/// A compiled `podSelector` and `containerRegex`.
struct PodSelection {
    labels: Vec<Selector>,
    regex: Option<Regex>,
    containers: Option<Regex>,
}

impl PodSelection {
    fn compile(item: &HookTarget, at: &str) -> std::result::Result<Self, String> {
        let mut labels = Vec::new();
        for (i, ls) in item.pod_selector.labels.iter().flatten().enumerate() {
            labels.push(Selector::try_from(ls.clone()).map_err(|e| {
                format!(
                    "{at}.podSelector.labels[{i}] is not a valid label selector ({e}): fix the plan"
                )
            })?);
        }
        let regex = match item.pod_selector.regex.as_deref() {
            Some(p) => Some(compile_regex(p, &format!("{at}.podSelector.regex"))?),
            None => None,
        };
        if labels.is_empty() && regex.is_none() {
            return Err(format!(
                "{at}.podSelector selects no pod: give `labels` (label selectors) or `regex` (a pattern on pod names)"
            ));
        }
        let containers = match item.container_regex.as_deref() {
            Some(p) => Some(compile_regex(p, &format!("{at}.containerRegex"))?),
            None => None,
        };
        Ok(Self {
            labels,
            regex,
            containers,
        })
    }

    /// Any label selector, or the name regex (unanchored, as Go's `MatchString`), matches.
    fn selects(&self, pod: &Pod) -> bool {
        self.labels.iter().any(|s| s.matches(pod.labels()))
            || self
                .regex
                .as_ref()
                .is_some_and(|r| r.is_match(&pod.name_any()))
    }

    /// The containers to exec in and the matching ones skipped (with why), or why the whole
    /// pod is skipped.
    #[allow(clippy::type_complexity)]
    fn containers(
        &self,
        pod: &Pod,
    ) -> std::result::Result<(Vec<String>, Vec<(String, String)>), String> {
        if pod.metadata.deletion_timestamp.is_some() {
            return Err("the pod is terminating".to_string());
        }
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if phase != "Running" {
            return Err(format!("pod phase is {phase}"));
        }
        let spec_containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        let matching: Vec<&str> = spec_containers
            .iter()
            .map(|c| c.name.as_str())
            .filter(|c| self.containers.as_ref().is_none_or(|r| r.is_match(c)))
            .collect();
        if matching.is_empty() {
            return Err("no container matches containerRegex".to_string());
        }
        let statuses = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        let mut run = Vec::new();
        let mut skipped = Vec::new();
        for name in matching {
            // A container whose status says it is not running (crash loop, restarting) cannot
            // be exec'd into; one without a recorded status is taken by the pod's phase.
            match statuses.iter().find(|s| s.name == name) {
                Some(s)
                    if s.state
                        .as_ref()
                        .and_then(|st| st.running.as_ref())
                        .is_none() =>
                {
                    skipped.push((name.to_string(), "the container is not running".to_string()));
                }
                _ => run.push(name.to_string()),
            }
        }
        Ok((run, skipped))
    }
}

/// One step to run in one container.
#[derive(Clone)]
struct Unit<'a> {
    hook: &'a str,
    pod: &'a str,
    container: &'a str,
    step: &'a HookStep,
}

fn units(targets: &HookTargets, stage: HookStage) -> Vec<Unit<'_>> {
    let mut out = Vec::new();
    for run in &targets.hooks {
        let step = match stage {
            HookStage::Pre => run.pre.as_ref(),
            HookStage::Post => Some(&run.post),
        };
        let Some(step) = step else { continue };
        for pod in &run.pods {
            for container in &pod.containers {
                out.push(Unit {
                    hook: &run.hook,
                    pod: &pod.name,
                    container,
                    step,
                });
            }
        }
    }
    out
}

/// Runs the pre hooks (Quiesce). Err(reason) = a hook failed after its retries / timed out;
/// the caller then calls [`unquiesce`] and fails the backup. In `Sequential` mode the first
/// failure stops the remaining pre steps; in `Parallel` mode the steps already started finish
/// (each is bounded by its timeout) and every failure is in the reason.
pub async fn quiesce(
    ctx: &Context,
    targets: &HookTargets,
) -> Result<std::result::Result<HookReport, String>> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &targets.namespace);
    let units = units(targets, HookStage::Pre);
    let mut report = HookReport::default();
    match targets.mode.unwrap_or(HookMode::Sequential) {
        HookMode::Sequential => {
            for unit in units {
                let done = run_unit(&api, &unit, HookStage::Pre).await;
                let failed = matches!(done.result, StepResult::Failed { .. });
                report.executions.push(done);
                if failed {
                    return Ok(Err(failure_reason("quiesce", &report)));
                }
            }
        }
        HookMode::Parallel => {
            report.executions = run_parallel(&api, units, HookStage::Pre).await;
            if has_failure(&report) {
                return Ok(Err(failure_reason("quiesce", &report)));
            }
        }
    }
    Ok(Ok(report))
}

/// Runs the post hooks (Unquiesce) in every identified pod and container — a superset of the
/// ones where a pre hook ran or was attempted (after a restart that record is gone, and an
/// application must never be left quiesced: post commands should be safe to run in a pod
/// that was not quiesced). A failure never stops the other post steps; Err(reason) lists every
/// failure once all have run. `Sequential` unwinds: post steps in the reverse order of the
/// pre steps.
pub async fn unquiesce(
    ctx: &Context,
    targets: &HookTargets,
) -> Result<std::result::Result<HookReport, String>> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &targets.namespace);
    let mut units = units(targets, HookStage::Post);
    let mut report = HookReport::default();
    match targets.mode.unwrap_or(HookMode::Sequential) {
        HookMode::Sequential => {
            units.reverse();
            for unit in units {
                report
                    .executions
                    .push(run_unit(&api, &unit, HookStage::Post).await);
            }
        }
        HookMode::Parallel => {
            report.executions = run_parallel(&api, units, HookStage::Post).await;
        }
    }
    if has_failure(&report) {
        return Ok(Err(failure_reason("unquiesce", &report)));
    }
    Ok(Ok(report))
}

async fn run_parallel(
    api: &Api<Pod>,
    units: Vec<Unit<'_>>,
    stage: HookStage,
) -> Vec<StepExecution> {
    stream::iter(units)
        .map(|unit| async move { run_unit(api, &unit, stage).await })
        .buffer_unordered(MAX_PARALLEL_EXECS)
        .collect()
        .await
}

fn has_failure(report: &HookReport) -> bool {
    report
        .executions
        .iter()
        .any(|e| matches!(e.result, StepResult::Failed { .. }))
}

fn failure_reason(what: &str, report: &HookReport) -> String {
    let failures: Vec<&str> = report
        .executions
        .iter()
        .filter_map(|e| match &e.result {
            StepResult::Failed { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    format!("failed to {what} the application: {}", failures.join("; "))
}

/// One step in one container, with its retries.
async fn run_unit(api: &Api<Pod>, unit: &Unit<'_>, stage: HookStage) -> StepExecution {
    let which = match stage {
        HookStage::Pre => "pre",
        HookStage::Post => "post",
    };
    let max_attempts = unit.step.max_retry_count.saturating_add(1);
    let timeout = Duration::from_secs(unit.step.timeout_seconds);
    let mut attempts = 0;
    let mut last = String::new();
    while attempts < max_attempts {
        attempts += 1;
        let outcome = match tokio::time::timeout(
            timeout,
            exec_once(api, unit.pod, unit.container, &unit.step.command),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timed out after {}s (the exec was cancelled)",
                unit.step.timeout_seconds
            )),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(
                    hook = unit.hook,
                    pod = unit.pod,
                    container = unit.container,
                    stage = which,
                    attempts,
                    "hook step succeeded"
                );
                return StepExecution {
                    hook: unit.hook.to_string(),
                    stage,
                    pod: unit.pod.to_string(),
                    container: unit.container.to_string(),
                    attempts,
                    result: StepResult::Succeeded,
                };
            }
            Err(why) => {
                tracing::warn!(hook = unit.hook, pod = unit.pod, container = unit.container, stage = which, attempt = attempts, reason = %why, "hook step attempt failed");
                last = why;
            }
        }
        if attempts < max_attempts {
            tokio::time::sleep(retry_backoff(attempts)).await;
        }
    }
    let reason = format!(
        "{which} hook {} in pod {} container {} failed after {attempts} attempt{}: {last}",
        unit.hook,
        unit.pod,
        unit.container,
        if attempts == 1 { "" } else { "s" }
    );
    StepExecution {
        hook: unit.hook.to_string(),
        stage,
        pod: unit.pod.to_string(),
        container: unit.container.to_string(),
        attempts,
        result: if unit.step.ignore_failure {
            StepResult::FailureIgnored { reason }
        } else {
            StepResult::Failed { reason }
        },
    }
}

/// 0.5 s, 1 s, 2 s, … capped at 8 s, before attempt `done + 1`.
fn retry_backoff(done: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << done.saturating_sub(1).min(4)))
}

/// One exec of `command`; Err says why it did not exit 0.
async fn exec_once(
    api: &Api<Pod>,
    pod: &str,
    container: &str,
    command: &[String],
) -> std::result::Result<(), String> {
    let params = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut connect_attempts = 0;
    let mut process = loop {
        connect_attempts += 1;
        match api.exec(pod, command.to_vec(), &params).await {
            Ok(p) => break p,
            Err(e) => {
                let (message, transient) = describe_connect_error(&e, pod, container);
                if !transient || connect_attempts >= CONNECT_ATTEMPTS {
                    return Err(message);
                }
                tokio::time::sleep(retry_backoff(connect_attempts)).await;
            }
        }
    };
    let status = process.take_status();
    let stdout = process.stdout();
    let stderr = process.stderr();
    // Both streams are drained while the command runs: kube's pipes are small and a
    // command that writes more than they hold would otherwise block.
    let (out, err, status) = tokio::join!(read_tail(stdout), read_tail(stderr), async {
        match status {
            Some(s) => s.await,
            None => None,
        }
    });
    let joined = process.join().await;
    let output = if err.trim().is_empty() {
        if out.trim().is_empty() {
            String::new()
        } else {
            format!("; stdout: {}", out.trim())
        }
    } else {
        format!("; stderr: {}", err.trim())
    };
    let Some(status) = status else {
        let why = match joined {
            Err(e) => format!("the exec connection failed: {e}"),
            Ok(()) => "the exec ended without an exit status (connection lost)".to_string(),
        };
        return Err(format!("{why}{output}"));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(());
    }
    let exit_code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message.clone());
    match (status.reason.as_deref(), exit_code) {
        (Some("NonZeroExitCode"), Some(code)) => Err(format!("exited with code {code}{output}")),
        _ => Err(format!(
            "the command could not run: {}{output}",
            status
                .message
                .as_deref()
                .filter(|m| !m.is_empty())
                .unwrap_or("no message from the apiserver")
        )),
    }
}

/// Reads a stream to its end, keeping its last [`OUTPUT_TAIL`] bytes as text.
async fn read_tail(reader: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > OUTPUT_TAIL {
                    tail.drain(..tail.len() - OUTPUT_TAIL);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// What an exec that could not start means, and whether trying again may help.
fn describe_connect_error(error: &kube::Error, pod: &str, container: &str) -> (String, bool) {
    use kube::client::UpgradeConnectionError as Upgrade;
    match error {
        kube::Error::UpgradeConnection(Upgrade::ProtocolSwitch(code)) => match code.as_u16() {
            404 => (format!("pod {pod} no longer exists"), false),
            400 => (
                format!(
                    "the apiserver refused the exec (400): pod {pod} or container {container} is not running"
                ),
                false,
            ),
            401 | 403 => (
                format!(
                    "the control plane may not exec into pod {pod} ({code}): its RBAC must allow create and get on pods/exec"
                ),
                false,
            ),
            c => (
                format!("the apiserver answered {code} to the exec"),
                c == 429 || c >= 500,
            ),
        },
        kube::Error::Api(status) => (
            format!("the apiserver refused the exec: {}", status.message),
            status.code == 429 || status.code >= 500,
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) => (
            format!("the apiserver could not be reached for the exec: {error}"),
            true,
        ),
        other => (format!("the exec could not be started: {other}"), false),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tvk_api::hook::ExecAction;

    #[test]
    fn steps_get_defaults_and_bounds() {
        let action = HookAction {
            exec_action: Some(ExecAction {
                command: Some(vec!["fsfreeze".into(), "-f".into(), "/data".into()]),
            }),
            ignore_failure: None,
            max_retry_count: Some(99),
            timeout_seconds: None,
        };
        let s = step(&action, "a/h", "pre").unwrap();
        assert_eq!(s.max_retry_count, 10);
        assert_eq!(s.timeout_seconds, 30);
        assert!(!s.ignore_failure);
        let empty = HookAction::default();
        assert!(
            step(&empty, "a/h", "post")
                .unwrap_err()
                .contains("post.execAction.command")
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let ms: Vec<u128> = (1..=7).map(|d| retry_backoff(d).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }

    #[test]
    fn targets_round_trip_and_name_pending_pods() {
        let t = HookTargets {
            namespace: "app".into(),
            mode: Some(HookMode::Parallel),
            hooks: vec![HookRun {
                hook: "app/freeze".into(),
                pre: None,
                post: HookStep {
                    command: vec!["true".into()],
                    ..HookStep::default()
                },
                pods: vec![],
            }],
            skipped: vec![SkippedTarget {
                hook: "app/freeze".into(),
                pod: "db-1".into(),
                container: None,
                reason: PENDING_REASON.into(),
            }],
        };
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<HookTargets>(&text).unwrap(), t);
        assert_eq!(t.pending_pods(), ["db-1"]);
        assert!(t.is_empty());
        assert_eq!(t.warnings().len(), 2);
    }
}
