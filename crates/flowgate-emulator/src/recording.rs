//! What the emulator saw and what it sent: recorded provider requests and
//! delivered callbacks, both kept in bounded, oldest-first logs.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::lock;

/// How many requests and callbacks are kept; older entries are evicted.
pub(crate) const LOG_CAPACITY: usize = 1000;

/// One of the three emulated provider dialects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Fetch Hive, served under `/fetchhive/v1`.
    FetchHive,
    /// AI Tutor, served under `/aitutor`.
    AiTutor,
    /// Knouds, served under `/knouds`.
    Knouds,
}

impl Dialect {
    /// The URL path prefix the dialect is served under (`/fetchhive`, …).
    pub fn prefix(self) -> &'static str {
        match self {
            Dialect::FetchHive => "/fetchhive",
            Dialect::AiTutor => "/aitutor",
            Dialect::Knouds => "/knouds",
        }
    }

    /// The dialect serving `path`, if any.
    pub fn from_path(path: &str) -> Option<Dialect> {
        [Dialect::FetchHive, Dialect::AiTutor, Dialect::Knouds]
            .into_iter()
            .find(|d| {
                path.strip_prefix(d.prefix())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }
}

/// A provider request as received by the emulator.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Which dialect the path belongs to.
    pub dialect: Dialect,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// The full request path as received, e.g. `/fetchhive/v1/workflow/invoke`.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// Request headers, names lowercased, in received order.
    pub headers: Vec<(String, String)>,
    /// The raw request body (empty when it exceeded the size limit).
    pub body: Bytes,
}

impl RecordedRequest {
    /// First value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "dialect": self.dialect,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": String::from_utf8_lossy(&self.body),
        })
    }
}

/// One outgoing callback attempt (Fetch Hive `callback_url` or Knouds webhook).
#[derive(Clone, Debug)]
pub struct DeliveredCallback {
    /// Dialect whose run produced the callback.
    pub dialect: Dialect,
    /// Target URL.
    pub url: String,
    /// Headers sent, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Raw body sent (the exact bytes that were signed).
    pub body: Bytes,
    /// 1 for the first attempt, up to 4 with retries.
    pub attempt: u32,
    /// Response status, when the receiver answered.
    pub status: Option<u16>,
    /// Transport error, when it did not.
    pub error: Option<String>,
}

impl DeliveredCallback {
    /// First value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether the receiver answered with a 2xx status.
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "dialect": self.dialect,
            "url": self.url,
            "headers": self.headers,
            "body": String::from_utf8_lossy(&self.body),
            "attempt": self.attempt,
            "status": self.status,
            "error": self.error,
        })
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A bounded, oldest-first log shared between handlers and the handle.
#[derive(Debug)]
pub(crate) struct BoundedLog<T> {
    entries: Mutex<VecDeque<T>>,
}

impl<T: Clone> BoundedLog<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn push(&self, entry: T) {
        let mut entries = lock(&self.entries);
        if entries.len() >= LOG_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub(crate) fn snapshot(&self) -> Vec<T> {
        lock(&self.entries).iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        lock(&self.entries).clear();
    }
}
