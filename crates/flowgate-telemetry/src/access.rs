//! The access log: one line per call, target `flowgate::access`.
//!
//! The RPC layer (in the set-up crate) puts a [`CallRecord`] in each
//! request's extensions and logs it once the call's status is known; the
//! layers and the service below fill it in as they learn things: the caller
//! (the auth layer), the provider, workflow and run id (the service), the
//! reason of a refusal (whoever refused). One allocation per call, plus the
//! strings the line needs. Never a key, a hash, inputs or outputs.

use std::sync::{Arc, Mutex, OnceLock};

/// The caller label of a call whose caller is not known (health checks,
/// open reflection, refused calls): the metrics' `caller` label is a
/// configured caller name or this, so it stays bounded.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// What one call did, filled in as it goes (see the module docs).
#[derive(Debug, Default)]
pub struct CallRecord {
    caller: OnceLock<Arc<str>>,
    details: Mutex<CallDetails>,
}

/// The parts of a [`CallRecord`] the service knows.
#[derive(Debug, Default, Clone)]
pub struct CallDetails {
    /// The configured provider name.
    pub provider: Option<String>,
    /// The workflow (deployment, id or slug).
    pub workflow: Option<String>,
    /// The gateway run id given to the caller.
    pub run_id: Option<String>,
    /// The ErrorInfo reason of a failed call.
    pub reason: Option<String>,
    /// The credits the provider reported for the run.
    pub credits: Option<f64>,
}

impl CallRecord {
    /// A fresh record, shared by the layers of one call.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Sets the caller (its configured name: a bounded label). The first
    /// one set wins.
    pub fn set_caller(&self, name: &Arc<str>) {
        let _ = self.caller.set(Arc::clone(name));
    }

    /// The caller, when one was set.
    pub fn caller(&self) -> Option<&Arc<str>> {
        self.caller.get()
    }

    /// Updates the details (a poisoned lock is recovered: it only holds
    /// log fields).
    pub fn update(&self, update: impl FnOnce(&mut CallDetails)) {
        let mut details = self
            .details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        update(&mut details);
    }

    /// Takes the details, to log them.
    pub fn take_details(&self) -> CallDetails {
        let mut details = self
            .details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_caller_wins_and_details_are_taken_once() {
        let record = CallRecord::new();
        assert!(record.caller().is_none());
        record.set_caller(&Arc::from("ci"));
        record.set_caller(&Arc::from("ops"));
        assert_eq!(record.caller().map(|c| &**c), Some("ci"));
        record.update(|d| d.provider = Some("kn".into()));
        assert_eq!(record.take_details().provider.as_deref(), Some("kn"));
        assert!(record.take_details().provider.is_none());
    }
}
