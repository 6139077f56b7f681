//! What every handler shares: the configuration, the request log, the
//! fault table, the callback sender, the cancelled-request counter and the
//! background tasks. Below the dialect modules and the router (`server`),
//! so imports flow one way: `server` → dialects → `shared`. A dialect's own
//! store travels beside it in [`DialectShared`], never as a field here.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use tokio::task::JoinSet;

use crate::callbacks::CallbackSender;
use crate::config::EmulatorConfig;
use crate::faults::FaultTable;
use crate::recording::{BoundedLog, RecordedRequest};
use crate::store::lock;

/// The emulator-wide state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    pub(crate) requests: BoundedLog<RecordedRequest>,
    pub(crate) faults: FaultTable,
    pub(crate) callbacks: CallbackSender,
    pub(crate) cancelled: AtomicU64,
    pub(crate) streams: StreamControls,
    background: Mutex<JoinSet<()>>,
}

impl Shared {
    pub(crate) fn new(config: EmulatorConfig) -> std::io::Result<Self> {
        Ok(Self {
            requests: BoundedLog::new(),
            faults: FaultTable::default(),
            callbacks: CallbackSender::new()?,
            cancelled: AtomicU64::new(0),
            streams: StreamControls::default(),
            background: Mutex::new(JoinSet::new()),
            config,
        })
    }

    /// Runs `task` in the background (async completions, callbacks); it is
    /// aborted when the emulator stops.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut set = lock(&self.background);
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    pub(crate) fn abort_background(&self) {
        lock(&self.background).abort_all();
    }
}

/// One dialect's router state: the emulator-wide [`Shared`] (reached
/// through `Deref`) and the dialect's own store in `dialect`.
#[derive(Debug)]
pub(crate) struct DialectShared<D> {
    shared: Arc<Shared>,
    pub(crate) dialect: D,
}

impl<D> DialectShared<D> {
    pub(crate) fn new(shared: Arc<Shared>, dialect: D) -> Self {
        Self { shared, dialect }
    }

    /// The emulator-wide state, for work that outlives the handler.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl<D> Deref for DialectShared<D> {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// Test controls of streamed answers (AI Tutor's stream endpoint), set
/// through [`crate::Emulator`].
#[derive(Debug)]
pub(crate) struct StreamControls {
    /// While true, a stream sends all but its last chunk, then waits.
    pub(crate) hold_tail: tokio::sync::watch::Sender<bool>,
    /// Chunk size in bytes (cutting characters apart); 0: one word a chunk.
    pub(crate) chunk_bytes: AtomicUsize,
    /// Cut the connection after this many chunks; 0: never.
    pub(crate) fail_after: AtomicUsize,
    /// Streams whose reader went away before their end.
    pub(crate) dropped: AtomicU64,
}

impl Default for StreamControls {
    fn default() -> Self {
        Self {
            hold_tail: tokio::sync::watch::Sender::new(false),
            chunk_bytes: AtomicUsize::new(0),
            fail_after: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}
