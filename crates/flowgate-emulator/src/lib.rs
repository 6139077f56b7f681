//! A local HTTP server that faithfully emulates the three hosted AI-workflow
//! providers flowgate fronts — Fetch Hive, AI Tutor and Knouds — so the
//! gateway's demo, integration tests and benchmarks (and users who want to
//! try flowgate without spending credits) have something real to talk to.
//!
//! One listener serves every dialect under its own prefix, with the same
//! paths, auth headers, body shapes, error bodies, rate-limit headers, async
//! runs, polling and signed callbacks as the real APIs (see
//! `shared/PROVIDERS.md`):
//!
//! | dialect   | base URL                              | auth                    |
//! |-----------|---------------------------------------|-------------------------|
//! | Fetch Hive| `http://HOST:PORT/fetchhive/v1`       | `Authorization: Bearer` |
//! | AI Tutor  | `http://HOST:PORT/aitutor`            | `Authorization: Bearer` |
//! | Knouds    | `http://HOST:PORT/knouds`             | `x-api-key`             |
//! | admin     | `http://HOST:PORT/_emulator/…`        | none                    |
//!
//! Seeded keys live in [`keys`]. Seeded workflows (deterministic outputs):
//!
//! - Fetch Hive deployments: `summarize` (`default`, `concise`; input
//!   `topic`), `company-extractor` (input `companies`, output a JSON string),
//!   `approval-flow` (Human in the Loop: callback delivery only),
//!   `failing-flow` (run fails), `model-outage` (502).
//! - AI Tutor workflows: `wf_story` (`story`), `wf_research` (`topic`, JSON
//!   string result + citations), `wf_unpublished` (404), `wf_broken` (500),
//!   `wf_blocked` (403 `request_blocked`).
//! - Knouds slugs: `summarize-text`, `render-video` (async), `flaky-pipeline`
//!   (fails; async), `premium-model` (business tier), `no-input`.
//!
//! Every provider request passes one gate: it is recorded (bounded, before
//! anything else), then the first matching [`Fault`] applies (latency, a
//! canned answer, or a dropped connection), then the dialect handles it and
//! [`EmulatorConfig::latency`] is added. A request whose client goes away
//! first is counted by [`Emulator::cancelled_requests`]; a stream whose
//! client goes away before its end by [`Emulator::dropped_streams`].
//!
//! Tests drive the emulator in-process through [`Emulator`]. Non-Rust users
//! get the same through the admin API on the same port:
//! `GET|DELETE /_emulator/requests`, `GET|POST|DELETE /_emulator/faults`
//! (body e.g. `{"dialect":"knouds","path_contains":"/run","status":503,
//! "body":"{}","headers":[["retry-after","1"]],"latency_ms":0,"times":1,
//! "drop_connection":false}`, every field optional), `GET|DELETE
//! /_emulator/callbacks`, `GET /_emulator/stats`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use flowgate_emulator::{Emulator, EmulatorConfig};
//! let bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
//! let emulator = Emulator::start(EmulatorConfig::default(), bind).await?;
//! let base = emulator.fetchhive_base_url(); // http://127.0.0.1:PORT/fetchhive/v1
//! # let _ = base;
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

mod aitutor;
mod callbacks;
mod clock;
mod config;
mod conn;
mod faults;
mod fetchhive;
mod ids;
pub mod keys;
mod knouds;
mod ratelimit;
mod recording;
mod reply;
mod server;
mod shared;
mod store;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{EmulatorConfig, KnoudsWebhook};
pub use faults::Fault;
pub use recording::{DeliveredCallback, Dialect, RecordedRequest};

/// How long [`Emulator::shutdown`] waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running emulator. Dropping it aborts the server and its background
/// tasks; [`Emulator::shutdown`] stops it gracefully.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<shared::Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds `bind` (use `127.0.0.1:0` in tests) and starts serving.
    pub async fn start(config: EmulatorConfig, bind: SocketAddr) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(shared::Shared::new(config)?);
        let app = server::app(shared.clone())
            .into_make_service_with_connect_info::<conn::ConnectionHandle>();
        let (stop, stopped) = oneshot::channel::<()>();
        let serve =
            axum::serve(conn::KillableListener::new(listener), app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
        let server = tokio::spawn(async move {
            if let Err(err) = serve.await {
                tracing::warn!(%err, "emulator server stopped with an error");
            }
        });
        Ok(Emulator {
            addr,
            shared,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/fetchhive/v1`
    pub fn fetchhive_base_url(&self) -> String {
        format!("http://{}/fetchhive/v1", self.addr)
    }

    /// `http://ADDR/aitutor`
    pub fn aitutor_base_url(&self) -> String {
        format!("http://{}/aitutor", self.addr)
    }

    /// `http://ADDR/knouds`
    pub fn knouds_base_url(&self) -> String {
        format!("http://{}/knouds", self.addr)
    }

    /// Provider requests received, oldest first (the last 1000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.snapshot()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.requests.clear();
    }

    /// Adds a fault after the existing ones.
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.faults.push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Callback attempts the emulator made, oldest first (the last 1000).
    pub fn callbacks(&self) -> Vec<DeliveredCallback> {
        self.shared.callbacks.delivered()
    }

    /// Forgets the recorded callbacks.
    pub fn clear_callbacks(&self) {
        self.shared.callbacks.clear();
    }

    /// Provider requests whose client went away before the emulator answered.
    pub fn cancelled_requests(&self) -> u64 {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// While `hold` is true, every AI Tutor stream sends all but its last
    /// chunk and then waits (for tests to observe output before the end);
    /// setting it false releases the held streams.
    pub fn hold_stream_tails(&self, hold: bool) {
        self.shared.streams.hold_tail.send_replace(hold);
    }

    /// Cuts AI Tutor streams into chunks of `bytes` bytes, splitting UTF-8
    /// characters apart; `None`: one word per chunk (the default).
    pub fn set_stream_chunk_bytes(&self, bytes: Option<usize>) {
        let bytes = bytes.unwrap_or(0);
        self.shared
            .streams
            .chunk_bytes
            .store(bytes, Ordering::SeqCst);
    }

    /// Makes AI Tutor streams fail after `chunks` chunks (the connection is
    /// cut, the body never completes); `None`: streams complete.
    pub fn fail_streams_after(&self, chunks: Option<usize>) {
        let chunks = chunks.unwrap_or(0);
        self.shared
            .streams
            .fail_after
            .store(chunks, Ordering::SeqCst);
    }

    /// AI Tutor streams whose client went away before the stream ended.
    pub fn dropped_streams(&self) -> u64 {
        self.shared.streams.dropped.load(Ordering::SeqCst)
    }

    /// Stops accepting connections, lets open ones finish (bounded), and
    /// aborts pending async runs and callbacks.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
        self.shared.abort_background();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.shared.abort_background();
    }
}

/// Runs an emulator on `bind` until Ctrl-C, then shuts it down gracefully.
///
/// Prints nothing; the base URLs are logged at `info` through `tracing`.
pub async fn serve(config: EmulatorConfig, bind: SocketAddr) -> std::io::Result<()> {
    let emulator = Emulator::start(config, bind).await?;
    tracing::info!(
        fetchhive = %emulator.fetchhive_base_url(),
        aitutor = %emulator.aitutor_base_url(),
        knouds = %emulator.knouds_base_url(),
        "provider emulator listening"
    );
    let signal = tokio::signal::ctrl_c().await;
    emulator.shutdown().await;
    signal
}
