//! Per-caller quotas through a real gRPC client on 127.0.0.1: a request
//! rate, concurrent runs and a credit budget spent by the costs Knouds
//! reports, each refusal with its code, reason, QuotaFailure and RetryInfo;
//! the balance as metadata on every answer; and one quota counted by two
//! gateways on a real Redis.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::time::Duration;

use common::{inputs, slug, target};
use flowgate::{auth::KeyHash, pb};
use flowgate_emulator::EmulatorConfig;
use flowgate_redis::testing::RedisServer;
use tonic::{Code, Request, Status, metadata::MetadataMap};
use tonic_types::StatusExt as _;

const CI_KEY: &str = "fgk_quota_ci_0123456789abcdefghijklmnopqrstuvwxyz";
const OPS_KEY: &str = "fgk_quota_ops_0123456789abcdefghijklmnopqrstuvwxy";

/// `ci` with `quota` (TOML lines of `[callers.ci.quota]`); `ops` without.
fn callers(quota: &str) -> String {
    format!(
        "\n[callers.ci]\nkey_hashes = [\"{}\"]\ncapabilities = [\"invoke:*/*\"]\n\
         [callers.ci.quota]\n{quota}\n\
         [callers.ops]\nkey_hashes = [\"{}\"]\ncapabilities = [\"invoke:*/*\"]\n",
        KeyHash::of(CI_KEY.as_bytes()).to_config(),
        KeyHash::of(OPS_KEY.as_bytes()).to_config(),
    )
}

async fn start(emulator: EmulatorConfig, quota: &str) -> common::Harness {
    let callers = callers(quota);
    common::start_with(emulator, move |text| text + &callers).await
}

fn as_caller<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// Knouds `summarize-text`: the emulator reports `cost: 0.5`.
fn summarize() -> pb::InvokeRequest {
    pb::InvokeRequest {
        target: target("kn", slug("summarize-text")),
        inputs: inputs(serde_json::json!({"text": "hello"})),
        ..Default::default()
    }
}

fn meta<'a>(metadata: &'a MetadataMap, key: &str) -> Option<&'a str> {
    metadata.get(key).map(|value| value.to_str().unwrap())
}

/// RESOURCE_EXHAUSTED / CALLER_QUOTA_EXCEEDED with a QuotaFailure on
/// `caller:ci` naming `quota`; the RetryInfo delay, if any.
fn assert_quota_exceeded(status: &Status, quota: &str) -> Option<Duration> {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().unwrap().reason,
        "CALLER_QUOTA_EXCEEDED"
    );
    let violations = &details.quota_failure().unwrap().violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].subject, "caller:ci");
    assert!(violations[0].description.contains(quota), "{violations:?}");
    details.retry_info().and_then(|retry| retry.retry_delay)
}

#[tokio::test]
async fn the_request_rate_is_enforced_with_retry_info_and_remaining_metadata() {
    // A fixed window aligned to the epoch: a day-long one only resets at
    // UTC midnight, so the test never straddles a reset.
    let mut gateway = start(
        EmulatorConfig::default(),
        "requests_per_window = 2\nwindow = \"24h\"",
    )
    .await;
    for left in ["1", "0"] {
        let answer = gateway
            .client
            .invoke(as_caller(summarize(), CI_KEY))
            .await
            .unwrap();
        assert_eq!(
            meta(answer.metadata(), "x-flowgate-requests-remaining"),
            Some(left)
        );
        let reset: u64 = meta(answer.metadata(), "x-flowgate-requests-reset-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset <= 24 * 3600);
        assert_eq!(
            meta(answer.metadata(), "x-flowgate-credits-remaining"),
            None
        );
    }
    let status = gateway
        .client
        .invoke(as_caller(summarize(), CI_KEY))
        .await
        .unwrap_err();
    let retry = assert_quota_exceeded(&status, "requests").expect("RetryInfo");
    assert!(retry > Duration::ZERO && retry <= Duration::from_secs(24 * 3600));
    assert_eq!(
        meta(status.metadata(), "x-flowgate-requests-remaining"),
        Some("0"),
        "the balance is on refusals too"
    );
    // Another caller is not limited, and gets no quota metadata.
    let answer = gateway
        .client
        .invoke(as_caller(summarize(), OPS_KEY))
        .await
        .unwrap();
    assert_eq!(
        meta(answer.metadata(), "x-flowgate-requests-remaining"),
        None
    );
}

#[tokio::test]
async fn a_failed_call_carries_the_balance_too() {
    let mut gateway = start(
        EmulatorConfig::default(),
        "requests_per_window = 5\nwindow = \"24h\"\ncredits_per_day = 10.0",
    )
    .await;
    let missing = pb::InvokeRequest {
        target: target("kn", slug("no-such-workflow")),
        inputs: inputs(serde_json::json!({"text": "hello"})),
        ..Default::default()
    };
    let status = gateway
        .client
        .invoke(as_caller(missing, CI_KEY))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(
        meta(status.metadata(), "x-flowgate-requests-remaining"),
        Some("4")
    );
    // No run, no charge.
    assert_eq!(
        meta(status.metadata(), "x-flowgate-credits-remaining"),
        Some("10")
    );
    assert!(meta(status.metadata(), "x-flowgate-credits-reset-after").is_some());
}

#[tokio::test]
async fn a_budget_is_exhausted_by_reported_costs() {
    let mut gateway = start(EmulatorConfig::default(), "credits_per_day = 1.0").await;
    for left in ["0.5", "0"] {
        let answer = gateway
            .client
            .invoke(as_caller(summarize(), CI_KEY))
            .await
            .unwrap();
        assert_eq!(answer.get_ref().usage.as_ref().unwrap().credits, Some(0.5));
        assert_eq!(
            meta(answer.metadata(), "x-flowgate-credits-remaining"),
            Some(left)
        );
    }
    let status = gateway
        .client
        .invoke(as_caller(summarize(), CI_KEY))
        .await
        .unwrap_err();
    let retry = assert_quota_exceeded(&status, "credits per UTC day").expect("RetryInfo");
    assert!(retry <= Duration::from_secs(24 * 3600));
    assert_eq!(
        meta(status.metadata(), "x-flowgate-credits-remaining"),
        Some("0")
    );
}

#[tokio::test]
async fn a_run_without_a_reported_cost_counts_as_configured() {
    let mut gateway = start(
        EmulatorConfig::default(),
        "credits_per_month = 10.0\nunknown_cost = 4.0",
    )
    .await;
    // An async Knouds run: its start answer reports no cost.
    let render = pb::InvokeRequest {
        target: target("kn", slug("render-video")),
        inputs: inputs(serde_json::json!({"prompt": "a fox"})),
        async_options: Some(pb::AsyncOptions {
            enabled: true,
            callback_url: String::new(),
        }),
        ..Default::default()
    };
    let answer = gateway
        .client
        .invoke(as_caller(render, CI_KEY))
        .await
        .unwrap();
    assert_eq!(
        answer
            .get_ref()
            .usage
            .as_ref()
            .and_then(|usage| usage.credits),
        None
    );
    assert_eq!(
        meta(answer.metadata(), "x-flowgate-credits-remaining"),
        Some("6")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_are_capped() {
    // Every emulator answer takes a second: two calls sent together overlap.
    let emulator = EmulatorConfig {
        latency: Duration::from_secs(1),
        ..EmulatorConfig::default()
    };
    let mut gateway = start(emulator, "max_concurrent_runs = 1").await;
    let (mut one, mut two) = (gateway.client.clone(), gateway.client.clone());
    let (first, second) = tokio::join!(
        one.invoke(as_caller(summarize(), CI_KEY)),
        two.invoke(as_caller(summarize(), CI_KEY)),
    );
    let (ok, refused): (Vec<_>, Vec<_>) = [first, second].into_iter().partition(Result::is_ok);
    assert_eq!(
        (ok.len(), refused.len()),
        (1, 1),
        "exactly one run at a time"
    );
    let status = refused.into_iter().next().unwrap().unwrap_err();
    let retry = assert_quota_exceeded(&status, "concurrent runs");
    assert_eq!(retry, None, "no known reset for a busy run");
    // The run is given back when its call ends.
    gateway
        .client
        .invoke(as_caller(summarize(), CI_KEY))
        .await
        .unwrap();
}

async fn gateway_on(redis: &RedisServer, quota: &str) -> common::Harness {
    let url = redis.url();
    let callers = callers(quota);
    common::start_with(EmulatorConfig::default(), move |text| {
        format!(
            "{text}{callers}\n[state]\nstore = \"redis\"\nurl = \"{url}\"\nop_timeout = \"300ms\"\n"
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_redis_count_one_quota_per_caller() {
    let redis = RedisServer::start().unwrap();
    let quota = "requests_per_window = 3\nwindow = \"24h\"\ncredits_per_day = 5.0";
    let mut a = gateway_on(&redis, quota).await;
    let mut b = gateway_on(&redis, quota).await;
    let mut admitted = 0;
    for call in 0..6 {
        let client = if call % 2 == 0 {
            &mut a.client
        } else {
            &mut b.client
        };
        match client.invoke(as_caller(summarize(), CI_KEY)).await {
            Ok(answer) => {
                admitted += 1;
                // Both gateways see the same, shrinking balance.
                let left = 3 - admitted;
                assert_eq!(
                    meta(answer.metadata(), "x-flowgate-requests-remaining"),
                    Some(left.to_string().as_str())
                );
                let credits = 5.0 - 0.5 * f64::from(admitted);
                assert_eq!(
                    meta(answer.metadata(), "x-flowgate-credits-remaining"),
                    Some(credits.to_string().as_str())
                );
            }
            Err(status) => {
                assert_quota_exceeded(&status, "requests");
            }
        }
    }
    assert_eq!(admitted, 3, "one quota for both gateways");
}
