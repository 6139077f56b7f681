//! Provider limits and replay ids shared through Redis by two real gateways
//! (in-process servers over gRPC): a 3-per-minute local limit admits exactly
//! 3 across both, and a webhook delivery verified on A is REPLAYED on B.

mod common;

use common::{Harness, inputs, target, workflow_id};
use flowgate::pb;
use flowgate_redis::testing::RedisServer;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

async fn gateway_on(redis: &RedisServer) -> Harness {
    let url = redis.url();
    common::start_with(Default::default(), move |text| {
        format!(
            "{text}\n[providers.tutor.limits]\nrequests_per_window = 3\nwindow = \"1m\"\n\
             [state]\nstore = \"redis\"\nurl = \"{url}\"\nop_timeout = \"300ms\"\n"
        )
    })
    .await
}

fn story() -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("tutor", workflow_id("wf_story")),
        inputs: inputs(json!({"story": "a dragon"})),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_per_minute_admits_exactly_three_across_two_gateways() {
    let redis = RedisServer::start().unwrap();
    let mut a = gateway_on(&redis).await;
    let mut b = gateway_on(&redis).await;
    let mut admitted = 0;
    for call in 0..8 {
        let client = if call % 2 == 0 {
            &mut a.client
        } else {
            &mut b.client
        };
        match client.invoke(story()).await {
            Ok(response) => {
                assert_eq!(response.into_inner().status(), pb::RunStatus::Completed);
                admitted += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(
                    status.get_error_details().error_info().unwrap().reason,
                    "LOCAL_RATE_LIMIT"
                );
            }
        }
    }
    assert_eq!(admitted, 3, "one budget for both gateways");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_verified_on_one_gateway_is_replayed_on_another() {
    let redis = RedisServer::start().unwrap();
    let mut a = gateway_on(&redis).await;
    let mut b = gateway_on(&redis).await;
    let secret = "rpc-secret-1";
    let body = json!({"event": "execution.completed", "executionId": "e-shared", "status": "completed", "result": 1}).to_string();
    let signature = flowgate_webhook::sign_knouds(
        &flowgate_core::SecretString::new(secret),
        std::time::SystemTime::now(),
        body.as_bytes(),
    );
    let request = pb::VerifyWebhookRequest {
        scheme: pb::WebhookScheme::Knouds.into(),
        body: body.into_bytes(),
        headers: [("X-Knouds-Signature".to_owned(), signature)]
            .into_iter()
            .collect(),
        key: Some(pb::verify_webhook_request::Key::Secret(secret.to_owned())),
        ..Default::default()
    };
    let first = a
        .client
        .verify_webhook(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.valid);
    let again = b.client.verify_webhook(request).await.unwrap().into_inner();
    assert_eq!(
        (again.valid, again.reason()),
        (false, pb::WebhookFailureReason::Replayed)
    );
}
