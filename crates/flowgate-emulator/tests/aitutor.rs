//! AI Tutor dialect against a live emulator.

mod common;

use common::{aitutor_run, client, send_json, send_status, start, start_default, with_bearer};
use flowgate_emulator::{EmulatorConfig, keys};
use reqwest::RequestBuilder;
use serde_json::{Value, json};

async fn run(
    base: &str,
    key: Option<&str>,
    workflow: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    send_json(aitutor_run(&client(), base, key, workflow, &body)).await
}

/// Runs `wf_story` with the seeded key.
async fn run_story(base: &str, story: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    run(
        base,
        Some(keys::AITUTOR_KEY),
        "wf_story",
        json!({ "story": story }),
    )
    .await
}

/// `GET {base}/api/v1/token{query}` with a Bearer `key`, if any.
fn token_request(base: &str, key: Option<&str>, query: &str) -> RequestBuilder {
    with_bearer(client().get(format!("{base}/api/v1/token{query}")), key)
}

#[tokio::test]
async fn auth_is_required() {
    let emu = start_default().await;
    let base = emu.aitutor_base_url();
    for key in [None, Some("sk_wrong")] {
        let (status, headers, body) = run(&base, key, "wf_story", json!({"story": "x"})).await;
        assert_eq!(status, 401);
        assert_eq!(body, json!({"success": false, "error": "Unauthorized"}));
        assert!(headers.contains_key("x-ratelimit-limit"));
    }
}

#[tokio::test]
async fn seeded_workflows_succeed() {
    let emu = start_default().await;
    let base = emu.aitutor_base_url();
    let (status, headers, body) = run_story(&base, "a fox").await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert!(
        body["result"]
            .as_str()
            .unwrap()
            .starts_with("Once upon a time, a fox")
    );
    assert!(body.get("citations").is_none());
    assert_eq!(headers["x-ratelimit-limit"], "50");
    assert_eq!(headers["x-ratelimit-remaining"], "49");

    let (status, _, body) = run(
        &base,
        Some(keys::AITUTOR_KEY),
        "wf_research",
        json!({"topic": "Solar power"}),
    )
    .await;
    assert_eq!(status, 200);
    let result: Value = serde_json::from_str(body["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["topic"], "Solar power");
    assert!(!result["findings"].as_array().unwrap().is_empty());
    let citations = body["citations"].as_array().unwrap();
    assert!(
        citations[0]
            .as_str()
            .unwrap()
            .starts_with("https://example.org/")
    );
}

#[tokio::test]
async fn error_bodies_and_codes() {
    let emu = start_default().await;
    let base = emu.aitutor_base_url();
    let k = Some(keys::AITUTOR_KEY);
    let not_found = json!({"success": false, "error": "Workflow not found or not published", "code": "workflow_not_found"});
    let cases = [
        (k, "wf_unpublished", json!({}), 404, not_found.clone()),
        (k, "wf_nope", json!({}), 404, not_found),
        (
            k,
            "wf_broken",
            json!({}),
            500,
            json!({"success": false, "error": "Workflow run failed", "code": "workflow_run_failed"}),
        ),
        (
            k,
            "wf_blocked",
            json!({}),
            403,
            json!({"success": false, "error": "Request blocked by content policy", "code": "request_blocked"}),
        ),
        (
            k,
            "wf_story",
            json!({}),
            400,
            json!({"success": false, "error": "Missing input: story", "code": "missing_input"}),
        ),
        (
            k,
            "wf_story",
            json!({"story": {"nested": 1}}),
            400,
            Value::Null,
        ),
        (k, "wf_story", json!(["story"]), 400, Value::Null),
        (
            Some(keys::AITUTOR_KEY_NO_CREDITS),
            "wf_story",
            json!({"story": "x"}),
            402,
            json!({"success": false, "error": "No credits remaining", "code": "invalid_billing"}),
        ),
    ];
    for (key, workflow, request, want_status, want_body) in cases {
        let (status, _, body) = run(&base, key, workflow, request.clone()).await;
        assert_eq!(status, want_status, "{workflow} {request}: {body}");
        if want_body.is_null() {
            assert_eq!(body["code"], "invalid_body");
            assert_eq!(body["success"], false);
        } else {
            assert_eq!(body, want_body, "{workflow} {request}");
        }
    }
    let (status, _, body) = send_json(
        client()
            .post(format!("{base}/api/v1/run/wf_story"))
            .bearer_auth(keys::AITUTOR_KEY)
            .body("{oops"),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_body")));
}

#[tokio::test]
async fn per_second_window_answers_429() {
    let emu = start(EmulatorConfig {
        aitutor_per_second_limit: 3,
        ..Default::default()
    })
    .await;
    let base = emu.aitutor_base_url();
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) = run_story(&base, "x").await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-remaining"], remaining);
    }
    let (status, headers, body) = run_story(&base, "x").await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"success": false, "error": "Rate limit exceeded", "code": "rate_limited"})
    );
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["x-ratelimit-limit"], "3");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(run_story(&base, "x").await.0, 200);
}

#[tokio::test]
async fn token_then_plain_text_stream() {
    let emu = start_default().await;
    let base = emu.aitutor_base_url();
    let (status, _, body) =
        send_json(token_request(&base, Some(keys::AITUTOR_KEY), "?ttl=60")).await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(body["ttl"], 60);
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pub_tok_"));

    let stream = || {
        client()
            .post(format!("{base}/api/v1/run/wf_story/stream?token={token}"))
            .json(&json!({"story": "a fox"}))
    };
    let response = stream().send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("Once upon a time, a fox"), "{text}");

    // Single use.
    assert_eq!(send_status(stream()).await, 401);

    for bad in ["0", "301", "abc"] {
        let query = format!("?ttl={bad}");
        assert_eq!(
            send_status(token_request(&base, Some(keys::AITUTOR_KEY), &query)).await,
            400,
            "ttl={bad}"
        );
    }
    assert_eq!(send_status(token_request(&base, None, "")).await, 401);
}
