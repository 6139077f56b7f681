//! A verified body, normalized into one event shape for every scheme.

use flowgate_core::{
    RunError, RunStatus, decode_output,
    depth::{MAX_OUTPUT_DEPTH, exceeds_depth},
};
use std::collections::HashMap;
use std::time::SystemTime;

use flowgate_core::numbers::lenient::value_of;
use serde_json::{Value, error::Category, value::RawValue};
use sha2::{Digest, Sha256};

use crate::clock::{parse_rfc3339, unix_secs};
use crate::failure::WebhookFailure;
use crate::scheme::WebhookScheme;
use crate::signature::SignatureMatch;

/// What a verified delivery said, the same for every scheme.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    /// The scheme it was signed with.
    pub scheme: WebhookScheme,
    /// The id the replay guard keys on (see [`WebhookEvent::decode`]).
    pub event_id: String,
    /// Knouds `event` (`execution.completed`, …), Standard `type`
    /// (`run.completed`, …); for Fetch Hive, which sends none,
    /// `run.<status>` or `callback`.
    pub event_type: String,
    /// flowgate's own run id (Standard scheme only).
    pub run_id: Option<String>,
    /// The provider's id for the run.
    pub upstream_run_id: Option<String>,
    /// The run's state, when the body names one.
    pub status: Option<RunStatus>,
    /// The output, through [`decode_output`].
    pub output: Option<Value>,
    /// Why the run failed.
    pub error: Option<RunError>,
    /// When the event happened: the Standard body's `timestamp`, else the
    /// signed timestamp; `None` for Fetch Hive.
    pub time: Option<SystemTime>,
}

impl WebhookEvent {
    /// Parses a body whose signature `signature` already verified.
    ///
    /// Event ids (what replays are detected by):
    /// - Standard: `webhook-id`.
    /// - Knouds: `<executionId>:<event>` (the docs dedupe on `executionId`;
    ///   the event type keeps `webhook.test` apart), else a SHA-256 of the
    ///   signed `<t>.<body>`.
    /// - Fetch Hive: `<request_id>:<run_status>` (`run_id`/`status`
    ///   accepted), else a SHA-256 of the body.
    ///
    /// Fails `Malformed` when the body is not a JSON object, lacks the
    /// scheme's event type (Knouds `event`, Standard `type`), or carries an
    /// output nested deeper than [`MAX_OUTPUT_DEPTH`].
    pub fn decode(
        scheme: WebhookScheme,
        body: &[u8],
        signature: &SignatureMatch,
    ) -> Result<Self, WebhookFailure> {
        let object = json_object(body)?;
        let event = match scheme {
            WebhookScheme::Knouds => knouds(&object, body, signature),
            WebhookScheme::FetchHive => fetchhive(&object, body),
            WebhookScheme::Standard => standard(&object, signature),
        }?;
        // An output protobuf clients could not parse is never relayed.
        if event
            .output
            .as_ref()
            .is_some_and(|output| exceeds_depth(output, MAX_OUTPUT_DEPTH))
        {
            return Err(WebhookFailure::malformed(format!(
                "output nests deeper than {MAX_OUTPUT_DEPTH} levels"
            )));
        }
        Ok(event)
    }
}

/// The fields of a Fetch Hive callback body naming its run (first found).
const FETCHHIVE_RUN_ID: [&str; 2] = ["request_id", "run_id"];

impl WebhookEvent {
    /// The upstream run id `body` claims before its signature is checked,
    /// for a scheme that signs with each run's own secret (Fetch Hive): it
    /// only selects which run's secret to verify with. The same reader as
    /// the verified event's `upstream_run_id`. `None` for the other
    /// schemes and for a body that names no run.
    pub fn claimed_run_id(scheme: WebhookScheme, body: &[u8]) -> Option<String> {
        match scheme {
            WebhookScheme::FetchHive => first_text(&json_object(body).ok()?, &FETCHHIVE_RUN_ID),
            WebhookScheme::Knouds | WebhookScheme::Standard => None,
        }
    }
}

/// A JSON object whose fields are read only when used: a field the event
/// does not read (usage numbers such as `"ms": 1e400`, which no `f64`
/// holds) can never make a delivery unreadable.
type Object = HashMap<String, Box<RawValue>>;

fn json_object(body: &[u8]) -> Result<Object, WebhookFailure> {
    match serde_json::from_slice::<Object>(body) {
        Ok(object) => Ok(object),
        Err(err) if err.classify() == Category::Data => {
            Err(WebhookFailure::malformed("body is JSON but not an object"))
        }
        Err(err) => Err(WebhookFailure::malformed(format!(
            "body is not JSON (line {}, column {})",
            err.line(),
            err.column()
        ))),
    }
}

/// A string field; numbers are accepted and written out (ids are sometimes
/// numeric), empty strings count as absent ([`flowgate_core::id_text`]).
fn text(object: &Object, key: &str) -> Option<String> {
    flowgate_core::id_text(&value_of(object.get(key)?)?)
}

fn first_text(object: &Object, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| text(object, key))
}

/// The output field: it decides what the event says, so one that is not
/// readable JSON makes the delivery `Malformed` (never silently dropped).
fn output(object: &Object, key: &str) -> Result<Option<Value>, WebhookFailure> {
    let Some(raw) = object.get(key) else {
        return Ok(None);
    };
    match value_of(raw) {
        Some(Value::Null) => Ok(None),
        Some(other) => Ok(Some(decode_output(other))),
        None => Err(WebhookFailure::malformed(format!(
            "`{key}` is not readable JSON"
        ))),
    }
}

/// `{code, message}` (or Fetch Hive's `{error, error_code}`), or a bare
/// string: the shared reader, [`RunError::from_value`]. An unreadable one
/// is dropped (the status still says the run failed).
fn run_error(object: &Object, key: &str, default_code: &str) -> Option<RunError> {
    RunError::from_value(&value_of(object.get(key)?)?, default_code, "")
}

fn sha256_id(parts: &[&[u8]]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part);
    }
    format!("sha256:{}", hex::encode(digest.finalize()))
}

fn knouds(
    object: &Object,
    body: &[u8],
    signature: &SignatureMatch,
) -> Result<WebhookEvent, WebhookFailure> {
    let event_type = text(object, "event")
        .ok_or_else(|| WebhookFailure::malformed("Knouds body has no `event`"))?;
    let execution_id = text(object, "executionId");
    let status = match event_type.as_str() {
        "execution.completed" => Some(RunStatus::Completed),
        "execution.failed" => Some(RunStatus::Failed),
        "execution.cancelled" => Some(RunStatus::Cancelled),
        _ => text(object, "status").and_then(|s| RunStatus::parse_upstream(&s)),
    };
    let event_id = match &execution_id {
        Some(id) => format!("{id}:{event_type}"),
        None => {
            let t = signature.signed_at.map(unix_secs).unwrap_or_default();
            sha256_id(&[t.to_string().as_bytes(), b".", body])
        }
    };
    Ok(WebhookEvent {
        scheme: WebhookScheme::Knouds,
        event_id,
        event_type,
        run_id: None,
        upstream_run_id: execution_id,
        status,
        output: output(object, "result")?,
        error: run_error(object, "error", "EXECUTION_FAILED"),
        time: signature.signed_at,
    })
}

fn fetchhive(object: &Object, body: &[u8]) -> Result<WebhookEvent, WebhookFailure> {
    let run_id = first_text(object, &FETCHHIVE_RUN_ID);
    let status_word = first_text(object, &["run_status", "status"]);
    let status = status_word.as_deref().and_then(RunStatus::parse_upstream);
    let event_id = match &run_id {
        Some(id) => format!("{id}:{}", status_word.as_deref().unwrap_or_default()),
        None => sha256_id(&[body]),
    };
    Ok(WebhookEvent {
        scheme: WebhookScheme::FetchHive,
        event_id,
        event_type: status.map_or_else(|| "callback".to_owned(), |s| format!("run.{}", s.as_str())),
        run_id: None,
        upstream_run_id: run_id,
        status,
        output: output(object, "output")?,
        error: run_error(object, "error", "run_failed"),
        time: None,
    })
}

fn standard(object: &Object, signature: &SignatureMatch) -> Result<WebhookEvent, WebhookFailure> {
    let event_type = text(object, "type")
        .ok_or_else(|| WebhookFailure::malformed("Standard Webhooks body has no `type`"))?;
    // `data` is read field by field too; anything but an object is empty.
    let data = object
        .get("data")
        .and_then(|raw| serde_json::from_str::<Object>(raw.get()).ok())
        .unwrap_or_default();
    let data = &data;
    let status = text(data, "status")
        .and_then(|s| RunStatus::parse_upstream(&s))
        .or_else(|| {
            event_type
                .strip_prefix("run.")
                .and_then(RunStatus::parse_upstream)
        });
    let time = text(object, "timestamp")
        .and_then(|t| parse_rfc3339(&t))
        .or(signature.signed_at);
    Ok(WebhookEvent {
        scheme: WebhookScheme::Standard,
        event_id: signature.message_id.clone().unwrap_or_default(),
        event_type,
        run_id: text(data, "run_id"),
        upstream_run_id: text(data, "upstream_run_id"),
        status,
        output: output(data, "output")?,
        error: run_error(data, "error", "run_failed"),
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unsigned() -> SignatureMatch {
        SignatureMatch {
            matched_secret: 0,
            signed_at: None,
            message_id: None,
        }
    }

    #[test]
    fn over_deep_outputs_are_refused_even_inside_a_json_string() {
        let nested = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }));
        let body = |output: Value| {
            json!({"type": "run.completed", "data": {"run_id": "r", "status": "completed",
                "output": output}})
            .to_string()
        };
        let deep = body(nested(MAX_OUTPUT_DEPTH + 1));
        let refused = WebhookEvent::decode(WebhookScheme::Standard, deep.as_bytes(), &unsigned());
        assert!(matches!(refused, Err(failure) if failure.to_string().contains("deeper")));
        // Knouds sends `result` as a JSON string, decoded before the check.
        let knouds = json!({"event": "execution.completed", "executionId": "ex-1",
            "status": "completed", "result": nested(MAX_OUTPUT_DEPTH + 1).to_string()})
        .to_string();
        assert!(
            WebhookEvent::decode(WebhookScheme::Knouds, knouds.as_bytes(), &unsigned()).is_err()
        );
        let fine = body(nested(MAX_OUTPUT_DEPTH));
        let event =
            WebhookEvent::decode(WebhookScheme::Standard, fine.as_bytes(), &unsigned()).unwrap();
        assert_eq!(event.output, Some(nested(MAX_OUTPUT_DEPTH)));
    }

    #[test]
    fn knouds_completed_and_failed() {
        let body = json!({"event": "execution.completed", "executionId": "ex-1",
            "requestId": "rq", "workflowSlug": "s", "status": "completed",
            "result": "{\"a\":1}"})
        .to_string();
        let event =
            WebhookEvent::decode(WebhookScheme::Knouds, body.as_bytes(), &unsigned()).unwrap();
        assert_eq!(event.event_id, "ex-1:execution.completed");
        assert_eq!(event.status, Some(RunStatus::Completed));
        assert_eq!(event.output, Some(json!({"a": 1})));
        assert_eq!(event.upstream_run_id.as_deref(), Some("ex-1"));

        let body = json!({"event": "execution.failed", "executionId": "ex-1",
            "status": "failed", "error": {"code": "EXECUTION_FAILED", "message": "boom"}})
        .to_string();
        let event =
            WebhookEvent::decode(WebhookScheme::Knouds, body.as_bytes(), &unsigned()).unwrap();
        assert_eq!(event.event_id, "ex-1:execution.failed");
        assert_eq!(event.status, Some(RunStatus::Failed));
        assert_eq!(
            event.error,
            Some(RunError {
                code: "EXECUTION_FAILED".into(),
                message: "boom".into()
            })
        );
    }

    #[test]
    fn knouds_test_event_without_execution_id_gets_a_body_hash() {
        let body = br#"{"event":"webhook.test"}"#;
        let event = WebhookEvent::decode(WebhookScheme::Knouds, body, &unsigned()).unwrap();
        assert!(event.event_id.starts_with("sha256:"));
        assert_eq!(event.status, None);
    }

    #[test]
    fn fetchhive_both_shapes() {
        let body = br#"{"request_id":"req_1","run_status":"completed","output":"[1,2]"}"#;
        let event = WebhookEvent::decode(WebhookScheme::FetchHive, body, &unsigned()).unwrap();
        assert_eq!(event.event_id, "req_1:completed");
        assert_eq!(event.event_type, "run.completed");
        assert_eq!(event.output, Some(json!([1, 2])));

        let body = br#"{"run_id":"r9","status":"failed","output":null,"error":"model down"}"#;
        let event = WebhookEvent::decode(WebhookScheme::FetchHive, body, &unsigned()).unwrap();
        assert_eq!(event.event_id, "r9:failed");
        assert_eq!(event.output, None);
        assert_eq!(event.error.unwrap().message, "model down");

        let body = br#"{"output":"x"}"#;
        let event = WebhookEvent::decode(WebhookScheme::FetchHive, body, &unsigned()).unwrap();
        assert!(event.event_id.starts_with("sha256:"));
        assert_eq!(event.event_type, "callback");
    }

    /// The run a body claims before verification (which selects the run's
    /// secret) is the run the verified event names, whichever field it uses.
    #[test]
    fn the_claimed_fetchhive_run_is_the_decoded_one() {
        for body in [
            &br#"{"request_id":"req_1","run_id":"r0","run_status":"completed"}"#[..],
            br#"{"run_id":42,"status":"failed"}"#,
            br#"{"request_id":"","run_id":"r9"}"#,
            br#"{"output":"x"}"#,
        ] {
            let event = WebhookEvent::decode(WebhookScheme::FetchHive, body, &unsigned()).unwrap();
            let claimed = WebhookEvent::claimed_run_id(WebhookScheme::FetchHive, body);
            assert_eq!(claimed, event.upstream_run_id);
        }
        let named = br#"{"request_id":"req_1"}"#;
        assert_eq!(
            WebhookEvent::claimed_run_id(WebhookScheme::FetchHive, named).as_deref(),
            Some("req_1")
        );
        assert_eq!(
            WebhookEvent::claimed_run_id(WebhookScheme::FetchHive, b"[1]"),
            None
        );
        assert_eq!(
            WebhookEvent::claimed_run_id(WebhookScheme::Knouds, named),
            None
        );
    }

    #[test]
    fn numbers_beyond_f64_in_unread_fields_never_refuse_a_delivery() {
        for literal in ["1e400", "-1e400"] {
            let knouds = format!(
                r#"{{"event": "execution.completed", "executionId": "ex-1", "status": "completed",
                    "result": "{{\"a\":1}}", "cost": {literal}, "ms": {literal}, "requestId": {literal}}}"#
            );
            let event = WebhookEvent::decode(WebhookScheme::Knouds, knouds.as_bytes(), &unsigned())
                .unwrap();
            assert_eq!(event.output, Some(json!({"a": 1})), "{literal}");
            assert_eq!(event.upstream_run_id.as_deref(), Some("ex-1"));

            let fetchhive = format!(
                r#"{{"request_id": "req_1", "run_status": "failed", "total_charge": {literal},
                    "duration": {literal}, "error": {{"error": "x", "code": {literal}}}}}"#
            );
            let event =
                WebhookEvent::decode(WebhookScheme::FetchHive, fetchhive.as_bytes(), &unsigned())
                    .unwrap();
            assert_eq!(event.event_id, "req_1:failed", "{literal}");
            assert_eq!(event.status, Some(RunStatus::Failed));

            let standard = format!(
                r#"{{"type": "run.completed", "usage": {literal},
                    "data": {{"run_id": "r", "status": "completed", "credits": {literal}, "output": 1}}}}"#
            );
            let event =
                WebhookEvent::decode(WebhookScheme::Standard, standard.as_bytes(), &unsigned())
                    .unwrap();
            assert_eq!(event.run_id.as_deref(), Some("r"), "{literal}");
            assert_eq!(event.output, Some(json!(1)));

            // The output itself decides: unreadable is malformed.
            let body = format!(r#"{{"request_id": "req_1", "output": {{"n": {literal}}}}}"#);
            let err = WebhookEvent::decode(WebhookScheme::FetchHive, body.as_bytes(), &unsigned())
                .unwrap_err();
            assert_eq!(err.reason(), crate::FailureReason::Malformed);
        }
    }

    #[test]
    fn non_json_and_non_objects_are_malformed() {
        for scheme in WebhookScheme::ALL {
            for body in [&b"not json"[..], b"[1]", b"", br#"{"a":"#] {
                let err = WebhookEvent::decode(scheme, body, &unsigned()).unwrap_err();
                assert_eq!(err.reason(), crate::FailureReason::Malformed);
            }
        }
        let err = WebhookEvent::decode(WebhookScheme::Knouds, b"{}", &unsigned()).unwrap_err();
        assert_eq!(err.reason(), crate::FailureReason::Malformed);
    }
}
