//! The Connect protocol on the gRPC port, spoken with a plain HTTP client
//! (reqwest over HTTP/1.1, as curl would): unary JSON and binary Invoke,
//! Connect error JSON with decoded details, StreamStatus envelopes, and
//! hostile bodies; gRPC on the same port keeps working.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use base64::Engine as _;
use common::{Harness, deployment, slug, target};
use flowgate::pb;
use prost::Message as _;
use serde_json::{Value, json};

const INVOKE: &str = "flowgate.v1.WorkflowGateway/Invoke";
const STREAM: &str = "flowgate.v1.WorkflowGateway/StreamStatus";

fn url(h: &Harness, method: &str) -> String {
    format!("http://{}/{method}", h.server.addr)
}

async fn post(h: &Harness, method: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(url(h, method))
        .header("content-type", content_type)
        .header("connect-protocol-version", "1")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn post_json(
    h: &Harness,
    method: &str,
    body: Value,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let response = post(h, method, "application/json", body.to_string().into_bytes()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap();
    (status, headers, body)
}

/// The envelopes of a Connect streaming body, as (flags, payload).
fn envelopes(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        out.push((bytes[0], bytes[5..5 + len].to_vec()));
        bytes = &bytes[5 + len..];
    }
    out
}

fn envelope(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The detail of `type` in a Connect error, checking that its base64
/// `value` decodes to what its `debug` says.
fn detail<'a>(error: &'a Value, kind: &str) -> &'a Value {
    let detail = error["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details in {error}"))
        .iter()
        .find(|d| d["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {error}"));
    let value = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(detail["value"].as_str().unwrap())
        .unwrap();
    assert!(!value.is_empty());
    if kind == "google.rpc.ErrorInfo" {
        let info = tonic_types::pb::ErrorInfo::decode(&value[..]).unwrap();
        assert_eq!(detail["debug"]["reason"], info.reason);
    }
    &detail["debug"]
}

#[tokio::test]
async fn unary_json_invoke_answers_json_with_rate_limit_headers() {
    let h = common::start().await;
    let (status, headers, body) = post_json(
        &h,
        INVOKE,
        json!({
            "target": {"provider": "fh", "deployment": {"name": "summarize", "variant": "default"}},
            "inputs": {"topic": "enterprise AI"}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["status"], "RUN_STATUS_COMPLETED");
    assert_eq!(body["provider"], "fh");
    assert!(body["output"].as_str().unwrap().contains("enterprise AI"));
    common::run_ids()
        .verify(body["runId"].as_str().unwrap())
        .unwrap();
    // uint64 is a string in proto3 JSON; the same number as the metadata.
    assert_eq!(
        headers["x-ratelimit-remaining"].to_str().unwrap(),
        body["rateLimit"]["remaining"].as_str().unwrap()
    );
}

#[tokio::test]
async fn unary_binary_invoke_matches_grpc() {
    let mut h = common::start().await;
    let request = pb::InvokeRequest {
        target: target("kn", slug("summarize-text")),
        inputs: common::inputs(json!({"text": "Connect over binary"})),
        ..Default::default()
    };
    let response = post(&h, INVOKE, "application/proto", request.encode_to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/proto");
    let connect = pb::InvokeResponse::decode(response.bytes().await.unwrap()).unwrap();
    let grpc = h.client.invoke(request).await.unwrap().into_inner();
    assert_eq!(connect.status(), pb::RunStatus::Completed);
    assert_eq!(connect.status, grpc.status);
    assert_eq!(connect.output, grpc.output);
    assert_eq!(connect.provider, grpc.provider);
}

#[tokio::test]
async fn errors_are_connect_json_with_decoded_details() {
    let h = common::start().await;
    let (status, _, error) = post_json(
        &h,
        INVOKE,
        json!({"target": {"provider": "fh", "deployment": {"name": "no-such-deployment", "variant": "default"}}}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error["code"], "not_found");
    assert!(error["message"].as_str().is_some());
    assert_eq!(
        detail(&error, "google.rpc.ErrorInfo")["domain"],
        "fetchhive"
    );
    assert_eq!(
        detail(&error, "google.rpc.ResourceInfo")["resourceType"],
        "fetchhive.deployment"
    );

    // A gateway-side validation error: BadRequest with field violations.
    let (status, _, error) = post_json(&h, INVOKE, json!({"inputs": {"a": 1}})).await;
    assert_eq!(status, 400);
    assert_eq!(error["code"], "invalid_argument");
    let violations = &detail(&error, "google.rpc.BadRequest")["fieldViolations"];
    assert!(
        violations[0]["field"]
            .as_str()
            .unwrap()
            .starts_with("target"),
        "{error}"
    );

    // Credits exhausted: RESOURCE_EXHAUSTED → 429 with QuotaFailure.
    let (status, _, error) = post_json(
        &h,
        INVOKE,
        json!({"target": {"provider": "kn-broke", "slug": "summarize-text"}, "inputs": {"text": "x"}}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(error["code"], "resource_exhausted");
    detail(&error, "google.rpc.QuotaFailure");
}

#[tokio::test]
async fn stream_status_sends_envelopes_then_end_of_stream() {
    let h = common::start().await;
    let (status, _, run) = post_json(
        &h,
        INVOKE,
        json!({"target": {"provider": "kn", "slug": "render-video"}, "inputs": {"prompt": "a fox"}, "asyncOptions": {"enabled": true}}),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "RUN_STATUS_RUNNING");
    let run_id = run["runId"].as_str().unwrap();

    // JSON envelopes.
    let request = envelope(json!({"runId": run_id}).to_string().as_bytes());
    let response = post(&h, STREAM, "application/connect+json", request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/connect+json"
    );
    let frames = envelopes(&response.bytes().await.unwrap());
    let (end, events) = frames.split_last().unwrap();
    assert_eq!(end.0, 2, "the last envelope ends the stream");
    assert_eq!(serde_json::from_slice::<Value>(&end.1).unwrap(), json!({}));
    let statuses: Vec<Value> = events
        .iter()
        .map(|(flags, event)| {
            assert_eq!(*flags, 0);
            serde_json::from_slice::<Value>(event).unwrap()["status"].clone()
        })
        .collect();
    assert_eq!(statuses.last().unwrap(), "RUN_STATUS_COMPLETED");
    let last: Value = serde_json::from_slice(&events.last().unwrap().1).unwrap();
    assert!(last["output"]["url"].as_str().unwrap().ends_with(".mp4"));

    // Binary envelopes: the same run, now finished, as protobuf.
    let request = envelope(
        &pb::StreamStatusRequest {
            run_id: run_id.into(),
        }
        .encode_to_vec(),
    );
    let response = post(&h, STREAM, "application/connect+proto", request).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/connect+proto"
    );
    let frames = envelopes(&response.bytes().await.unwrap());
    let event = pb::RunStatusEvent::decode(&frames[0].1[..]).unwrap();
    assert_eq!(event.status(), pb::RunStatus::Completed);
    assert_eq!(frames.last().unwrap().0, 2);
}

#[tokio::test]
async fn stream_errors_end_the_stream_with_details() {
    let h = common::start().await;
    let request = envelope(json!({"runId": "not-a-run"}).to_string().as_bytes());
    let response = post(&h, STREAM, "application/connect+json", request).await;
    assert_eq!(response.status(), 200);
    let frames = envelopes(&response.bytes().await.unwrap());
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 2);
    let end: Value = serde_json::from_slice(&frames[0].1).unwrap();
    assert_eq!(end["error"]["code"], "not_found");
    assert_eq!(
        detail(&end["error"], "google.rpc.ErrorInfo")["reason"],
        "UNKNOWN_RUN"
    );
}

#[tokio::test]
async fn hostile_bodies_are_invalid_argument() {
    let h = common::start_with(Default::default(), |text| {
        text.replace("[server]\n", "[server]\nmax_request_bytes = 2048\n")
    })
    .await;
    let malformed = |error: &Value| {
        assert_eq!(error["code"], "invalid_argument", "{error}");
        assert_eq!(
            detail(error, "google.rpc.ErrorInfo")["reason"],
            "MALFORMED_REQUEST"
        );
    };
    for (content_type, body) in [
        ("application/json", b"{not json".to_vec()),
        ("application/json", b"{\"noSuchField\": 1}".to_vec()),
        ("application/json", b"".to_vec()),
        (
            "application/json",
            format!("{{\"inputs\":{}1{}}}", "[".repeat(300), "]".repeat(300)).into_bytes(),
        ),
        ("application/proto", b"\xff\xff\xff".to_vec()),
        // Larger than server.max_request_bytes.
        (
            "application/json",
            format!("{{\"user\":\"{}\"}}", "x".repeat(4096)).into_bytes(),
        ),
    ] {
        let response = post(&h, INVOKE, content_type, body).await;
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["content-type"], "application/json");
        malformed(&response.json().await.unwrap());
    }
    // Envelopes that lie about their length, or come two at a time.
    let mut two = envelope(b"{}");
    two.extend(envelope(b"{}"));
    for body in [
        vec![0, 0xff, 0xff, 0xff, 0xff, b'{'],
        vec![0, 0, 0],
        two,
        vec![1, 0, 0, 0, 2, b'{', b'}'],
    ] {
        let response = post(&h, STREAM, "application/connect+json", body).await;
        assert_eq!(response.status(), 200);
        let frames = envelopes(&response.bytes().await.unwrap());
        malformed(&serde_json::from_slice::<Value>(&frames[0].1).unwrap()["error"]);
    }
    // A unary content type on the streaming method, an unknown method.
    let response = post(&h, STREAM, "application/json", b"{}".to_vec()).await;
    assert_eq!(response.status(), 415);
    let (status, _, error) = post_json(&h, "flowgate.v1.WorkflowGateway/Nope", json!({})).await;
    assert_eq!(status, 501);
    assert_eq!(error["code"], "unimplemented");
    // And the server still serves, gRPC included.
    let mut client = h.client.clone();
    client
        .invoke(pb::InvokeRequest {
            target: target("fh", deployment("summarize", "default")),
            inputs: common::inputs(json!({"topic": "x"})),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn connect_timeout_is_the_deadline() {
    let h = common::start_with(
        flowgate_emulator::EmulatorConfig {
            latency: std::time::Duration::from_millis(800),
            ..Default::default()
        },
        |text| text,
    )
    .await;
    let response = reqwest::Client::new()
        .post(url(&h, INVOKE))
        .header("content-type", "application/json")
        .header("connect-timeout-ms", "100")
        .body(json!({"target": {"provider": "kn", "slug": "summarize-text"}, "inputs": {"text": "x"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "deadline_exceeded");
}

#[tokio::test]
async fn binary_streams_of_any_route_pass_through_reflection_included() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, ServerReflectionResponse,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let h = common::start().await;
    // Server reflection is a bidirectional stream: one request envelope,
    // then the request ends; over HTTP/2 as `buf curl --protocol connect`.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let response = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .post(url(
            &h,
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ))
        .header("content-type", "application/connect+proto")
        .body(envelope(&request.encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let frames = envelopes(&response.bytes().await.unwrap());
    let answer = ServerReflectionResponse::decode(&frames[0].1[..]).unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "flowgate.v1.WorkflowGateway")
    );
    assert_eq!(frames.last().unwrap().0, 2);

    // Health over Connect JSON.
    let (status, _, body) = post_json(&h, "grpc.health.v1.Health/Check", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "SERVING"}));
}

#[tokio::test]
async fn callers_are_authenticated_before_the_body_is_read() {
    const KEY: &str = "fgk_connect_key_0123456789abcdefghijklmnopqrs";
    let hash = flowgate::auth::KeyHash::of(KEY.as_bytes()).to_config();
    let h = common::start_with(Default::default(), |text| {
        format!(
            "{text}\n[callers.web]\nkey_hashes = [\"{hash}\"]\ncapabilities = [\"invoke:kn/*\"]\n"
        )
    })
    .await;
    let call = |key: Option<&str>, body: &'static str| {
        let mut request = reqwest::Client::new()
            .post(url(&h, INVOKE))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        request.send()
    };
    // A stranger's garbage is refused as a stranger, never parsed.
    let response = call(None, "{garbage").await.unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "unauthenticated");
    assert_eq!(
        detail(&error, "google.rpc.ErrorInfo")["reason"],
        "CALLER_UNAUTHENTICATED"
    );
    // The caller's garbage is malformed; the caller's request runs.
    let response = call(Some(KEY), "{garbage").await.unwrap();
    assert_eq!(response.status(), 400);
    let response = call(
        Some(KEY),
        r#"{"target": {"provider": "kn", "slug": "summarize-text"}, "inputs": {"text": "hi"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    // Capabilities hold as for gRPC.
    let response = call(
        Some(KEY),
        r#"{"target": {"provider": "fh", "deployment": {"name": "summarize", "variant": "default"}}}"#,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_chunked_body_is_cut_at_the_limit() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let h = common::start_with(Default::default(), |text| {
        text.replace("[server]\n", "[server]\nmax_request_bytes = 2048\n")
    })
    .await;
    // No content-length: the limit is found while reading, 1 KiB chunks
    // of an endless string.
    let mut stream = tokio::net::TcpStream::connect(h.server.addr).await.unwrap();
    let head = format!(
        "POST /{INVOKE} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        h.server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"b\r\n{\"user\": \"x\r\n").await.unwrap();
    for _ in 0..4 {
        let chunk = "x".repeat(1024);
        let sent = stream
            .write_all(format!("400\r\n{chunk}\r\n").as_bytes())
            .await;
        if sent.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("max_request_bytes"), "{answer}");
}

#[tokio::test]
async fn invoke_stream_sends_started_deltas_and_completed_envelopes() {
    let h = common::start().await;
    let request = envelope(
        json!({"target": {"provider": "tutor", "workflowId": "wf_story"}, "inputs": {"story": "a fox"}})
            .to_string()
            .as_bytes(),
    );
    let response = post(
        &h,
        "flowgate.v1.WorkflowGateway/InvokeStream",
        "application/connect+json",
        request,
    )
    .await;
    assert_eq!(response.status(), 200);
    let frames = envelopes(&response.bytes().await.unwrap());
    let (end, events) = frames.split_last().unwrap();
    assert_eq!(end.0, 2, "the last envelope ends the stream");
    let events: Vec<Value> = events
        .iter()
        .map(|(_, event)| serde_json::from_slice(event).unwrap())
        .collect();
    assert!(events[0]["started"]["runId"].is_string(), "{events:?}");
    let text: String = events
        .iter()
        .filter_map(|event| event["outputDelta"]["text"].as_str())
        .collect();
    assert_eq!(
        text,
        "Once upon a time, a fox. And so the tale came to a quiet, happy end."
    );
    assert_eq!(
        events.last().unwrap()["completed"]["status"],
        "RUN_STATUS_COMPLETED"
    );
}
