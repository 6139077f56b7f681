//! Knouds dialect against a live emulator.

mod common;

use std::time::Duration;

use common::{
    CallbackReceiver, client, eventually, hmac_hex, knouds_run, send_json, send_status, start,
    start_default,
};
use flowgate_emulator::{EmulatorConfig, KnoudsWebhook, keys};
use serde_json::{Value, json};

async fn run(
    base: &str,
    key: &str,
    slug: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    send_json(knouds_run(&client(), base, key, slug, "", &body)).await
}

/// Runs `slug` with `?async=true`.
async fn run_async(base: &str, key: &str, slug: &str, body: Value) -> (u16, Value) {
    let request = knouds_run(&client(), base, key, slug, "?async=true", &body);
    let (status, _, body) = send_json(request).await;
    (status, body)
}

/// Runs `slug` and checks that the answer has `status` and error `code`.
async fn run_expecting(
    base: &str,
    key: &str,
    slug: &str,
    body: Value,
    status: u16,
    code: &str,
) -> (reqwest::header::HeaderMap, Value) {
    let (got, headers, answer) = run(base, key, slug, body).await;
    assert_eq!(
        (got, answer["code"].as_str()),
        (status, Some(code)),
        "{slug}: {answer}"
    );
    (headers, answer)
}

async fn get(base: &str, key: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = send_json(
        client()
            .get(format!("{base}{path}"))
            .header("x-api-key", key),
    )
    .await;
    (status, body)
}

fn cancel(base: &str, id: &str) -> reqwest::RequestBuilder {
    client()
        .post(format!("{base}/api/executions/{id}/cancel"))
        .header("x-api-key", keys::KNOUDS_KEY)
}

#[tokio::test]
async fn auth_uses_x_api_key_not_bearer() {
    let emu = start_default().await;
    let base = emu.knouds_base_url();
    let body = json!({"inputs": {}});
    let (status, _, err) = send_json(
        client()
            .post(format!("{base}/api/workflows/no-input/run"))
            .bearer_auth(keys::KNOUDS_KEY)
            .json(&body),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(err, json!({"error": "Invalid or missing API key"}));
    let (status, _, err) = run(&base, "knouds_live_wrong", "no-input", body.clone()).await;
    assert_eq!(
        (status, err),
        (401, json!({"error": "Invalid or missing API key"}))
    );
    let (status, _, err) = run(&base, keys::KNOUDS_KEY_LEGACY, "no-input", body).await;
    assert_eq!(status, 401);
    assert_eq!(
        err,
        json!({"error": "Legacy API keys are retired", "code": "LEGACY_KEY_RETIRED"})
    );
}

#[tokio::test]
async fn seeded_workflows_succeed() {
    let emu = start_default().await;
    let base = emu.knouds_base_url();
    let k = keys::KNOUDS_KEY;
    let (status, headers, body) = run(
        &base,
        k,
        "summarize-text",
        json!({"inputs": {"text": "one two three four", "max_words": 2}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["result"], json!({"summary": "one two…"}));
    assert!(body["cost"].as_f64().unwrap() > 0.0);
    assert!(body["ms"].is_u64());
    assert_eq!(headers["x-ratelimit-limit"], "1000");
    assert_eq!(headers["x-ratelimit-remaining"], "999");
    assert!(headers.contains_key("x-ratelimit-reset"));

    let (_, _, body) = run(
        &base,
        k,
        "render-video",
        json!({"inputs": {"prompt": "a cat"}}),
    )
    .await;
    let url = body["result"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://cdn.example/") && url.ends_with(".mp4"),
        "{url}"
    );
    let (_, _, again) = run(
        &base,
        k,
        "render-video",
        json!({"inputs": {"prompt": "a cat", "duration": 5}}),
    )
    .await;
    assert_eq!(
        again["result"], body["result"],
        "defaults applied, output deterministic"
    );

    let (_, _, body) = run(
        &base,
        k,
        "premium-model",
        json!({"inputs": {"prompt": "why?"}}),
    )
    .await;
    assert_eq!(body["success"], true);
    let (_, _, body) = run(&base, k, "no-input", json!({"inputs": {}})).await;
    assert_eq!(body["result"], "static output");

    let (status, _, body) = run(
        &base,
        k,
        "flaky-pipeline",
        json!({"inputs": {"input": "x"}}),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({"error": "Provider call failed: upstream model timed out", "code": "EXECUTION_FAILED"})
    );
}

#[tokio::test]
async fn error_codes() {
    let emu = start_default().await;
    let base = emu.knouds_base_url();
    let k = keys::KNOUDS_KEY;
    run_expecting(
        &base,
        k,
        "Bad_Slug",
        json!({"inputs": {}}),
        400,
        "INVALID_SLUG",
    )
    .await;
    let (status, _, body) = run(&base, k, "missing-flow", json!({"inputs": {}})).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "Workflow not found"}))
    );
    for (body, code) in [
        (json!({"text": "x"}), "INVALID_INPUTS"),
        (json!({"inputs": [1]}), "INVALID_INPUTS"),
        (json!([1]), "INVALID_BODY"),
    ] {
        run_expecting(&base, k, "summarize-text", body, 400, code).await;
    }
    let (status, _, body) = send_json(
        client()
            .post(format!("{base}/api/workflows/summarize-text/run"))
            .header("x-api-key", k)
            .body("{nope"),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_BODY")));

    let (_, body) = run_expecting(
        &base,
        k,
        "summarize-text",
        json!({"inputs": {"text": 5, "bogus": 1, "max_words": "ten"}}),
        400,
        "INVALID_INPUTS",
    )
    .await;
    let mut fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["bogus", "max_words", "text"]);
    let (_, _, body) = run(&base, k, "summarize-text", json!({"inputs": {}})).await;
    assert_eq!(
        body["details"],
        json!([{"field": "text", "message": "Field is required"}])
    );

    // Capabilities.
    let (_, body) = run_expecting(
        &base,
        keys::KNOUDS_KEY_SCOPED,
        "render-video",
        json!({"inputs": {"prompt": "x"}}),
        403,
        "CAPABILITY_DENIED",
    )
    .await;
    assert_eq!(body["required"], "workflow:render-video:run");
    let (status, _, _) = run(
        &base,
        keys::KNOUDS_KEY_SCOPED,
        "summarize-text",
        json!({"inputs": {"text": "x"}}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = get(
        &base,
        keys::KNOUDS_KEY_SCOPED,
        "/api/workflows/summarize-text/schema",
    )
    .await;
    assert_eq!(
        (status, body["required"].as_str()),
        (403, Some("workflow:read"))
    );

    // Billing and tiers.
    run_expecting(
        &base,
        keys::KNOUDS_KEY_NO_CREDITS,
        "no-input",
        json!({"inputs": {}}),
        402,
        "INSUFFICIENT_CREDITS",
    )
    .await;
    let (status, _, body) = run(
        &base,
        keys::KNOUDS_KEY_TRIAL,
        "no-input",
        json!({"inputs": {}}),
    )
    .await;
    assert_eq!(status, 402);
    assert_eq!(
        body,
        json!({"error": "Trial grant exhausted. Upgrade your plan to continue.", "code": "grant_exhausted"})
    );
    let (headers, body) = run_expecting(
        &base,
        keys::KNOUDS_KEY_PRO,
        "premium-model",
        json!({"inputs": {"prompt": "x"}}),
        403,
        "MODEL_TIER_REQUIRED",
    )
    .await;
    assert!(body["requiredTier"].is_string());
    assert_eq!(headers["x-ratelimit-limit"], "100");

    // Async where unsupported.
    let (status, body) =
        run_async(&base, k, "summarize-text", json!({"inputs": {"text": "x"}})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("ASYNC_NOT_SUPPORTED"))
    );
}

#[tokio::test]
async fn schema_lists_fields_and_defaults() {
    let emu = start_default().await;
    let base = emu.knouds_base_url();
    let (status, body) = get(
        &base,
        keys::KNOUDS_KEY,
        "/api/workflows/summarize-text/schema",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["values"], json!({"style": "short", "max_words": 50}));
    assert_eq!(body["name"], "Summarize text");
    assert!(body["description"].is_string());
    let text = &body["fields"][0];
    assert_eq!(
        (
            text["name"].as_str(),
            text["type"].as_str(),
            text["required"].as_bool()
        ),
        (Some("text"), Some("string"), Some(true))
    );
    let (_, body) = get(&base, keys::KNOUDS_KEY, "/api/workflows/no-input/schema").await;
    assert_eq!(body["fields"], json!([]));
    let (status, _) = get(&base, keys::KNOUDS_KEY, "/api/workflows/unknown/schema").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn tier_window_answers_429() {
    let window = Duration::from_secs(3);
    let emu = start(EmulatorConfig {
        knouds_window: window,
        ..Default::default()
    })
    .await;
    let base = emu.knouds_base_url();
    let http = client();
    let call =
        |key: &'static str| knouds_run(&http, &base, key, "no-input", "", &json!({"inputs": {}}));
    let started = std::time::Instant::now();
    for _ in 0..100 {
        assert_eq!(send_status(call(keys::KNOUDS_KEY_PRO)).await, 200);
    }
    let (status, headers, body) = send_json(call(keys::KNOUDS_KEY_PRO)).await;
    assert!(started.elapsed() < window, "test too slow for its window");
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"error": "Rate limit exceeded", "code": "RATE_LIMIT_EXCEEDED"})
    );
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["x-ratelimit-limit"], "100");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry));
    // Business keys have their own window.
    assert_eq!(send_status(call(keys::KNOUDS_KEY)).await, 200);
    tokio::time::sleep(window + Duration::from_millis(100) - started.elapsed().min(window)).await;
    assert_eq!(send_status(call(keys::KNOUDS_KEY_PRO)).await, 200);
}

#[tokio::test]
async fn async_execution_polls_and_signs_webhooks() {
    let receiver = CallbackReceiver::start(0).await;
    let secret = "knouds_whsec_test";
    let emu = start(EmulatorConfig {
        async_completion_delay: Duration::from_millis(1500),
        knouds_webhook: Some(KnoudsWebhook {
            url: receiver.url.clone(),
            secret: secret.to_owned(),
        }),
        ..Default::default()
    })
    .await;
    let base = emu.knouds_base_url();
    let (status, accepted) = run_async(
        &base,
        keys::KNOUDS_KEY,
        "render-video",
        json!({"inputs": {"prompt": "a cat"}}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(accepted["_async"], true);
    assert_eq!(accepted["status"], "processing");
    assert_eq!(
        accepted["webhookDelivery"],
        json!({"configured": true, "url": receiver.url})
    );
    let id = accepted["executionId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(accepted["pollUrl"], format!("/api/executions/{id}"));
    assert!(accepted["requestId"].is_string());

    let poll = format!("/api/executions/{id}");
    let (status, first) = get(&base, keys::KNOUDS_KEY, &poll).await;
    assert_eq!(status, 200);
    assert_eq!(first["status"], "processing");
    assert_eq!(first["workflowSlug"], "render-video");
    assert!(first["createdAt"].is_string());
    let done = eventually(Duration::from_secs(5), || async {
        let (_, body) = get(&base, keys::KNOUDS_KEY, &poll).await;
        (body["status"] != "processing").then_some(body)
    })
    .await;
    assert_eq!(done["status"], "completed");
    assert!(done["result"]["url"].as_str().unwrap().ends_with(".mp4"));
    assert!(done["completedAt"].is_string());

    let got = receiver.wait_for(1).await;
    let header = got[0].headers["x-knouds-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&got[0].body);
    assert_eq!(v1, hmac_hex(secret, &signed));
    let event: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event["event"], "execution.completed");
    assert_eq!(event["executionId"], id.as_str());
    assert_eq!(event["workflowSlug"], "render-video");
    assert_eq!(event["result"], done["result"]);
    assert_eq!(emu.callbacks().len(), 1);

    // Unknown executions, other keys and missing capabilities.
    let (status, body) = get(
        &base,
        keys::KNOUDS_KEY,
        "/api/executions/00000000-0000-4000-8000-000000000000",
    )
    .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Execution not found", "code": "EXECUTION_NOT_FOUND"})
        )
    );
    let (status, _) = get(&base, keys::KNOUDS_KEY_PRO, &poll).await;
    assert_eq!(status, 404);
    let (status, body) = get(&base, keys::KNOUDS_KEY_SCOPED, &poll).await;
    assert_eq!(
        (status, body["required"].as_str()),
        (403, Some("execution:read"))
    );
}

#[tokio::test]
async fn async_failure_and_cancellation() {
    let receiver = CallbackReceiver::start(0).await;
    let emu = start(EmulatorConfig {
        async_completion_delay: Duration::from_millis(1500),
        knouds_webhook: Some(KnoudsWebhook {
            url: receiver.url.clone(),
            secret: "s".to_owned(),
        }),
        ..Default::default()
    })
    .await;
    let base = emu.knouds_base_url();
    let submit = |slug: &'static str, inputs: Value| {
        let base = base.clone();
        async move {
            let (status, body) =
                run_async(&base, keys::KNOUDS_KEY, slug, json!({ "inputs": inputs })).await;
            assert_eq!(status, 202);
            body["executionId"].as_str().unwrap().to_owned()
        }
    };
    let failing = submit("flaky-pipeline", json!({"input": "x"})).await;
    let cancelled = submit("render-video", json!({"prompt": "x"})).await;

    let (status, _, body) = send_json(cancel(&base, &cancelled)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancel_requested"))
    );

    let settled = |id: String| {
        let base = base.clone();
        async move {
            eventually(Duration::from_secs(5), || async {
                let (_, body) =
                    get(&base, keys::KNOUDS_KEY, &format!("/api/executions/{id}")).await;
                matches!(
                    body["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                )
                .then_some(body)
            })
            .await
        }
    };
    let failed = settled(failing).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "EXECUTION_FAILED");
    assert_eq!(
        failed["error"]["message"],
        "Provider call failed: upstream model timed out"
    );
    let gone = settled(cancelled.clone()).await;
    assert_eq!(gone["status"], "cancelled");

    let events: Vec<Value> = receiver
        .wait_for(2)
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let mut kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["execution.cancelled", "execution.failed"]);
    let failed_event = events
        .iter()
        .find(|e| e["event"] == "execution.failed")
        .unwrap();
    assert_eq!(failed_event["error"]["code"], "EXECUTION_FAILED");

    // A finished execution cannot be cancelled; only two webhooks were sent.
    assert_eq!(send_status(cancel(&base, &cancelled)).await, 409);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn async_without_webhook_reports_unconfigured() {
    let emu = start_default().await;
    let (status, body) = run_async(
        &emu.knouds_base_url(),
        keys::KNOUDS_KEY,
        "render-video",
        json!({"inputs": {"prompt": "x"}}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(body["webhookDelivery"], json!({"configured": false}));
}
