//! The body flowgate sends when it forwards a run event to a caller's
//! `callback_url`, signed with the Standard Webhooks scheme.
//!
//! ```json
//! {"type": "run.completed",
//!  "timestamp": "2024-05-01T12:00:00.123Z",
//!  "data": {"run_id": "…", "provider": "knouds", "upstream_run_id": "…",
//!           "status": "completed", "output": {…},
//!           "error": {"code": "…", "message": "…"}}}
//! ```
//! `type` is `run.<status>` (`run.queued`, `run.running`, `run.completed`,
//! `run.failed`, `run.cancelled`); `upstream_run_id`, `output` and `error`
//! are omitted when absent. [`WebhookEvent::decode`](crate::WebhookEvent::decode)
//! reads it back.

use std::time::SystemTime;

use bytes::Bytes;
use flowgate_core::{ProviderKind, RunError, RunStatus};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::clock::format_rfc3339;

/// One run event as flowgate forwards it.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardedEvent {
    /// flowgate's run id.
    pub run_id: String,
    /// The provider that ran it.
    pub provider: ProviderKind,
    /// The provider's id for the run.
    pub upstream_run_id: Option<String>,
    /// The state the run reached.
    pub status: RunStatus,
    /// The output, when completed.
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<RunError>,
    /// When the state was reached.
    pub time: SystemTime,
}

impl ForwardedEvent {
    /// `run.<status>`, e.g. `run.completed`.
    pub fn event_type(&self) -> &'static str {
        match self.status {
            RunStatus::Queued => "run.queued",
            RunStatus::Running => "run.running",
            RunStatus::Completed => "run.completed",
            RunStatus::Failed => "run.failed",
            RunStatus::Cancelled => "run.cancelled",
        }
    }

    /// A `webhook-id` derived from the run id and status: the same state of
    /// the same run always gets the same id, on any replica, so receivers
    /// (and the [`Forwarder`](crate::Forwarder)'s dedup) can drop repeats.
    pub fn event_id(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(self.run_id.as_bytes());
        digest.update(b"\n");
        digest.update(self.status.as_str().as_bytes());
        let hash = digest.finalize();
        format!("msg_{}", hex::encode(&hash[..16]))
    }

    /// The JSON document.
    pub fn to_json(&self) -> Value {
        let mut data = Map::new();
        data.insert("run_id".into(), json!(self.run_id));
        data.insert("provider".into(), json!(self.provider.as_str()));
        if let Some(id) = &self.upstream_run_id {
            data.insert("upstream_run_id".into(), json!(id));
        }
        data.insert("status".into(), json!(self.status.as_str()));
        if let Some(output) = &self.output {
            data.insert("output".into(), output.clone());
        }
        if let Some(error) = &self.error {
            data.insert(
                "error".into(),
                json!({"code": error.code, "message": error.message}),
            );
        }
        json!({
            "type": self.event_type(),
            "timestamp": format_rfc3339(self.time),
            "data": data,
        })
    }

    /// The serialized body, ready for [`Delivery::body`](crate::Delivery::body).
    pub fn to_body(&self) -> Bytes {
        Bytes::from(self.to_json().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn event(status: RunStatus) -> ForwardedEvent {
        ForwardedEvent {
            run_id: "run_abc".into(),
            provider: ProviderKind::Knouds,
            upstream_run_id: Some("ex-1".into()),
            status,
            output: None,
            error: None,
            time: UNIX_EPOCH + Duration::from_secs(1_714_564_800),
        }
    }

    #[test]
    fn serializes_the_documented_shape() {
        let mut failed = event(RunStatus::Failed);
        failed.error = Some(RunError {
            code: "EXECUTION_FAILED".into(),
            message: "boom".into(),
        });
        assert_eq!(
            failed.to_json(),
            json!({"type": "run.failed", "timestamp": "2024-05-01T12:00:00Z",
                "data": {"run_id": "run_abc", "provider": "knouds",
                    "upstream_run_id": "ex-1", "status": "failed",
                    "error": {"code": "EXECUTION_FAILED", "message": "boom"}}})
        );
    }

    #[test]
    fn event_ids_are_stable_per_run_and_status() {
        let a = event(RunStatus::Completed);
        assert_eq!(a.event_id(), event(RunStatus::Completed).event_id());
        assert_ne!(a.event_id(), event(RunStatus::Running).event_id());
        assert!(a.event_id().starts_with("msg_"));
        assert_eq!(a.event_id().len(), 4 + 32);
    }
}
