//! Panics answered, never a dropped connection: in a handler or a stream
//! under the edge stack (gRPC) and under the Connect layer (Connect's own
//! region). The callback ingress's: `tests/panic_log.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]

use std::pin::Pin;

use flowgate::{
    config::ServerConfig,
    pb::{
        self,
        workflow_gateway_client::WorkflowGatewayClient,
        workflow_gateway_server::{WorkflowGateway, WorkflowGatewayServer},
    },
    server::edge_stack,
};
use futures::Stream;
use serde_json::json;
use tonic::{Code, Request, Response, Status, transport::server::TcpIncoming};

use super::edge::{connect_post, reason};

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

/// The ErrorInfo reason of a Connect error JSON ("" when absent).
fn connect_reason(error: &serde_json::Value) -> String {
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|detail| detail["type"] == "google.rpc.ErrorInfo")
        .and_then(|detail| detail["debug"]["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Connect envelopes as (flags, payload).
fn connect_envelopes(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        out.push((bytes[0], bytes[5..5 + len].to_vec()));
        bytes = &bytes[5 + len..];
    }
    assert!(bytes.is_empty(), "a truncated envelope");
    out
}

#[tokio::test]
async fn a_panic_under_the_connect_layer_answers_connect_internal_panic_and_it_keeps_serving() {
    // Connect's own region: nothing between it and the panicking service
    // catches, so only Connect's catch can answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(flowgate::connect::ConnectLayer::new(1 << 20))
            .add_service(WorkflowGatewayServer::new(PanickingGateway))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                let _ = stopped.await;
            }),
    );

    for _ in 0..2 {
        let response = connect_post(
            addr,
            "flowgate.v1.WorkflowGateway/Invoke",
            "application/json",
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(response.status(), 500);
        let text = response.text().await.unwrap();
        assert!(!text.contains("secret"), "{text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["code"], "internal", "{error}");
        assert_eq!(connect_reason(&error), "INTERNAL_PANIC", "{error}");
    }

    // A stream whose second item panics: envelopes, then the end of the
    // stream carrying the panic's error.
    let request = serde_json::to_vec(&json!({"runId": "r"})).unwrap();
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&request);
    let response = connect_post(
        addr,
        "flowgate.v1.WorkflowGateway/StreamStatus",
        "application/connect+json",
        framed,
    )
    .await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let envelopes = connect_envelopes(&bytes);
    let (flags, end) = envelopes.last().unwrap();
    assert_eq!(flags & 0x02, 0x02, "the last envelope ends the stream");
    let end: serde_json::Value = serde_json::from_slice(end).unwrap();
    assert_eq!(end["error"]["code"], "internal", "{end}");
    assert_eq!(connect_reason(&end["error"]), "INTERNAL_PANIC", "{end}");
    assert!(!end.to_string().contains("stream bug"), "{end}");

    // The server still serves.
    let response = connect_post(
        addr,
        "flowgate.v1.WorkflowGateway/GetWorkflowSchema",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let schema: serde_json::Value = response.json().await.unwrap();
    assert_eq!(schema["name"], "fine");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
