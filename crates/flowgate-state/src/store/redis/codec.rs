//! A run record as the fields of one Redis hash, every value a string:
//!
//! | field | value |
//! |---|---|
//! | `v` | version: grows with every change (kept by the scripts) |
//! | `rank` | 0 QUEUED, 1 RUNNING, 2 terminal (compared by the scripts) |
//! | `status` | `queued`, `running`, `completed`, `failed`, `cancelled` |
//! | `provider`, `upstream_id` | the run id |
//! | `kind` | the provider's dialect (`fetchhive`, …) when the run started |
//! | `updated_at` | nanoseconds since the Unix epoch |
//! | `output` | JSON, once completed |
//! | `error` | JSON `{"code","message"}`, once failed |
//! | `usage` | JSON `{"credits","duration_ns","tokens"}`, when reported |
//! | `secret` | the provider's per-run callback secret (never published) |
//! | `callback_url`, `trace_parent` | as given |
//!
//! Absent values are absent fields.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flowgate_core::{ProviderKind, RunError, RunId, RunStatus, SecretString, Usage};
use flowgate_redis::UnavailableKind;
use serde_json::{Value, json};

use super::super::{RunChange, RunRecord, StoreUnavailable, Versioned, rank};

/// Fields an update may remove (an output or error the new state lacks).
pub(super) const CLEARABLE: [&str; 2] = ["output", "error"];

/// Every field of `record` but the version, as field/value pairs.
pub(super) fn record_fields(record: &RunRecord) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("provider", record.run_id.provider.clone()),
        ("upstream_id", record.run_id.upstream_id.clone()),
    ];
    if let Some(kind) = record.provider_kind {
        fields.push(("kind", kind.as_str().to_owned()));
    }
    fields.extend(state_fields(
        record.status,
        record.output.as_ref(),
        record.error.as_ref(),
        record.updated_at,
    ));
    if record.usage != Usage::default() {
        fields.push(("usage", usage_json(&record.usage)));
    }
    if let Some(secret) = &record.webhook_secret {
        fields.push(("secret", secret.expose().to_owned()));
    }
    if let Some(url) = &record.callback_url {
        fields.push(("callback_url", url.clone()));
    }
    if let Some(parent) = &record.trace_parent {
        fields.push(("trace_parent", parent.clone()));
    }
    fields
}

/// What an update sets (the state, output and error; usage when
/// reported) and which of [`CLEARABLE`] it removes.
pub(super) fn change_fields(
    change: &RunChange,
    now: SystemTime,
) -> (Vec<(&'static str, String)>, Vec<&'static str>) {
    let mut set = state_fields(
        change.status,
        change.output.as_ref(),
        change.error.as_ref(),
        now,
    );
    if change.usage != Usage::default() {
        set.push(("usage", usage_json(&change.usage)));
    }
    let clear = CLEARABLE
        .into_iter()
        .filter(|field| !set.iter().any(|(name, _)| name == field))
        .collect();
    (set, clear)
}

fn state_fields(
    status: RunStatus,
    output: Option<&Value>,
    error: Option<&RunError>,
    updated_at: SystemTime,
) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("rank", rank(status).to_string()),
        ("status", status.as_str().to_owned()),
        ("updated_at", nanos(updated_at).to_string()),
    ];
    if let Some(output) = output {
        fields.push(("output", output.to_string()));
    }
    if let Some(error) = error {
        fields.push((
            "error",
            json!({"code": error.code, "message": error.message}).to_string(),
        ));
    }
    fields
}

fn usage_json(usage: &Usage) -> String {
    json!({
        "credits": usage.credits,
        "duration_ns": usage.duration.map(|duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)),
        "tokens": usage.tokens,
    })
    .to_string()
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// A record from its fields (`HGETALL`, or a published message); `None`
/// for no fields (no such run).
pub(super) fn decode(
    fields: HashMap<String, String>,
) -> Result<Option<Versioned>, StoreUnavailable> {
    if fields.is_empty() {
        return Ok(None);
    }
    let text = |name: &str| fields.get(name).cloned();
    let required = |name: &'static str| text(name).ok_or_else(|| corrupt(name));
    let number = |name: &'static str| -> Result<u64, StoreUnavailable> {
        required(name)?.parse().map_err(|_| corrupt(name))
    };
    let json_field = |name: &'static str| -> Result<Option<Value>, StoreUnavailable> {
        text(name)
            .map(|raw| serde_json::from_str(&raw).map_err(|_| corrupt(name)))
            .transpose()
    };
    let status =
        RunStatus::parse_upstream(&required("status")?).ok_or_else(|| corrupt("status"))?;
    let run_id = RunId::new(required("provider")?, required("upstream_id")?);
    let error = json_field("error")?
        .map(|error| {
            Some(RunError {
                code: error.get("code")?.as_str()?.to_owned(),
                message: error.get("message")?.as_str()?.to_owned(),
            })
        })
        .map(|error| error.ok_or_else(|| corrupt("error")))
        .transpose()?;
    let usage = json_field("usage")?.map_or_else(Usage::default, |usage| Usage {
        credits: usage.get("credits").and_then(Value::as_f64),
        duration: usage
            .get("duration_ns")
            .and_then(Value::as_u64)
            .map(Duration::from_nanos),
        tokens: usage.get("tokens").and_then(Value::as_u64),
    });
    let record = RunRecord {
        run_id,
        // A built-in dialect's name; any other reads as unknown.
        provider_kind: text("kind").as_deref().and_then(ProviderKind::parse),
        status,
        output: json_field("output")?,
        error,
        usage,
        updated_at: UNIX_EPOCH + Duration::from_nanos(number("updated_at")?),
        webhook_secret: text("secret").map(SecretString::new),
        callback_url: text("callback_url"),
        trace_parent: text("trace_parent"),
    };
    Ok(Some(Versioned {
        version: number("v")?,
        record,
    }))
}

/// Flat `[field, value, …]` (a script's answer or a published message) as
/// a map.
pub(super) fn pairs(flat: Vec<String>) -> HashMap<String, String> {
    let mut map = HashMap::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        map.insert(field, value);
    }
    map
}

fn corrupt(field: &str) -> StoreUnavailable {
    StoreUnavailable {
        kind: UnavailableKind::Server,
        operation: "decoding a run record",
        detail: format!("field {field:?} is missing or malformed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_version(fields: Vec<(&'static str, String)>) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        map.insert("v".to_owned(), "7".to_owned());
        map
    }

    #[test]
    fn a_full_record_round_trips() {
        let mut record = RunRecord::new(RunId::new("fh", "run-1"), RunStatus::Failed);
        record.provider_kind = Some(ProviderKind::FetchHive);
        record.output = Some(json!({"answer": [1, "two", null]}));
        record.error = Some(RunError {
            code: "BOOM".into(),
            message: "it \"broke\"".into(),
        });
        record.usage = Usage {
            credits: Some(1.5),
            duration: Some(Duration::from_nanos(1_234_567_891)),
            tokens: Some(42),
        };
        record.webhook_secret = Some(SecretString::new("whsec_x"));
        record.callback_url = Some("https://example.com/cb".into());
        record.trace_parent = Some("00-abc-def-01".into());
        let decoded = decode(with_version(record_fields(&record)))
            .unwrap()
            .unwrap();
        assert_eq!(decoded.version, 7);
        assert_eq!(decoded.record, record);
    }

    #[test]
    fn a_bare_record_round_trips_and_garbage_is_an_error() {
        let record = RunRecord::new(RunId::new("kn", "local:1"), RunStatus::Queued);
        let decoded = decode(with_version(record_fields(&record)))
            .unwrap()
            .unwrap();
        assert_eq!(decoded.record, record);
        assert!(decode(HashMap::new()).unwrap().is_none());
        // A dialect registered in code is not known by name here: unknown.
        let mut other = with_version(record_fields(&record));
        other.insert("kind".into(), "relay".into());
        assert_eq!(decode(other).unwrap().unwrap().record.provider_kind, None);
        let mut broken = with_version(record_fields(&record));
        broken.insert("status".into(), "sideways".into());
        assert!(decode(broken).is_err());
    }

    #[test]
    fn a_change_clears_what_it_lacks_and_keeps_unreported_usage() {
        let change = RunChange {
            status: RunStatus::Completed,
            output: Some(json!("done")),
            error: None,
            usage: Usage::default(),
        };
        let (set, clear) = change_fields(&change, SystemTime::now());
        assert!(
            set.iter()
                .any(|(name, value)| *name == "output" && value == "\"done\"")
        );
        assert!(!set.iter().any(|(name, _)| *name == "usage"));
        assert_eq!(clear, vec!["error"]);
    }
}
