//! The panic hook `serve` installs: each panic is one structured log event
//! with its message and location, in the span of the call that panicked.
//! Its own test binary, because the hook and the subscriber are global.

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

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let event = &lines[0];
    assert_eq!(event["level"], "ERROR");
    assert_eq!(
        event["fields"]["panic.message"],
        "vendor sent something odd"
    );
    let location = event["fields"]["panic.location"].as_str().unwrap();
    assert!(location.starts_with("tests/panic_log.rs:"), "{location}");
    assert_eq!(event["span"]["rpc.method"], "Invoke");
}
