//! Property tests: arbitrary headers and bodies never panic the parsers, and
//! whatever the signers produce, the verifiers accept.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowgate_core::SecretString;
use flowgate_webhook::{
    FailureReason, SignatureMatch, StandardSecret, Verifier, WebhookEvent, WebhookScheme,
    sign_fetchhive, sign_knouds, standard_headers, verify_signature,
};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

const TOLERANCE: Duration = Duration::from_secs(300);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_564_800)
}

fn scheme() -> impl Strategy<Value = WebhookScheme> {
    prop::sample::select(WebhookScheme::ALL.to_vec())
}

/// Header text: mostly signature-shaped fragments, sometimes anything.
fn header_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        "[tv01=, a-fA-F0-9+/_sha]{0,200}".prop_map(String::into_bytes),
        "(t=[0-9]{0,20},)?(v1=[0-9a-f]{0,70},?){0,4}".prop_map(String::into_bytes),
        "(v1,[A-Za-z0-9+/=]{0,50} ?){0,4}".prop_map(String::into_bytes),
    ]
}

fn headers_with(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(*name, value);
        }
    }
    headers
}

proptest! {
    #[test]
    fn arbitrary_headers_and_bodies_never_panic(
        scheme in scheme(),
        signature in header_text(),
        id in header_text(),
        timestamp in prop_oneof![any::<Vec<u8>>(), "[0-9]{0,25}".prop_map(String::into_bytes)],
        body in prop_oneof![any::<Vec<u8>>(), "\\{\"(event|type|data|request_id)\":.{0,40}\\}".prop_map(String::into_bytes)],
        secrets in prop::collection::vec(".{0,40}", 0..3),
    ) {
        let headers = headers_with(&[
            (scheme.signature_header(), &signature),
            ("webhook-id", &id),
            ("webhook-timestamp", &timestamp),
        ]);
        let secrets: Vec<SecretString> = secrets.into_iter().map(SecretString::new).collect();
        let verifier = Verifier::default();
        // Random input essentially never carries a valid HMAC.
        if let Err(failure) = verifier.verify(scheme, &headers, &body, &secrets, now()) {
            prop_assert_ne!(failure.reason(), FailureReason::Replayed);
            prop_assert!(!failure.message().is_empty());
        }
        let _ = verify_signature(scheme, &headers, &body, &secrets, now(), TOLERANCE);
    }

    #[test]
    fn arbitrary_bodies_never_panic_the_normalizer(scheme in scheme(), body in any::<Vec<u8>>()) {
        let signature = SignatureMatch { matched_secret: 0, signed_at: Some(now()), message_id: Some("m".into()) };
        let _ = WebhookEvent::decode(scheme, &body, &signature);
    }

    #[test]
    fn arbitrary_json_never_panics_the_normalizer(scheme in scheme(), value in json_value()) {
        let signature = SignatureMatch { matched_secret: 0, signed_at: None, message_id: None };
        let _ = WebhookEvent::decode(scheme, value.to_string().as_bytes(), &signature);
    }

    #[test]
    fn arbitrary_secret_text_never_panics(text in ".{0,80}") {
        if let Ok(secret) = StandardSecret::parse(&text) {
            prop_assert!(StandardSecret::parse(secret.to_secret_string().expose()).is_ok());
        }
    }

    #[test]
    fn what_we_sign_we_verify(
        body in any::<Vec<u8>>(),
        key in "[ -~]{1,40}",
        key_bytes in prop::collection::vec(any::<u8>(), 1..64),
        id in "[A-Za-z0-9_.-]{1,40}",
        skew in -300i64..=300,
    ) {
        let at = if skew >= 0 { now() + Duration::from_secs(skew.unsigned_abs()) } else { now() - Duration::from_secs(skew.unsigned_abs()) };
        let secret = SecretString::new(key);

        let mut headers = HeaderMap::new();
        headers.insert("x-knouds-signature", HeaderValue::from_str(&sign_knouds(&secret, at, &body)).unwrap());
        let matched = verify_signature(WebhookScheme::Knouds, &headers, &body, std::slice::from_ref(&secret), now(), TOLERANCE).unwrap();
        prop_assert_eq!(matched.signed_at, Some(UNIX_EPOCH + Duration::from_secs(at.duration_since(UNIX_EPOCH).unwrap().as_secs())));

        let mut headers = HeaderMap::new();
        headers.insert("x-fetch-hive-signature", HeaderValue::from_str(&sign_fetchhive(&secret, &body)).unwrap());
        verify_signature(WebhookScheme::FetchHive, &headers, &body, std::slice::from_ref(&secret), now(), TOLERANCE).unwrap();

        let standard = StandardSecret::from_key(key_bytes).unwrap();
        let headers = standard_headers(&standard, &id, at, &body).unwrap();
        let matched = verify_signature(WebhookScheme::Standard, &headers, &body, &[standard.to_secret_string()], now(), TOLERANCE).unwrap();
        prop_assert_eq!(matched.message_id.as_deref(), Some(id.as_str()));

        // One flipped body bit breaks every scheme.
        if !body.is_empty() {
            let mut flipped = body.clone();
            flipped[0] ^= 1;
            let err = verify_signature(WebhookScheme::Standard, &headers, &flipped, &[standard.to_secret_string()], now(), TOLERANCE).unwrap_err();
            prop_assert_eq!(err.reason(), FailureReason::Mismatch);
        }
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "completed",
            "failed",
            "execution.completed",
            "run.failed",
            "webhook.test",
            "{\"a\":1}",
            "[1",
            "2024-05-01T12:00:00Z",
            "",
        ])
        .prop_map(|s| json!(s)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let key = prop::sample::select(vec![
            "event",
            "executionId",
            "status",
            "result",
            "error",
            "code",
            "message",
            "type",
            "timestamp",
            "data",
            "run_id",
            "upstream_run_id",
            "output",
            "request_id",
            "run_status",
            "error_code",
            "other",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.prop_map(str::to_owned), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}
