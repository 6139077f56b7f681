//! Every dialect's decoder is total: any status, headers and body map to an
//! outcome or a typed error, without panicking, and no error message carries
//! the provider key or an unbounded slice of the upstream body.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flowgate_core::{
    ErrorClass, GatewayError, ProviderKind, RunOutcome, SecretString, WorkflowRef,
};
use flowgate_providers::{
    HttpClient, ProviderSettings,
    aitutor::AiTutor,
    fetchhive::FetchHive,
    knouds::Knouds,
    numbers::{MAX_RESET_AHEAD, MAX_RETRY_AFTER, MAX_RUN_DURATION},
    ratelimit,
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
        check(knouds.decode_run_status(status, headers.clone(), body.clone(), "e-1"));
        check(fetchhive.decode_run_status(status, headers, body, "req_1"));
    }
}

/// Numbers as header text, at and past every boundary.
fn hostile_number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("NaN"),
            Just("inf"),
            Just("-inf"),
            Just("1e300"),
            Just("-1e300"),
            Just("-1"),
            Just("0"),
            Just("1.5"),
            Just("18446744073709551615"),
            Just("18446744073709551616"),
            Just("9223372036854775807"),
            Just("99999999999999999999"),
            Just("99999999999"),
            Just(""),
            Just(" 30 "),
            Just("soon"),
            Just("Wed, 21 Oct 2015 07:28:10 GMT"),
            Just("Fri, 31 Dec 9999 23:59:59 GMT"),
        ]
        .prop_map(str::to_owned),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        ".{0,24}",
    ]
}

/// Numbers as raw JSON tokens in a body: numbers, numeric strings, and
/// tokens that are not numbers at all.
fn hostile_number_json() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("1e300"),
            Just("-1e300"),
            Just("-1"),
            Just("0"),
            Just("0.0021"),
            Just("18446744073709551615"),
            Just("18446744073709551616"),
            Just("9223372036854775807"),
            Just("-9223372036854775808"),
            Just("1.7976931348623157e308"),
            // Beyond f64: serde_json refuses to read these as numbers.
            Just("1e400"),
            Just("-1e400"),
            Just("null"),
            Just("true"),
            Just("[]"),
            Just("{}"),
        ]
        .prop_map(str::to_owned),
        hostile_number_text().prop_map(|text| serde_json::Value::String(text).to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |n| n.is_finite())
            .prop_map(|n| serde_json::json!(n).to_string()),
    ]
}

/// Every rate-limit header, each independently hostile or absent.
fn hostile_headers() -> impl Strategy<Value = HeaderMap> {
    let header = || proptest::option::of(hostile_number_text());
    (header(), header(), header(), header()).prop_map(|(limit, remaining, reset, retry)| {
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("x-ratelimit-limit", limit),
            ("x-ratelimit-remaining", remaining),
            ("x-ratelimit-reset", reset),
            ("retry-after", retry),
        ] {
            if let Some(value) = value.and_then(|value| HeaderValue::from_str(&value).ok()) {
                map.insert(name, value);
            }
        }
        map
    })
}

/// The clamps every decoded answer keeps, whatever the vendor sent.
fn check_bounds(result: &Result<RunOutcome, GatewayError>, now: SystemTime) {
    let latest_reset = now + MAX_RESET_AHEAD + Duration::from_secs(60);
    let (rate_limit, retry_after) = match result {
        Ok(outcome) => {
            let usage = &outcome.usage;
            assert!(usage.duration.is_none_or(|d| d <= MAX_RUN_DURATION));
            assert!(usage.credits.is_none_or(|c| c.is_finite() && c >= 0.0));
            (Some(&outcome.rate_limit), None)
        }
        Err(error) => (error.rate_limit.as_ref(), error.retry_after),
    };
    assert!(
        retry_after.is_none_or(|wait| wait <= MAX_RETRY_AFTER),
        "{retry_after:?}"
    );
    if let Some(info) = rate_limit {
        assert!(info.retry_after.is_none_or(|wait| wait <= MAX_RETRY_AFTER));
        assert!(info.reset_at.is_none_or(|at| at <= latest_reset));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Rate-limit headers: total, and the clamps hold.
    #[test]
    fn rate_limit_headers_are_bounded(headers in hostile_headers()) {
        let now = SystemTime::now();
        let info = ratelimit::parse(&headers, now);
        prop_assert!(info.retry_after.is_none_or(|wait| wait <= MAX_RETRY_AFTER));
        prop_assert!(info.reset_at.is_none_or(|at| at <= now + MAX_RESET_AHEAD));
    }

    /// Success, error and status-poll decoders of all three dialects with
    /// every numeric header and usage field hostile at once: total, the
    /// clamps hold, and usage never decides whether an answer is readable.
    #[test]
    fn hostile_numbers_never_break_a_decoder(
        error_status in prop_oneof![Just(429u16), Just(500), Just(502), Just(503), Just(402), 400u16..600],
        headers in hostile_headers(),
        charge in hostile_number_json(),
        duration in hostile_number_json(),
        tokens in hostile_number_json(),
        id in hostile_number_json(),
    ) {
        let (fetchhive, aitutor, knouds) = &*PROVIDERS;
        let now = SystemTime::now();
        let deployment = WorkflowRef::Deployment { name: "d".into(), variant: Some("v".into()) };
        let run = format!(
            r#"{{"workflow_run": {{"id": {id}, "run_status": "completed", "output_content": "{{\"a\":1}}",
                "duration": {duration}, "total_charge": {charge}, "total_tokens": {tokens}}}}}"#
        );
        let polled = fetchhive.decode_run_status(200, headers.clone(), Bytes::from(run), "req_1");
        check_bounds(&polled, now);
        let polled = polled.unwrap();
        prop_assert_eq!(polled.output, Some(serde_json::json!({"a": 1})));

        let sync = format!(r#"{{"success": true, "result": {{"a": 1}}, "cost": {charge}, "ms": {duration}, "executionId": {id}}}"#);
        let decoded = knouds.decode(200, headers.clone(), Bytes::from(sync), &WorkflowRef::Slug("s".into()));
        check_bounds(&decoded, now);
        prop_assert!(decoded.is_ok(), "usage fields decided readability");

        let fh_sync = format!(r#"{{"request_id": {id}, "run_id": {id}, "run_status": "completed", "output": "x"}}"#);
        let decoded = fetchhive.decode(200, headers.clone(), Bytes::from(fh_sync), &deployment);
        check_bounds(&decoded, now);
        prop_assert!(decoded.is_ok());

        let tutor = format!(r#"{{"result": "x", "run_id": {id}, "citations": {tokens}}}"#);
        let decoded = aitutor.decode(200, headers.clone(), Bytes::from(tutor), &WorkflowRef::WorkflowId("wf".into()));
        check_bounds(&decoded, now);
        prop_assert!(decoded.is_ok());

        let execution = format!(r#"{{"executionId": {id}, "status": "completed", "result": {{"a": 1}}}}"#);
        check_bounds(&knouds.decode_run_status(200, headers.clone(), Bytes::from(execution), "e-1"), now);

        let errors = [
            r#"{"error": "Rate limit exceeded", "code": "RATE_LIMIT_EXCEEDED"}"#,
            r#"{"error": "Daily limit", "error_code": "api_rate_limit_exceeded"}"#,
            r#"{"success": false, "error": "Too many requests", "code": "rate_limited"}"#,
            "",
        ];
        for body in errors {
            let body = Bytes::from_static(body.as_bytes());
            check_bounds(&fetchhive.decode(error_status, headers.clone(), body.clone(), &deployment), now);
            check_bounds(&aitutor.decode(error_status, headers.clone(), body.clone(), &WorkflowRef::WorkflowId("wf".into())), now);
            check_bounds(&knouds.decode(error_status, headers.clone(), body.clone(), &WorkflowRef::Slug("s".into())), now);
            check_bounds(&knouds.decode_run_status(error_status, headers.clone(), body.clone(), "e-1"), now);
            check_bounds(&fetchhive.decode_run_status(error_status, headers.clone(), body, "req_1"), now);
        }
    }
}
