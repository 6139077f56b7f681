//! The panic hook `serve` installs: each panic is one structured log event
//! with its message and location, in the span of the call that panicked.
//! Its own test binary, because the hook and the subscriber are global.
//! The callback ingress's panics too: logged once, by the hook.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex},
};

use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The captured log lines as JSON.
fn lines(captured: &Captured) -> Vec<serde_json::Value> {
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// One test: the subscriber and the hook are process-wide.
#[test]
fn a_panic_is_logged_once_as_a_structured_event_in_its_span() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(captured.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    flowgate::logging::route_panics();

    let span = tracing::info_span!("call", rpc.method = "Invoke");
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _entered = span.enter();
        panic!("vendor sent something odd");
    }));
    assert!(caught.is_err());

    let lines = lines(&captured);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let event = &lines[0];
    assert_eq!(event["level"], "ERROR");
    assert_eq!(
        event["fields"]["panic.message"],
        "vendor sent something odd"
    );
    let location = event["fields"]["panic.location"].as_str().unwrap();
    assert!(location.starts_with("tests/panic_log.rs:"), "{location}");
    assert_eq!(event["span"]["rpc.method"], "Invoke");

    captured.0.lock().unwrap().clear();
    a_panic_in_the_callback_ingress_is_logged_once(&captured);
}

/// A delivery handler that panics for one provider, behind the ingress's
/// panic handling (`ingress::router` wraps its routes the same way): 500
/// without the message, which is in the log once; the listener keeps
/// serving.
fn a_panic_in_the_callback_ingress_is_logged_once(captured: &Captured) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let routes = axum::Router::new().route(
            "/webhooks/{provider}",
            axum::routing::post(
                |axum::extract::Path(provider): axum::extract::Path<String>| async move {
                    assert!(provider != "boom", "ingress secret-ish detail");
                    "delivered"
                },
            ),
        );
        let router = flowgate::ingress::answer_panics(routes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let post = |provider: &str| {
            client
                .post(format!("http://{addr}/webhooks/{provider}"))
                .body("{}")
                .send()
        };
        let response = post("boom").await.unwrap();
        assert_eq!(response.status(), 500);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"error": "internal error"}));
        let response = post("kn").await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "delivered");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
    let lines = lines(captured);
    let with_message: Vec<_> = lines
        .iter()
        .filter(|line| line.to_string().contains("ingress secret-ish detail"))
        .collect();
    assert_eq!(with_message.len(), 1, "{lines:?}");
    assert_eq!(
        with_message[0]["fields"]["panic.message"],
        "ingress secret-ish detail"
    );
}
