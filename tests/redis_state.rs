//! Run state on Redis through real gRPC: two gateways on one redis-server
//! (a run started on A is streamed from B), and Redis down: async Invoke and
//! StreamStatus answer UNAVAILABLE with reason STATE_STORE_UNAVAILABLE and
//! RetryInfo while sync Invoke keeps working, then everything recovers.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, inputs, target, workflow_id};
use flowgate::pb;
use flowgate_redis::testing::RedisServer;
use serde_json::json;
use tonic::{Code, Status};
use tonic_types::StatusExt;

async fn gateway_on(redis: &RedisServer) -> Harness {
    let url = redis.url();
    common::start_with(Default::default(), move |text| {
        format!("{text}\n[state]\nstore = \"redis\"\nurl = \"{url}\"\nop_timeout = \"300ms\"\n")
    })
    .await
}

fn story(async_run: bool) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("tutor", workflow_id("wf_story")),
        inputs: inputs(json!({"story": "a dragon"})),
        async_options: async_run.then(|| pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        ..Default::default()
    }
}

async fn stream(h: &mut Harness, run_id: &str) -> Result<Vec<pb::RunStatusEvent>, Status> {
    let mut request = tonic::Request::new(pb::StreamStatusRequest {
        run_id: run_id.to_owned(),
    });
    request.set_timeout(Duration::from_secs(15));
    let mut events = h.client.stream_status(request).await?.into_inner();
    let mut all = Vec::new();
    while let Some(event) = events.message().await? {
        all.push(event);
    }
    Ok(all)
}

fn assert_store_unavailable(status: &Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().unwrap().reason,
        "STATE_STORE_UNAVAILABLE",
        "{status:?}"
    );
    assert!(details.retry_info().is_some(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_on_one_gateway_streams_from_another_and_redis_down_is_defined() {
    let mut redis = RedisServer::start().unwrap();
    let mut a = gateway_on(&redis).await;
    let mut b = gateway_on(&redis).await;

    // A gateway-run (AI Tutor) run started on A, followed from B.
    let started = a.client.invoke(story(true)).await.unwrap().into_inner();
    assert_eq!(started.status(), pb::RunStatus::Running);
    let events = stream(&mut b, &started.run_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.status(), pb::RunStatus::Completed, "{events:?}");

    // Redis down: async work is refused before any upstream call, streams
    // too; synchronous calls go on.
    redis.stop();
    let refused = a.client.invoke(story(true)).await.unwrap_err();
    assert_store_unavailable(&refused);
    let refused = stream(&mut b, &started.run_id).await.unwrap_err();
    assert_store_unavailable(&refused);
    let sync = a.client.invoke(story(false)).await.unwrap().into_inner();
    assert_eq!(sync.status(), pb::RunStatus::Completed);

    // Back (empty): new async runs work again without a restart of the
    // gateways.
    redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let again = loop {
        match a.client.invoke(story(true)).await {
            Ok(response) => break response.into_inner(),
            Err(status) => {
                assert_store_unavailable(&status);
                assert!(Instant::now() < deadline, "no recovery: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // B reconnects on its own schedule (backoff up to a second).
    let events = loop {
        match stream(&mut b, &again.run_id).await {
            Ok(events) => break events,
            Err(status) => {
                assert_store_unavailable(&status);
                assert!(Instant::now() < deadline, "B did not recover: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(events.last().unwrap().status(), pb::RunStatus::Completed);
}
