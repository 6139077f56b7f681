//! A gRPC server-streaming answer as a Connect streaming body: each gRPC
//! message frame becomes a Connect envelope (the same frame for
//! `+proto`, its proto3 JSON for `+json`), and the gRPC status with the
//! trailing metadata becomes the end-of-stream envelope. Nothing is
//! buffered beyond one message.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};
use prost_reflect::MessageDescriptor;
use tonic::Status;

use crate::layers::panic::{log_panic, panic_status};

use super::{
    codec::{FLAG_COMPRESSED, FLAG_END_STREAM, frame, proto_to_json, take_frame},
    error::end_stream_json,
};

pin_project_lite::pin_project! {
    /// The Connect streaming body over a gRPC response body `B`.
    pub struct ConnectStreamBody<B> {
        #[pin]
        inner: B,
        // Some: transcode each message to JSON; None: pass protobuf on.
        json: Option<MessageDescriptor>,
        buffer: BytesMut,
        // The status of a trailers-only answer (sent in the headers).
        head: Option<Status>,
        done: bool,
    }
}

impl<B> std::fmt::Debug for ConnectStreamBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectStreamBody")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<B> ConnectStreamBody<B> {
    /// Translates `inner`; `json` names the message type to transcode to
    /// JSON, `head` is the status found in the response headers.
    pub fn new(inner: B, json: Option<MessageDescriptor>, head: Option<Status>) -> Self {
        Self {
            inner,
            json,
            buffer: BytesMut::new(),
            head,
            done: false,
        }
    }
}

/// The end-of-stream envelope for `status` and `trailers`.
fn end_stream(status: &Status, trailers: &HeaderMap) -> Frame<Bytes> {
    let json = end_stream_json(status, trailers);
    // An end-of-stream message is a few KiB (statuses are capped).
    Frame::data(frame(FLAG_END_STREAM, &json).unwrap_or_default())
}

impl<B> ConnectStreamBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<super::BoxError>,
{
    /// The next Connect frame: a message envelope or the end of the stream.
    fn translate(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            // The gateway's own messages: bounded by what it built.
            if let Ok(Some((flags, message))) = take_frame(this.buffer, usize::MAX) {
                let out = if flags & FLAG_COMPRESSED != 0 {
                    Err("compressed message from the gRPC service".to_owned())
                } else {
                    match this.json {
                        Some(desc) => proto_to_json(desc, &message)
                            .and_then(|json| frame(0, &json).ok_or_else(|| "too large".into())),
                        None => frame(0, &message).ok_or_else(|| "too large".into()),
                    }
                };
                return Poll::Ready(Some(Ok(match out {
                    Ok(envelope) => Frame::data(envelope),
                    Err(problem) => {
                        *this.done = true;
                        tracing::warn!(%problem, "Connect stream: a message could not be sent");
                        end_stream(
                            &Status::internal("the answer could not be encoded"),
                            &HeaderMap::new(),
                        )
                    }
                })));
            }
            let next = ready!(this.inner.as_mut().poll_frame(cx));
            let (status, trailers) = match next {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.buffer.extend_from_slice(&data);
                        continue;
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => (Status::from_header_map(&trailers), trailers),
                        Err(_) => continue,
                    },
                },
                Some(Err(err)) => (Some(Status::from_error(err.into())), HeaderMap::new()),
                None => (this.head.take(), HeaderMap::new()),
            };
            *this.done = true;
            let status = match status {
                Some(status) if this.buffer.is_empty() => status,
                _ => Status::internal("the stream ended without a status"),
            };
            return Poll::Ready(Some(Ok(end_stream(&status, &trailers))));
        }
    }
}

impl<B> Body for ConnectStreamBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<super::BoxError>,
{
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        // Our own code above the catch-panic layer: a panic while
        // translating ends the stream INTERNAL_PANIC; the inner body is
        // never polled again.
        match catch_unwind(AssertUnwindSafe(|| self.as_mut().translate(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                *self.project().done = true;
                log_panic("_OTHER");
                Poll::Ready(Some(Ok(end_stream(&panic_status(), &HeaderMap::new()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

    fn envelopes(mut bytes: BytesMut) -> Vec<(u8, Bytes)> {
        let mut out = Vec::new();
        while let Ok(Some(frame)) = take_frame(&mut bytes, usize::MAX) {
            out.push(frame);
        }
        assert!(bytes.is_empty());
        out
    }

    #[tokio::test]
    async fn messages_then_end_stream_even_when_split() {
        let event = tonic_types::pb::ErrorInfo {
            reason: "R".into(),
            ..Default::default()
        };
        let framed = frame(0, &prost::Message::encode_to_vec(&event)).unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().unwrap());
        trailers.insert("grpc-message", "gone".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(framed.slice(..2))),
            Ok(Frame::data(framed.slice(2..))),
            Ok(Frame::trailers(trailers)),
        ];
        let desc = super::super::codec::Catalog::get()
            .unwrap()
            .message("google.rpc.ErrorInfo");
        let body =
            ConnectStreamBody::new(StreamBody::new(futures::stream::iter(frames)), desc, None);
        let bytes = body.collect().await.unwrap().to_bytes();
        let got = envelopes(BytesMut::from(&bytes[..]));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (0, Bytes::from_static(br#"{"reason":"R"}"#)));
        assert_eq!(got[1].0, FLAG_END_STREAM);
        let end: serde_json::Value = serde_json::from_slice(&got[1].1).unwrap();
        assert_eq!(end["error"]["code"], "unavailable");
        assert_eq!(end["error"]["message"], "gone");
    }

    #[tokio::test]
    async fn a_truncated_stream_ends_internal() {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 9, 1])))];
        let body = ConnectStreamBody::new(
            StreamBody::new(futures::stream::iter(frames)),
            None,
            Some(Status::ok("")),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        let got = envelopes(BytesMut::from(&bytes[..]));
        let end: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(end["error"]["code"], "internal");
    }
}
