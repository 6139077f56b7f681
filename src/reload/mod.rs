//! Files read again while serving: the TLS certificate and key
//! ([`crate::tls::TlsMaterial`]) and the secret files ([`SecretFiles`]).
//!
//! One mechanism for both, made for Kubernetes Secret and ConfigMap volumes
//! (an update swaps the `..data` symlink, so no file event is reliable):
//! every interval a task reads the files again off the runtime
//! (`spawn_blocking`), compares a hash of what it read with what is in use,
//! and installs the new values only when they changed and pass the same
//! checks as at start. Values that do not (a missing, empty or half-written
//! file) keep the previous ones, are logged once per distinct problem
//! (paths and reasons, never a secret) and counted in
//! `flowgate.config.reload_failures{kind}`. The request path only ever
//! loads what is installed.

mod secrets;

use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

pub use secrets::SecretFiles;

/// Something whose files are read again every interval.
pub(crate) trait Reload: Clone + Send + 'static {
    /// What the logs call it when a re-read task fails.
    const WHAT: &'static str;

    /// Reads the files and installs what changed and is valid. Blocking
    /// file I/O: runs on the blocking pool.
    fn reread(&mut self);
}

/// Calls [`Reload::reread`] on `files` every `interval` (the first time one
/// interval from now), off the runtime, until the handle is dropped.
pub(crate) fn spawn_reload<R: Reload>(interval: Duration, files: R) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(reload_forever(interval, files)))
}

async fn reload_forever<R: Reload>(interval: Duration, mut files: R) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let mut this = files.clone();
        match tokio::task::spawn_blocking(move || {
            this.reread();
            this
        })
        .await
        {
            Ok(reread) => files = reread,
            Err(err) => tracing::warn!(%err, "re-reading the {} failed", R::WHAT),
        }
    }
}
