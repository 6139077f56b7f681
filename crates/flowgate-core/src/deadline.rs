//! The caller's deadline, on tokio's clock.
//!
//! Every timer in the engine (the guard's circuit and rate windows, the
//! tracker's polls and watch limits, and this) reads the same clock:
//! `tokio::time::Instant`. Under `#[tokio::test(start_paused = true)]` that
//! clock only moves when the test advances it, so deadlines can be tested
//! without waiting and without wall-clock thresholds.

use std::time::Duration;

use tokio::time::Instant;

/// When the caller stops waiting. The upstream call never outlives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No caller deadline (the provider's own timeout still applies).
    pub const NONE: Deadline = Deadline(None);

    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now().checked_add(timeout))
    }

    /// The instant, if any (on tokio's clock).
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// Time left, `None` when unbounded; zero once passed.
    pub fn remaining(self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The time an upstream request may take: the provider's `timeout`,
    /// shortened to what is left of the deadline.
    pub fn budget(self, timeout: Duration) -> Duration {
        self.remaining().map_or(timeout, |left| left.min(timeout))
    }

    /// The earlier of two deadlines (an unbounded one never wins).
    pub fn earlier(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (a, b) => Deadline(a.or(b)),
        }
    }

    /// True once the deadline has passed.
    pub fn is_expired(self) -> bool {
        self.remaining().is_some_and(|left| left.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_elapses_on_the_paused_clock() {
        let deadline = Deadline::after(Duration::from_secs(5));
        assert!(!deadline.is_expired());
        assert_eq!(deadline.remaining(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(deadline.remaining(), Some(Duration::from_secs(2)));
        assert_eq!(
            deadline.budget(Duration::from_secs(30)),
            Duration::from_secs(2)
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(deadline.is_expired());
        assert_eq!(deadline.budget(Duration::from_secs(30)), Duration::ZERO);
        assert!(!Deadline::NONE.is_expired());
    }

    #[test]
    fn budget_is_the_shorter_of_timeout_and_deadline() {
        assert_eq!(
            Deadline::NONE.budget(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        let soon = Deadline::after(Duration::from_millis(100));
        assert!(soon.budget(Duration::from_secs(5)) <= Duration::from_millis(100));
        let late = Deadline::after(Duration::from_secs(60));
        assert_eq!(late.budget(Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn earlier_deadline_wins() {
        let soon = Deadline::after(Duration::from_secs(1));
        let late = Deadline::after(Duration::from_secs(60));
        assert_eq!(soon.earlier(late), soon);
        assert_eq!(late.earlier(soon), soon);
        assert_eq!(Deadline::NONE.earlier(late), late);
        assert_eq!(Deadline::NONE.earlier(Deadline::NONE), Deadline::NONE);
    }

    #[test]
    fn passed_deadline_is_expired() {
        assert!(Deadline::after(Duration::ZERO).is_expired());
        assert!(!Deadline::NONE.is_expired());
    }
}
