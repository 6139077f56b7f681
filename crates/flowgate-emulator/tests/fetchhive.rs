//! Fetch Hive dialect against a live emulator.

mod common;

use std::time::Duration;

use common::{
    CallbackReceiver, client, eventually, fetchhive_invoke, hmac_hex, send_json, send_status,
    start, start_default,
};
use flowgate_emulator::{EmulatorConfig, keys};
use serde_json::{Value, json};

async fn invoke(base: &str, key: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    send_json(fetchhive_invoke(&client(), base, Some(key), &body)).await
}

/// `GET {base}{path}` with a Bearer `key`.
async fn get(base: &str, key: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = send_json(client().get(format!("{base}{path}")).bearer_auth(key)).await;
    (status, body)
}

#[tokio::test]
async fn auth_is_required() {
    let emu = start_default().await;
    let base = emu.fetchhive_base_url();
    let body = json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"}});
    let (status, headers, body) = send_json(fetchhive_invoke(&client(), &base, None, &body)).await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"error": "Invalid API key"}));
    assert!(headers.contains_key("x-ratelimit-limit"));
    let (status, _, _) = invoke(&base, "fhk_wrong", body).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn summarize_variants_and_rate_headers() {
    let emu = start_default().await;
    let base = emu.fetchhive_base_url();
    let (status, headers, body) = invoke(
        &base,
        keys::FETCHHIVE_KEY,
        json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "AI"},
               "metadata": {"customer_id": "cus_1", "n": 3, "flag": true, "none": null}, "user": "u1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run_status"], "completed");
    let id = body["request_id"].as_str().unwrap();
    assert!(id.starts_with("req_") && id.len() == 36, "{id}");
    assert!(
        body["output"]
            .as_str()
            .unwrap()
            .starts_with("Summary (default) of AI: ")
    );
    assert_eq!(headers["x-ratelimit-limit"], "10000");
    assert_eq!(headers["x-ratelimit-remaining"], "9999");
    let reset: u64 = headers["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(reset % 86_400, 0, "resets at midnight UTC");

    let (_, _, concise) = invoke(
        &base,
        keys::FETCHHIVE_KEY,
        json!({"deployment": "summarize", "variant": "concise", "inputs": {"topic": "AI"}}),
    )
    .await;
    assert!(
        concise["output"]
            .as_str()
            .unwrap()
            .starts_with("Summary (concise) of AI: ")
    );
}

#[tokio::test]
async fn company_extractor_returns_json_in_a_string() {
    let emu = start_default().await;
    let (status, _, body) = invoke(
        &emu.fetchhive_base_url(),
        keys::FETCHHIVE_KEY,
        json!({"deployment": "company-extractor", "variant": "default",
               "inputs": {"companies": [{"name": "Fetch Hive"}, "Knouds"]}}),
    )
    .await;
    assert_eq!(status, 200);
    let output: Value = serde_json::from_str(body["output"].as_str().unwrap()).unwrap();
    assert_eq!(
        output,
        json!({"companies": ["Fetch Hive", "Knouds"], "count": 2})
    );
}

#[tokio::test]
async fn validation_errors() {
    let emu = start_default().await;
    let base = emu.fetchhive_base_url();
    let k = keys::FETCHHIVE_KEY;
    let cases = [
        (
            json!({"deployment": "summarize", "inputs": {"topic": "x"}}),
            422,
            json!({"error": "Missing required field: deployment or variant"}),
        ),
        (
            json!({"deployment": "nope", "variant": "default"}),
            404,
            json!({"error": "Deployment not found", "error_code": "not_found"}),
        ),
        (
            json!({"deployment": "summarize", "variant": "missing"}),
            404,
            json!({"error": "Deployment not found", "error_code": "not_found"}),
        ),
    ];
    for (request, want_status, want_body) in cases {
        let (status, _, body) = invoke(&base, k, request.clone()).await;
        assert_eq!(status, want_status, "{request}");
        assert_eq!(body, want_body, "{request}");
    }
    let coded = [
        (
            json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"}, "metadata": {"a": {"b": 1}}}),
            "invalid_metadata",
        ),
        (
            json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"}, "metadata": {"a": [1]}}),
            "invalid_metadata",
        ),
        (
            json!({"deployment": "summarize", "variant": "default", "inputs": {}}),
            "invalid_request",
        ),
        (
            json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": ["x"]}}),
            "invalid_request",
        ),
        (
            json!({"deployment": "company-extractor", "variant": "default", "inputs": {"companies": "Fetch Hive"}}),
            "invalid_request",
        ),
        (
            json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"}, "async": {"enabled": true}}),
            "invalid_request",
        ),
        (
            json!({"deployment": "approval-flow", "variant": "default"}),
            "callback_required",
        ),
    ];
    for (request, code) in coded {
        let (status, _, body) = invoke(&base, k, request.clone()).await;
        assert_eq!(status, 422, "{request}");
        assert_eq!(body["error_code"], code, "{request}: {body}");
        assert!(body["error"].is_string());
    }
    let (_, _, hitl) = invoke(
        &base,
        k,
        json!({"deployment": "approval-flow", "variant": "default"}),
    )
    .await;
    assert_eq!(
        hitl["error"],
        "Workflows with a Human in the Loop step must use callback delivery"
    );

    let status = send_status(
        client()
            .post(format!("{base}/workflow/invoke"))
            .bearer_auth(k)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn failures_credits_and_outage() {
    let emu = start_default().await;
    let base = emu.fetchhive_base_url();
    let (status, _, body) = invoke(
        &base,
        keys::FETCHHIVE_KEY,
        json!({"deployment": "failing-flow", "variant": "default"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["run_status"], "failed");
    assert_eq!(
        body["error"],
        "Step 2 (LLM) failed: model returned no content"
    );

    let (status, _, body) = invoke(
        &base,
        keys::FETCHHIVE_KEY,
        json!({"deployment": "model-outage", "variant": "default"}),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(
        body,
        json!({"error": "Model provider failed", "error_code": "model_provider_error"})
    );

    let (status, _, body) = invoke(
        &base,
        keys::FETCHHIVE_KEY_NO_CREDITS,
        json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"}}),
    )
    .await;
    assert_eq!(status, 402);
    assert_eq!(
        body,
        json!({"error": "Insufficient credits", "error_code": "insufficient_credits"})
    );
}

#[tokio::test]
async fn daily_cap_answers_429_with_retry_after() {
    let emu = start(EmulatorConfig {
        fetchhive_daily_limit: 2,
        ..Default::default()
    })
    .await;
    let base = emu.fetchhive_base_url();
    let req = json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"}});
    for _ in 0..2 {
        assert_eq!(invoke(&base, keys::FETCHHIVE_KEY, req.clone()).await.0, 200);
    }
    let (status, headers, body) = invoke(&base, keys::FETCHHIVE_KEY, req.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(body["error_code"], "api_rate_limit_exceeded");
    assert_eq!(body["error"], "Daily API rate limit exceeded");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    // Another key has its own cap.
    assert_eq!(
        invoke(&base, keys::FETCHHIVE_KEY_NO_CREDITS, req).await.0,
        402
    );
}

#[tokio::test]
async fn concurrency_cap_rejects_excess_sync_runs() {
    let emu = start(EmulatorConfig {
        fetchhive_concurrency_limit: 1,
        latency: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let base = emu.fetchhive_base_url();
    let req = json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"}});
    let (a, b) = tokio::join!(
        invoke(&base, keys::FETCHHIVE_KEY, req.clone()),
        invoke(&base, keys::FETCHHIVE_KEY, req.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 429]);
    let rejected = if a.0 == 429 { a.2 } else { b.2 };
    assert_eq!(rejected["error_code"], "concurrency_limit_exceeded");
    assert!(rejected["error"].as_str().unwrap().contains("async"));
    // The slot is free again afterwards.
    assert_eq!(invoke(&base, keys::FETCHHIVE_KEY, req).await.0, 200);
}

#[tokio::test]
async fn async_run_delivers_a_signed_callback_and_updates_status() {
    // Long enough that the in-progress states are still there to see on a
    // loaded machine; the callbacks are awaited, not slept for.
    let emu = start(EmulatorConfig {
        async_completion_delay: Duration::from_millis(1500),
        ..Default::default()
    })
    .await;
    let receiver = CallbackReceiver::start(0).await;
    let base = emu.fetchhive_base_url();
    let (status, _, accepted) = invoke(
        &base,
        keys::FETCHHIVE_KEY,
        json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "AI"},
               "async": {"enabled": true, "callback_url": receiver.url}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(accepted["run_status"], "running");
    let id = accepted["request_id"].as_str().unwrap().to_owned();
    let secret = accepted["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    let run_path = format!("/workflow_runs/{id}");
    let (_, run) = get(&base, keys::FETCHHIVE_KEY, &run_path).await;
    assert_eq!(run["workflow_run"]["run_status"], "running");
    assert_eq!(run["workflow_run"]["id"], id.as_str());

    let got = receiver.wait_for(1).await;
    let callback = &got[0];
    let signature = callback.headers["x-fetch-hive-signature"].to_str().unwrap();
    assert_eq!(signature, hmac_hex(&secret, &callback.body));
    assert_eq!(callback.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&callback.body).unwrap();
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(body["run_status"], "completed");
    assert!(
        body["output"]
            .as_str()
            .unwrap()
            .starts_with("Summary (default) of AI")
    );

    let (_, run) = get(&base, keys::FETCHHIVE_KEY, &run_path).await;
    let run = &run["workflow_run"];
    assert_eq!(run["run_status"], "completed");
    assert_eq!(run["output_content"], body["output"]);
    assert!(run["ended_at"].is_string() && run["started_at"].is_string());
    assert!(run["total_tokens"].as_u64().unwrap() > 0);

    let (_, flat) = get(
        &base,
        keys::FETCHHIVE_KEY,
        &format!("/public/requests/{id}"),
    )
    .await;
    assert_eq!(flat["request_id"], id.as_str());
    assert_eq!(flat["run_status"], "completed");

    let recorded = emu.callbacks();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].delivered());
    assert_eq!(recorded[0].url, receiver.url);

    // Unknown runs and other keys' runs are not found.
    for (key, path) in [
        (keys::FETCHHIVE_KEY, "/workflow_runs/req_unknown"),
        (keys::FETCHHIVE_KEY_NO_CREDITS, &run_path),
    ] {
        assert_eq!(get(&base, key, path).await.0, 404);
    }
}

#[tokio::test]
async fn async_failures_hitl_and_queueing() {
    // Long enough that the in-progress states are still there to see on a
    // loaded machine; the callbacks are awaited, not slept for.
    let emu = start(EmulatorConfig {
        async_completion_delay: Duration::from_millis(1500),
        fetchhive_concurrency_limit: 1,
        ..Default::default()
    })
    .await;
    let receiver = CallbackReceiver::start(0).await;
    let base = emu.fetchhive_base_url();
    let submit = |deployment: &str| {
        json!({"deployment": deployment, "variant": "default",
               "async": {"enabled": true, "callback_url": receiver.url}})
    };
    let (_, _, first) = invoke(&base, keys::FETCHHIVE_KEY, submit("failing-flow")).await;
    assert_eq!(first["run_status"], "running");
    let (_, _, second) = invoke(&base, keys::FETCHHIVE_KEY, submit("approval-flow")).await;
    assert_eq!(second["run_status"], "queued");

    let got = receiver.wait_for(2).await;
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let failed = bodies
        .iter()
        .find(|b| b["request_id"] == first["request_id"])
        .unwrap();
    assert_eq!(failed["run_status"], "failed");
    assert_eq!(
        failed["error"],
        "Step 2 (LLM) failed: model returned no content"
    );
    let approved = bodies
        .iter()
        .find(|b| b["request_id"] == second["request_id"])
        .unwrap();
    assert_eq!(approved["run_status"], "completed");
    assert_eq!(approved["output"], "approved");
    for (raw, body) in got.iter().zip(&bodies) {
        let accepted = if body["request_id"] == first["request_id"] {
            &first
        } else {
            &second
        };
        let secret = accepted["webhook_secret"].as_str().unwrap();
        let signature = raw.headers["x-fetch-hive-signature"].to_str().unwrap();
        assert_eq!(signature, hmac_hex(secret, &raw.body));
    }
}

#[tokio::test]
async fn failed_callback_deliveries_are_retried() {
    let emu = start(EmulatorConfig {
        async_completion_delay: Duration::from_millis(20),
        ..Default::default()
    })
    .await;
    let receiver = CallbackReceiver::start(2).await;
    let (_, _, accepted) = invoke(
        &emu.fetchhive_base_url(),
        keys::FETCHHIVE_KEY,
        json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"},
               "async": {"enabled": true, "callback_url": receiver.url}}),
    )
    .await;
    assert_eq!(accepted["run_status"], "running");
    let got = receiver.wait_for(3).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body, got[2].body);
    let attempts = eventually(Duration::from_secs(5), || async {
        let c = emu.callbacks();
        (c.len() == 3).then_some(c)
    })
    .await;
    assert_eq!(
        attempts.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(attempts[0].status, Some(500));
    assert!(attempts[2].delivered());
}

#[tokio::test]
async fn unknown_paths_use_the_dialect_error_shape() {
    let emu = start_default().await;
    let (status, body) = get(&emu.fetchhive_base_url(), keys::FETCHHIVE_KEY, "/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error_code"], "not_found");
}
