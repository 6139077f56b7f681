//! Helpers shared by the emulator's integration tests.
// Each test crate uses a different subset of the helpers.
#![allow(dead_code)]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test on setup errors"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use flowgate_emulator::{Emulator, EmulatorConfig};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::RequestBuilder;
use serde_json::Value;
use sha2::Sha256;

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start(config, localhost()).await.unwrap()
}

pub async fn start_default() -> Emulator {
    start(EmulatorConfig::default()).await
}

pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(20))
}

/// A client that gives up on a request after `timeout`.
pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .unwrap()
}

/// `POST {base}/workflow/invoke` (Fetch Hive) with a Bearer `key`, if any.
pub fn fetchhive_invoke(
    http: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    body: &Value,
) -> RequestBuilder {
    with_bearer(http.post(format!("{base}/workflow/invoke")).json(body), key)
}

/// `POST {base}/api/v1/run/{workflow}` (AI Tutor) with a Bearer `key`, if any.
pub fn aitutor_run(
    http: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    workflow: &str,
    body: &Value,
) -> RequestBuilder {
    with_bearer(
        http.post(format!("{base}/api/v1/run/{workflow}"))
            .json(body),
        key,
    )
}

/// `POST {base}/api/workflows/{slug}/run{query}` (Knouds) with `x-api-key: key`;
/// `query` is empty or starts with `?`.
pub fn knouds_run(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    slug: &str,
    query: &str,
    body: &Value,
) -> RequestBuilder {
    http.post(format!("{base}/api/workflows/{slug}/run{query}"))
        .header("x-api-key", key)
        .json(body)
}

/// `request` with a Bearer `key`, if any.
pub fn with_bearer(request: RequestBuilder, key: Option<&str>) -> RequestBuilder {
    match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

/// Sends `request` and returns the answer's status.
pub async fn send_status(request: RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

/// Sends `request` and decodes the answer as JSON (see [`json_of`]).
pub async fn send_json(request: RequestBuilder) -> (u16, HeaderMap, Value) {
    json_of(request.send().await.unwrap()).await
}

pub fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A received callback.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<Mutex<u32>>,
}

/// A local HTTP endpoint recording POSTed callbacks.
pub struct CallbackReceiver {
    pub url: String,
    state: ReceiverState,
    task: tokio::task::JoinHandle<()>,
}

impl CallbackReceiver {
    /// Answers 500 to the first `fail_first` callbacks, 200 afterwards.
    pub async fn start(fail_first: u32) -> Self {
        let state = ReceiverState {
            received: Arc::default(),
            fail_first: Arc::new(Mutex::new(fail_first)),
        };
        let app = Router::new()
            .route("/callback", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
        let url = format!("http://{}/callback", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(Duration::from_secs(10), || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    state
        .received
        .lock()
        .unwrap()
        .push(Received { headers, body });
    let mut fail = state.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

pub async fn json_of(response: reqwest::Response) -> (u16, HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
    (status, headers, value)
}
