//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas of the manager or of
//! the control plane are safe: only the holder reconciles; it renews every third of the lease
//! duration, and a replica takes the lease over only once the holder has not renewed for a whole
//! lease duration (or released it on shutdown). Writes use the Lease's resourceVersion
//! (optimistic concurrency), so of two candidates racing for an expired Lease one gets 409
//! Conflict and stays a follower.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

/// One candidate for a Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long a holder keeps the lease without renewing.
    pub lease_duration: Duration,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish()
    }
}

impl LeaderElector {
    /// A candidate `identity` (the pod name) for Lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.lease_duration.as_secs()).ok(),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Acquires the lease if free or expired, renews it if held; `Ok(true)` when this candidate
    /// leads. A lost race (409 Conflict) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let existing = self.api.get_opt(&self.name).await?;
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                // Released (see `release`): free at once.
                let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
                let duration = spec
                    .lease_duration_seconds
                    .map_or(self.lease_duration, |s| {
                        Duration::from_secs(u64::try_from(s).unwrap_or(0))
                    });
                let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
                    renewed
                        .0
                        .checked_add(jiff::SignedDuration::try_from(duration).unwrap_or_default())
                        .is_ok_and(|deadline| deadline < now)
                });
                if !ours && !expired && !released {
                    return Ok(false);
                }
                let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
                let acquired = if ours { spec.acquire_time } else { None };
                lease.spec = Some(self.spec(now, acquired, transitions));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            }
        };
        match result {
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            other => other,
        }
    }

    /// Gives the lease up if this candidate holds it (graceful shutdown), so another replica takes
    /// over at once instead of after a whole lease duration: the holder is cleared, as client-go
    /// does with `ReleaseOnCancel`. `Ok(false)` when it was not held (lost, or never acquired).
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Waits until this candidate leads, retrying every `lease_duration / 3`.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => return,
                Ok(false) => tracing::info!(lease = %self.name, "another replica leads; waiting"),
                Err(error) => tracing::warn!(%error, "failed to acquire the leader lease"),
            }
            tokio::time::sleep(self.lease_duration / 3).await;
        }
    }

    /// Renews until the lease is lost (another holder, or renewals failing for a whole lease
    /// duration); returns then.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease_duration / 3).await;
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "failed to renew the leader lease");
                    if last_renewal.elapsed() >= self.lease_duration {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn one_leader_at_a_time_and_takeover_after_expiry() {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .unwrap();
        let a = LeaderElector::new(client.clone(), "ns", "tvk-manager", "pod-a");
        let b = LeaderElector::new(client.clone(), "ns", "tvk-manager", "pod-b");
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(a.try_acquire_or_renew(t0).await.unwrap());
        assert!(!b.try_acquire_or_renew(t0).await.unwrap(), "a holds it");
        let t1 = t0.checked_add(jiff::SignedDuration::from_secs(5)).unwrap();
        assert!(a.try_acquire_or_renew(t1).await.unwrap(), "renewal");
        assert!(!b.try_acquire_or_renew(t1).await.unwrap());
        let t2 = t1.checked_add(jiff::SignedDuration::from_secs(16)).unwrap();
        assert!(
            b.try_acquire_or_renew(t2).await.unwrap(),
            "a stopped renewing"
        );
        assert!(!a.try_acquire_or_renew(t2).await.unwrap(), "a lost it");
        let lease = Api::<Lease>::namespaced(client, "ns")
            .get("tvk-manager")
            .await
            .unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
        assert_eq!(spec.lease_transitions, Some(1));

        // A graceful release frees it at once, without waiting for expiry.
        assert!(!a.release().await.unwrap(), "a does not hold it");
        assert!(b.release().await.unwrap());
        assert!(
            a.try_acquire_or_renew(t2).await.unwrap(),
            "free after release"
        );
    }
}
