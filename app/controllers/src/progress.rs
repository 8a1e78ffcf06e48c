//! `percentageCompletion` while data Jobs run: the datamover prints
//! `{"event":"progress","bytesDone":..,"bytesTotal":..,"percent":..}` on stdout (every
//! `--progress-interval`); the controllers read the last such line of each RUNNING data Job's
//! pod through `pods/log` (a bounded tail), weigh it by the volume's size and add it to the
//! bytes of the finished volumes.
//!
//! Bounded: the logs of one backup or restore are read at most once per `ctx.backup_poll`
//! (whatever triggers its reconciles — its own status writes, Job events, the poll; the last
//! look of each object is kept in the controllers' [`crate::context::Context`] as [`LogLooks`],
//! forgotten when the object reaches a terminal state or is deleted), only for
//! Jobs that are running, [`LOG_TAIL_LINES`] lines each. A log that cannot be read (pod not
//! scheduled yet, no progress line yet, API error) counts as no progress: the percentage only
//! ever grows ([`advance`]), so a missed read never moves it back.

use std::{
    collections::HashMap,
    sync::Mutex,
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

/// When the data Jobs' logs of each in-flight backup or restore (by UID) were last read: one
/// per controllers' [`crate::context::Context`]. An entry goes when its object reaches a
/// terminal state or is deleted ([`LogLooks::forget`]); one not looked at for an hour (an
/// object deleted while this process did not watch it) goes at the next look of any object.
#[derive(Debug, Default)]
pub struct LogLooks {
    looks: Mutex<HashMap<String, Instant>>,
}

impl LogLooks {
    /// Whether the logs of object `uid` may be read now (at most once per `every`); records
    /// the look when they may.
    pub fn due(&self, uid: &str, every: Duration) -> bool {
        let Ok(mut looks) = self.looks.lock() else {
            return false;
        };
        let now = Instant::now();
        looks.retain(|_, t| now.duration_since(*t) < Duration::from_secs(3600));
        match looks.get(uid) {
            Some(t) if now.duration_since(*t) < every => false,
            _ => {
                looks.insert(uid.to_string(), now);
                true
            }
        }
    }

    /// Forgets object `uid` (terminal or deleted: its logs are never read again).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut looks) = self.looks.lock() {
            looks.remove(uid);
        }
    }

    /// How many objects are remembered.
    pub fn len(&self) -> usize {
        self.looks.lock().map_or(0, |l| l.len())
    }

    /// Whether no object is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// Bytes done of the volumes whose Jobs (in `namespace`) run: `(job name, volume size)` each.
/// Reads nothing (returns `None`) when the object `uid` was looked at less than
/// `ctx.backup_poll` ago ([`LogLooks`]) or no Job runs.
pub async fn in_flight_bytes(
    ctx: &crate::context::Context,
    namespace: &str,
    uid: &str,
    running: &[(String, u64)],
) -> Option<u64> {
    if running.is_empty() || !ctx.log_looks.due(uid, ctx.backup_poll) {
        return None;
    }
    let mut done = 0u64;
    for (job, size) in running {
        if let Some(p) = running_job_progress(&ctx.client, namespace, job).await {
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
        let looks = LogLooks::default();
        let every = Duration::from_millis(300);
        assert!(looks.due("uid-a", every));
        assert!(!looks.due("uid-a", every));
        assert!(looks.due("uid-b", every));
        assert_eq!(looks.len(), 2);
        std::thread::sleep(every);
        assert!(looks.due("uid-a", every));
        // A forgotten object is looked at again at once, and no longer remembered.
        looks.forget("uid-b");
        assert_eq!(looks.len(), 1);
        assert!(looks.due("uid-b", every));
        looks.forget("uid-a");
        looks.forget("uid-b");
        assert!(looks.is_empty());
    }
}
