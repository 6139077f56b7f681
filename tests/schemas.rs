//! Workflow schemas through a real gRPC client: Knouds discovery behind the
//! moka cache (single flight, TTL, invalidation, negative caching, fetch
//! failures), enforcement before any paid call, declared schemas for Fetch
//! Hive and AI Tutor, and GetWorkflowSchema.

mod common;

use std::time::Duration;

use common::{Harness, deployment, inputs, json, slug, start, start_with, target, workflow_id};
use flowgate::pb;
use flowgate_emulator::{Dialect, Fault};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

fn invoke_request(
    target: Option<pb::WorkflowTarget>,
    input: serde_json::Value,
) -> pb::InvokeRequest {
    pb::InvokeRequest {
        target,
        inputs: inputs(input),
        ..Default::default()
    }
}

/// How many requests the emulator received whose path ends with `suffix`.
fn sent(h: &Harness, suffix: &str) -> usize {
    h.emulator
        .requests()
        .iter()
        .filter(|request| request.path.ends_with(suffix))
        .count()
}

/// The violated fields of an INVALID_ARGUMENT status, sorted.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let Some(bad_request) = details.bad_request() else {
        panic!("no BadRequest detail in {status:?}");
    };
    let mut fields: Vec<String> = bad_request
        .field_violations
        .iter()
        .map(|violation| violation.field.clone())
        .collect();
    fields.sort();
    fields
}

/// Starts the harness with `extra` TOML appended to the gateway config.
async fn start_with_config(extra: &'static str) -> Harness {
    start_with(Default::default(), move |text| format!("{text}\n{extra}\n")).await
}

// ------------------------------------------------------------- enforcement

#[tokio::test]
async fn every_violation_kind_comes_back_at_once_and_nothing_runs() {
    let mut h = start().await;
    let status = h
        .client
        .invoke(invoke_request(
            target("kn", slug("summarize-text")),
            json!({"max_words": "ten", "colour": "red"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        vec!["inputs.colour", "inputs.max_words", "inputs.text"]
    );
    let details = status.get_error_details();
    let violations = &details.bad_request().unwrap().field_violations;
    let description = |field: &str| {
        violations
            .iter()
            .find(|v| v.field == field)
            .map(|v| v.description.clone())
            .unwrap()
    };
    assert!(description("inputs.colour").contains("unknown input"));
    assert!(description("inputs.max_words").contains("must be a number, got a string"));
    assert!(description("inputs.text").starts_with("required"));
    assert_eq!(details.error_info().unwrap().reason, "INVALID_REQUEST");
    assert_eq!(sent(&h, "/run"), 0, "no paid call");
    assert_eq!(sent(&h, "/schema"), 1);
}

#[tokio::test]
async fn schema_violations_join_the_other_pre_flight_violations() {
    let mut h = start().await;
    let mut request = invoke_request(
        target("kn", slug("summarize-text")),
        json!({"text": ["not", "a", "string"]}),
    );
    request.metadata = [(
        "plan".to_owned(),
        flowgate::convert::json_to_value(json!({"tier": "pro"})),
    )]
    .into_iter()
    .collect();
    let status = h.client.invoke(request).await.unwrap_err();
    assert_eq!(
        violated_fields(&status),
        vec!["inputs.text", "metadata.plan"]
    );
    assert_eq!(sent(&h, "/run"), 0);
}

#[tokio::test]
async fn valid_inputs_run_once_and_later_calls_hit_the_cache() {
    let mut h = start().await;
    for text in ["one", "two", "three"] {
        let response = h
            .client
            .invoke(invoke_request(
                target("kn", slug("summarize-text")),
                json!({"text": text, "max_words": 5}),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), pb::RunStatus::Completed);
    }
    assert_eq!((sent(&h, "/schema"), sent(&h, "/run")), (1, 3));
    let stats = h.schemas.stats();
    assert_eq!((stats.misses, stats.hits, stats.fetches), (1, 2, 1));
}

#[tokio::test]
async fn unknown_workflows_are_not_found_and_remembered() {
    let mut h = start().await;
    for _ in 0..3 {
        let status = h
            .client
            .invoke(invoke_request(
                target("kn", slug("does-not-exist")),
                json!({}),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let resource = status.get_error_details().resource_info().cloned().unwrap();
        assert_eq!(resource.resource_type, "knouds.workflow");
        assert_eq!(resource.resource_name, "does-not-exist");
    }
    assert_eq!((sent(&h, "/schema"), sent(&h, "/run")), (1, 0));
    assert_eq!(h.schemas.stats().unknown_workflows, 1);
}

// --------------------------------------------------------- cache behaviour

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_first_calls_make_one_schema_request() {
    let h = start().await;
    // A slow schema endpoint keeps the first fetch in flight while the
    // other calls arrive.
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_millis(500))
            .with_path("/schema")
            .with_times(1),
    );
    let calls = (0..1000).map(|i| {
        let mut client = h.client.clone();
        tokio::spawn(async move {
            client
                .invoke(invoke_request(
                    target("kn", slug("summarize-text")),
                    json!({"text": "x", "misspelt": i}),
                ))
                .await
        })
    });
    let results = futures::future::join_all(calls).await;
    for result in results {
        let status = result.unwrap().unwrap_err();
        assert_eq!(violated_fields(&status), vec!["inputs.misspelt"]);
    }
    assert_eq!(
        sent(&h, "/schema"),
        1,
        "exactly one upstream schema request"
    );
    assert_eq!(sent(&h, "/run"), 0);
    let stats = h.schemas.stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.hits + stats.misses, 1000);
    assert!(
        stats.misses > 1,
        "concurrent callers waited on the one fetch: {stats:?}"
    );
}

#[tokio::test]
async fn schemas_are_fetched_again_after_their_ttl() {
    let mut h = start_with_config("[schemas]\nttl = \"300ms\"").await;
    let call = invoke_request(target("kn", slug("summarize-text")), json!({"text": "x"}));
    h.client.invoke(call.clone()).await.unwrap();
    h.client.invoke(call.clone()).await.unwrap();
    assert_eq!(sent(&h, "/schema"), 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    h.client.invoke(call).await.unwrap();
    assert_eq!(sent(&h, "/schema"), 2);
}

#[tokio::test]
async fn upstream_invalid_inputs_invalidate_the_cached_schema() {
    let mut h = start().await;
    h.emulator.inject_fault(
        Fault::status(
            Dialect::Knouds,
            400,
            r#"{"error":"Invalid inputs for workflow 'summarize-text'","code":"INVALID_INPUTS","details":[{"field":"tone","message":"Field is required"}]}"#,
        )
        .with_path("/run")
        .with_times(1),
    );
    let call = invoke_request(target("kn", slug("summarize-text")), json!({"text": "x"}));
    let status = h.client.invoke(call.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&status), vec!["inputs.tone"]);
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "INVALID_INPUTS"
    );
    h.client.invoke(call).await.unwrap();
    assert_eq!(sent(&h, "/schema"), 2, "the schema was fetched afresh");
    assert_eq!(h.schemas.stats().invalidations, 1);
}

#[tokio::test]
async fn a_failed_schema_fetch_lets_the_call_through() {
    let mut h = start().await;
    h.emulator.inject_fault(
        Fault::status(Dialect::Knouds, 503, r#"{"error":"Service unavailable"}"#)
            .with_path("/schema")
            .with_times(1),
    );
    // The schema endpoint fails once: the call goes ahead unvalidated.
    let call = invoke_request(target("kn", slug("summarize-text")), json!({"text": "x"}));
    let response = h.client.invoke(call.clone()).await.unwrap().into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    // The failure is remembered for failure_ttl: no second slow fetch.
    h.client.invoke(call).await.unwrap();
    assert_eq!((sent(&h, "/schema"), sent(&h, "/run")), (1, 2));
    let stats = h.schemas.stats();
    assert_eq!(stats.fetch_failures, 1);
}

#[tokio::test]
async fn a_key_without_workflow_read_still_runs_its_workflow() {
    let mut h = start().await;
    // kn-scoped may run summarize-text but may not read schemas (403).
    let response = h
        .client
        .invoke(invoke_request(
            target("kn-scoped", slug("summarize-text")),
            json!({"text": "x"}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert_eq!(h.schemas.stats().fetch_failures, 1);
    // GetWorkflowSchema tells the caller why there is no schema.
    let status = h
        .client
        .get_workflow_schema(pb::GetWorkflowSchemaRequest {
            target: target("kn-scoped", slug("summarize-text")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.get_error_details().error_info().unwrap().metadata["required_capability"],
        "workflow:read"
    );
}

#[tokio::test]
async fn a_slow_schema_endpoint_is_cut_off_by_the_fetch_timeout() {
    let mut h = start_with_config("[schemas]\nfetch_timeout = \"200ms\"").await;
    h.emulator.inject_fault(
        Fault::delay(Dialect::Knouds, Duration::from_secs(5))
            .with_path("/schema")
            .with_times(1),
    );
    let started = std::time::Instant::now();
    h.client
        .invoke(invoke_request(
            target("kn", slug("summarize-text")),
            json!({"text": "x"}),
        ))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(h.schemas.stats().fetch_failures, 1);
}

// ------------------------------------------------------- declared schemas

const DECLARED: &str = r#"
[providers.fh.workflows."company-extractor"]
inputs = [
  { name = "companies", type = "array", required = true, description = "Companies to look up" },
]

[providers.fh.workflows."summarize/default"]
name = "Summarize"
inputs = [
  { name = "topic", type = "string", required = true },
  { name = "depth", type = "number", default = 2 },
]

[providers.tutor.workflows.wf_story]
description = "Tells a story"
inputs = [{ name = "story", type = "string", required = true }]

[providers.kn.workflows.summarize-text]
inputs = [{ name = "text", type = "string", required = true }]
"#;

#[tokio::test]
async fn declared_fetchhive_schemas_are_enforced_and_arrays_stay_arrays() {
    let mut h = start_with_config(DECLARED).await;
    let status = h
        .client
        .invoke(invoke_request(
            target("fh", deployment("company-extractor", "default")),
            json!({"companies": "Fetch Hive, Knouds"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), vec!["inputs.companies"]);
    let status = h
        .client
        .invoke(invoke_request(
            target("fh", deployment("summarize", "default")),
            json!({"topic": 5, "depht": 3}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        vec!["inputs.depht", "inputs.topic"]
    );
    assert!(h.emulator.requests().is_empty(), "nothing sent upstream");

    h.client
        .invoke(invoke_request(
            target("fh", deployment("company-extractor", "default")),
            json!({"companies": [{"name": "Fetch Hive"}]}),
        ))
        .await
        .unwrap();
    let body = h.emulator.requests()[0].json().unwrap();
    assert_eq!(body["inputs"]["companies"], json!([{"name": "Fetch Hive"}]));
    // A variant without a declaration of its own is not assumed anything.
    h.client
        .invoke(invoke_request(
            target("fh", deployment("summarize", "concise")),
            json!({"topic": "x", "anything": true}),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn declared_aitutor_schemas_are_enforced() {
    let mut h = start_with_config(DECLARED).await;
    let status = h
        .client
        .invoke(invoke_request(
            target("tutor", workflow_id("wf_story")),
            json!({"stroy": "a fox"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        vec!["inputs.story", "inputs.stroy"]
    );
    assert!(h.emulator.requests().is_empty());
    let response = h
        .client
        .invoke(invoke_request(
            target("tutor", workflow_id("wf_story")),
            json!({"story": "a fox"}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status(), pb::RunStatus::Completed);
    assert_eq!(h.schemas.stats().declared, 2);
}

#[tokio::test]
async fn declared_knouds_schemas_override_discovery() {
    let mut h = start_with_config(DECLARED).await;
    // The declaration knows only `text`: `style` is refused locally.
    let status = h
        .client
        .invoke(invoke_request(
            target("kn", slug("summarize-text")),
            json!({"text": "x", "style": "short"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), vec!["inputs.style"]);
    assert_eq!(
        sent(&h, "/schema"),
        0,
        "no discovery for a declared workflow"
    );
}

// ------------------------------------------------------- GetWorkflowSchema

#[tokio::test]
async fn get_workflow_schema_returns_the_discovered_schema() {
    let mut h = start().await;
    let request = pb::GetWorkflowSchemaRequest {
        target: target("kn", slug("summarize-text")),
    };
    let schema = h
        .client
        .get_workflow_schema(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(schema.name, "Summarize text");
    assert!(schema.description.contains("Summarizes"));
    let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["text", "style", "max_words"]);
    let text = &schema.fields[0];
    assert_eq!(text.r#type(), pb::ValueType::String);
    assert_eq!(text.upstream_type, "string");
    assert!(text.required);
    assert_eq!(text.description, "Text to summarize");
    assert!(text.default_value.is_none());
    let max_words = &schema.fields[2];
    assert_eq!(max_words.r#type(), pb::ValueType::Number);
    assert!(!max_words.required);
    assert_eq!(json(max_words.default_value.clone()), json!(50));
    assert_eq!(json(schema.fields[1].default_value.clone()), json!("short"));

    // Served from the cache the second time, and shared with Invoke.
    h.client.get_workflow_schema(request).await.unwrap();
    h.client
        .invoke(invoke_request(
            target("kn", slug("summarize-text")),
            json!({"text": "x"}),
        ))
        .await
        .unwrap();
    assert_eq!(sent(&h, "/schema"), 1);
}

#[tokio::test]
async fn get_workflow_schema_of_an_unknown_workflow_is_not_found() {
    let mut h = start().await;
    let status = h
        .client
        .get_workflow_schema(pb::GetWorkflowSchemaRequest {
            target: target("kn", slug("does-not-exist")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let resource = status.get_error_details().resource_info().cloned().unwrap();
    assert_eq!(resource.resource_type, "knouds.workflow");
    assert_eq!(resource.resource_name, "does-not-exist");
}

#[tokio::test]
async fn get_workflow_schema_without_a_schema_endpoint_needs_a_declaration() {
    let mut h = start_with_config(DECLARED).await;
    let status = h
        .client
        .get_workflow_schema(pb::GetWorkflowSchemaRequest {
            target: target("tutor", workflow_id("wf_research")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "SCHEMA_NOT_DECLARED");
    let violation = &details.precondition_failure().unwrap().violations[0];
    assert_eq!(violation.r#type, "SCHEMA");
    assert!(
        violation
            .description
            .contains("[providers.tutor.workflows.\"wf_research\"]")
    );
    assert!(h.emulator.requests().is_empty());

    let declared = h
        .client
        .get_workflow_schema(pb::GetWorkflowSchemaRequest {
            target: target("fh", deployment("summarize", "default")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(declared.name, "Summarize");
    assert_eq!(declared.fields.len(), 2);
    assert_eq!(declared.fields[1].r#type(), pb::ValueType::Number);
    assert_eq!(json(declared.fields[1].default_value.clone()), json!(2));
}

#[tokio::test]
async fn get_workflow_schema_rejects_bad_targets() {
    let mut h = start().await;
    let missing = h
        .client
        .get_workflow_schema(pb::GetWorkflowSchemaRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&missing), vec!["target"]);
    let bad_slug = h
        .client
        .get_workflow_schema(pb::GetWorkflowSchemaRequest {
            target: target("kn", slug("Not_A_Slug")),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad_slug), vec!["target.slug"]);
    assert!(h.emulator.requests().is_empty());
}
