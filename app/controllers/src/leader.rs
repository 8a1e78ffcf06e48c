//! Leader election with a `coordination.k8s.io/v1` Lease in the install namespace: only the
//! holder runs the controllers. The holder renews every third of the lease duration; another
//! replica takes over only after the holder has not renewed for a whole duration. Every write
//! carries the Lease's resourceVersion, so of two candidates racing for an expired Lease one
//! gets 409 Conflict and stays a follower.
//!
//! The manager has its own elector (`tvk_manager::leader`); depending on the whole manager
//! crate (templates, webhook server) for it would be heavy, so the control plane keeps this one.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::error::is_conflict;

/// One candidate for the Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long a holder keeps the Lease without renewing.
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
    /// Candidate `identity` (the pod name) for Lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
        }
    }

    /// Takes the Lease if free or expired, renews it if ours: `Ok(true)` when this candidate
    /// leads at `now`.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(15);
        let result = match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let spec = lease.spec.take().unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(&self.identity);
                let held_for = spec
                    .lease_duration_seconds
                    .map_or(self.lease_duration.as_secs(), |s| {
                        u64::try_from(s).unwrap_or(0)
                    });
                let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
                    renewed
                        .0
                        .checked_add(SignedDuration::from_secs(
                            i64::try_from(held_for).unwrap_or(0),
                        ))
                        .is_ok_and(|deadline| deadline < now)
                });
                if !ours && !expired {
                    return Ok(false);
                }
                lease.spec = Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: if ours {
                        spec.acquire_time
                    } else {
                        Some(MicroTime(now))
                    },
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!ours)),
                    ..spec
                });
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads.
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

    /// Renews until the Lease is lost (taken over, or renewals failing for a whole duration).
    pub async fn hold(&self) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease_duration / 3).await;
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "failed to renew the leader lease");
                    if last.elapsed() >= self.lease_duration {
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
    async fn one_leader_and_takeover_only_after_expiry() {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .unwrap();
        let a = LeaderElector::new(client.clone(), "ns", "tvk-control-plane-leader", "pod-a");
        let b = LeaderElector::new(client.clone(), "ns", "tvk-control-plane-leader", "pod-b");
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(a.try_acquire_or_renew(t0).await.unwrap());
        assert!(!b.try_acquire_or_renew(t0).await.unwrap());
        let t1 = t0.checked_add(SignedDuration::from_secs(10)).unwrap();
        assert!(a.try_acquire_or_renew(t1).await.unwrap(), "renewal");
        assert!(
            !b.try_acquire_or_renew(t1).await.unwrap(),
            "renewed 0 s ago"
        );
        let t2 = t1.checked_add(SignedDuration::from_secs(16)).unwrap();
        assert!(
            b.try_acquire_or_renew(t2).await.unwrap(),
            "a stopped renewing"
        );
        assert!(!a.try_acquire_or_renew(t2).await.unwrap(), "a lost it");
        let spec = Api::<Lease>::namespaced(client, "ns")
            .get("tvk-control-plane-leader")
            .await
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
        assert_eq!(spec.lease_transitions, Some(1));
    }
}
