//! "A fourth dialect is one file plus one registration line", proven.
//!
//! `Relay` below is a made-up vendor dialect written only against the
//! public dialect toolkit of `flowgate-providers` (the [`Dialect`] hooks,
//! [`Request`], [`UpstreamResponse`] and the shared error builders). It is
//! registered with one line (`Dialects::builtin().with(…)`) and invoked
//! through the real engine path, `Gateway::invoke` (pre-flight checks,
//! dialect validation, the guard, the shared HTTP client), against a tiny
//! upstream on 127.0.0.1.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use flowgate_core::{
    Addressing, AsyncMode, Deadline, ErrorClass, FieldViolation, Gateway, GatewayError, Invocation,
    ProviderKind, RunOutcome, RunStatus, SecretString, WorkflowRef, WorkflowTarget, decode_output,
    id_text, reason::Reason,
};
use flowgate_providers::{
    Dialect, Dialects, HttpClient, ProviderSettings, Registration, UpstreamResponse,
    build_provider,
    dialect::{Auth, HeaderName, Request},
    errors::{ErrorBody, credential_rejected, fallback_error, protocol_error, upstream_error},
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// The dialect: everything a new vendor needs, in one place.
// ---------------------------------------------------------------------------

/// Relay: `POST {base}/v2/flows/{slug}/execute`, `x-relay-token: <key>`,
/// `{"params": {…}}` → `{"ok": true, "id", "data"}`; errors are
/// `{"fault": {"kind", "text"}}`.
#[derive(Debug, Default)]
struct Relay;

const RELAY: ProviderKind = ProviderKind::Other {
    name: "relay",
    addressing: Addressing::Slug,
};

impl Dialect for Relay {
    const KIND: ProviderKind = RELAY;
    const DEFAULT_BASE_URL: &'static str = "https://relay.invalid";
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    const AUTH: Auth = Auth::Header(HeaderName::from_static("x-relay-token"));
    const ASYNC_MODE: AsyncMode = AsyncMode::Background;

    fn check_workflow_key(key: &str) -> Result<(), String> {
        if is_flow_name(key) {
            Ok(())
        } else {
            Err("a Relay workflow key is the flow name (lowercase letters)".into())
        }
    }

    fn validate(&self, _: &ProviderSettings, invocation: &Invocation) -> Vec<FieldViolation> {
        match &invocation.workflow {
            WorkflowRef::Slug(name) if !is_flow_name(name) => vec![FieldViolation::new(
                "target.slug",
                "a Relay flow name is lowercase letters",
            )],
            _ => Vec::new(),
        }
    }

    fn invoke_request<'a>(
        &self,
        _: &'a ProviderSettings,
        invocation: &'a Invocation,
    ) -> Result<Request<'a>, GatewayError> {
        let WorkflowRef::Slug(name) = &invocation.workflow else {
            return Err(GatewayError::internal("relay given a non-slug target"));
        };
        Request::post_json(
            vec!["v2", "flows", name, "execute"],
            &json!({ "params": invocation.inputs }),
        )
    }

    fn is_success(status: u16) -> bool {
        status == 200
    }

    fn decode_success(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        _: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        let Ok(body) = serde_json::from_slice::<Value>(&response.body) else {
            return Err(protocol_error(
                settings,
                response,
                "a body that is not JSON",
            ));
        };
        Ok(RunOutcome {
            upstream_run_id: body.get("id").and_then(id_text),
            status: Some(RunStatus::Completed),
            output: body.get("data").cloned().map(decode_output),
            rate_limit: response.rate_limit.clone(),
            ..RunOutcome::default()
        })
    }

    fn decode_error(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        let fault = serde_json::from_slice::<Value>(&response.body)
            .ok()
            .and_then(|body| body.get("fault").cloned());
        let kind = fault
            .as_ref()
            .and_then(|f| f.get("kind"))
            .and_then(Value::as_str);
        Err(match (response.status, kind) {
            (401, _) => credential_rejected(settings, response),
            (404, Some("NO_SUCH_FLOW")) => upstream_error(
                settings,
                response,
                ErrorClass::NotFound,
                "NO_SUCH_FLOW",
                "Relay knows no such flow",
            )
            .with_resource("relay.flow", workflow.label()),
            _ => fallback_error(settings, response, &ErrorBody::parse(&response.body)),
        })
    }
}

fn is_flow_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase())
}

// ---------------------------------------------------------------------------
// A tiny Relay upstream on 127.0.0.1.
// ---------------------------------------------------------------------------

const KEY: &str = "relay_key_9f8e7d6c5b4a";

#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<AtomicUsize>,
}

async fn execute(
    State(upstream): State<Upstream>,
    Path(flow): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    upstream.calls.fetch_add(1, Ordering::SeqCst);
    if headers.get("x-relay-token").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"fault": {"kind": "BAD_TOKEN", "text": "who are you"}})),
        );
    }
    if flow != "shout" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"fault": {"kind": "NO_SUCH_FLOW", "text": format!("no flow {flow}")}})),
        );
    }
    let text = body["params"]["text"].as_str().unwrap_or_default();
    (
        StatusCode::OK,
        Json(json!({"ok": true, "id": 42, "data": {"shouted": text.to_uppercase()}})),
    )
}

async fn start_upstream() -> (String, Upstream, tokio::task::JoinHandle<()>) {
    let upstream = Upstream::default();
    let app = Router::new()
        .route("/v2/flows/{flow}/execute", post(execute))
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, upstream, server)
}

fn target(flow: &str) -> WorkflowTarget {
    WorkflowTarget {
        provider: None,
        workflow: WorkflowRef::Slug(flow.into()),
    }
}

fn invocation(flow: &str, text: &str) -> Invocation {
    let mut invocation = Invocation::new(WorkflowRef::Slug(flow.into()));
    invocation.inputs.insert("text".into(), json!(text));
    invocation
}

#[tokio::test]
async fn a_fourth_dialect_is_one_file_plus_one_registration_line() {
    let (url, upstream, server) = start_upstream().await;
    let http = HttpClient::new().unwrap();

    // The registration line.
    let dialects = Dialects::builtin().with(Registration::of::<Relay>());

    let provider = |key: &str| {
        let settings = ProviderSettings {
            base_url: url.clone(),
            ..ProviderSettings::of::<Relay>("relay", SecretString::new(key))
        };
        dialects.build(settings, &http).unwrap()
    };
    // It sits next to a built-in dialect; targets are routed by shape.
    let fetchhive = build_provider(
        ProviderSettings::new("fh", ProviderKind::FetchHive, SecretString::new("fhk_x")),
        &http,
    )
    .unwrap();
    let gateway = Gateway::new(vec![fetchhive, provider(KEY)]);

    // The translated output, through the whole engine path.
    let invoked = gateway
        .invoke(
            &target("shout"),
            &invocation("shout", "hello"),
            Deadline::NONE,
        )
        .await
        .unwrap();
    assert_eq!(invoked.provider.name(), "relay");
    assert_eq!(invoked.provider.kind().as_str(), "relay");
    assert_eq!(invoked.outcome.status, Some(RunStatus::Completed));
    assert_eq!(invoked.outcome.output, Some(json!({"shouted": "HELLO"})));
    assert_eq!(invoked.outcome.upstream_run_id.as_deref(), Some("42"));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);

    // A typed error decoded by the dialect, with the shared context.
    let error = gateway
        .invoke(
            &target("whisper"),
            &invocation("whisper", "x"),
            Deadline::NONE,
        )
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::NotFound);
    assert_eq!(error.reason, "NO_SUCH_FLOW");
    assert_eq!(error.resource.as_ref().unwrap().resource_type, "relay.flow");
    let context = error.upstream.as_ref().unwrap();
    assert_eq!((context.kind, context.http_status), (RELAY, Some(404)));

    // The dialect's own validation runs before any call.
    let error = gateway
        .invoke(
            &target("Bad-Flow"),
            &invocation("Bad-Flow", "x"),
            Deadline::NONE,
        )
        .await
        .unwrap_err();
    assert!(error.has_reason(Reason::InvalidRequest));
    assert_eq!(error.violations[0].field, "target.slug");
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2);

    // A rejected key: the shared, typed, redacted credential error.
    let gateway = Gateway::new(vec![provider("relay_key_wrong_0000000")]);
    let error = gateway
        .invoke(&target("shout"), &invocation("shout", "x"), Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::UpstreamCredentialRejected);
    assert!(error.has_reason(Reason::UpstreamCredentialRejected));
    assert!(!error.message.contains("relay_key_wrong"));

    server.abort();
}

#[test]
fn the_registration_carries_the_dialects_rules() {
    let dialects = Dialects::builtin().with(Registration::of::<Relay>());
    let relay = dialects.get(RELAY).unwrap();
    assert_eq!(relay.default_base_url, "https://relay.invalid");
    assert!((relay.check_workflow_key)("shout").is_ok());
    assert!((relay.check_workflow_key)("Shout").is_err());
    // Without the line, the dialect is unknown.
    let settings = ProviderSettings::of::<Relay>("relay", SecretString::new(KEY));
    let http = HttpClient::new().unwrap();
    assert!(build_provider(settings, &http).is_err());
}
