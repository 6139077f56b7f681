//! The three rate-limit shapes the providers use: a daily cap reset at
//! midnight UTC (Fetch Hive), a per-second sliding window (AI Tutor) and a
//! fixed per-tier window (Knouds). Counters exist only for seeded keys, so
//! the maps stay bounded. All three report a decision with the same
//! `x-ratelimit-*` headers and refuse with a 429 plus `Retry-After`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::response::Response;
use http::header::{HeaderName, RETRY_AFTER};

use crate::clock::unix_now;
use crate::reply::with_headers;
use crate::store::lock;

/// The outcome of counting one request against a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateDecision {
    /// Whether the request fits in the limit (it was counted only if so).
    pub allowed: bool,
    /// The limit of the window.
    pub limit: u32,
    /// Requests left in the window after this one.
    pub remaining: u32,
    /// Unix second at which the window resets.
    pub reset_epoch: u64,
    /// Seconds a rejected caller should wait.
    pub retry_after_secs: u64,
}

impl RateDecision {
    /// A fresh window of `limit`, for responses that count nothing (bad key).
    pub(crate) fn untouched(limit: u32, reset_epoch: u64) -> Self {
        Self {
            allowed: true,
            limit,
            remaining: limit,
            reset_epoch,
            retry_after_secs: 0,
        }
    }

    /// `x-ratelimit-limit` and `x-ratelimit-remaining` (all AI Tutor sends).
    pub(crate) fn count_headers(&self) -> [(HeaderName, String); 2] {
        [
            (
                HeaderName::from_static("x-ratelimit-limit"),
                self.limit.to_string(),
            ),
            (
                HeaderName::from_static("x-ratelimit-remaining"),
                self.remaining.to_string(),
            ),
        ]
    }

    /// [`Self::count_headers`] plus `x-ratelimit-reset` (Fetch Hive, Knouds).
    pub(crate) fn headers(&self) -> [(HeaderName, String); 3] {
        let [limit, remaining] = self.count_headers();
        [
            limit,
            remaining,
            (
                HeaderName::from_static("x-ratelimit-reset"),
                self.reset_epoch.to_string(),
            ),
        ]
    }

    /// The answer to the counted request: `handle()` when it was allowed,
    /// otherwise `rejected()` with `Retry-After: retry_after_secs`. Either
    /// carries the rate-limit `headers`.
    pub(crate) fn respond(
        &self,
        headers: &[(HeaderName, String)],
        retry_after_secs: u64,
        rejected: impl FnOnce() -> Response,
        handle: impl FnOnce() -> Response,
    ) -> Response {
        if !self.allowed {
            let response = with_headers(rejected(), headers);
            return with_headers(response, &[(RETRY_AFTER, retry_after_secs.to_string())]);
        }
        with_headers(handle(), headers)
    }
}

/// Fetch Hive: `limit` requests per key per UTC day.
#[derive(Debug, Default)]
pub(crate) struct DailyQuota {
    used: Mutex<HashMap<String, (u64, u32)>>,
}

/// Unix second of the next midnight UTC.
pub(crate) fn next_midnight_utc() -> u64 {
    (unix_now() / 86_400 + 1) * 86_400
}

impl DailyQuota {
    pub(crate) fn hit(&self, key: &str, limit: u32) -> RateDecision {
        let now = unix_now();
        let day = now / 86_400;
        let reset = next_midnight_utc();
        let mut used = lock(&self.used);
        let entry = used.entry(key.to_owned()).or_insert((day, 0));
        if entry.0 != day {
            *entry = (day, 0);
        }
        let allowed = entry.1 < limit;
        if allowed {
            entry.1 += 1;
        }
        RateDecision {
            allowed,
            limit,
            remaining: limit.saturating_sub(entry.1),
            reset_epoch: reset,
            retry_after_secs: reset.saturating_sub(now).max(1),
        }
    }
}

/// AI Tutor: `limit` requests per key in any sliding `window`.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    window: Duration,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SlidingWindow {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn hit(&self, key: &str, limit: u32) -> RateDecision {
        let now = Instant::now();
        let mut hits = lock(&self.hits);
        let q = hits.entry(key.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        let allowed = q.len() < limit as usize;
        if allowed {
            q.push_back(now);
        }
        let used = u32::try_from(q.len()).unwrap_or(u32::MAX);
        let oldest_expiry = q
            .front()
            .map(|t| self.window.saturating_sub(now.duration_since(*t)))
            .unwrap_or(self.window);
        RateDecision {
            allowed,
            limit,
            remaining: limit.saturating_sub(used),
            reset_epoch: unix_now() + oldest_expiry.as_secs_f64().ceil() as u64,
            retry_after_secs: oldest_expiry.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

/// Knouds: `limit` requests per key per fixed window starting at its first request.
#[derive(Debug)]
pub(crate) struct FixedWindow {
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl FixedWindow {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn hit(&self, key: &str, limit: u32) -> RateDecision {
        let now = Instant::now();
        let mut windows = lock(&self.windows);
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        let allowed = entry.1 < limit;
        if allowed {
            entry.1 += 1;
        }
        let left = self.window.saturating_sub(now.duration_since(entry.0));
        let left_secs = left.as_secs_f64().ceil() as u64;
        RateDecision {
            allowed,
            limit,
            remaining: limit.saturating_sub(entry.1),
            reset_epoch: unix_now() + left_secs,
            retry_after_secs: left_secs.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_quota_rejects_after_limit() {
        let q = DailyQuota::default();
        assert!(q.hit("k", 2).allowed);
        let second = q.hit("k", 2);
        assert!(second.allowed);
        assert_eq!(second.remaining, 0);
        let third = q.hit("k", 2);
        assert!(!third.allowed);
        assert!(third.retry_after_secs >= 1);
        assert!(q.hit("other", 2).allowed);
    }

    #[test]
    fn sliding_window_frees_slots() {
        let w = SlidingWindow::new(Duration::from_millis(50));
        assert!(w.hit("k", 1).allowed);
        assert!(!w.hit("k", 1).allowed);
        std::thread::sleep(Duration::from_millis(60));
        assert!(w.hit("k", 1).allowed);
    }

    #[test]
    fn fixed_window_resets() {
        let w = FixedWindow::new(Duration::from_millis(50));
        assert!(w.hit("k", 1).allowed);
        let rejected = w.hit("k", 1);
        assert!(!rejected.allowed);
        assert_eq!(rejected.remaining, 0);
        std::thread::sleep(Duration::from_millis(60));
        assert!(w.hit("k", 1).allowed);
    }
}
