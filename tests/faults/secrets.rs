//! Secrets and destinations: redirects, callback URLs, forged run ids,
//! redaction.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail fast with a message"
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use flowgate::pb;
use flowgate_core::RunId;
use flowgate_emulator::{Dialect, EmulatorConfig, Fault};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::common::{self, Harness, deployment, inputs, slug, target, workflow_id};

/// A listener on 127.0.0.1 that answers 200 to anything and counts the
/// connections it accepted. Stopped when the returned guard drops.
struct CountingListener {
    port: u16,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingListener {
    async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// On `addr` (`[::1]:0`, …).
    async fn start_on(addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 8192];
                let _ = socket.read(&mut buffer).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    )
                    .await;
            }
        });
        Self { port, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sync_request(target: Option<pb::WorkflowTarget>, input: serde_json::Value) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target,
        inputs: inputs(input),
        ..Default::default()
    }
}

fn async_request(
    target: Option<pb::WorkflowTarget>,
    input: serde_json::Value,
    callback_url: &str,
) -> pb::InvokeRequest {
    pb::InvokeRequest {
        async_options: Some(pb::AsyncOptions {
            enabled: true,
            callback_url: callback_url.to_owned(),
        }),
        ..sync_request(target, input)
    }
}

/// One call per dialect that is known to succeed against the emulator.
fn one_per_dialect() -> [(Dialect, Option<pb::WorkflowTarget>, serde_json::Value); 3] {
    [
        (
            Dialect::Knouds,
            target("kn", slug("summarize-text")),
            json!({"text": "x"}),
        ),
        (
            Dialect::FetchHive,
            target("fh", deployment("summarize", "default")),
            json!({"topic": "x"}),
        ),
        (
            Dialect::AiTutor,
            target("tutor", workflow_id("wf_story")),
            json!({"story": "x"}),
        ),
    ]
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// Still serving: a plain Knouds call succeeds.
async fn assert_healthy(h: &mut Harness) {
    let response = h
        .client
        .invoke(sync_request(
            target("kn", slug("summarize-text")),
            json!({"text": "ok"}),
        ))
        .await
        .expect("the gateway still serves");
    assert_eq!(response.into_inner().status(), pb::RunStatus::Completed);
}

#[tokio::test]
async fn redirects_are_never_followed_and_their_target_sees_nothing() {
    let mut h = common::start().await;
    let elsewhere = CountingListener::start().await;
    for ((dialect, target, input), status) in one_per_dialect().into_iter().zip([307, 302, 308]) {
        h.emulator.clear_faults();
        h.emulator
            .inject_fault(Fault::status(dialect, status, "").with_header(
                "Location",
                format!("http://127.0.0.1:{}/steal", elsewhere.port),
            ));
        let error = h
            .client
            .invoke(sync_request(target, input))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Internal, "{dialect:?}: {error:?}");
        assert_eq!(reason(&error), "UPSTREAM_REDIRECT");
        let details = error.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.metadata["http_status"], status.to_string());
        assert!(
            error.message().contains(&status.to_string()),
            "{}",
            error.message()
        );
    }
    assert_eq!(
        elsewhere.hits(),
        0,
        "the redirect target received a request"
    );
    h.emulator.clear_faults();
    assert_healthy(&mut h).await;
}

/// The test config without the callback allow-list (the defaults: https
/// only, no private addresses).
fn without_allow_list(text: String) -> String {
    text.replace(
        "callback_allow = [\"127.0.0.1\", \"hooks.example.com\"]",
        "",
    )
    .replace("callback_allow_http = true", "")
}

fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Every URL of `refused`, as the callback of an async Invoke on every
/// dialect, is INVALID_ARGUMENT on `async_options.callback_url`, and no
/// request reaches a vendor.
async fn assert_refused_before_any_run(h: &mut Harness, refused: &[impl AsRef<str>]) {
    h.emulator.clear_requests();
    for (_, target, input) in one_per_dialect() {
        for url in refused.iter().map(AsRef::as_ref) {
            let status = h
                .client
                .invoke(async_request(target.clone(), input.clone(), url))
                .await
                .expect_err(url);
            assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
            assert_eq!(
                bad_request_fields(&status),
                ["async_options.callback_url"],
                "{url}"
            );
        }
    }
    assert!(
        h.emulator.requests().is_empty(),
        "a refused call reached a vendor"
    );
}

#[tokio::test]
async fn callback_urls_to_private_addresses_or_plain_http_are_refused_unless_allowed() {
    let mut strict = common::start_with(EmulatorConfig::default(), without_allow_list).await;
    let refused = [
        "http://127.0.0.1:9/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://100.64.0.1/hook",
        "https://[::1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://0.0.0.0/hook",
        "http://hooks.example.com/hook",
    ];
    assert_refused_before_any_run(&mut strict, &refused).await;
    // https to a public address is fine (TEST-NET-1: a literal, so no DNS
    // query leaves the machine).
    let accepted = strict
        .client
        .invoke(async_request(
            target("kn", slug("render-video")),
            json!({"prompt": "x"}),
            "https://192.0.2.10/flowgate",
        ))
        .await;
    assert!(accepted.is_ok(), "{accepted:?}");

    // The operator allows 127.0.0.1 and http (the shared test config).
    let mut allowing = common::start().await;
    let receiver = CountingListener::start().await;
    let allowed = format!("http://127.0.0.1:{}/hook", receiver.port);
    let response = allowing
        .client
        .invoke(async_request(
            target("kn", slug("render-video")),
            json!({"prompt": "x"}),
            &allowed,
        ))
        .await
        .unwrap();
    assert_eq!(response.into_inner().status(), pb::RunStatus::Running);
    for url in [
        "https://169.254.169.254/latest",
        "https://10.0.0.1/hook",
        "http://127.0.0.2/hook",
    ] {
        let status = allowing
            .client
            .invoke(async_request(
                target("kn", slug("render-video")),
                json!({"prompt": "x"}),
                url,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{url}");
    }
    assert_healthy(&mut strict).await;
}

/// A name other than `localhost` that `/etc/hosts` maps to 127.0.0.1, when
/// the machine has one (resolved without DNS).
fn loopback_name_in_etc_hosts() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut words = line.split('#').next()?.split_whitespace();
        (words.next()? == "127.0.0.1")
            .then(|| {
                words.find(|name| {
                    !name.to_ascii_lowercase().contains("localhost")
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            })
            .flatten()
            .map(str::to_owned)
    })
}

#[tokio::test]
async fn callback_hosts_named_localhost_or_resolving_to_loopback_are_refused_before_any_run() {
    let mut strict = common::start_with(EmulatorConfig::default(), without_allow_list).await;
    let mut refused = vec![
        "https://localhost/hook".to_owned(),
        "https://LocalHost:8443/hook".to_owned(),
        "https://localhost./hook".to_owned(),
        "https://app.localhost/hook".to_owned(),
        "https://app.localhost./hook".to_owned(),
    ];
    // Judged on what it resolves to when the call arrives.
    refused.extend(loopback_name_in_etc_hosts().map(|name| format!("https://{name}/hook")));
    assert_refused_before_any_run(&mut strict, &refused).await;
    assert_healthy(&mut strict).await;
}

/// Starts an AI Tutor async run with `callback_url` and follows it to its
/// end.
async fn run_to_completion(h: &mut Harness, callback_url: &str) {
    let response = h
        .client
        .invoke(async_request(
            target("tutor", workflow_id("wf_story")),
            json!({"story": "x"}),
            callback_url,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut request = tonic::Request::new(pb::StreamStatusRequest {
        run_id: response.run_id.clone(),
    });
    request.set_timeout(Duration::from_secs(15));
    let mut events = h.client.stream_status(request).await.unwrap().into_inner();
    let mut last = None;
    while let Some(event) = events.message().await.unwrap() {
        last = Some(event.status());
    }
    assert_eq!(last, Some(pb::RunStatus::Completed));
}

#[tokio::test]
async fn a_callback_host_resolving_to_loopback_is_refused_at_delivery() {
    // Only `::1` is allowed. `localhost` passes the Invoke-time check (it
    // may be `::1`), but resolves to 127.0.0.1 here (and in most places at
    // least also to it): the forwarder's resolver must drop that address.
    let mut h = common::start_with(EmulatorConfig::default(), |text| {
        text.replace(
            "callback_allow = [\"127.0.0.1\", \"hooks.example.com\"]",
            "callback_allow = [\"::1\"]",
        )
    })
    .await;
    let forbidden = CountingListener::start().await;
    run_to_completion(&mut h, &format!("http://localhost:{}/hook", forbidden.port)).await;
    // Positive control: the same gateway delivers to an allowed receiver.
    let allowed = CountingListener::start_on("[::1]:0").await;
    run_to_completion(&mut h, &format!("http://[::1]:{}/hook", allowed.port)).await;
    for _ in 0..200 {
        if allowed.hits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(allowed.hits(), 1, "the allowed receiver got no delivery");
    // The refused delivery was attempted first and is final (never retried).
    assert_eq!(forbidden.hits(), 0, "the forwarder connected to 127.0.0.1");
    assert_healthy(&mut h).await;
}

#[tokio::test]
async fn forged_or_unsigned_run_ids_are_not_found_without_any_upstream_request() {
    let mut h = common::start().await;
    let exec = "3f0c9d1e-0000-4000-8000-000000000001";
    let signed = common::sign_run_id(&RunId::new("kn", exec));
    let mut tampered = signed.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let other_secret = flowgate_core::RunIdSigner::new(&[flowgate_core::SecretString::new(
        "another-secret-of-32-bytes-xxxxxx",
    )])
    .unwrap()
    .sign(&RunId::new("kn", exec));
    let forged = [
        ".".to_owned(),
        "..".to_owned(),
        "fgr_.".to_owned(),
        RunId::new("kn", "..").encode(),
        RunId::new("fh", ".").encode(),
        RunId::new("kn", exec).encode(),
        String::from_utf8(tampered).unwrap(),
        other_secret,
        // Validly signed, but not an id a dialect accepts: never sent.
        common::sign_run_id(&RunId::new("kn", "..")),
        common::sign_run_id(&RunId::new("fh", ".")),
        common::sign_run_id(&RunId::new("fh", "a/../../x")),
        // The shared shape, but not a Knouds execution id (a UUID).
        common::sign_run_id(&RunId::new("kn", "exec-1")),
    ];
    h.emulator.clear_requests();
    for run_id in &forged {
        let request = pb::StreamStatusRequest {
            run_id: run_id.clone(),
        };
        let status = h.client.stream_status(request).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{run_id}: {status:?}");
    }
    let paths: Vec<String> = h.emulator.requests().into_iter().map(|r| r.path).collect();
    assert!(paths.is_empty(), "a forged id reached a vendor: {paths:?}");
    // A replica that does not share the secret refuses this gateway's ids.
    let mut stranger = common::start_minimal().await;
    stranger.emulator.clear_requests();
    let status = stranger
        .client
        .stream_status(pb::StreamStatusRequest { run_id: signed })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(stranger.emulator.requests().is_empty());
    assert_healthy(&mut h).await;
}

/// True when `text` holds `secret` or any 10-character piece of it.
fn leaks(text: &str, secret: &str) -> bool {
    (0..=secret.len().saturating_sub(10)).any(|at| text.contains(&secret[at..at + 10]))
}

#[tokio::test]
async fn upstream_strings_echoing_the_key_never_reach_the_caller() {
    let mut h = common::start().await;
    let key = h.keys["KN_KEY"].clone();
    // The key straddles the 300-character cut of messages.
    let message = format!("{}{key} was rejected", "m".repeat(280));
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            500,
            json!({"error": message, "code": key}).to_string(),
        )
        .with_path("/run")
        .with_header("X-Request-Id", key.clone())
        .with_times(1),
    );
    let status = h
        .client
        .invoke(sync_request(
            target("kn", slug("summarize-text")),
            json!({"text": "x"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(reason(&status), "UPSTREAM_ERROR");
    let details = format!("{:?}", status.get_error_details());
    assert!(!leaks(status.message(), &key), "{}", status.message());
    assert!(!leaks(&details, &key), "{details}");
    assert!(!leaks(&format!("{:?}", status.metadata()), &key));

    // A FAILED run's error, polled from the executions endpoint.
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            200,
            json!({
                "executionId": "9e9e0000-0000-4000-8000-000000000009",
                "status": "failed",
                "error": {"code": key, "message": format!("{}{key}", "f".repeat(295))}
            })
            .to_string(),
        )
        .with_path("/api/executions/9e9e0000-0000-4000-8000-000000000009")
        .with_header("X-Request-Id", format!("req-{key}")),
    );
    let mut request = tonic::Request::new(pb::StreamStatusRequest {
        run_id: common::sign_run_id(&RunId::new("kn", "9e9e0000-0000-4000-8000-000000000009")),
    });
    request.set_timeout(Duration::from_secs(15));
    let mut events = h.client.stream_status(request).await.unwrap().into_inner();
    let event = events.message().await.unwrap().unwrap();
    assert_eq!(event.status(), pb::RunStatus::Failed);
    let error = event.error.unwrap();
    assert_eq!(error.code, "UPSTREAM_ERROR");
    assert!(!leaks(&format!("{error:?}"), &key), "{error:?}");
    h.emulator.clear_faults();
    assert_healthy(&mut h).await;
}
