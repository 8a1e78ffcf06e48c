//! State shared by every controller: the client, the configuration, Events and metrics.

use std::{sync::Arc, time::Duration};

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use crate::{config::Config, operations::Metrics};

/// Name of the control plane (Event reporter, field manager prefix, managed-by label).
pub const CONTROLLER_NAME: &str = "tvk-control-plane";

/// Shared state of the controllers (cheap to clone: handles and settings).
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// `/etc/tvk/config.yaml`.
    pub config: Arc<Config>,
    /// Event recorder (None: no Events, e.g. in tests).
    pub recorder: Option<Recorder>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How often an Available Target is probed again.
    pub target_revalidation: Duration,
    /// How often an in-flight backup is looked at when no watch event arrives.
    pub backup_poll: Duration,
    /// When each in-flight backup's or restore's data Job logs were last read (progress).
    pub log_looks: Arc<crate::progress::LogLooks>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("target_revalidation", &self.target_revalidation)
            .finish()
    }
}

impl Context {
    /// A context with default intervals.
    pub fn new(client: Client, config: Config, recorder: Option<Recorder>) -> Self {
        Self {
            client,
            config: Arc::new(config),
            recorder,
            metrics: Arc::new(Metrics::default()),
            target_revalidation: Duration::from_secs(300),
            backup_poll: Duration::from_secs(10),
            log_looks: Arc::default(),
        }
    }

    /// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(truncate(&note, 1000)),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(%error, reason, "failed to publish an Event");
        }
    }
}

/// An Event recorder reporting as the control plane.
pub fn recorder(client: Client) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
