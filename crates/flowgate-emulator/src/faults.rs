//! Fault injection: canned answers, added latency and dropped connections,
//! matched in order against provider requests before normal handling.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::recording::Dialect;
use crate::store::lock;

/// A fault to inject into provider responses.
///
/// The first fault whose `dialect` and `path_contains` match a request
/// applies: after `latency`, the emulator either closes the connection
/// (`drop_connection`), answers with `status`/`body`/`headers`, or — when
/// `status` is 0 — handles the request normally. `times` bounds how many
/// requests the fault applies to (`None`: until cleared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Only requests of this dialect (`None`: any).
    pub dialect: Option<Dialect>,
    /// Only requests whose path (with `?query`) contains this text.
    pub path_contains: Option<String>,
    /// Status to answer with; 0 means "add latency, then handle normally".
    pub status: u16,
    /// Response body.
    pub body: String,
    /// Response `Content-Type`.
    pub content_type: String,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Delay before answering (or before normal handling).
    pub latency: Duration,
    /// How many matching requests to affect; `None` until cleared.
    pub times: Option<u32>,
    /// Close the connection without answering (after `latency`).
    pub drop_connection: bool,
}

impl Fault {
    /// A fault answering `status` with a JSON `body` to every request of `dialect`.
    pub fn status(dialect: Dialect, status: u16, body: impl Into<String>) -> Self {
        Self {
            dialect: Some(dialect),
            path_contains: None,
            status,
            body: body.into(),
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
            latency: Duration::ZERO,
            times: None,
            drop_connection: false,
        }
    }

    /// A fault that only delays requests of `dialect`, then handles them normally.
    pub fn delay(dialect: Dialect, latency: Duration) -> Self {
        Self::status(dialect, 0, "").with_latency(latency)
    }

    /// A fault that closes the connection of requests of `dialect` unanswered.
    pub fn dropped(dialect: Dialect) -> Self {
        Self::status(dialect, 0, "").dropping_connection()
    }

    /// Apply to the next `n` matching requests only.
    pub fn with_times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Wait `latency` before answering.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Add a response header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Only match paths (with `?query`) containing `fragment`.
    pub fn with_path(mut self, fragment: impl Into<String>) -> Self {
        self.path_contains = Some(fragment.into());
        self
    }

    /// Set the response `Content-Type`.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// Close the connection without answering.
    pub fn dropping_connection(mut self) -> Self {
        self.drop_connection = true;
        self
    }

    fn matches(&self, dialect: Dialect, path_and_query: &str) -> bool {
        self.dialect.is_none_or(|d| d == dialect)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path_and_query.contains(p))
    }
}

/// The JSON form of a [`Fault`] accepted by `POST /_emulator/faults`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    #[serde(default)]
    dialect: Option<Dialect>,
    #[serde(default)]
    path_contains: Option<String>,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    body: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    latency_ms: u64,
    #[serde(default)]
    times: Option<u32>,
    #[serde(default)]
    drop_connection: bool,
}

fn default_content_type() -> String {
    "application/json".to_owned()
}

impl FaultSpec {
    pub(crate) fn validate(self) -> Result<Fault, String> {
        if self.status != 0 && !(100..=999).contains(&self.status) {
            return Err(format!("status {} is not a valid HTTP status", self.status));
        }
        Ok(Fault {
            dialect: self.dialect,
            path_contains: self.path_contains,
            status: self.status,
            body: self.body,
            content_type: self.content_type,
            headers: self.headers,
            latency: Duration::from_millis(self.latency_ms),
            times: self.times,
            drop_connection: self.drop_connection,
        })
    }
}

impl From<&Fault> for FaultSpec {
    fn from(f: &Fault) -> Self {
        Self {
            dialect: f.dialect,
            path_contains: f.path_contains.clone(),
            status: f.status,
            body: f.body.clone(),
            content_type: f.content_type.clone(),
            headers: f.headers.clone(),
            latency_ms: u64::try_from(f.latency.as_millis()).unwrap_or(u64::MAX),
            times: f.times,
            drop_connection: f.drop_connection,
        }
    }
}

/// The ordered list of active faults.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    faults: Mutex<Vec<Fault>>,
}

impl FaultTable {
    pub(crate) fn push(&self, fault: Fault) {
        if fault.times != Some(0) {
            lock(&self.faults).push(fault);
        }
    }

    pub(crate) fn clear(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn snapshot(&self) -> Vec<Fault> {
        lock(&self.faults).clone()
    }

    /// The first fault matching the request, consuming one of its `times`.
    pub(crate) fn take_match(&self, dialect: Dialect, path_and_query: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|f| f.matches(dialect, path_and_query))?;
        let fault = faults[index].clone();
        if let Some(times) = faults[index].times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                faults.remove(index);
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_bounds_matches() {
        let table = FaultTable::default();
        table.push(Fault::status(Dialect::Knouds, 503, "{}").with_times(2));
        assert!(
            table
                .take_match(Dialect::FetchHive, "/fetchhive/v1")
                .is_none()
        );
        assert!(table.take_match(Dialect::Knouds, "/knouds/api").is_some());
        assert!(table.take_match(Dialect::Knouds, "/knouds/api").is_some());
        assert!(table.take_match(Dialect::Knouds, "/knouds/api").is_none());
    }

    #[test]
    fn path_filter_and_order() {
        let table = FaultTable::default();
        table.push(Fault::status(Dialect::AiTutor, 500, "a").with_path("/stream"));
        table.push(Fault::status(Dialect::AiTutor, 502, "b"));
        let hit = table.take_match(Dialect::AiTutor, "/aitutor/api/v1/run/wf/stream?token=x");
        assert_eq!(hit.map(|f| f.status), Some(500));
        let hit = table.take_match(Dialect::AiTutor, "/aitutor/api/v1/run/wf");
        assert_eq!(hit.map(|f| f.status), Some(502));
    }

    #[test]
    fn spec_round_trips() {
        let spec: FaultSpec = serde_json::from_str(
            r#"{"dialect":"knouds","status":503,"body":"{}","latency_ms":20,"times":1}"#,
        )
        .unwrap();
        let fault = spec.validate().unwrap();
        assert_eq!(fault.latency, Duration::from_millis(20));
        assert_eq!(fault.content_type, "application/json");
        assert!(serde_json::from_str::<FaultSpec>(r#"{"bogus":1}"#).is_err());
    }
}
