//! The TrilioVaultManager controller: a short pipeline of named stages.
//!
//! validate (pure admission + cluster-state rules) → upgrade policy → webhook certificate →
//! render → apply (server-side, in order, unchanged objects skipped) → prune (previous inventory
//! minus what is rendered) → status (helm-operator shape, written only when it changes).
//!
//! The inventory of what was applied is kept in `status.deployedRelease.manifest` as a compact
//! list (`digest:` line, then one `apiVersion kind namespace/name` line per object), so prune and
//! uninstall know exactly what an earlier revision installed, and the status stays small.
//!
//! Errors decide the requeue: a spec the user must fix sets `Irreconcilable` and waits for a
//! change; a transient API error sets `ReleaseFailed` and is retried with backoff; success waits
//! for events (label-filtered watches of every installed kind) plus a periodic resync.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Client, Resource, ResourceExt,
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector::ObjectRef as ControllerRef,
        watcher,
    },
};
use serde_json::{Value, json};
use tvk_api::admission::{KindAdmission, Operation, Request};

use crate::{
    admission::TvmAdmission,
    apply::{Applier, ApplyError, FIELD_MANAGER, InventoryPruner, ObjectRef, Owner},
    render::{
        ANNOTATION_OWNER_NAMESPACE, APP_VERSION, APPLY_ORDER, LABEL_INSTANCE, LABEL_MANAGED_BY,
        LABEL_PART_OF, MANAGER_NAME, Manifest, PART_OF, RenderError, RenderInputs, Renderer,
    },
    tvm::{
        ConditionReason, ConditionStatus, ConditionType, DeployedRelease, ReleaseCondition,
        TrilioVaultManager, TrilioVaultManagerStatus,
    },
    upgrade::{self, UpgradeDecision},
    webhook_cert,
};

/// Finalizer of every TVM the manager has installed something for.
pub const FINALIZER: &str = "triliovault.trilio.io/manager";
/// Annotation on the TVM: `"true"` lets uninstall delete the application CRDs (and with them
/// every backup object).
pub const ANNOTATION_DELETE_CRDS: &str = "triliovault.trilio.io/delete-crds-on-uninstall";

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An apiserver call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What was attempted.
        action: &'static str,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Applying or pruning failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The finalizer machinery failed.
    #[error("failed to run the finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Certificate generation failed.
    #[error(transparent)]
    Certificate(#[from] webhook_cert::CertError),
    /// The TVM lacks a namespace or name.
    #[error("the TrilioVaultManager has no {0}")]
    Incomplete(&'static str),
}

impl Error {
    /// A short category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "KubeError",
            Self::Apply(_) => "ApplyError",
            Self::Finalizer(_) => "FinalizerError",
            Self::Certificate(_) => "CertificateError",
            Self::Incomplete(_) => "InvalidObject",
        }
    }
}

/// Shared state of the controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Compiled templates.
    pub renderer: Arc<Renderer>,
    /// `RELATED_IMAGE_*` of the manager.
    pub related_images: Vec<(String, String)>,
    /// Periodic resync of a healthy TVM.
    pub resync: Duration,
    /// How long to wait for CRDs to be Established.
    pub crd_timeout: Duration,
    /// Event recorder (None: no Events, e.g. in tests).
    pub recorder: Option<Recorder>,
    /// Metrics.
    pub metrics: Arc<crate::operations::Metrics>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("resync", &self.resync)
            .finish()
    }
}

/// Compact inventory stored in `deployedRelease.manifest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Digest of the applied manifest.
    pub digest: String,
    /// Every applied object.
    pub objects: Vec<ObjectRef>,
}

impl Inventory {
    /// The inventory of a rendered manifest.
    pub fn of(manifest: &Manifest) -> Self {
        Self {
            digest: manifest.digest.clone(),
            objects: manifest.objects.iter().map(ObjectRef::of).collect(),
        }
    }

    /// Text form (`digest: …` then one object per line).
    pub fn encode(&self) -> String {
        let mut out = format!("digest: {}\n", self.digest);
        for o in &self.objects {
            let ns = if o.namespace.is_empty() {
                "-"
            } else {
                &o.namespace
            };
            out.push_str(&format!("{} {} {} {}\n", o.api_version, o.kind, ns, o.name));
        }
        out
    }

    /// Reads [`Inventory::encode`]'s output; unknown lines are ignored.
    pub fn decode(text: &str) -> Self {
        let mut inventory = Self::default();
        for line in text.lines() {
            if let Some(digest) = line.strip_prefix("digest: ") {
                inventory.digest = digest.trim().to_string();
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [api_version, kind, namespace, name] = parts.as_slice() {
                inventory.objects.push(ObjectRef {
                    api_version: (*api_version).to_string(),
                    kind: (*kind).to_string(),
                    namespace: if *namespace == "-" {
                        String::new()
                    } else {
                        (*namespace).to_string()
                    },
                    name: (*name).to_string(),
                });
            }
        }
        inventory
    }
}

/// What a reconcile concluded, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything is applied.
    Deployed {
        /// What is installed now.
        inventory: Inventory,
        /// UI URL.
        dashboard: Option<String>,
    },
    /// Applying failed (transient or refused by the apiserver).
    Failed {
        /// What failed.
        message: String,
    },
    /// The user must change the TVM (invalid spec, refused upgrade, conflicting TVM, bad values).
    Irreconcilable {
        /// What to change.
        message: String,
    },
}

fn set_condition(
    conditions: &mut Vec<ReleaseCondition>,
    type_: ConditionType,
    status: ConditionStatus,
    reason: Option<ConditionReason>,
    message: Option<String>,
    now: &str,
) {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Some(now.to_string());
            }
            existing.status = status;
            existing.reason = reason;
            existing.message = message;
        }
        None => conditions.push(ReleaseCondition {
            type_,
            status,
            reason,
            message,
            last_transition_time: Some(now.to_string()),
        }),
    }
}

/// The next status, from the current one and the outcome. Pure: `lastTransitionTime` moves only
/// when a condition flips; `helmRevision` moves only when the applied digest changes.
pub fn next_status(
    current: Option<&TrilioVaultManagerStatus>,
    outcome: &Outcome,
    name: &str,
    generation: Option<i64>,
    now: &str,
) -> TrilioVaultManagerStatus {
    let mut status = current.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let previous = status
        .deployed_release
        .as_ref()
        .and_then(|r| r.manifest.as_deref())
        .map(Inventory::decode);
    let ever_deployed = previous.is_some();
    set_condition(
        &mut status.conditions,
        ConditionType::Initialized,
        ConditionStatus::True,
        None,
        None,
        now,
    );
    match outcome {
        Outcome::Deployed {
            inventory,
            dashboard,
        } => {
            let changed = previous
                .as_ref()
                .is_none_or(|p| p.digest != inventory.digest);
            let revision = status.helm_revision.unwrap_or(0) + i64::from(changed);
            status.helm_revision = Some(revision.max(1));
            let reason = if revision > 1 {
                ConditionReason::UpdateSuccessful
            } else {
                ConditionReason::InstallSuccessful
            };
            set_condition(
                &mut status.conditions,
                ConditionType::Deployed,
                ConditionStatus::True,
                Some(reason),
                Some(format!(
                    "revision {} of version {APP_VERSION} applied ({} objects)",
                    revision.max(1),
                    inventory.objects.len()
                )),
                now,
            );
            if revision > 1 {
                set_condition(
                    &mut status.conditions,
                    ConditionType::Updated,
                    ConditionStatus::True,
                    Some(ConditionReason::UpdateSuccessful),
                    None,
                    now,
                );
            }
            set_condition(
                &mut status.conditions,
                ConditionType::ReleaseFailed,
                ConditionStatus::False,
                None,
                None,
                now,
            );
            set_condition(
                &mut status.conditions,
                ConditionType::Irreconcilable,
                ConditionStatus::False,
                None,
                None,
                now,
            );
            status.status = Some("Deployed".into());
            status.release_version = Some(APP_VERSION.into());
            status.dashboard = dashboard.clone();
            status.deployed_release = Some(DeployedRelease {
                name: Some(name.to_string()),
                manifest: Some(inventory.encode()),
            });
        }
        Outcome::Failed { message } => {
            let reason = if ever_deployed {
                ConditionReason::UpdateError
            } else {
                ConditionReason::InstallError
            };
            set_condition(
                &mut status.conditions,
                ConditionType::ReleaseFailed,
                ConditionStatus::True,
                Some(reason),
                Some(message.clone()),
                now,
            );
            status.status = Some("Failed".into());
        }
        Outcome::Irreconcilable { message } => {
            set_condition(
                &mut status.conditions,
                ConditionType::Irreconcilable,
                ConditionStatus::True,
                Some(ConditionReason::ReconcileError),
                Some(message.clone()),
                now,
            );
            status.status = Some("Irreconcilable".into());
        }
    }
    status
}

/// Cluster-state rules, pure over the list of every TVM: at most one TVM per namespace, one
/// `Cluster`-scoped TVM per cluster, unique `tvkInstanceName`. The oldest TVM (creation time,
/// then namespace/name) keeps its place; the others get the message returned here.
pub fn cluster_conflicts(tvm: &TrilioVaultManager, all: &[TrilioVaultManager]) -> Vec<String> {
    let key = |t: &TrilioVaultManager| {
        (
            t.metadata.creation_timestamp.as_ref().map(|c| c.0),
            t.namespace().unwrap_or_default(),
            t.name_any(),
        )
    };
    let mine = key(tvm);
    let older: Vec<&TrilioVaultManager> = all
        .iter()
        .filter(|other| other.metadata.uid != tvm.metadata.uid && key(other) < mine)
        .collect();
    older
        .into_iter()
        .flat_map(|other| crate::admission::conflicts_between(tvm, other))
        .map(|error| error.to_string())
        .collect()
}

fn dashboard(manifest: &Manifest) -> Option<String> {
    let host = manifest.values.ingress.host.as_ref()?;
    let scheme = if manifest.values.ingress.tls_secret_name.is_some() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{host}/"))
}

fn owner_of(tvm: &TrilioVaultManager) -> Result<Owner, Error> {
    let reference = tvm
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("metadata.uid"))?;
    Ok(Owner {
        reference: OwnerReference {
            block_owner_deletion: Some(true),
            ..reference
        },
        namespace: tvm
            .namespace()
            .ok_or(Error::Incomplete("metadata.namespace"))?,
    })
}

async fn write_status(
    api: &Api<TrilioVaultManager>,
    tvm: &TrilioVaultManager,
    status: TrilioVaultManagerStatus,
) -> Result<bool, Error> {
    if tvm.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": TrilioVaultManager::api_version(&()),
        "kind": TrilioVaultManager::kind(&()),
        "status": status,
    });
    api.patch_status(
        &tvm.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Kube {
        action: "write the TrilioVaultManager status",
        source: Box::new(source),
    })?;
    Ok(true)
}

async fn publish(
    ctx: &Context,
    tvm: &TrilioVaultManager,
    type_: EventType,
    reason: &str,
    note: String,
) {
    if let Some(recorder) = &ctx.recorder {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &tvm.object_ref(&())).await {
            tracing::warn!(%error, "failed to publish an Event");
        }
    }
}

/// Ensures the webhook serving Secret exists and is fresh; returns the CA bundle. `None` when
/// the user supplies the CA bundle (OLM, cert-manager) through `helmValues.webhook.caBundle`.
async fn ensure_certificate(
    ctx: &Context,
    tvm: &TrilioVaultManager,
    secret_name: &str,
    owner: &Owner,
) -> Result<Option<String>, Error> {
    let supplied = tvm
        .spec
        .helm_values
        .as_ref()
        .and_then(|v| v.pointer("/webhook/caBundle"))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if supplied {
        return Ok(None);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let live = api
        .get_opt(secret_name)
        .await
        .map_err(|source| Error::Kube {
            action: "read the webhook certificate Secret",
            source: Box::new(source),
        })?;
    let now = Timestamp::now();
    if !webhook_cert::needs_rotation(live.as_ref(), now)
        && let Some(ca) = live.as_ref().and_then(webhook_cert::ca_bundle)
    {
        return Ok(Some(ca));
    }
    let certificate =
        webhook_cert::generate(webhook_cert::APP_WEBHOOK_SERVICE, &owner.namespace, now)?;
    let labels = [
        (LABEL_MANAGED_BY, MANAGER_NAME),
        (LABEL_INSTANCE, tvm.name_any().as_str()),
        (LABEL_PART_OF, PART_OF),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut secret = webhook_cert::secret(secret_name, &owner.namespace, &certificate, labels);
    secret.metadata.owner_references = Some(vec![owner.reference.clone()]);
    api.patch(
        secret_name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|source| Error::Kube {
        action: "write the webhook certificate Secret",
        source: Box::new(source),
    })?;
    tracing::info!(secret = secret_name, not_after = %certificate.not_after, "generated the webhook serving certificate");
    Ok(Some(certificate.ca_pem))
}

/// The `group/version`s of the optional APIs the templates ask about.
async fn optional_api_versions(client: &Client) -> Vec<String> {
    match client.list_api_groups().await {
        Ok(groups) => groups
            .groups
            .iter()
            .filter(|g| g.name == "monitoring.coreos.com")
            .flat_map(|g| g.versions.iter().map(|v| v.group_version.clone()))
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "failed to discover optional APIs; rendering without them");
            Vec::new()
        }
    }
}

/// One reconcile of a TVM that is not being deleted.
pub async fn apply_tvm(tvm: Arc<TrilioVaultManager>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = tvm
        .namespace()
        .ok_or(Error::Incomplete("metadata.namespace"))?;
    let name = tvm.name_any();
    let api: Api<TrilioVaultManager> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = Timestamp::now().to_string();
    let status_of = |outcome: &Outcome| {
        next_status(
            tvm.status.as_ref(),
            outcome,
            &name,
            tvm.metadata.generation,
            &now,
        )
    };

    // Stage 1: validate.
    let object = serde_json::to_value(tvm.as_ref()).unwrap_or(Value::Null);
    let request = Request {
        operation: Operation::Create,
        object: &object,
        old_object: None,
    };
    let mut problems: Vec<String> = match TvmAdmission.validate(&request) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    let conflicts = crate::admission::check_cluster_state(ctx.client.clone(), &tvm)
        .await
        .map_err(|source| Error::Kube {
            action: "list TrilioVaultManagers",
            source: Box::new(source),
        })?;
    problems.extend(conflicts);
    // Stage 2: upgrade policy.
    let installed = tvm
        .status
        .as_ref()
        .and_then(|s| s.release_version.as_deref());
    let decision = upgrade::decide(installed, APP_VERSION);
    if let UpgradeDecision::Refused(reason) = &decision {
        problems.push(reason.clone());
    }
    if !problems.is_empty() {
        let message = problems.join("; ");
        if write_status(
            &api,
            &tvm,
            status_of(&Outcome::Irreconcilable {
                message: message.clone(),
            }),
        )
        .await?
        {
            publish(&ctx, &tvm, EventType::Warning, "Irreconcilable", message).await;
        }
        return Ok(Action::await_change());
    }
    let owner = owner_of(&tvm)?;

    // Stage 3: certificate; stage 4: render.
    let secret_name = tvm
        .spec
        .helm_values
        .as_ref()
        .and_then(|v| v.pointer("/webhook/certificateSecretName"))
        .or_else(|| {
            ctx.renderer
                .defaults()
                .pointer("/webhook/certificateSecretName")
        })
        .and_then(Value::as_str)
        .unwrap_or("tvk-webhook-serving-cert")
        .to_string();
    let ca_bundle = ensure_certificate(&ctx, &tvm, &secret_name, &owner).await?;
    let inputs = RenderInputs {
        related_images: ctx.related_images.clone(),
        api_versions: optional_api_versions(&ctx.client).await,
        ca_bundle,
        overrides: Vec::new(),
    };
    let manifest = match ctx.renderer.render(&tvm, &inputs) {
        Ok(manifest) => manifest,
        Err(error) => {
            let message = render_message(&error);
            if write_status(
                &api,
                &tvm,
                status_of(&Outcome::Irreconcilable {
                    message: message.clone(),
                }),
            )
            .await?
            {
                publish(&ctx, &tvm, EventType::Warning, "RenderFailed", message).await;
            }
            return Ok(Action::await_change());
        }
    };

    // Stage 5: apply; stage 6: prune.
    let mut applier = Applier::new(ctx.client.clone());
    applier.crd_timeout = ctx.crd_timeout;
    let result = applier.apply(&manifest, &owner).await;
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let message = error.to_string();
            if write_status(
                &api,
                &tvm,
                status_of(&Outcome::Failed {
                    message: message.clone(),
                }),
            )
            .await?
            {
                publish(&ctx, &tvm, EventType::Warning, "ApplyFailed", message).await;
            }
            return Err(error.into());
        }
    };
    let inventory = Inventory::of(&manifest);
    let previous = tvm
        .status
        .as_ref()
        .and_then(|s| s.deployed_release.as_ref())
        .and_then(|r| r.manifest.as_deref())
        .map(Inventory::decode)
        .unwrap_or_default();
    let keep: BTreeSet<ObjectRef> = inventory.objects.iter().cloned().collect();
    let pruned = if previous.digest == inventory.digest {
        Vec::new()
    } else {
        InventoryPruner::new(ctx.client.clone())
            .prune(&previous.objects, &keep, &owner, &name, true)
            .await?
    };

    // Stage 7: status.
    let outcome = Outcome::Deployed {
        inventory,
        dashboard: dashboard(&manifest),
    };
    let changed = write_status(&api, &tvm, status_of(&outcome)).await?;
    if !report.applied.is_empty() || !pruned.is_empty() {
        let verb = match decision {
            UpgradeDecision::Install => "installed",
            UpgradeDecision::Upgrade { .. } => "upgraded",
            UpgradeDecision::Same => {
                if previous.digest == manifest.digest {
                    "healed"
                } else {
                    "updated"
                }
            }
            UpgradeDecision::Refused(_) => "refused",
        };
        let note = format!(
            "{verb} version {APP_VERSION}: {} objects applied, {} unchanged, {} pruned",
            report.applied.len(),
            report.unchanged.len(),
            pruned.len()
        );
        tracing::info!(tvm = %name, namespace = %namespace, "{note}");
        publish(&ctx, &tvm, EventType::Normal, "Reconciled", note).await;
    } else if changed {
        tracing::debug!(tvm = %name, "status updated");
    }
    Ok(Action::requeue(ctx.resync))
}

fn render_message(error: &RenderError) -> String {
    format!(
        "{error}; fix the TrilioVaultManager (helmValues, componentConfiguration) and the manager retries on change"
    )
}

/// Uninstall: delete everything the inventory lists (reverse order), keeping the application
/// CRDs unless the TVM carries [`ANNOTATION_DELETE_CRDS`]` = "true"`.
pub async fn cleanup_tvm(tvm: Arc<TrilioVaultManager>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = owner_of(&tvm)?;
    let previous = tvm
        .status
        .as_ref()
        .and_then(|s| s.deployed_release.as_ref())
        .and_then(|r| r.manifest.as_deref())
        .map(Inventory::decode)
        .unwrap_or_default();
    let delete_crds = tvm
        .annotations()
        .get(ANNOTATION_DELETE_CRDS)
        .is_some_and(|v| v == "true");
    let deleted = InventoryPruner::new(ctx.client.clone())
        .prune(
            &previous.objects,
            &BTreeSet::new(),
            &owner,
            &tvm.name_any(),
            delete_crds,
        )
        .await?;
    publish(
        &ctx,
        &tvm,
        EventType::Normal,
        "Uninstalled",
        format!(
            "{} objects deleted{}",
            deleted.len(),
            if delete_crds {
                ""
            } else {
                "; application CRDs kept"
            }
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// The reconcile entry point: finalizer, then apply or cleanup; measured.
pub async fn reconcile(tvm: Arc<TrilioVaultManager>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(tvm, ctx.clone()).await;
    ctx.metrics.observe(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

async fn reconcile_inner(tvm: Arc<TrilioVaultManager>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = tvm
        .namespace()
        .ok_or(Error::Incomplete("metadata.namespace"))?;
    let api: Api<TrilioVaultManager> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, tvm, |event| async {
        match event {
            FinalizerEvent::Apply(tvm) => apply_tvm(tvm, ctx.clone()).await,
            FinalizerEvent::Cleanup(tvm) => cleanup_tvm(tvm, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Backoff for failed reconciles.
pub fn error_policy(_tvm: Arc<TrilioVaultManager>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(category = error.category(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// Maps a cluster-scoped installed object back to its TVM (labels + owner-namespace annotation).
fn owning_tvm(object: &DynamicObject) -> Option<ControllerRef<TrilioVaultManager>> {
    let name = object.labels().get(LABEL_INSTANCE)?;
    let namespace = object.annotations().get(ANNOTATION_OWNER_NAMESPACE)?;
    Some(ControllerRef::new(name).within(namespace))
}

/// Resolves on SIGTERM or SIGINT.
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

/// Runs the controller until `stop` resolves (the binary passes [`shutdown_signal`]) or, with
/// `election`, until the leader lease is lost: TVMs in `namespace` (or all), plus label-filtered
/// watches of every installed kind so deleted or edited objects are healed. A standby replica
/// waits for the lease (and returns if stopped first). On stop, in-flight reconciles finish and
/// the lease is released, so another replica takes over at once.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    election: Option<crate::leader::LeaderElector>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use futures::FutureExt as _;
    let stop = stop.boxed().shared();
    ctx.metrics.set_ready();
    if let Some(elector) = &election {
        tokio::select! {
            () = elector.acquire() => tracing::info!("acquired the leader lease"),
            () = stop.clone() => {
                tracing::info!("stopped while standing by for the leader lease");
                return;
            }
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let holder = election.clone();
    let stop_requested = stop.clone();
    tokio::spawn(async move {
        let lost = async move {
            match holder {
                Some(elector) => elector.hold().await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = stop_requested => tracing::info!("shutting down"),
            () = lost => tracing::warn!("lost the leader lease; stopping"),
        }
        let _ = stop_tx.send(true);
    });
    let stopped = async move {
        let mut stop_rx = stop_rx;
        let _ = stop_rx.changed().await;
    };
    let client = ctx.client.clone();
    let tvms: Api<TrilioVaultManager> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let selector = format!("{LABEL_MANAGED_BY}={MANAGER_NAME}");
    let mut controller = Controller::new(tvms, watcher::Config::default());
    for known in APPLY_ORDER {
        if known.kind == "ServiceMonitor" || known.kind == "Namespace" {
            continue;
        }
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(known.group, known.version, known.kind),
            known.plural,
        );
        let config = watcher::Config::default().labels(&selector);
        if known.namespaced {
            let api: Api<DynamicObject> = match &namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            controller = controller.owns_with(api, resource, config);
        } else {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            controller = controller.watches_with(api, resource, config, |o| owning_tvm(&o));
        }
    }
    controller
        .graceful_shutdown_on(stopped)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((tvm, _)) => tracing::debug!(tvm = %tvm.name, "reconciled"),
                Err(error) => tracing::warn!(%error, "reconcile error"),
            }
        })
        .await;
    if let Some(elector) = &election {
        match elector.release().await {
            Ok(true) => tracing::info!("released the leader lease"),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "failed to release the leader lease; it expires on its own")
            }
        }
    }
}

/// An Event recorder reporting as the manager.
pub fn recorder(client: Client) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: MANAGER_NAME.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(digest: &str) -> Inventory {
        Inventory {
            digest: digest.into(),
            objects: vec![
                ObjectRef {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    namespace: "ns".into(),
                    name: "tvk-config".into(),
                },
                ObjectRef {
                    api_version: "rbac.authorization.k8s.io/v1".into(),
                    kind: "ClusterRole".into(),
                    namespace: String::new(),
                    name: "r".into(),
                },
            ],
        }
    }

    #[test]
    fn cluster_scoped_objects_map_back_to_their_tvm() {
        let mut object = DynamicObject::new(
            "tvk-ns-validating",
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
            )),
        );
        assert!(
            owning_tvm(&object).is_none(),
            "unlabelled objects are not ours"
        );
        object.metadata.labels = Some([(LABEL_INSTANCE.to_string(), "tvm".to_string())].into());
        assert!(owning_tvm(&object).is_none(), "no owner namespace");
        object.metadata.annotations =
            Some([(ANNOTATION_OWNER_NAMESPACE.to_string(), "ns".to_string())].into());
        let reference = owning_tvm(&object).unwrap();
        assert_eq!(
            (reference.name.as_str(), reference.namespace.as_deref()),
            ("tvm", Some("ns"))
        );
    }

    #[test]
    fn inventory_roundtrips() {
        let inv = inventory("abc");
        assert_eq!(Inventory::decode(&inv.encode()), inv);
    }

    #[test]
    fn revision_moves_only_when_the_digest_changes() {
        let first = next_status(
            None,
            &Outcome::Deployed {
                inventory: inventory("a"),
                dashboard: None,
            },
            "tvm",
            Some(1),
            "t1",
        );
        assert_eq!(first.helm_revision, Some(1));
        assert_eq!(first.status.as_deref(), Some("Deployed"));
        let deployed = first
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Deployed)
            .unwrap();
        assert_eq!(deployed.reason, Some(ConditionReason::InstallSuccessful));
        let same = next_status(
            Some(&first),
            &Outcome::Deployed {
                inventory: inventory("a"),
                dashboard: None,
            },
            "tvm",
            Some(1),
            "t2",
        );
        assert_eq!(same, first, "no change: identical status, so no write");
        let second = next_status(
            Some(&first),
            &Outcome::Deployed {
                inventory: inventory("b"),
                dashboard: None,
            },
            "tvm",
            Some(2),
            "t3",
        );
        assert_eq!(second.helm_revision, Some(2));
        let deployed = second
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Deployed)
            .unwrap();
        assert_eq!(deployed.reason, Some(ConditionReason::UpdateSuccessful));
        assert_eq!(
            deployed.last_transition_time.as_deref(),
            Some("t1"),
            "status did not flip"
        );
    }

    #[test]
    fn failures_pick_install_or_update_reasons() {
        let failed = next_status(
            None,
            &Outcome::Failed {
                message: "boom".into(),
            },
            "tvm",
            None,
            "t1",
        );
        let c = failed
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::ReleaseFailed)
            .unwrap();
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::True, Some(ConditionReason::InstallError))
        );
        let ok = next_status(
            None,
            &Outcome::Deployed {
                inventory: inventory("a"),
                dashboard: None,
            },
            "tvm",
            None,
            "t1",
        );
        let failed = next_status(
            Some(&ok),
            &Outcome::Failed {
                message: "boom".into(),
            },
            "tvm",
            None,
            "t2",
        );
        let c = failed
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::ReleaseFailed)
            .unwrap();
        assert_eq!(c.reason, Some(ConditionReason::UpdateError));
        assert_eq!(c.last_transition_time.as_deref(), Some("t2"));
        assert_eq!(
            failed.helm_revision,
            Some(1),
            "a failure keeps the revision"
        );
        let bad = next_status(
            Some(&ok),
            &Outcome::Irreconcilable {
                message: "fix it".into(),
            },
            "tvm",
            None,
            "t3",
        );
        let c = bad
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Irreconcilable)
            .unwrap();
        assert_eq!(
            (c.status, c.reason, c.message.as_deref()),
            (
                ConditionStatus::True,
                Some(ConditionReason::ReconcileError),
                Some("fix it")
            )
        );
        assert_eq!(bad.status.as_deref(), Some("Irreconcilable"));
    }

    fn tvm(
        ns: &str,
        name: &str,
        scope: crate::tvm::ApplicationScope,
        instance: Option<&str>,
        created: i64,
    ) -> TrilioVaultManager {
        let mut t = TrilioVaultManager::new(
            name,
            crate::tvm::TrilioVaultManagerSpec {
                application_scope: scope,
                tvk_instance_name: instance.map(Into::into),
                ..Default::default()
            },
        );
        t.metadata.namespace = Some(ns.into());
        t.metadata.uid = Some(format!("{ns}-{name}"));
        t.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(created).unwrap(),
        ));
        t
    }

    #[test]
    fn cluster_rules_let_the_oldest_win() {
        use crate::tvm::ApplicationScope::{Cluster, Namespaced};
        let a = tvm("a", "tvm", Cluster, Some("x"), 100);
        let b = tvm("b", "tvm", Cluster, Some("x"), 200);
        let c = tvm("a", "second", Namespaced, None, 300);
        let d = tvm("d", "tvm", Namespaced, Some("y"), 400);
        let all = vec![a.clone(), b.clone(), c.clone(), d.clone()];
        assert!(cluster_conflicts(&a, &all).is_empty());
        let problems = cluster_conflicts(&b, &all);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("already Cluster-scoped"));
        assert!(problems[1].starts_with("spec.tvkInstanceName: \"x\" is already used"));
        let problems = cluster_conflicts(&c, &all);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("only one per namespace"));
        assert!(cluster_conflicts(&d, &all).is_empty());
    }
}
