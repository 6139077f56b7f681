//! Store health without a round trip of its own: whether Redis is
//! reachable is read off what the connection already does.
//!
//! - Every operation's outcome: an answer means reachable; a timeout, a
//!   dropped or refused connection or refused credentials mean not (a
//!   server error such as a script error or `OOM` only counts as an error:
//!   Redis did answer).
//! - The reconnect loop: a subscriber connection reports its own drop (a
//!   disconnection push) and its renewed subscriptions (confirmation
//!   pushes); and while a handle has seen Redis unreachable, one background
//!   task per handle runs [`RedisConnection::check`] with the reconnect
//!   backoff (50 ms doubling to 1 s) until Redis answers, so recovery shows
//!   without traffic and the log names the real cause. While Redis answers
//!   nothing extra is sent.
//!
//! The reconnecting connection retries connecting inside one operation,
//! so an operation only ever sees a timeout when Redis refuses the
//! password or the TLS certificate; [`RedisConnection::check`] connects
//! once on its own to say which.
//!
//! Recorded in `flowgate.state_store.up` (1/0, one value per process, the
//! latest outcome of any handle) and `flowgate.state_store.errors{operation,
//! kind}`; each change of reachability is logged once (a warning with the
//! error, then an info line when Redis answers again), never a password.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use flowgate_telemetry::metrics;
use redis::{PushKind, cluster::ClusterClient};

use crate::{
    RedisConnection, StoreUnavailable, UnavailableKind,
    connection::{RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY, Shared},
};

/// What [`RedisConnection::check`] connects with: the handle's client,
/// which holds no connection (so a probe keeps nothing alive).
pub(crate) enum Prober {
    Node(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

/// Per handle (shared by its clones).
#[derive(Default)]
pub(crate) struct Health {
    prober: OnceLock<Prober>,
    /// Whether a recovery probe runs.
    probing: AtomicBool,
}

impl Health {
    pub(crate) fn set_prober(&self, prober: Prober) {
        let _ = self.prober.set(prober);
    }
}

impl UnavailableKind {
    /// The metric label: `timeout`, `connection`, `auth`, `server`, `config`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Auth => "auth",
            Self::Server => "server",
            Self::Config => "config",
        }
    }

    /// True when Redis could not be reached (or refused the credentials),
    /// as opposed to answering with an error.
    fn unreachable(self) -> bool {
        matches!(self, Self::Timeout | Self::Connection | Self::Auth)
    }
}

impl RedisConnection {
    /// Connects once on its own (past the reconnecting connection) and
    /// sends `PING`, within the operation timeout: the real reason Redis
    /// cannot be used (refused credentials, an untrusted certificate, a
    /// refused connection). Recorded like any operation (`check`). The
    /// gateway runs it once at start and while Redis is unreachable.
    pub async fn check(&self) -> Result<(), StoreUnavailable> {
        check(&self.shared).await
    }
}

async fn check(shared: &Arc<Shared>) -> Result<(), StoreUnavailable> {
    let operation = "check";
    let ping = redis::cmd("PING");
    let work = async {
        match shared.health.prober.get() {
            Some(Prober::Node(client)) => {
                let mut connection = client.get_multiplexed_async_connection().await?;
                ping.query_async::<String>(&mut connection).await
            }
            Some(Prober::Cluster(client)) => {
                let mut connection = client.get_async_connection().await?;
                ping.query_async::<String>(&mut connection).await
            }
            None => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no client to check with",
            ))),
        }
    };
    let timeout = shared.op_timeout;
    let outcome = match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(StoreUnavailable {
            kind: UnavailableKind::Timeout,
            operation,
            detail: format!("no answer within {timeout:?}"),
        }),
        Ok(result) => result
            .map(drop)
            .map_err(|error| shared.failure(operation, error)),
    };
    observe(shared, operation, &outcome);
    outcome
}

/// Records the outcome of `operation` (see the module docs).
pub(crate) fn observe<T>(
    shared: &Arc<Shared>,
    operation: &'static str,
    outcome: &Result<T, StoreUnavailable>,
) {
    match outcome {
        Ok(_) => reachable(),
        Err(error) => {
            metrics().state_store_error(operation, error.kind.as_str());
            if error.kind.unreachable() {
                unreachable(&error.to_string());
                probe_until_reachable(shared);
            }
        }
    }
}

/// A push on a subscriber connection: its drop, or anything else (which
/// only a live connection delivers, renewed subscriptions included).
pub(crate) fn observe_push(shared: &Arc<Shared>, kind: &PushKind) {
    if *kind == PushKind::Disconnection {
        unreachable("the subscriber connection dropped");
        probe_until_reachable(shared);
    } else {
        reachable();
    }
}

/// Starts the handle's recovery probe unless one runs (or no runtime is
/// there to run it): [`check`] with the reconnect backoff until Redis
/// answers.
fn probe_until_reachable(shared: &Arc<Shared>) {
    if shared.health.probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        shared.health.probing.store(false, Ordering::Release);
        return;
    };
    let shared = Arc::clone(shared);
    runtime.spawn(async move {
        let mut delay = RECONNECT_MIN_DELAY;
        loop {
            tokio::time::sleep(delay).await;
            // Observed like any operation: success records the recovery.
            if check(&shared).await.is_ok() {
                break;
            }
            delay = (delay * 2).min(RECONNECT_MAX_DELAY);
        }
        shared.health.probing.store(false, Ordering::Release);
    });
}

/// Redis answered.
fn reachable() {
    if metrics().state_store_reachable(true) {
        tracing::info!("state store (Redis) reachable");
    }
}

/// Redis could not be reached; `why` holds no secret.
fn unreachable(why: &str) {
    if metrics().state_store_reachable(false) {
        tracing::warn!(
            error = why,
            "state store (Redis) unreachable: async runs, streams and keyed calls answer \
             STATE_STORE_UNAVAILABLE until it answers again"
        );
    }
}
