//! Streamed output: what a provider sends while a run is still going.
//!
//! [`Provider::invoke_stream`](crate::Provider::invoke_stream) gets an
//! [`OutputSink`] and pushes [`StreamEvent`]s into it: `Started` once the
//! upstream accepted the call, then `Delta`s with text in order. The sink is
//! a bounded channel: when the caller reads slowly, `send` waits, so the
//! provider stops reading its upstream body and TCP flow control slows the
//! vendor down (backpressure end to end, nothing buffered beyond
//! [`OutputSink::CAPACITY`] events). Once anything went into the sink the
//! call is visible to the caller and must not be retried
//! ([`OutputSink::has_sent`]).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::{GatewayError, RateLimitInfo};

/// One event of a streamed run, before the final outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The upstream accepted the call and is sending output.
    Started {
        /// The rate-limit headers of the answer that opened the stream.
        rate_limit: RateLimitInfo,
    },
    /// The next piece of output text: whole UTF-8 characters only.
    Delta(String),
}

/// Where a provider sends its stream events (see the module docs).
#[derive(Debug)]
pub struct OutputSink {
    events: mpsc::Sender<StreamEvent>,
    sent: AtomicBool,
}

impl OutputSink {
    /// Events buffered between the provider and the caller.
    pub const CAPACITY: usize = 8;

    /// A sink and the receiver its events arrive at.
    pub fn channel() -> (Self, mpsc::Receiver<StreamEvent>) {
        let (events, receiver) = mpsc::channel(Self::CAPACITY);
        (
            Self {
                events,
                sent: AtomicBool::new(false),
            },
            receiver,
        )
    }

    /// Sends `event`, waiting while the caller is behind. An error when
    /// nobody reads any more (the reader is normally dropped together with
    /// the provider's call, so no caller sees it).
    pub async fn send(&self, event: StreamEvent) -> Result<(), GatewayError> {
        self.sent.store(true, Ordering::Relaxed);
        self.events
            .send(event)
            .await
            .map_err(|_| GatewayError::internal("the stream's reader is gone"))
    }

    /// True once an event went into the sink: the caller may have seen
    /// output, so the call must not be repeated.
    pub fn has_sent(&self) -> bool {
        self.sent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    #[tokio::test]
    async fn a_full_sink_waits_for_the_reader() {
        let (sink, mut receiver) = OutputSink::channel();
        assert!(!sink.has_sent());
        for n in 0..OutputSink::CAPACITY {
            sink.send(StreamEvent::Delta(n.to_string())).await.unwrap();
        }
        assert!(sink.has_sent());
        let mut blocked = Box::pin(sink.send(StreamEvent::Delta("next".into())));
        assert!((&mut blocked).now_or_never().is_none());
        assert_eq!(receiver.recv().await, Some(StreamEvent::Delta("0".into())));
        assert!(blocked.now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_gone_reader_is_an_error() {
        let (sink, receiver) = OutputSink::channel();
        drop(receiver);
        let error = sink.send(StreamEvent::Delta("x".into())).await.unwrap_err();
        assert_eq!(error.class, crate::ErrorClass::Internal);
    }
}
