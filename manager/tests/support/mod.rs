//! Shared by the reconcile tests and the no-change reconcile benchmark: kube-fake-client's
//! in-memory apiserver (it implements server-side apply with field managers) with an interceptor
//! that records every write, so callers assert the exact calls (field manager, order, prune
//! deletes, status writes, no writes at all when nothing changed).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Api, Client};
use kube_fake_client::{ClientBuilder, interceptor};
use serde_json::{Value, json};
use tvk_manager::{
    operations::Metrics,
    reconcile::Context,
    render::{Renderer, TemplateSource},
    tvm::{ApplicationScope, TrilioVaultManager, TrilioVaultManagerSpec},
};

pub const NS: &str = "trilio-system";

/// One recorded write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub verb: &'static str,
    pub kind: String,
    pub name: String,
    pub field_manager: Option<String>,
}

#[derive(Clone, Default)]
pub struct Recorder {
    pub writes: Arc<Mutex<Vec<Write>>>,
    /// CRDs applied so far: the fake apiserver has no CRD controller, so the get interceptor
    /// reports them Established as a real apiserver would.
    pub crds: Arc<Mutex<HashMap<String, Value>>>,
}

impl Recorder {
    pub fn take(&self) -> Vec<Write> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

pub fn tvm(spec: TrilioVaultManagerSpec) -> TrilioVaultManager {
    let mut tvm = TrilioVaultManager::new("triliovault-manager", spec);
    tvm.metadata.namespace = Some(NS.into());
    tvm.metadata.uid = Some("0b7c-uid".into());
    tvm.metadata.generation = Some(1);
    tvm
}

pub async fn setup(
    tvm: TrilioVaultManager,
    templates: TemplateSource,
) -> (Client, Arc<Context>, Recorder) {
    let recorder = Recorder::default();
    let (w1, w2, w3, crds_patch, crds_get) = (
        recorder.writes.clone(),
        recorder.writes.clone(),
        recorder.writes.clone(),
        recorder.crds.clone(),
        recorder.crds.clone(),
    );
    let funcs = interceptor::Funcs::new()
        .patch(move |ctx| {
            let kind = ctx
                .patch
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            if kind == "CustomResourceDefinition" {
                crds_patch
                    .lock()
                    .unwrap()
                    .insert(ctx.name.to_string(), ctx.patch.clone());
            }
            w1.lock().unwrap().push(Write {
                verb: "patch",
                kind,
                name: ctx.name.to_string(),
                field_manager: ctx.params.field_manager.clone(),
            });
            Ok(None)
        })
        .patch_status(move |ctx| {
            w2.lock().unwrap().push(Write {
                verb: "patch-status",
                kind: ctx
                    .patch
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                name: ctx.name.to_string(),
                field_manager: ctx.params.field_manager.clone(),
            });
            Ok(None)
        })
        .delete(move |ctx| {
            w3.lock().unwrap().push(Write {
                verb: "delete",
                kind: String::new(),
                name: ctx.name.to_string(),
                field_manager: None,
            });
            Ok(None)
        })
        .get(move |ctx| {
            if ctx.namespace.is_empty()
                && let Some(crd) = crds_get.lock().unwrap().get(ctx.name)
            {
                let mut crd = crd.clone();
                crd["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
                return Ok(Some(crd));
            }
            Ok(None)
        });
    let client = ClientBuilder::new()
        .with_resource::<TrilioVaultManager>()
        .with_status_subresource::<TrilioVaultManager>()
        .with_object(tvm)
        .with_interceptor_funcs(funcs)
        .build()
        .await
        .unwrap();
    let ctx = Arc::new(Context {
        client: client.clone(),
        renderer: Arc::new(Renderer::new(&templates).unwrap()),
        related_images: vec![],
        resync: Duration::from_secs(300),
        crd_timeout: Duration::from_secs(2),
        recorder: None,
        metrics: Arc::new(Metrics::default()),
    });
    (client, ctx, recorder)
}

pub async fn current(client: &Client) -> Arc<TrilioVaultManager> {
    Arc::new(
        Api::<TrilioVaultManager>::namespaced(client.clone(), NS)
            .get("triliovault-manager")
            .await
            .unwrap(),
    )
}

pub fn cluster_spec() -> TrilioVaultManagerSpec {
    TrilioVaultManagerSpec {
        application_scope: ApplicationScope::Cluster,
        ..Default::default()
    }
}

/// The whole application (generated CRDs included) installed for a Cluster-scoped TVM, with the
/// recorded install writes cleared: the starting point of a no-change reconcile. Returns the
/// client, the context, the write recorder and the TVM as stored after the install.
pub async fn installed_whole_application()
-> (Client, Arc<Context>, Recorder, Arc<TrilioVaultManager>) {
    let (client, ctx, recorder) = setup(tvm(cluster_spec()), TemplateSource::embedded()).await;
    tvk_manager::reconcile::apply_tvm(current(&client).await, ctx.clone())
        .await
        .unwrap();
    let installed = current(&client).await;
    assert_eq!(
        installed.status.as_ref().and_then(|s| s.status.as_deref()),
        Some("Deployed")
    );
    recorder.take();
    (client, ctx, recorder, installed)
}
