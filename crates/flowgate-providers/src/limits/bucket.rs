//! The local request limit: a token bucket refilled evenly over the
//! configured window.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    window: Duration,
    capacity: f64,
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn new(requests: u32, window: Duration) -> Self {
        let capacity = f64::from(requests.max(1));
        Self {
            window,
            capacity,
            per_second: capacity / window.as_secs_f64().max(0.001),
            tokens: capacity,
            refilled: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.per_second;
            Err(Duration::try_from_secs_f64(wait)
                .unwrap_or(self.window)
                .min(self.window))
        }
    }
}
