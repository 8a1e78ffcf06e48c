//! Starts the controllers behind the leader Lease and stops them gracefully.
//!
//! Only the Lease holder reconciles ([`crate::leader`]). On SIGTERM/SIGINT, or when the Lease is lost, every controller stops taking
//! new work, in-flight reconciles finish, and `run` returns (a pod that lost its Lease exits and
//! is restarted as a follower by its Deployment).

use std::sync::Arc;

use crate::leader::LeaderElector;
use futures::{FutureExt, StreamExt, future::BoxFuture};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{
    Api, ResourceExt,
    runtime::{Controller, watcher},
};
use tvk_api::{
    backup::{Backup, ClusterBackup},
    backup_plan::{BackupPlan, ClusterBackupPlan},
    restore::{ClusterRestore, Restore},
    target::Target,
};

use crate::{
    backup_controller,
    context::Context,
    jobs::ANNOTATION_BACKUP_REF,
    plan_controller,
    restore_controller::{self, ANNOTATION_RESTORE_REF},
    target_controller::{self, TargetInput},
};

/// Name of the control plane's Lease (in the install namespace).
pub const LEASE_NAME: &str = "tvk-control-plane-leader";

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// An Api over the watched scope: one namespace (Namespaced install) or all.
pub fn scoped<K>(ctx: &Context) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ctx.config.watch_namespace() {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Runs every controller until `stop` resolves.
pub async fn run_controllers(ctx: Arc<Context>, stop: BoxFuture<'static, ()>) {
    let stop = stop.shared();
    let targets = Controller::new(scoped::<Target>(&ctx), watcher::Config::default());
    // A changed credential Secret or CA ConfigMap re-validates the Targets naming it (metadata
    // only is kept; the probe reads the Secret itself).
    let (by_secret, by_config_map) = (targets.store(), targets.store());
    let targets = targets
        .owns(
            scoped::<PersistentVolumeClaim>(&ctx),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=tvk-control-plane"),
        )
        .watches(
            scoped::<PartialObjectMeta<Secret>>(&ctx),
            watcher::Config::default(),
            move |secret| {
                target_controller::targets_using(&by_secret.state(), TargetInput::Secret, &secret)
            },
        )
        .watches(
            scoped::<PartialObjectMeta<ConfigMap>>(&ctx),
            watcher::Config::default(),
            move |map| {
                target_controller::targets_using(
                    &by_config_map.state(),
                    TargetInput::CaConfigMap,
                    &map,
                )
            },
        )
        .graceful_shutdown_on(stop.clone())
        .run(
            target_controller::reconcile,
            target_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("target", r) });
    let plans = Controller::new(scoped::<BackupPlan>(&ctx), watcher::Config::default())
        .graceful_shutdown_on(stop.clone())
        .run(
            plan_controller::reconcile::<BackupPlan>,
            plan_controller::error_policy::<BackupPlan>,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("backupplan", r) });
    let cluster_plans = async {
        // A Namespaced install cannot watch cluster-scoped kinds.
        if ctx.config.watch_namespace().is_some() {
            return;
        }
        Controller::new(
            Api::<ClusterBackupPlan>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .graceful_shutdown_on(stop.clone())
        .run(
            plan_controller::reconcile::<ClusterBackupPlan>,
            plan_controller::error_policy::<ClusterBackupPlan>,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("clusterbackupplan", r) })
        .await;
    };
    // Jobs run in the install namespace; each names its backup in an annotation.
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.config.install_namespace);
    let backups = Controller::new(scoped::<Backup>(&ctx), watcher::Config::default())
        .watches(
            jobs,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=tvk-control-plane"),
            |job: Job| {
                let reference = job.annotations().get(ANNOTATION_BACKUP_REF)?.clone();
                let (ns, name) = reference.split_once('/')?;
                (!ns.is_empty()).then(|| ObjectRef::<Backup>::new(name).within(ns))
            },
        )
        .graceful_shutdown_on(stop.clone())
        .run(
            backup_controller::reconcile::<Backup>,
            backup_controller::error_policy::<Backup>,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("backup", r) });
    let cluster_backups = async {
        if ctx.config.watch_namespace().is_some() {
            return;
        }
        // A ClusterBackup's Jobs name it as `/<name>`.
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.config.install_namespace);
        Controller::new(
            Api::<ClusterBackup>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .watches(
            jobs,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=tvk-control-plane"),
            |job: Job| {
                let reference = job.annotations().get(ANNOTATION_BACKUP_REF)?;
                let name = reference.strip_prefix('/')?;
                Some(ObjectRef::<ClusterBackup>::new(name))
            },
        )
        .graceful_shutdown_on(stop.clone())
        .run(
            backup_controller::reconcile::<ClusterBackup>,
            backup_controller::error_policy::<ClusterBackup>,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("clusterbackup", r) })
        .await;
    };
    // Restore Jobs name their restore as `ns/name` (Restore) or `name` (ClusterRestore).
    let restore_jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.config.install_namespace);
    let restores = Controller::new(scoped::<Restore>(&ctx), watcher::Config::default())
        .watches(
            restore_jobs.clone(),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=tvk-control-plane"),
            |job: Job| {
                let reference = job.annotations().get(ANNOTATION_RESTORE_REF)?.clone();
                let (ns, name) = reference.split_once('/')?;
                Some(ObjectRef::<Restore>::new(name).within(ns))
            },
        )
        .graceful_shutdown_on(stop.clone())
        .run(
            restore_controller::reconcile_restore,
            restore_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("restore", r) });
    let cluster_restores = async {
        // A Namespaced install cannot watch cluster-scoped kinds.
        if ctx.config.watch_namespace().is_some() {
            return;
        }
        Controller::new(
            Api::<ClusterRestore>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .watches(
            restore_jobs,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=tvk-control-plane"),
            |job: Job| {
                let reference = job.annotations().get(ANNOTATION_RESTORE_REF)?;
                (!reference.contains('/')).then(|| ObjectRef::<ClusterRestore>::new(reference))
            },
        )
        .graceful_shutdown_on(stop.clone())
        .run(
            restore_controller::reconcile_cluster_restore,
            restore_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("clusterrestore", r) })
        .await;
    };
    // Unused encryption key copies in the install namespace (only the Lease holder sweeps).
    let key_copies = crate::key_copy_sweep::run(ctx.clone(), stop.clone());
    ctx.metrics.set_ready(true);
    futures::join!(
        targets,
        plans,
        cluster_plans,
        backups,
        cluster_backups,
        restores,
        cluster_restores,
        key_copies
    );
    ctx.metrics.set_ready(false);
}

fn log_result<K: kube::Resource, E: std::fmt::Display>(
    controller: &str,
    result: Result<
        (
            kube::runtime::reflector::ObjectRef<K>,
            kube::runtime::controller::Action,
        ),
        E,
    >,
) {
    match result {
        Ok((obj, _)) => tracing::debug!(controller, object = %obj.name, "reconciled"),
        Err(error) => tracing::warn!(controller, %error, "reconcile failed"),
    }
}

/// Acquires the Lease (if `election`), then runs the controllers until a signal or the loss of
/// the Lease.
pub async fn run(ctx: Arc<Context>, election: Option<LeaderElector>) {
    if let Some(elector) = &election {
        elector.acquire().await;
        tracing::info!(lease = LEASE_NAME, "acquired the leader lease");
    }
    let releaser = election.clone();
    let stop = async move {
        let lost = async move {
            match election {
                Some(elector) => elector.hold().await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutting down on signal"),
            _ = lost => tracing::warn!("lost the leader lease; stopping"),
        }
    }
    .boxed();
    run_controllers(ctx, stop).await;
    // In-flight reconciles have finished: hand the Lease over at once instead of letting the
    // next replica wait a whole lease duration.
    if let Some(elector) = releaser {
        match elector.release().await {
            Ok(true) => tracing::info!(lease = LEASE_NAME, "released the leader lease"),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "failed to release the leader lease; it expires on its own")
            }
        }
    }
}
