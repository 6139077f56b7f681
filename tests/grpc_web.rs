//! gRPC-Web and CORS on the gRPC port, as a browser speaks them: raw
//! HTTP/1.1 requests (no gRPC client) to a real gateway and the emulator.
//! Binary and base64 text framing, the answer's message and trailers, an
//! error's status and details, hostile bodies, the same caller
//! authentication as gRPC, and CORS preflights from an allowed origin and
//! from another one.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

mod common;

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use flowgate::{auth::KeyHash, pb};
use flowgate_emulator::EmulatorConfig;
use prost::Message as _;
use reqwest::{Response, StatusCode, Version};

const WEB_KEY: &str = "fgk_web_key_0123456789abcdefghijklmnopqrstuvwxyz";
const APP_ORIGIN: &str = "https://app.example.com";
const INVOKE: &str = "flowgate.v1.WorkflowGateway/Invoke";

/// The gateway with one caller (`web`, may invoke anything) and CORS for
/// `APP_ORIGIN`.
async fn start() -> common::Harness {
    let extra = format!(
        "\n[server.cors]\nallowed_origins = [\"{APP_ORIGIN}\"]\nmax_age = \"5m\"\n\
         [callers.web]\nkey_hashes = [\"{}\"]\ncapabilities = [\"invoke:*/*\"]\n",
        KeyHash::of(WEB_KEY.as_bytes()).to_config()
    );
    common::start_with(EmulatorConfig::default(), move |text| text + &extra).await
}

/// An HTTP/1.1-only client, as a browser's fetch to a plain http:// URL.
fn http1() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

fn invoke_request(provider: &str, slug: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: common::target(provider, common::slug(slug)),
        inputs: common::inputs(serde_json::json!({"text": "browsers can call flowgate"})),
        ..Default::default()
    }
}

/// One length-prefixed gRPC(-Web) frame.
fn frame(message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&payload);
    framed
}

/// A gRPC-Web answer: its data frames and its trailer frame (as a map).
struct Answer {
    messages: Vec<Vec<u8>>,
    trailers: BTreeMap<String, String>,
}

fn parse_frames(mut body: &[u8]) -> Answer {
    let mut answer = Answer {
        messages: Vec::new(),
        trailers: BTreeMap::new(),
    };
    while !body.is_empty() {
        assert!(body.len() >= 5, "a truncated frame header");
        let flags = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + len];
        if flags & 0x80 == 0 {
            answer.messages.push(payload.to_vec());
        } else {
            for line in std::str::from_utf8(payload).unwrap().split("\r\n") {
                if let Some((key, value)) = line.split_once(':') {
                    answer
                        .trailers
                        .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
            }
        }
        body = &body[5 + len..];
    }
    answer
}

/// grpc-web-text: base64, each chunk padded on its own, so decoded one
/// 4-character quantum at a time.
fn decode_text(body: &[u8]) -> Vec<u8> {
    assert_eq!(body.len() % 4, 0, "base64 quanta");
    body.chunks(4)
        .flat_map(|quantum| STANDARD.decode(quantum).unwrap())
        .collect()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn post(
    h: &common::Harness,
    content_type: &str,
    body: Vec<u8>,
    key: Option<&str>,
) -> Response {
    let mut request = http1()
        .post(format!("http://{}/{INVOKE}", h.server.addr))
        .header("content-type", content_type)
        .header("accept", content_type)
        .header("x-grpc-web", "1")
        .header("origin", APP_ORIGIN)
        .body(body);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.send().await.unwrap()
}

fn assert_completed(answer: &Answer) {
    assert_eq!(answer.messages.len(), 1, "one response message");
    let response = pb::InvokeResponse::decode(answer.messages[0].as_slice()).unwrap();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert_eq!(response.provider, "kn");
    assert!(
        common::json(response.output)["summary"].is_string(),
        "the workflow's output"
    );
    assert_eq!(
        answer.trailers.get("grpc-status").map(String::as_str),
        Some("0")
    );
}

#[tokio::test]
async fn grpc_web_binary_invoke_answers_the_message_then_the_trailers_over_http1() {
    let h = start().await;
    let body = frame(&invoke_request("kn", "summarize-text"));
    let response = post(&h, "application/grpc-web+proto", body, Some(WEB_KEY)).await;
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/grpc-web+proto")
    );
    // A browser on the allowed origin may read the answer and its headers.
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    let exposed = header(&response, "access-control-expose-headers").unwrap_or_default();
    for name in [
        "grpc-status",
        "grpc-status-details-bin",
        "x-ratelimit-remaining",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed:?}");
    }
    // The provider's rate-limit data, as gRPC response metadata (headers).
    assert!(
        header(&response, "x-ratelimit-remaining").is_some(),
        "{:?}",
        response.headers()
    );
    let answer = parse_frames(&response.bytes().await.unwrap());
    assert_completed(&answer);
}

#[tokio::test]
async fn grpc_web_text_invoke_is_base64_both_ways() {
    let h = start().await;
    let body = STANDARD
        .encode(frame(&invoke_request("kn", "summarize-text")))
        .into_bytes();
    let response = post(&h, "application/grpc-web-text", body, Some(WEB_KEY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/grpc-web-text+proto")
    );
    let text = response.bytes().await.unwrap();
    assert!(
        text.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b)),
        "base64 text"
    );
    assert_completed(&parse_frames(&decode_text(&text)));
}

/// The status, message and details of an answer: in the trailer frame, or,
/// for a trailers-only answer (an error before any message), in the HTTP
/// headers, as gRPC-Web carries them.
fn status_of(response_headers: &reqwest::header::HeaderMap, answer: &Answer) -> tonic::Status {
    let get = |name: &str| {
        answer.trailers.get(name).cloned().or_else(|| {
            response_headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        })
    };
    let code: i32 = get("grpc-status").expect("grpc-status").parse().unwrap();
    let details = get("grpc-status-details-bin").unwrap_or_default();
    let details = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(details.trim_end_matches('='))
        .unwrap();
    tonic::Status::with_details(
        tonic::Code::from_i32(code),
        get("grpc-message").unwrap_or_default(),
        details.into(),
    )
}

#[tokio::test]
async fn a_grpc_web_error_carries_its_status_and_details() {
    use tonic_types::StatusExt as _;
    let h = start().await;
    let body = frame(&invoke_request("kn", "no-such-flow"));
    let response = post(&h, "application/grpc-web+proto", body, Some(WEB_KEY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let answer = parse_frames(&response.bytes().await.unwrap());
    assert!(answer.messages.is_empty());
    let status = status_of(&headers, &answer);
    assert_eq!(status.code(), tonic::Code::NotFound);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "WORKFLOW_NOT_FOUND");
    assert_eq!(info.domain, "knouds");
    assert_eq!(
        details.resource_info().expect("ResourceInfo").resource_name,
        "no-such-flow"
    );
}

#[tokio::test]
async fn hostile_grpc_web_bodies_are_invalid_argument_like_grpc_ones() {
    use tonic_types::StatusExt as _;
    let h = start().await;
    // Bad base64 in grpc-web-text (tonic-web cannot read it) and a frame
    // that is not an InvokeRequest (prost cannot decode it).
    let cases = [
        ("application/grpc-web-text", b"not base64 at all!".to_vec()),
        (
            "application/grpc-web+proto",
            vec![0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
        ),
    ];
    for (content_type, body) in cases {
        let response = post(&h, content_type, body.clone(), Some(WEB_KEY)).await;
        let headers = response.headers().clone();
        let raw = response.bytes().await.unwrap();
        let raw = if content_type.ends_with("-text") {
            decode_text(&raw)
        } else {
            raw.to_vec()
        };
        let answer = parse_frames(&raw);
        assert!(answer.messages.is_empty(), "{body:?}");
        let status = status_of(&headers, &answer);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{body:?}: {status:?}"
        );
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "MALFORMED_REQUEST"
        );
    }
    assert!(
        h.emulator.requests().is_empty(),
        "nothing reached a provider"
    );
}

#[tokio::test]
async fn grpc_web_callers_are_authenticated_like_grpc_callers() {
    use tonic_types::StatusExt as _;
    let h = start().await;
    for key in [
        None,
        Some("fgk_not_a_key_0123456789abcdefghijklmnopqrstuvw"),
    ] {
        let body = frame(&invoke_request("kn", "summarize-text"));
        let response = post(&h, "application/grpc-web+proto", body, key).await;
        let headers = response.headers().clone();
        let answer = parse_frames(&response.bytes().await.unwrap());
        assert!(answer.messages.is_empty(), "{key:?}");
        let status = status_of(&headers, &answer);
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{key:?}");
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "CALLER_UNAUTHENTICATED"
        );
    }
    assert!(
        h.emulator.requests().is_empty(),
        "a refused call reaches no provider"
    );
}

async fn preflight(addr: std::net::SocketAddr, origin: &str) -> Response {
    http1()
        .request(reqwest::Method::OPTIONS, format!("http://{addr}/{INVOKE}"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,grpc-timeout",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_preflight_is_answered_for_the_allowed_origin_only() {
    let h = start().await;

    let allowed = preflight(h.server.addr, APP_ORIGIN).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    let methods = header(&allowed, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods:?}");
    let headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    for name in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "grpc-timeout",
    ] {
        assert!(headers.contains(name), "{name} not in {headers:?}");
    }
    assert_eq!(header(&allowed, "access-control-max-age"), Some("300"));
    assert_eq!(header(&allowed, "access-control-allow-credentials"), None);

    // Another origin (another scheme counts) gets no
    // `access-control-allow-origin`, so the browser refuses to send.
    for other in ["https://evil.example.com", "http://app.example.com"] {
        let refused = preflight(h.server.addr, other).await;
        assert_eq!(
            header(&refused, "access-control-allow-origin"),
            None,
            "{other}"
        );
    }
    assert!(h.emulator.requests().is_empty(), "preflights reach no one");
}

#[tokio::test]
async fn without_cors_configured_no_answer_carries_a_cors_header() {
    // The plain test configuration: no [server.cors], no callers.
    let h = common::start().await;
    let refused = preflight(h.server.addr, APP_ORIGIN).await;
    let cors: Vec<_> = refused
        .headers()
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "{cors:?}");

    // gRPC-Web itself still works (same-origin pages, proxies, tools).
    let body = frame(&invoke_request("kn", "summarize-text"));
    let response = post(&h, "application/grpc-web+proto", body, None).await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_completed(&parse_frames(&response.bytes().await.unwrap()));
}
