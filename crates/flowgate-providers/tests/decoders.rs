//! Every dialect's decoder is total: any status, headers and body map to an
//! outcome or a typed error, without panicking, and no error message carries
//! the provider key or an unbounded slice of the upstream body.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use bytes::Bytes;
use flowgate_core::{ErrorClass, ProviderKind, SecretString, WorkflowRef};
use flowgate_providers::{
    HttpClient, ProviderSettings, aitutor::AiTutor, fetchhive::FetchHive, knouds::Knouds,
};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

const KEY: &str = "secret_key_7f3e9a";

fn settings(kind: ProviderKind) -> ProviderSettings {
    ProviderSettings::new("p", kind, SecretString::new(KEY))
}

/// Bodies worth trying: arbitrary bytes, JSON-looking text, and documented
/// shapes with random values.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        Just("INVALID_INPUTS".to_owned()),
        Just("CAPABILITY_DENIED".to_owned()),
        Just("EXECUTION_FAILED".to_owned()),
        Just("missing_input".to_owned()),
        Just("workflow_run_failed".to_owned()),
        Just("api_rate_limit_exceeded".to_owned()),
        "[a-zA-Z_]{0,20}",
    ];
    let message = prop_oneof![Just(format!("echo {KEY}")), ".{0,400}"];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        ".{0,200}".prop_map(String::into_bytes),
        (code, message, any::<bool>()).prop_map(|(code, message, success)| {
            serde_json::json!({"success": success, "error": message, "code": code, "error_code": code,
                "details": [{"field": "x", "message": message}], "required": "workflow:x:run"})
            .to_string()
            .into_bytes()
        }),
        (any::<bool>(), ".{0,40}", prop_oneof![Just("completed"), Just("failed"), Just("queued"), Just("weird")])
            .prop_map(|(flag, text, status)| {
                serde_json::json!({"success": flag, "_async": flag, "executionId": text, "result": text,
                    "run_status": status, "status": status, "output": text, "cost": -1.5, "ms": f64::MAX,
                    "citations": [text, 1, null]})
                .to_string()
                .into_bytes()
            }),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    (".{0,12}", ".{0,12}", ".{0,30}").prop_map(|(limit, reset, retry)| {
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("x-ratelimit-limit", limit),
            ("x-ratelimit-reset", reset),
            ("retry-after", retry),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                map.insert(name, value);
            }
        }
        map
    })
}

fn check(result: Result<flowgate_core::RunOutcome, flowgate_core::GatewayError>) {
    if let Err(error) = result {
        assert!(
            !error.message.contains(KEY),
            "key leaked: {}",
            error.message
        );
        assert!(error.message.chars().count() < 500, "unbounded message");
        for violation in &error.violations {
            assert!(!violation.description.contains(KEY));
        }
        if error.class == ErrorClass::RateLimited {
            assert!(error.quota.is_some());
        }
    }
}

/// One set of providers for every case (building clients is the slow part).
static PROVIDERS: std::sync::LazyLock<(FetchHive, AiTutor, Knouds)> =
    std::sync::LazyLock::new(|| {
        let http = HttpClient::new().unwrap();
        (
            FetchHive::new(settings(ProviderKind::FetchHive), http.clone()),
            AiTutor::new(settings(ProviderKind::AiTutor), http.clone()),
            Knouds::new(settings(ProviderKind::Knouds), http),
        )
    });

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn decoders_are_total_and_safe(status in 100u16..600, headers in headers(), body in body()) {
        let (fetchhive, aitutor, knouds) = &*PROVIDERS;
        let body = Bytes::from(body);
        check(fetchhive.decode(status, headers.clone(), body.clone(), &WorkflowRef::Deployment { name: "d".into(), variant: None }));
        check(aitutor.decode(status, headers.clone(), body.clone(), &WorkflowRef::WorkflowId("wf".into())));
        check(knouds.decode(status, headers.clone(), body.clone(), &WorkflowRef::Slug("s".into())));
        check(knouds.decode_execution(status, headers.clone(), body.clone(), "e-1"));
        check(fetchhive.decode_workflow_run(status, headers, body, "req_1"));
    }
}
