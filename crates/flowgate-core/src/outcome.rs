//! What a run produced.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::SecretString;

/// Lifecycle state of a run, the same for every dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Accepted, waiting for capacity.
    Queued,
    /// Running.
    Running,
    /// Finished with an output.
    Completed,
    /// Ran and failed.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RunStatus {
    /// True for states a run never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// A stable lowercase label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the status words the dialects use (`completed`, `succeeded`,
    /// `processing`, `cancel_requested`, …), case-insensitively.
    pub fn parse_upstream(word: &str) -> Option<Self> {
        let status = match word.to_ascii_lowercase().as_str() {
            "queued" | "pending" | "waiting" => Self::Queued,
            "running" | "processing" | "in_progress" | "started" | "cancel_requested" => {
                Self::Running
            }
            "completed" | "complete" | "succeeded" | "success" | "done" => Self::Completed,
            "failed" | "failure" | "error" | "errored" => Self::Failed,
            "cancelled" | "canceled" => Self::Cancelled,
            _ => return None,
        };
        Some(status)
    }
}

/// What a run consumed, as far as the provider reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// Credits charged.
    pub credits: Option<f64>,
    /// Execution time the provider reported.
    pub duration: Option<Duration>,
    /// Tokens consumed.
    pub tokens: Option<u64>,
}

/// Why a run that ran did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunError {
    /// The provider's error code, or flowgate's own.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl RunError {
    /// Reads a vendor's run error, in every shape the dialects send: a bare
    /// string (the message, with `default_code`) or an object with
    /// `code`/`error_code` and `message`/`error` (codes may be numbers).
    /// `None` for anything else. The text is the vendor's, unredacted: the
    /// providers crate redacts and bounds it before a caller sees it.
    pub fn from_value(value: &Value, default_code: &str, default_message: &str) -> Option<Self> {
        let first = |object: &serde_json::Map<String, Value>, keys: [&str; 2]| {
            keys.iter()
                .find_map(|key| object.get(*key).and_then(crate::id_text))
        };
        match value {
            Value::String(message) => Some(Self {
                code: default_code.to_owned(),
                message: message.clone(),
            }),
            Value::Object(object) => Some(Self {
                code: first(object, ["code", "error_code"])
                    .unwrap_or_else(|| default_code.to_owned()),
                message: first(object, ["message", "error"])
                    .unwrap_or_else(|| default_message.to_owned()),
            }),
            _ => None,
        }
    }
}

/// A provider's rate-limit window as reported by its response headers.
/// Absent headers stay `None`, never zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Requests allowed in the window.
    pub limit: Option<u64>,
    /// Requests left in the window.
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset_at: Option<SystemTime>,
    /// How long the provider asked to wait.
    pub retry_after: Option<Duration>,
}

impl RateLimitInfo {
    /// True when no header was present.
    pub fn is_empty(&self) -> bool {
        self.limit.is_none()
            && self.remaining.is_none()
            && self.reset_at.is_none()
            && self.retry_after.is_none()
    }
}

/// The outcome of one invocation that the provider accepted.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    /// The provider's id for the run.
    pub upstream_run_id: Option<String>,
    /// The provider's id for the HTTP request, when distinct from the run.
    pub upstream_request_id: Option<String>,
    /// The state the run is in; `None` only before decoding finished.
    pub status: Option<RunStatus>,
    /// The output when completed (already through [`decode_output`]).
    pub output: Option<Value>,
    /// Cited web sources.
    pub citations: Vec<String>,
    /// What the run consumed.
    pub usage: Usage,
    /// Secret for verifying the provider's callback for this run.
    pub webhook_secret: Option<SecretString>,
    /// Why the run failed.
    pub error: Option<RunError>,
    /// The rate-limit window after this call.
    pub rate_limit: RateLimitInfo,
}

/// Normalizes a workflow output: a string holding a JSON object or array is
/// decoded into it; every other value, other strings included, is kept.
pub fn decode_output(output: Value) -> Value {
    match output {
        Value::String(text) => {
            let trimmed = text.trim_start();
            if trimmed.starts_with('{') || trimmed.starts_with('[') {
                match serde_json::from_str::<Value>(&text) {
                    Ok(decoded @ (Value::Object(_) | Value::Array(_))) => decoded,
                    _ => Value::String(text),
                }
            } else {
                Value::String(text)
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_object_strings_are_decoded() {
        assert_eq!(
            decode_output(json!("{\"a\": [1, 2]}")),
            json!({"a": [1, 2]})
        );
        assert_eq!(decode_output(json!(" [1]")), json!([1]));
    }

    #[test]
    fn other_strings_stay_strings() {
        for text in ["hello", "42", "true", "\"quoted\"", "{not json", "null"] {
            assert_eq!(decode_output(json!(text)), json!(text), "{text}");
        }
    }

    #[test]
    fn non_strings_pass_through() {
        assert_eq!(decode_output(json!({"x": 1})), json!({"x": 1}));
        assert_eq!(decode_output(json!(3)), json!(3));
    }

    #[test]
    fn upstream_status_words() {
        assert_eq!(
            RunStatus::parse_upstream("processing"),
            Some(RunStatus::Running)
        );
        assert_eq!(
            RunStatus::parse_upstream("COMPLETED"),
            Some(RunStatus::Completed)
        );
        assert_eq!(RunStatus::parse_upstream("queued"), Some(RunStatus::Queued));
        assert_eq!(
            RunStatus::parse_upstream("canceled"),
            Some(RunStatus::Cancelled)
        );
        assert_eq!(RunStatus::parse_upstream("weird"), None);
    }

    #[test]
    fn run_errors_are_read_from_every_vendor_shape() {
        let read = |value: Value| RunError::from_value(&value, "DEFAULT", "failed");
        let error = |code: &str, message: &str| {
            Some(RunError {
                code: code.into(),
                message: message.into(),
            })
        };
        assert_eq!(read(json!("boom")), error("DEFAULT", "boom"));
        assert_eq!(
            read(json!({"code": "EXECUTION_FAILED", "message": "m"})),
            error("EXECUTION_FAILED", "m")
        );
        assert_eq!(
            read(json!({"error_code": 500, "error": "e"})),
            error("500", "e")
        );
        assert_eq!(read(json!({})), error("DEFAULT", "failed"));
        assert_eq!(read(json!(7)), None);
    }
}
