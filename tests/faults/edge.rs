//! Hostile callers at the gRPC edge: load, oversized echoes, malformed
//! messages (panics: `panics.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use flowgate::pb;
use flowgate_emulator::{Dialect, EmulatorConfig, Fault};
use serde_json::json;
use tonic::{
    Code, Request, Response, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt as _;

use crate::common::{self, Harness, inputs, slug, target};

/// The ErrorInfo reason ("" when absent, which no assertion expects).
pub(crate) fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

fn summarize(provider: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target(provider, slug("summarize-text")),
        inputs: inputs(json!({"text": "edge"})),
        ..Default::default()
    }
}

/// Health is SERVING and a normal Invoke succeeds: the gateway still serves.
async fn assert_still_serving(h: &Harness) {
    let health = HealthClient::new(h.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    let mut client = h.client.clone();
    let answer = client.invoke(summarize("kn")).await.unwrap().into_inner();
    assert_eq!(answer.status(), pb::RunStatus::Completed);
}

/// Knouds run requests the emulator saw.
fn knouds_runs(h: &Harness) -> usize {
    h.emulator
        .requests()
        .iter()
        .filter(|r| r.dialect == Dialect::Knouds && r.path.ends_with("/run"))
        .count()
}

async fn wait_for_knouds_runs(h: &Harness, n: usize) {
    for _ in 0..300 {
        if knouds_runs(h) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the emulator never saw {n} Knouds runs");
}

// ----------------------------------------------------------- load shedding

async fn start_limited(queue: usize) -> Harness {
    common::start_with(EmulatorConfig::default(), |text| {
        text.replace(
            "shutdown_grace = \"2s\"",
            &format!(
                "shutdown_grace = \"2s\"\nmax_concurrent_requests = 1\nmax_queued_requests = {queue}"
            ),
        )
    })
    .await
}

#[tokio::test]
async fn a_call_beyond_the_queue_is_shed_with_overloaded_and_health_stays_serving() {
    let h = start_limited(0).await;
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(1500))
            .with_path("/run")
            .with_times(1),
    );
    let mut first_client = h.client.clone();
    let first = tokio::spawn(async move { first_client.invoke(summarize("kn")).await });
    wait_for_knouds_runs(&h, 1).await;

    let mut client = h.client.clone();
    let shed = client.invoke(summarize("kn")).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted);
    assert_eq!(reason(&shed), "OVERLOADED");
    assert_eq!(
        shed.get_error_details().retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(1))
    );
    // Health checks are never shed, even with every slot taken.
    let health = HealthClient::new(h.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);
    assert_eq!(knouds_runs(&h), 1, "the shed call never reached the vendor");

    assert!(first.await.unwrap().is_ok());
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn a_queued_call_ends_with_deadline_exceeded_at_its_deadline() {
    let h = start_limited(1).await;
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(1500))
            .with_path("/run")
            .with_times(1),
    );
    let mut first_client = h.client.clone();
    let first = tokio::spawn(async move { first_client.invoke(summarize("kn")).await });
    wait_for_knouds_runs(&h, 1).await;

    let mut request = Request::new(summarize("kn"));
    request.set_timeout(Duration::from_millis(300));
    let mut client = h.client.clone();
    let late = client.invoke(request).await.unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&late), "DEADLINE_EXCEEDED");
    assert!(
        late.message().contains("waited for a free slot"),
        "{late:?}"
    );
    assert_eq!(knouds_runs(&h), 1, "the queued call never ran");

    assert!(first.await.unwrap().is_ok());
    assert_still_serving(&h).await;
}

// -------------------------------------------------------------- echo caps

/// POSTs `body` to `method` on `addr` as a Connect call.
pub(crate) async fn connect_post(
    addr: std::net::SocketAddr,
    method: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    // reqwest's TLS stack needs a crypto provider even for http://.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
        .post(format!("http://{addr}/{method}"))
        .header("content-type", content_type)
        .header("connect-protocol-version", "1")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_huge_metadata_key_is_refused_with_a_small_status_naming_the_cut_field() {
    let h = common::start().await;
    let key = "k".repeat(3_500_000);
    let mut request = summarize("kn");
    request.metadata.insert(
        key,
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("v".into())),
        },
    );
    let mut client = h.client.clone();
    let status = client.invoke(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let size = status.message().len() + status.details().len();
    assert!(size < 4096, "the status is {size} bytes");
    let details = status.get_error_details();
    let violation = &details.bad_request().unwrap().field_violations[0];
    assert!(
        violation.field.starts_with("metadata.kkkk"),
        "{violation:?}"
    );
    assert!(violation.field.ends_with('…'), "{violation:?}");
    assert_still_serving(&h).await;
}

/// An Invoke of Knouds `summarize-text` with `text` and `count` unknown
/// inputs, as JSON.
fn many_unknown_inputs(count: usize) -> serde_json::Value {
    let mut inputs = serde_json::Map::new();
    inputs.insert("text".into(), json!("edge"));
    for index in 0..count {
        inputs.insert(format!("unknown{index}"), json!(1));
    }
    json!({"target": {"provider": "kn", "slug": "summarize-text"}, "inputs": inputs})
}

#[tokio::test]
async fn sixty_thousand_unknown_inputs_list_twenty_violations_and_count_the_rest() {
    let h = common::start().await;
    let body = many_unknown_inputs(60_000);
    let mut request = summarize("kn");
    request.inputs = inputs(body["inputs"].clone());
    let mut client = h.client.clone();
    let status = client.invoke(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert_eq!(reason(&status), "INVALID_REQUEST");
    assert_eq!(status.message(), "invalid request: 60000 field violations");
    let size = status.message().len() + status.details().len();
    assert!(size < 8 * 1024, "the status is {size} bytes");
    let details = status.get_error_details();
    let violations = &details.bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 21, "{violations:?}");
    assert!(violations[0].field.starts_with("inputs.unknown"));
    assert_eq!(violations[20].field, "…");
    assert_eq!(violations[20].description, "and 59980 more");

    // Over Connect the same error arrives, small.
    let response = connect_post(
        h.server.addr,
        "flowgate.v1.WorkflowGateway/Invoke",
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(
        text.len() < 16 * 1024,
        "the Connect error is {} bytes",
        text.len()
    );
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["code"], "invalid_argument");
    assert_eq!(error["message"], "invalid request: 60000 field violations");
    let bad_request = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|detail| detail["type"] == "google.rpc.BadRequest")
        .unwrap();
    let listed = bad_request["debug"]["fieldViolations"].as_array().unwrap();
    assert_eq!(listed.len(), 21);
    assert_eq!(listed[20]["description"], "and 59980 more");

    assert_eq!(knouds_runs(&h), 0, "nothing ran");
    assert_still_serving(&h).await;
}

// ------------------------------------------------------ malformed requests

/// Sends and receives raw bytes, whatever the method's message types.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_invoke(channel: Channel, bytes: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        Request::new(bytes),
        http::uri::PathAndQuery::from_static("/flowgate.v1.WorkflowGateway/Invoke"),
        RawCodec,
    )
    .await
    .map(Response::into_inner)
}

#[tokio::test]
async fn bytes_that_are_not_an_invoke_request_are_invalid_argument_malformed_request() {
    let h = common::start().await;
    // Field 1 (target), length 5, but only two bytes follow.
    let status = raw_invoke(h.channel().await, b"\x0a\x05ab".to_vec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "MALFORMED_REQUEST");
    assert!(
        status.message().starts_with("malformed request"),
        "{status:?}"
    );
    assert_still_serving(&h).await;
}

/// `inputs` of Knouds `summarize-text` with `deep` holding `levels`
/// objects nested in one another.
fn nested_inputs(levels: usize) -> pb::InvokeRequest {
    let mut value = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("bottom".into())),
    };
    for _ in 0..levels {
        value = prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                fields: [("a".to_owned(), value)].into(),
            })),
        };
    }
    let mut request = summarize("kn");
    if let Some(inputs) = request.inputs.as_mut() {
        inputs.fields.insert("deep".into(), value);
    }
    request
}

#[tokio::test]
async fn a_struct_nested_past_32_objects_is_invalid_argument_malformed_request() {
    let h = common::start().await;
    let mut client = h.client.clone();
    // 32 levels decode (and fail the schema: `deep` is not an input).
    let status = client.invoke(nested_inputs(32)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "INVALID_REQUEST", "{status:?}");
    for levels in [33, 200] {
        let status = client.invoke(nested_inputs(levels)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(reason(&status), "MALFORMED_REQUEST", "{levels}: {status:?}");
        assert!(
            status.message().starts_with("malformed request"),
            "{status:?}"
        );
        assert!(status.message().len() < 1024, "{status:?}");
    }
    assert_still_serving(&h).await;
}
