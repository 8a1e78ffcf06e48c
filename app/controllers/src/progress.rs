//! `percentageCompletion` while data Jobs run: the datamover prints
//! `{"event":"progress","bytesDone":..,"bytesTotal":..,"percent":..}` on stdout (every
//! `--progress-interval`); the controllers read the last such line of each RUNNING data Job's
//! pod through `pods/log` (a bounded tail), weigh it by the volume's size and add it to the
//! bytes of the finished volumes.
//!
//! Bounded: the logs of one backup or restore are read at most once per `ctx.backup_poll`
//! (whatever triggers its reconciles — its own status writes, Job events, the poll), only for
//! Jobs that are running, [`LOG_TAIL_LINES`] lines each. A log that cannot be read (pod not
//! scheduled yet, no progress line yet, API error) counts as no progress: the percentage only
//! ever grows ([`advance`]), so a missed read never moves it back.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{ListParams, LogParams},
};
use serde_json::Value;

/// Lines of a data Job's log read per look (the datamover prints one progress line per
/// interval; stderr lines are interleaved).
pub const LOG_TAIL_LINES: i64 = 50;

/// What a running datamover last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobProgress {
    /// Bytes processed.
    pub done: u64,
    /// Bytes to process.
    pub total: u64,
}

/// The last `{"event":"progress",…}` line of `log` (pure).
pub fn last_progress(log: &str) -> Option<JobProgress> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.get("event").and_then(Value::as_str) == Some("progress"))
        .find_map(|v| {
            Some(JobProgress {
                done: v.get("bytesDone")?.as_u64()?,
                total: v.get("bytesTotal")?.as_u64()?,
            })
        })
}

/// Bytes of a volume of `size` bytes counted as done when its Job reports `p` (pure; never
/// more than `size`).
pub fn volume_done(size: u64, p: JobProgress) -> u64 {
    if p.total == 0 {
        return 0;
    }
    let done = u128::from(p.done.min(p.total)) * u128::from(size) / u128::from(p.total);
    u64::try_from(done).unwrap_or(size).min(size)
}

/// `lo + (hi - lo) * done / total`, within `lo..=hi` (pure); `hi` when there is nothing to do.
pub fn phase_percent(lo: i64, hi: i64, done: u64, total: u64) -> i64 {
    if total == 0 {
        return hi;
    }
    let span = u128::try_from(hi - lo).unwrap_or(0);
    let share = u128::from(done.min(total)) * span / u128::from(total);
    lo + i64::try_from(share).unwrap_or(0)
}

/// The percentage to record: never below what was recorded (pure).
pub fn advance(recorded: Option<i64>, computed: i64) -> i64 {
    recorded.map_or(computed, |r| r.max(computed))
}

static LAST_LOOK: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Mutex::default);

/// Whether the logs of object `uid` may be read now (at most once per `every`); records the
/// look when they may.
fn due(uid: &str, every: Duration) -> bool {
    let Ok(mut looks) = LAST_LOOK.lock() else {
        return false;
    };
    let now = Instant::now();
    // Objects not looked at for a while are finished (or gone): forget them.
    looks.retain(|_, t| now.duration_since(*t) < Duration::from_secs(3600));
    match looks.get(uid) {
        Some(t) if now.duration_since(*t) < every => false,
        _ => {
            looks.insert(uid.to_string(), now);
            true
        }
    }
}

/// What the running pod of Job `namespace/job` last reported; `None` when it has no running
/// pod, no progress line yet, or its log cannot be read (logged at debug: progress is
/// informational and the next look tries again).
pub async fn running_job_progress(
    client: &kube::Client,
    namespace: &str,
    job: &str,
) -> Option<JobProgress> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = match pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
    {
        Ok(l) => l,
        Err(error) => {
            tracing::debug!(%error, job, "cannot list the pods of a data Job for its progress");
            return None;
        }
    };
    let pod = list
        .items
        .into_iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))?;
    let params = LogParams {
        tail_lines: Some(LOG_TAIL_LINES),
        limit_bytes: Some(64 * 1024),
        ..LogParams::default()
    };
    match pods.logs(&pod.name_any(), &params).await {
        Ok(log) => last_progress(&log),
        Err(error) => {
            tracing::debug!(%error, job, "cannot read the log of a data Job for its progress");
            None
        }
    }
}

/// Bytes done of the volumes whose Jobs run: `(job name, volume size)` each. Reads nothing
/// (returns `None`) when the object `uid` was looked at less than `every` ago or no Job runs.
pub async fn in_flight_bytes(
    client: &kube::Client,
    namespace: &str,
    uid: &str,
    running: &[(String, u64)],
    every: Duration,
) -> Option<u64> {
    if running.is_empty() || !due(uid, every) {
        return None;
    }
    let mut done = 0u64;
    for (job, size) in running {
        if let Some(p) = running_job_progress(client, namespace, job).await {
            done = done.saturating_add(volume_done(*size, p));
        }
    }
    Some(done)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_last_progress_line_wins_and_other_lines_are_ignored() {
        let log = "{\"event\":\"progress\",\"bytesDone\":10,\"bytesTotal\":100,\"percent\":10.0}\n\
                   WARN something on stderr\n\
                   {\"event\":\"progress\",\"bytesDone\":40,\"bytesTotal\":100,\"percent\":40.0}\n\
                   {\"event\":\"start\"}\n";
        assert_eq!(
            last_progress(log),
            Some(JobProgress {
                done: 40,
                total: 100
            })
        );
        assert_eq!(
            last_progress("no json\n{\"event\":\"result\",\"ok\":true}"),
            None
        );
    }

    #[test]
    fn percent_is_weighted_bounded_and_never_moves_back() {
        assert_eq!(volume_done(1000, JobProgress { done: 5, total: 10 }), 500);
        assert_eq!(
            volume_done(
                1000,
                JobProgress {
                    done: 50,
                    total: 10
                }
            ),
            1000
        );
        assert_eq!(volume_done(1000, JobProgress { done: 5, total: 0 }), 0);
        assert_eq!(phase_percent(20, 80, 0, 100), 20);
        assert_eq!(phase_percent(20, 80, 50, 100), 50);
        assert_eq!(phase_percent(20, 80, 200, 100), 80);
        assert_eq!(phase_percent(0, 80, 1, 0), 80);
        assert_eq!(advance(Some(45), 30), 45);
        assert_eq!(advance(Some(45), 60), 60);
        assert_eq!(advance(None, 20), 20);
    }

    #[test]
    fn logs_are_looked_at_once_per_interval_per_object() {
        let every = Duration::from_millis(300);
        assert!(due("uid-a", every));
        assert!(!due("uid-a", every));
        assert!(due("uid-b", every));
        std::thread::sleep(every);
        assert!(due("uid-a", every));
    }
}
