//! The forwarder end to end with a destination policy: what the resolver
//! and the IP-literal check refuse is never contacted.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::destination::callback_client;

/// A receiver on 127.0.0.1 that answers 200 and counts connections.
async fn receiver() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (port, hits, task)
}

async fn deliver(policy: CallbackPolicy, url: String) -> DeliveryResult {
    let policy = Arc::new(policy);
    let forwarder = Forwarder::new(
        ForwarderConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            destinations: Some(Arc::clone(&policy)),
            ..ForwarderConfig::default()
        },
        callback_client(policy).unwrap(),
    );
    let mut outcomes = forwarder.subscribe();
    forwarder
        .enqueue(Delivery {
            url: url.parse().unwrap(),
            event_id: "evt_1".into(),
            body: Bytes::from_static(b"{}"),
            secret: StandardSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
        })
        .unwrap();
    let outcome = outcomes.recv().await.unwrap();
    forwarder.shutdown().await;
    outcome.result
}

#[tokio::test]
async fn names_resolving_to_forbidden_addresses_are_never_contacted() {
    let (port, hits, task) = receiver().await;
    let strict = CallbackPolicy::new(&[], true).unwrap();
    let refused = deliver(strict.clone(), format!("http://localhost:{port}/hook")).await;
    assert_eq!(refused, DeliveryResult::Rejected { status: None });
    let literal = deliver(strict, format!("http://127.0.0.1:{port}/hook")).await;
    assert_eq!(literal, DeliveryResult::Rejected { status: None });
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the receiver saw a request");
    // The same receiver, allowed by the operator, gets the delivery.
    let allowed = CallbackPolicy::new(&["127.0.0.1".into()], true).unwrap();
    let delivered = deliver(allowed, format!("http://localhost:{port}/hook")).await;
    assert_eq!(delivered, DeliveryResult::Delivered { status: 200 });
    let by_name = CallbackPolicy::new(&["localhost".into()], true).unwrap();
    let delivered = deliver(by_name, format!("http://localhost:{port}/hook")).await;
    assert_eq!(delivered, DeliveryResult::Delivered { status: 200 });
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    task.abort();
}
