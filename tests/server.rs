//! The server around the service: health, reflection (v1 and v1alpha) and
//! draining on shutdown.

mod common;

use std::time::Duration;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

#[tokio::test]
async fn health_reports_serving_for_the_gateway_service() {
    let h = common::start().await;
    let channel = h.channel().await;
    let mut health = HealthClient::new(channel);
    for service in ["", "flowgate.v1.WorkflowGateway"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    let h = common::start().await;
    let channel = h.channel().await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["flowgate.v1.WorkflowGateway", "grpc.health.v1.Health"] {
        assert!(names.contains(&expected.to_owned()), "{names:?}");
    }

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "flowgate.v1.WorkflowGateway".into(),
            ),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()
    ));
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    let h = common::start().await;
    h.emulator.inject_fault(flowgate_emulator::Fault::delay(
        flowgate_emulator::Dialect::Knouds,
        Duration::from_millis(400),
    ));
    let mut client = h.client.clone();
    let call = tokio::spawn(async move {
        client
            .invoke(flowgate::pb::InvokeRequest {
                target: common::target("kn", common::slug("summarize-text")),
                inputs: common::inputs(serde_json::json!({"text": "draining"})),
                ..Default::default()
            })
            .await
    });
    // Let the call reach the upstream before shutting down.
    for _ in 0..100 {
        if !h.emulator.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.server.shutdown().await.unwrap();
    let response = call.await.unwrap().expect("the in-flight call completed");
    assert_eq!(
        response.into_inner().status(),
        flowgate::pb::RunStatus::Completed
    );
}
