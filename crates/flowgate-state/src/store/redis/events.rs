//! Run events across replicas: one pub/sub connection per store, one Redis
//! channel per run that has subscribers on this replica, fanned out to
//! them through a local broadcast channel.
//!
//! Every (re)subscription confirmed by Redis (the first one, and the one the
//! client renews after a reconnect) is followed by a read of the record, fed
//! to the local subscribers like a message: a change published while this
//! replica was not listening still arrives. Versions make that safe:
//! subscribers drop what they have already seen.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, Weak},
};

use flowgate_redis::{
    RedisConfig, RedisConnection,
    redis::{self, PushInfo, PushKind, Value},
};
use tokio::sync::{broadcast, mpsc};

use super::{
    super::{StoreUnavailable, Versioned},
    codec,
};

/// Events buffered per run for slow subscribers.
const EVENT_BUFFER: usize = 16;

/// The subscriptions of one store.
pub(super) struct Events {
    subscriber: RedisConnection,
    commands: RedisConnection,
    channels: Mutex<HashMap<String, Channel>>,
    /// Serializes subscribing and unsubscribing, so a new subscriber never
    /// returns before Redis confirmed the channel and a release never drops
    /// a channel somebody just joined.
    changing: tokio::sync::Mutex<()>,
    releases: mpsc::UnboundedSender<String>,
}

struct Channel {
    sender: broadcast::Sender<Versioned>,
    record_key: String,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("channels", &self.lock().len())
            .finish_non_exhaustive()
    }
}

/// Held by a [`Subscription`](super::super::Subscription): when the last one
/// of a run is dropped, the replica leaves the run's channel.
#[derive(Debug)]
pub(crate) struct Release {
    channel: String,
    releases: mpsc::UnboundedSender<String>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.releases.send(std::mem::take(&mut self.channel));
    }
}

impl Events {
    /// Opens the pub/sub connection and starts routing its messages.
    pub(super) fn start(
        config: &RedisConfig,
        commands: RedisConnection,
    ) -> Result<Arc<Self>, StoreUnavailable> {
        let (pushes, push_receiver) = mpsc::unbounded_channel();
        let subscriber = RedisConnection::open_subscriber(config, pushes)?;
        let (releases, release_receiver) = mpsc::unbounded_channel();
        let events = Arc::new(Self {
            subscriber,
            commands,
            channels: Mutex::new(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
            releases,
        });
        tokio::spawn(route(
            Arc::downgrade(&events),
            push_receiver,
            release_receiver,
        ));
        Ok(events)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins `channel` (the events of the run stored at `record_key`);
    /// returns once Redis confirmed it.
    pub(super) async fn subscribe(
        &self,
        channel: String,
        record_key: String,
    ) -> Result<(broadcast::Receiver<Versioned>, Release), StoreUnavailable> {
        let _changing = self.changing.lock().await;
        let release = Release {
            channel: channel.clone(),
            releases: self.releases.clone(),
        };
        if let Some(joined) = self.lock().get(&channel) {
            return Ok((joined.sender.subscribe(), release));
        }
        let (sender, receiver) = broadcast::channel(EVENT_BUFFER);
        self.lock()
            .insert(channel.clone(), Channel { sender, record_key });
        if let Err(error) = self.subscriber.subscribe(&channel).await {
            self.lock().remove(&channel);
            return Err(error);
        }
        Ok((receiver, release))
    }

    /// Subscriptions open on this replica to `channel`.
    pub(super) fn subscribers(&self, channel: &str) -> usize {
        self.lock()
            .get(channel)
            .map_or(0, |joined| joined.sender.receiver_count())
    }

    /// Leaves `channel` if nobody here listens any more.
    async fn release(&self, channel: String) {
        let _changing = self.changing.lock().await;
        {
            let mut channels = self.lock();
            match channels.get(&channel) {
                Some(joined) if joined.sender.receiver_count() == 0 => {
                    channels.remove(&channel);
                }
                _ => return,
            }
        }
        if let Err(error) = self.subscriber.unsubscribe(&channel).await {
            tracing::debug!(%error, "run event channel not left; the subscription lapses with the connection");
        }
    }

    fn on_push(self: &Arc<Self>, push: PushInfo) {
        let mut data = push.data.into_iter();
        let Some(channel) = data.next().and_then(text) else {
            return;
        };
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let Some(payload) = data.next().and_then(text) else {
                    return;
                };
                let decoded = serde_json::from_str::<Vec<String>>(&payload)
                    .map_err(|error| error.to_string())
                    .and_then(|flat| {
                        codec::decode(codec::pairs(flat)).map_err(|error| error.to_string())
                    });
                match decoded {
                    Ok(Some(event)) => self.deliver(&channel, event),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "undecodable run event dropped"),
                }
            }
            PushKind::Subscribe | PushKind::SSubscribe => {
                let Some(record_key) = self
                    .lock()
                    .get(&channel)
                    .map(|joined| joined.record_key.clone())
                else {
                    return;
                };
                let events = Arc::clone(self);
                tokio::spawn(async move { events.catch_up(channel, record_key).await });
            }
            _ => {}
        }
    }

    /// Feeds the stored record to the channel's subscribers (see the module
    /// docs).
    async fn catch_up(&self, channel: String, record_key: String) {
        let read = self
            .commands
            .query::<HashMap<String, String>>(redis::cmd("HGETALL").arg(&record_key))
            .await
            .and_then(codec::decode);
        match read {
            Ok(Some(event)) => self.deliver(&channel, event),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "run not re-read after (re)subscribing"),
        }
    }

    fn deliver(&self, channel: &str, event: Versioned) {
        if let Some(joined) = self.lock().get(channel) {
            let _ = joined.sender.send(event);
        }
    }
}

/// Routes pushes to subscribers and releases to [`Events::release`] until
/// the store is gone.
async fn route(
    events: Weak<Events>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    mut releases: mpsc::UnboundedReceiver<String>,
) {
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let (Some(push), Some(events)) = (push, events.upgrade()) else {
                    return;
                };
                events.on_push(push);
            }
            channel = releases.recv() => {
                let (Some(channel), Some(events)) = (channel, events.upgrade()) else {
                    return;
                };
                tokio::spawn(async move { events.release(channel).await });
            }
        }
    }
}

fn text(value: Value) -> Option<String> {
    redis::from_redis_value(value).ok()
}
