//! Hostile callers at the gRPC edge: panics, load, oversized echoes,
//! malformed messages, configuration ranges.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

use std::{pin::Pin, time::Duration};

use bytes::{Buf as _, BufMut as _};
use flowgate::{
    config::ServerConfig,
    pb::{
        self,
        workflow_gateway_client::WorkflowGatewayClient,
        workflow_gateway_server::{WorkflowGateway, WorkflowGatewayServer},
    },
    server::edge_stack,
};
use flowgate_emulator::{Dialect, EmulatorConfig, Fault};
use futures::Stream;
use serde_json::json;
use tonic::{
    Code, Request, Response, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Channel, server::TcpIncoming},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt as _;

use crate::common::{self, Harness, inputs, slug, target};

/// The ErrorInfo reason ("" when absent, which no assertion expects).
fn reason(status: &Status) -> String {
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

// ---------------------------------------------------------------- panics

/// A test-only service whose Invoke panics and whose StreamStatus panics
/// while producing its second event; GetWorkflowSchema answers normally.
struct PanickingGateway;

type Events = Pin<Box<dyn Stream<Item = Result<pb::RunStatusEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WorkflowGateway for PanickingGateway {
    async fn invoke(
        &self,
        _: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        panic!("handler bug holding secret-ish state {}", 42)
    }

    type InvokeStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::InvokeStreamEvent, Status>> + Send>>;

    async fn invoke_stream(
        &self,
        _: Request<pb::InvokeRequest>,
    ) -> Result<Response<Self::InvokeStreamStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type StreamStatusStream = Events;

    async fn stream_status(
        &self,
        _: Request<pb::StreamStatusRequest>,
    ) -> Result<Response<Events>, Status> {
        let events = futures::stream::iter(0..3).map(|index| {
            assert!(index == 0, "stream bug at item {index}");
            Ok(pb::RunStatusEvent {
                run_id: "r".into(),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn verify_webhook(
        &self,
        _: Request<pb::VerifyWebhookRequest>,
    ) -> Result<Response<pb::VerifyWebhookResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_workflow_schema(
        &self,
        _: Request<pb::GetWorkflowSchemaRequest>,
    ) -> Result<Response<pb::GetWorkflowSchemaResponse>, Status> {
        Ok(Response::new(pb::GetWorkflowSchemaResponse {
            name: "fine".into(),
            ..Default::default()
        }))
    }
}

use futures::StreamExt as _;

#[tokio::test]
async fn a_panic_in_a_call_or_a_stream_answers_internal_panic_and_the_server_keeps_serving() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(edge_stack(
                &ServerConfig::default(),
                std::sync::Arc::new(flowgate::auth::CallerRegistry::open()),
            ))
            .add_service(WorkflowGatewayServer::new(PanickingGateway))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                let _ = stopped.await;
            }),
    );
    let mut client = WorkflowGatewayClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    for _ in 0..2 {
        let status = client
            .invoke(pb::InvokeRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(reason(&status), "INTERNAL_PANIC");
        assert!(!status.message().contains("secret"), "{}", status.message());
    }

    let mut events = client
        .stream_status(pb::StreamStatusRequest { run_id: "r".into() })
        .await
        .unwrap()
        .into_inner();
    // tonic may batch the first event with the panicking second one into
    // one frame: the stream ends with the status either way.
    let mut status = None;
    for _ in 0..3 {
        match events.message().await {
            Ok(Some(event)) => assert_eq!(event.run_id, "r"),
            Ok(None) => break,
            Err(err) => {
                status = Some(err);
                break;
            }
        }
    }
    let status = status.expect("the stream ends with an error");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(reason(&status), "INTERNAL_PANIC");

    // The same connection still serves.
    let schema = client
        .get_workflow_schema(pb::GetWorkflowSchemaRequest::default())
        .await
        .unwrap();
    assert_eq!(schema.into_inner().name, "fine");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
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

#[tokio::test]
async fn a_struct_nested_200_deep_is_invalid_argument_malformed_request() {
    let h = common::start().await;
    let mut value = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("bottom".into())),
    };
    for _ in 0..200 {
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
    let mut client = h.client.clone();
    let status = client.invoke(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "MALFORMED_REQUEST");
    assert!(
        status.message().starts_with("malformed request"),
        "{status:?}"
    );
    assert!(status.message().len() < 1024, "{status:?}");
    assert_still_serving(&h).await;
}
