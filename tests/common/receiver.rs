//! A local callback receiver on 127.0.0.1:0 answering 200, keeping every
//! delivery (headers and body).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use bytes::Bytes;

/// Deliveries a local callback receiver got.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

impl Received {
    /// Every delivery so far.
    pub fn all(&self) -> Vec<(HeaderMap, Bytes)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded, 5 s) until `count` deliveries arrived.
    pub async fn wait_for(&self, count: usize) -> Vec<(HeaderMap, Bytes)> {
        for _ in 0..200 {
            if self.all().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.all()
    }
}

/// A receiver's URL (`http://127.0.0.1:<port>/hook`) and its deliveries.
pub async fn receiver() -> (String, Received) {
    async fn hook(
        State(received): State<Received>,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        received.0.lock().unwrap().push((headers, body));
        "ok"
    }
    let received = Received::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}
