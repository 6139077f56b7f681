//! Cross-dialect behaviour: recording, fault injection, cancellation
//! counting, the admin API, body limits and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{
    aitutor_run, client, client_with_timeout, eventually, fetchhive_invoke, knouds_run, send_json,
    send_status, start, start_default,
};
use flowgate_emulator::{Dialect, Emulator, EmulatorConfig, Fault, keys};
use serde_json::{Value, json};

fn summarize() -> Value {
    json!({"deployment": "summarize", "variant": "default", "inputs": {"topic": "x"}})
}

/// An AI Tutor `wf_story` run with a Bearer `key`, if any.
fn story(http: &reqwest::Client, emu: &Emulator, key: Option<&str>) -> reqwest::RequestBuilder {
    aitutor_run(
        http,
        &emu.aitutor_base_url(),
        key,
        "wf_story",
        &json!({"story": "x"}),
    )
}

#[tokio::test]
async fn requests_are_recorded_with_full_path_headers_and_body() {
    let emu = start_default().await;
    let request = knouds_run(
        &client(),
        &emu.knouds_base_url(),
        keys::KNOUDS_KEY,
        "no-input",
        "?async=false",
        &json!({"inputs": {}}),
    )
    .header("X-Custom-Trace", "abc");
    assert_eq!(send_status(request).await, 200);
    let recorded = emu.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.dialect, Dialect::Knouds);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/knouds/api/workflows/no-input/run");
    assert_eq!(r.query.as_deref(), Some("async=false"));
    assert_eq!(r.header("x-api-key"), Some(keys::KNOUDS_KEY));
    assert_eq!(r.header("X-CUSTOM-TRACE"), Some("abc"));
    assert!(
        r.headers.iter().any(|(k, _)| k == "x-custom-trace"),
        "names are lowercased"
    );
    assert_eq!(r.json(), Some(json!({"inputs": {}})));

    // Admin requests are not recorded; clearing works.
    let (status, _, list) =
        send_json(client().get(format!("http://{}/_emulator/requests", emu.addr()))).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["path"], "/knouds/api/workflows/no-input/run");
    assert_eq!(list[0]["dialect"], "knouds");
    assert_eq!(emu.requests().len(), 1);
    emu.clear_requests();
    assert!(emu.requests().is_empty());
}

#[tokio::test]
async fn status_fault_answers_verbatim_for_n_times_and_is_recorded() {
    let emu = start_default().await;
    emu.inject_fault(
        Fault::status(Dialect::FetchHive, 503, r#"{"error":"maintenance"}"#)
            .with_times(1)
            .with_header("retry-after", "7"),
    );
    let fetchhive = emu.fetchhive_base_url();
    let send = || {
        fetchhive_invoke(
            &client(),
            &fetchhive,
            Some(keys::FETCHHIVE_KEY),
            &summarize(),
        )
    };
    let (status, headers, body) = send_json(send()).await;
    assert_eq!(status, 503);
    assert_eq!(body, json!({"error": "maintenance"}));
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(send_status(send()).await, 200, "times(1) is used up");
    assert_eq!(emu.requests().len(), 2, "faulted requests are recorded too");

    // Dialect and path filters.
    emu.inject_fault(
        Fault::status(Dialect::Knouds, 500, "boom")
            .with_path("/schema")
            .with_content_type("text/plain"),
    );
    let knouds = emu.knouds_base_url();
    let schema = || {
        client()
            .get(format!("{knouds}/api/workflows/no-input/schema"))
            .header("x-api-key", keys::KNOUDS_KEY)
    };
    let schema_response = schema().send().await.unwrap();
    assert_eq!(schema_response.status(), 500);
    assert_eq!(schema_response.headers()["content-type"], "text/plain");
    assert_eq!(schema_response.text().await.unwrap(), "boom");
    let run = knouds_run(
        &client(),
        &knouds,
        keys::KNOUDS_KEY,
        "no-input",
        "",
        &json!({"inputs": {}}),
    );
    assert_eq!(send_status(run).await, 200);
    assert_eq!(send_status(send()).await, 200);
    emu.clear_faults();
    assert_eq!(send_status(schema()).await, 200);
}

#[tokio::test]
async fn latency_fault_delays_then_handles_normally() {
    let emu = start_default().await;
    emu.inject_fault(Fault::delay(Dialect::AiTutor, Duration::from_millis(300)).with_times(1));
    let started = Instant::now();
    let status = send_status(story(&client(), &emu, Some(keys::AITUTOR_KEY))).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn configured_latency_applies_to_every_provider_response() {
    let emu = start(EmulatorConfig {
        latency: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let status = send_status(story(&client(), &emu, None)).await;
    assert_eq!(status, 401);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn drop_connection_closes_without_an_answer() {
    let emu = start_default().await;
    emu.inject_fault(
        Fault::status(Dialect::Knouds, 0, "")
            .dropping_connection()
            .with_latency(Duration::from_millis(50))
            .with_times(1),
    );
    let knouds = emu.knouds_base_url();
    let http = client();
    let send = || {
        knouds_run(
            &http,
            &knouds,
            keys::KNOUDS_KEY,
            "no-input",
            "",
            &json!({"inputs": {}}),
        )
    };
    let err = send()
        .send()
        .await
        .expect_err("the connection must be dropped");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none());
    assert_eq!(emu.requests().len(), 1);
    assert_eq!(
        send_status(send()).await,
        200,
        "the next connection is served"
    );
    assert_eq!(
        emu.cancelled_requests(),
        0,
        "a deliberate drop is not a client cancellation"
    );
}

#[tokio::test]
async fn client_cancellation_is_counted() {
    let emu = start_default().await;
    emu.inject_fault(Fault::delay(Dialect::FetchHive, Duration::from_secs(5)));
    let timeout_client = client_with_timeout(Duration::from_millis(200));
    let err = fetchhive_invoke(
        &timeout_client,
        &emu.fetchhive_base_url(),
        Some(keys::FETCHHIVE_KEY),
        &summarize(),
    )
    .send()
    .await
    .unwrap_err();
    assert!(err.is_timeout());
    eventually(Duration::from_secs(3), || async {
        (emu.cancelled_requests() == 1).then_some(())
    })
    .await;
    assert_eq!(emu.requests().len(), 1);

    // Configured latency is cancellable as well.
    emu.clear_faults();
    let slow = start(EmulatorConfig {
        latency: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let err = timeout_client
        .get(format!("{}/api/v1/token", slow.aitutor_base_url()))
        .bearer_auth(keys::AITUTOR_KEY)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    eventually(Duration::from_secs(3), || async {
        (slow.cancelled_requests() == 1).then_some(())
    })
    .await;
    assert_eq!(emu.cancelled_requests(), 1);
}

#[tokio::test]
async fn admin_api_manages_faults_and_lists_callbacks() {
    let emu = start_default().await;
    let admin = format!("http://{}/_emulator", emu.addr());
    let http = client();
    let add_fault = |fault: Value| send_status(http.post(format!("{admin}/faults")).json(&fault));
    let created = add_fault(
        json!({"dialect": "aitutor", "status": 500, "body": "{\"success\":false}", "times": 1}),
    )
    .await;
    assert_eq!(created, 201);
    assert_eq!(add_fault(json!({"stauts": 500})).await, 400);
    let (_, _, faults) = send_json(http.get(format!("{admin}/faults"))).await;
    assert_eq!(faults.as_array().unwrap().len(), 1);

    let run = || send_status(story(&http, &emu, Some(keys::AITUTOR_KEY)));
    assert_eq!(run().await, 500);
    assert_eq!(run().await, 200);

    add_fault(json!({"status": 418})).await;
    assert_eq!(run().await, 418);
    // Faults never apply to the admin API itself.
    assert_eq!(
        send_status(http.get(format!("{admin}/requests"))).await,
        200
    );
    assert_eq!(
        send_status(http.delete(format!("{admin}/faults"))).await,
        204
    );
    assert_eq!(run().await, 200);

    assert_eq!(
        send_status(http.delete(format!("{admin}/requests"))).await,
        204
    );
    assert!(emu.requests().is_empty());
    let (status, _, callbacks) = send_json(http.get(format!("{admin}/callbacks"))).await;
    assert_eq!((status, callbacks), (200, json!([])));
    let (_, _, stats) = send_json(http.get(format!("{admin}/stats"))).await;
    assert_eq!(stats["cancelled_requests"], 0);
}

#[tokio::test]
async fn oversized_bodies_get_413_in_each_dialect() {
    let emu = start_default().await;
    let big = vec![b'a'; 1024 * 1024 + 1];
    let cases = [
        (
            format!("{}/workflow/invoke", emu.fetchhive_base_url()),
            "error_code",
            "payload_too_large",
        ),
        (
            format!("{}/api/v1/run/wf_story", emu.aitutor_base_url()),
            "code",
            "payload_too_large",
        ),
        (
            format!("{}/api/workflows/no-input/run", emu.knouds_base_url()),
            "code",
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (url, field, code) in cases {
        let (status, _, body) = send_json(client().post(&url).body(big.clone())).await;
        assert_eq!(status, 413, "{url}");
        assert_eq!(body[field], code, "{url}");
    }
    assert_eq!(emu.requests().len(), 3);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let emu = start_default().await;
    let addr = emu.addr();
    assert!(format!("{emu:?}").contains("Emulator"));
    emu.shutdown().await;
    let err = client()
        .get(format!("http://{addr}/_emulator/stats"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    let dropped = start_default().await;
    let addr = dropped.addr();
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        client()
            .get(format!("http://{addr}/_emulator/stats"))
            .send()
            .await
            .is_err()
    );
}
