//! Callers through a real gRPC client on 127.0.0.1: authentication,
//! capabilities, key rotation, run ownership, the loopback-only default,
//! `flowgate hash-key`, and no key or hash in logs or error details.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    sync::OnceLock,
};

use common::{captured_logs::CapturedLogs, inputs, slug, target};
use flowgate::{auth::KeyHash, config::Config, pb, server};
use flowgate_emulator::EmulatorConfig;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

const CI_KEY: &str = "fgk_ci_key_one_0123456789abcdefghijklmnopqrstuv";
const CI_KEY_NEW: &str = "fgk_ci_key_two_0123456789abcdefghijklmnopqrstuv";
const OPS_KEY: &str = "fgk_ops_key_0123456789abcdefghijklmnopqrstuvwxy";
const PEER_KEY: &str = "fgk_peer_key_0123456789abcdefghijklmnopqrstuvwx";

/// Everything every test of this binary logs, at every level.
fn logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

fn hash(key: &str) -> String {
    KeyHash::of(key.as_bytes()).to_config()
}

/// The callers of the tests: `ci` may run Knouds `summarize-*` and stream
/// its own runs (two keys: a rotation in progress); `ops` may do anything;
/// `peer` may stream its own runs only.
fn callers(ci_keys: &[&str]) -> String {
    let ci: Vec<String> = ci_keys.iter().map(|k| format!("\"{}\"", hash(k))).collect();
    format!(
        "\n[callers.ci]\nkey_hashes = [{}]\ncapabilities = [\"invoke:kn/summarize-*\", \"invoke:kn/render-*\", \"runs:stream\"]\n\
         [callers.ops]\nkey_hashes = [\"{}\"]\ncapabilities = [\"invoke:*/*\", \"schemas:read\", \"runs:stream-all\", \"webhooks:verify\"]\n\
         [callers.peer]\nkey_hashes = [\"{}\"]\nidentities = [\"spiffe://cluster.local/ns/ci/sa/runner\"]\ncapabilities = [\"runs:stream\", \"invoke:kn/render-*\"]\n",
        ci.join(", "),
        hash(OPS_KEY),
        hash(PEER_KEY),
    )
}

async fn start(ci_keys: &[&str]) -> common::Harness {
    logs();
    let callers = callers(ci_keys);
    common::start_with(EmulatorConfig::default(), move |text| text + &callers).await
}

fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn summarize() -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("kn", slug("summarize-text")),
        inputs: inputs(serde_json::json!({"text": "hello"})),
        ..Default::default()
    }
}

fn render_async() -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("kn", slug("render-video")),
        inputs: inputs(serde_json::json!({"prompt": "a fox"})),
        async_options: Some(pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        ..Default::default()
    }
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .unwrap()
        .reason
        .clone()
}

fn assert_unauthenticated(status: &Status) {
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(status), "CALLER_UNAUTHENTICATED");
}

fn assert_denied(status: &Status, required: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(info.reason, "CALLER_CAPABILITY_DENIED");
    assert_eq!(info.metadata.get("required_capability").unwrap(), required);
}

#[tokio::test]
async fn missing_malformed_unknown_keys_are_unauthenticated_and_say_nothing_more() {
    let mut harness = start(&[CI_KEY]).await;
    let calls_before = harness.emulator.requests().len();
    let mut statuses = Vec::new();
    statuses.push(harness.client.invoke(summarize()).await.unwrap_err());
    for header in [
        format!("Basic {CI_KEY}"),
        "Bearer".into(),
        format!("Bearer {CI_KEY}x"),
        format!("Bearer {}", hash(CI_KEY)),
    ] {
        let mut request = Request::new(summarize());
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        statuses.push(harness.client.invoke(request).await.unwrap_err());
    }
    for status in &statuses {
        assert_unauthenticated(status);
        assert_eq!(status.message(), statuses[0].message(), "never says which");
    }
    // Every method, not only Invoke.
    let status = harness
        .client
        .stream_status(pb::StreamStatusRequest { run_id: "x".into() })
        .await
        .unwrap_err();
    assert_unauthenticated(&status);
    let status = harness
        .client
        .get_workflow_schema(pb::GetWorkflowSchemaRequest::default())
        .await
        .unwrap_err();
    assert_unauthenticated(&status);
    assert_eq!(
        harness.emulator.requests().len(),
        calls_before,
        "nothing reached a provider"
    );
    // Health stays open for probes; reflection is authenticated by default.
    let channel = harness.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let served = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(served.into_inner().status, 1);
    harness.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_scoped_caller_runs_its_workflows_and_nothing_else() {
    let mut harness = start(&[CI_KEY]).await;
    let ok = harness
        .client
        .invoke(with_key(summarize(), CI_KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.provider, "kn");
    let calls_before = harness.emulator.requests().len();

    // Another provider, another workflow, schemas, webhooks: denied, each
    // naming the capability that would allow it, before any upstream call.
    let mut other = summarize();
    other.target = target("kn-pro", slug("summarize-text"));
    let status = harness
        .client
        .invoke(with_key(other, CI_KEY))
        .await
        .unwrap_err();
    assert_denied(&status, "invoke:kn-pro/summarize-text");
    let mut other = summarize();
    other.target = target("fh", common::deployment("summarize", "default"));
    let status = harness
        .client
        .invoke(with_key(other, CI_KEY))
        .await
        .unwrap_err();
    assert_denied(&status, "invoke:fh/summarize");
    // No provider named and none inferable (three AI Tutor providers): only
    // a `*` provider pattern could allow it, and none is called.
    let mut inferred = summarize();
    inferred.target = target("", common::workflow_id("wf_research"));
    let status = harness
        .client
        .invoke(with_key(inferred, CI_KEY))
        .await
        .unwrap_err();
    assert_denied(&status, "invoke:*/wf_research");
    let status = harness
        .client
        .get_workflow_schema(with_key(
            pb::GetWorkflowSchemaRequest {
                target: target("kn", slug("summarize-text")),
            },
            CI_KEY,
        ))
        .await
        .unwrap_err();
    assert_denied(&status, "schemas:kn/summarize-text");
    let status = harness
        .client
        .verify_webhook(with_key(pb::VerifyWebhookRequest::default(), CI_KEY))
        .await
        .unwrap_err();
    assert_denied(&status, "webhooks:verify");
    assert_eq!(
        harness.emulator.requests().len(),
        calls_before,
        "no denied call reached a provider"
    );

    // `ops` may read schemas.
    let schema = harness
        .client
        .get_workflow_schema(with_key(
            pb::GetWorkflowSchemaRequest {
                target: target("kn", slug("summarize-text")),
            },
            OPS_KEY,
        ))
        .await
        .unwrap();
    assert!(!schema.into_inner().fields.is_empty());
    harness.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn key_rotation_two_keys_valid_then_the_removed_one_is_refused() {
    let mut harness = start(&[CI_KEY, CI_KEY_NEW]).await;
    for key in [CI_KEY, CI_KEY_NEW] {
        harness
            .client
            .invoke(with_key(summarize(), key))
            .await
            .unwrap();
    }
    harness.server.shutdown().await.unwrap();
    harness.emulator.shutdown().await;

    let mut rotated = start(&[CI_KEY_NEW]).await;
    let status = rotated
        .client
        .invoke(with_key(summarize(), CI_KEY))
        .await
        .unwrap_err();
    assert_unauthenticated(&status);
    rotated
        .client
        .invoke(with_key(summarize(), CI_KEY_NEW))
        .await
        .unwrap();
    rotated.server.shutdown().await.unwrap();
}

async fn first_event(
    client: &mut common::Harness,
    run_id: &str,
    key: &str,
) -> Result<pb::RunStatusEvent, Status> {
    let mut stream = client
        .client
        .stream_status(with_key(
            pb::StreamStatusRequest {
                run_id: run_id.into(),
            },
            key,
        ))
        .await?
        .into_inner();
    Ok(stream.message().await?.expect("an event"))
}

#[tokio::test]
async fn a_run_belongs_to_its_caller() {
    let mut harness = start(&[CI_KEY]).await;
    let started = harness
        .client
        .invoke(with_key(render_async(), CI_KEY))
        .await
        .unwrap()
        .into_inner();
    let run_id = started.run_id;
    // Its owner streams it, and the events carry the id it asked with.
    let event = first_event(&mut harness, &run_id, CI_KEY).await.unwrap();
    assert_eq!(event.run_id, run_id);
    // `peer` may stream its own runs only: another's run is NOT_FOUND,
    // exactly like a run that does not exist.
    let hidden = first_event(&mut harness, &run_id, PEER_KEY)
        .await
        .unwrap_err();
    let unknown_id = common::sign_run_id(&flowgate_core::RunId::new("kn", "no-such-run"));
    let unknown = first_event(&mut harness, &unknown_id, PEER_KEY)
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(hidden.code(), unknown.code());
    assert_eq!(reason(&hidden), reason(&unknown));
    assert_eq!(reason(&hidden), "UNKNOWN_RUN");
    // With `runs:stream-all`, any run.
    first_event(&mut harness, &run_id, OPS_KEY).await.unwrap();
    harness.server.shutdown().await.unwrap();

    // The owner is signed into the id: another replica sharing the run id
    // secret (and nothing else) knows whose run it is.
    let mut replica = start(&[CI_KEY]).await;
    let hidden = first_event(&mut replica, &run_id, PEER_KEY)
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    replica.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_callers_only_loopback_unless_unauthenticated_calls_are_allowed() {
    let provider = "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n";
    let env = |_: &str| Some("knouds_live_x".to_owned());
    let exposed = Config::parse(
        &format!("{provider}[server]\nlisten = \"0.0.0.0:0\"\n"),
        Vec::new(),
    )
    .unwrap();
    let err = server::build(&exposed, env).unwrap_err().to_string();
    assert!(
        err.contains("server.listen") && err.contains("allow_unauthenticated"),
        "{err}"
    );
    let opted_in = Config::parse(
        &format!(
            "{provider}[server]\nlisten = \"0.0.0.0:0\"\n[auth]\nallow_unauthenticated = true\n"
        ),
        Vec::new(),
    )
    .unwrap();
    assert!(server::build(&opted_in, env).is_ok());
    let with_callers = Config::parse(
        &format!(
            "{provider}[server]\nlisten = \"0.0.0.0:0\"\n[callers.ci]\nkey_hashes = [\"{}\"]\n",
            hash(CI_KEY)
        ),
        Vec::new(),
    )
    .unwrap();
    assert!(server::build(&with_callers, env).is_ok());

    // check-config says it too.
    let dir = std::env::temp_dir().join(format!("flowgate-callers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exposed.toml");
    std::fs::write(
        &path,
        format!("{provider}[server]\nlisten = \"0.0.0.0:0\"\n"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .arg("check-config")
        .arg(&path)
        .env("KN", "knouds_live_x")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
}

#[test]
fn hash_key_prints_the_hash_of_stdin_or_generates_a_key() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{CI_KEY}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        hash(CI_KEY)
    );

    let output = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["hash-key", "--generate"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let key = lines.iter().find(|l| l.starts_with("fgk_")).unwrap();
    let printed = lines.iter().find(|l| l.starts_with("sha256:")).unwrap();
    assert_eq!(*printed, hash(key));
    assert!(key.len() >= 40);
    assert!(
        text.contains("key_hashes"),
        "says where the hash goes: {text}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .arg("hash-key")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "an empty stdin is refused");
}

#[tokio::test]
async fn keys_and_hashes_appear_in_no_log_and_no_error_detail() {
    let mut harness = start(&[CI_KEY]).await;
    let mut statuses = Vec::new();
    harness
        .client
        .invoke(with_key(summarize(), CI_KEY))
        .await
        .unwrap();
    let mut denied = summarize();
    denied.target = target("kn-pro", slug("summarize-text"));
    statuses.push(
        harness
            .client
            .invoke(with_key(denied, CI_KEY))
            .await
            .unwrap_err(),
    );
    statuses.push(
        harness
            .client
            .invoke(with_key(summarize(), &format!("{CI_KEY}0")))
            .await
            .unwrap_err(),
    );
    harness.server.shutdown().await.unwrap();
    let secrets = [
        CI_KEY.to_owned(),
        hash(CI_KEY)[7..].to_owned(),
        hash(&format!("{CI_KEY}0"))[7..].to_owned(),
    ];
    for status in &statuses {
        let text = format!("{status:?} {:?}", status.get_error_details());
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{text}");
        }
    }
    let logged = logs().text();
    assert!(logged.contains("CALLER_"), "the refusals were logged");
    // One access line per call, with the caller, never the key.
    let access: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains(r#""target":"flowgate::access""#))
        .collect();
    assert!(
        access.iter().any(|line| line.contains(r#""caller":"ci""#)
            && line.contains(r#""code":"PERMISSION_DENIED""#)
            && line.contains(r#""reason":"CALLER_CAPABILITY_DENIED""#)
            && line.contains(r#""provider":"kn-pro""#)
            && line.contains(r#""workflow":"summarize-text""#)
            && line.contains(r#""method":"flowgate.v1.WorkflowGateway/Invoke""#)
            && line.contains(r#""duration_ms":"#)),
        "{access:#?}"
    );
    assert!(
        access
            .iter()
            .any(|line| line.contains(r#""caller":"unauthenticated""#)
                && line.contains(r#""code":"UNAUTHENTICATED""#)
                && line.contains(r#""reason":"CALLER_UNAUTHENTICATED""#)),
        "{access:#?}"
    );
    assert!(
        access.iter().any(|line| line.contains(r#""caller":"ci""#)
            && line.contains(r#""code":"OK""#)
            && line.contains(r#""credits":0.5"#)
            && line.contains(r#""run_id":"fgr_"#)),
        "{access:#?}"
    );
    for secret in &secrets {
        assert!(!logged.contains(secret.as_str()), "a secret in the logs");
    }
    assert!(!logged.contains("fgk_"), "no key of any test in the logs");
}
