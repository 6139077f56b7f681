//! Every scheme through the full `Verifier`: valid, tampered, wrong secret,
//! missing and malformed headers, expiry, replay, rotation.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowgate_core::{RunStatus, SecretString};
use flowgate_webhook::{
    FailureReason, ForwardedEvent, StandardSecret, Verifier, VerifierConfig, WebhookFailure,
    WebhookScheme, sign_fetchhive, sign_knouds, sign_standard, standard_headers,
};
use http::{HeaderMap, HeaderValue};
use serde_json::json;

const NOW_SECS: u64 = 1_714_564_800;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn secret(scheme: WebhookScheme, n: u8) -> SecretString {
    match scheme {
        WebhookScheme::Standard => StandardSecret::from_key(vec![n; 24])
            .unwrap()
            .to_secret_string(),
        _ => SecretString::new(format!("whk-secret-{n}-{}", scheme.as_str())),
    }
}

/// A completed-run body with a distinct event id per `id`.
fn event_body(scheme: WebhookScheme, id: &str) -> Vec<u8> {
    let value = match scheme {
        WebhookScheme::Knouds => json!({"event": "execution.completed", "executionId": id,
            "requestId": "rq_1", "workflowSlug": "summarize", "status": "completed",
            "result": {"summary": "ok"}}),
        WebhookScheme::FetchHive => {
            json!({"request_id": id, "run_status": "completed", "output": "{\"summary\":\"ok\"}"})
        }
        WebhookScheme::Standard => json!({"type": "run.completed",
            "timestamp": "2024-05-01T12:00:00Z",
            "data": {"run_id": "run_x", "provider": "knouds", "upstream_run_id": id,
                "status": "completed", "output": {"summary": "ok"}}}),
    };
    value.to_string().into_bytes()
}

/// The headers `scheme` sends for `body`, signed with `secret` at `at`.
fn signed(
    scheme: WebhookScheme,
    secret: &SecretString,
    body: &[u8],
    at: SystemTime,
    id: &str,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    match scheme {
        WebhookScheme::Knouds => {
            headers.insert(
                "X-Knouds-Signature",
                sign_knouds(secret, at, body).parse().unwrap(),
            );
        }
        WebhookScheme::FetchHive => {
            headers.insert(
                "X-Fetch-Hive-Signature",
                sign_fetchhive(secret, body).parse().unwrap(),
            );
        }
        WebhookScheme::Standard => {
            let key = StandardSecret::parse(secret.expose()).unwrap();
            headers = standard_headers(&key, &format!("msg_{id}"), at, body).unwrap();
        }
    }
    headers
}

struct Check {
    verifier: Verifier,
    failures: Vec<(WebhookFailure, HeaderMap)>,
}

impl Check {
    fn new() -> Self {
        Self {
            verifier: Verifier::new(VerifierConfig::default()),
            failures: Vec::new(),
        }
    }

    fn expect(
        &mut self,
        scheme: WebhookScheme,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[SecretString],
        reason: Option<FailureReason>,
        case: &str,
    ) -> Option<flowgate_webhook::VerifiedDelivery> {
        let result = self.verifier.verify(scheme, headers, body, secrets, now());
        match (result, reason) {
            (Ok(delivery), None) => Some(delivery),
            (Err(failure), Some(expected)) => {
                assert_eq!(failure.reason(), expected, "{scheme} {case}: {failure}");
                self.failures.push((failure, headers.clone()));
                None
            }
            (Ok(_), Some(expected)) => panic!("{scheme} {case}: accepted, expected {expected}"),
            (Err(failure), None) => panic!("{scheme} {case}: rejected: {failure}"),
        }
    }

    /// No failure message quotes a secret or any header value.
    fn assert_messages_leak_nothing(&self, secrets: &[SecretString]) {
        for (failure, headers) in &self.failures {
            let text = failure.to_string();
            for secret in secrets {
                let bare = secret.expose().trim_start_matches("whsec_");
                assert!(!text.contains(bare), "secret leaked: {text}");
            }
            for value in headers.values() {
                let Ok(value) = value.to_str() else { continue };
                for piece in value.split([',', ' ', '=']).filter(|p| p.len() >= 8) {
                    assert!(!text.contains(piece), "header value leaked: {text}");
                }
            }
        }
    }
}

#[test]
fn valid_deliveries_are_normalized() {
    for scheme in WebhookScheme::ALL {
        let mut check = Check::new();
        let key = secret(scheme, 1);
        let body = event_body(scheme, "run_1");
        let headers = signed(scheme, &key, &body, now(), "1");
        let delivery = check
            .expect(
                scheme,
                &headers,
                &body,
                std::slice::from_ref(&key),
                None,
                "valid",
            )
            .unwrap();
        assert_eq!(delivery.matched_secret, 0);
        let event = delivery.event;
        assert_eq!(event.scheme, scheme);
        assert_eq!(event.status, Some(RunStatus::Completed), "{scheme}");
        assert_eq!(event.output, Some(json!({"summary": "ok"})), "{scheme}");
        assert_eq!(event.upstream_run_id.as_deref(), Some("run_1"), "{scheme}");
        match scheme {
            WebhookScheme::Knouds => {
                assert_eq!(event.event_id, "run_1:execution.completed");
                assert_eq!(event.event_type, "execution.completed");
                assert_eq!(event.time, Some(now()));
            }
            WebhookScheme::FetchHive => {
                assert_eq!(event.event_id, "run_1:completed");
                assert_eq!(event.time, None);
            }
            WebhookScheme::Standard => {
                assert_eq!(event.event_id, "msg_1");
                assert_eq!(event.event_type, "run.completed");
                assert_eq!(event.run_id.as_deref(), Some("run_x"));
                assert_eq!(event.time, Some(now()));
            }
        }
    }
}

#[test]
fn tampered_wrong_secret_missing_and_malformed_are_rejected() {
    for scheme in WebhookScheme::ALL {
        let mut check = Check::new();
        let key = secret(scheme, 1);
        let other = secret(scheme, 2);
        let secrets = [key.clone()];
        let body = event_body(scheme, "run_2");
        let headers = signed(scheme, &key, &body, now(), "2");

        let mut tampered = body.clone();
        let at = tampered.iter().position(|b| *b == b'o').unwrap();
        tampered[at] = b'0';
        check.expect(
            scheme,
            &headers,
            &tampered,
            &secrets,
            Some(FailureReason::Mismatch),
            "tampered",
        );
        check.expect(
            scheme,
            &headers,
            &body,
            std::slice::from_ref(&other),
            Some(FailureReason::Mismatch),
            "wrong secret",
        );
        check.expect(
            scheme,
            &headers,
            &body,
            &[],
            Some(FailureReason::Mismatch),
            "no secret",
        );

        let mut missing = headers.clone();
        missing.remove(scheme.signature_header());
        check.expect(
            scheme,
            &missing,
            &body,
            &secrets,
            Some(FailureReason::MissingSignature),
            "missing",
        );
        check.expect(
            scheme,
            &HeaderMap::new(),
            &body,
            &secrets,
            Some(FailureReason::MissingSignature),
            "no headers",
        );
        let mut empty = headers.clone();
        empty.insert(scheme.signature_header(), HeaderValue::from_static(""));
        check.expect(
            scheme,
            &empty,
            &body,
            &secrets,
            Some(FailureReason::MissingSignature),
            "empty",
        );

        let malformed_values: &[&str] = match scheme {
            WebhookScheme::Knouds => &[
                "v1=abc",
                "t=soon,v1=00",
                "t=1714564800",
                "t=1714564800,v1=nothex",
                "garbage",
            ],
            WebhookScheme::FetchHive => &["garbage!", "sha256=1234", "abcd"],
            WebhookScheme::Standard => &["v1,!!!", "v2,abc", "v1,c2hvcnQ="],
        };
        for value in malformed_values {
            let mut bad = headers.clone();
            bad.insert(
                scheme.signature_header(),
                HeaderValue::from_str(value).unwrap(),
            );
            check.expect(
                scheme,
                &bad,
                &body,
                &secrets,
                Some(FailureReason::Malformed),
                value,
            );
        }
        let mut binary = headers.clone();
        binary.insert(
            scheme.signature_header(),
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        check.expect(
            scheme,
            &binary,
            &body,
            &secrets,
            Some(FailureReason::Malformed),
            "non-ascii",
        );

        // A correctly signed body that is not JSON cannot be normalized.
        let junk = b"not json at all";
        let junk_headers = signed(scheme, &key, junk, now(), "junk");
        check.expect(
            scheme,
            &junk_headers,
            junk,
            &secrets,
            Some(FailureReason::Malformed),
            "non-JSON body",
        );

        check.assert_messages_leak_nothing(&[key, other]);
    }
}

#[test]
fn standard_specific_malformations() {
    let scheme = WebhookScheme::Standard;
    let mut check = Check::new();
    let key = secret(scheme, 1);
    let secrets = [key.clone()];
    let body = event_body(scheme, "run_3");
    let headers = signed(scheme, &key, &body, now(), "3");
    for (header, value) in [
        ("webhook-timestamp", "soon"),
        ("webhook-timestamp", "-5"),
        ("webhook-timestamp", "1.5"),
    ] {
        let mut bad = headers.clone();
        bad.insert(header, HeaderValue::from_static(value));
        check.expect(
            scheme,
            &bad,
            &body,
            &secrets,
            Some(FailureReason::Malformed),
            value,
        );
    }
    for header in ["webhook-id", "webhook-timestamp"] {
        let mut bad = headers.clone();
        bad.remove(header);
        check.expect(
            scheme,
            &bad,
            &body,
            &secrets,
            Some(FailureReason::Malformed),
            header,
        );
    }
    // A configured secret that is not `whsec_<base64>`.
    let broken = SecretString::new("whsec_***not-base64***");
    check.expect(
        scheme,
        &headers,
        &body,
        std::slice::from_ref(&broken),
        Some(FailureReason::Malformed),
        "bad secret",
    );
    // …does not stop a valid one from matching.
    let delivery = check
        .expect(
            scheme,
            &headers,
            &body,
            &[broken.clone(), key.clone()],
            None,
            "bad then good secret",
        )
        .unwrap();
    assert_eq!(delivery.matched_secret, 1);
    // The body type is required.
    let untyped = br#"{"data":{}}"#;
    let untyped_headers = signed(scheme, &key, untyped, now(), "untyped");
    check.expect(
        scheme,
        &untyped_headers,
        untyped,
        &secrets,
        Some(FailureReason::Malformed),
        "no type",
    );
    check.assert_messages_leak_nothing(&[key, broken]);
}

#[test]
fn timestamps_outside_the_tolerance_expire() {
    let tolerance = VerifierConfig::DEFAULT_TOLERANCE;
    for scheme in WebhookScheme::ALL {
        let mut check = Check::new();
        let key = secret(scheme, 1);
        let secrets = [key.clone()];
        let cases = [
            (
                "just inside, past",
                now() - tolerance + Duration::from_secs(1),
                None,
            ),
            ("at the edge", now() - tolerance, None),
            ("just inside, future", now() + tolerance, None),
            (
                "past",
                now() - tolerance - Duration::from_secs(1),
                Some(FailureReason::Expired),
            ),
            (
                "future",
                now() + tolerance + Duration::from_secs(1),
                Some(FailureReason::Expired),
            ),
            (
                "long ago",
                UNIX_EPOCH + Duration::from_secs(1_000_000),
                Some(FailureReason::Expired),
            ),
        ];
        for (n, (case, at, reason)) in cases.into_iter().enumerate() {
            let id = format!("exp{n}");
            let body = event_body(scheme, &id);
            let headers = signed(scheme, &key, &body, at, &id);
            // Fetch Hive signs no timestamp, so nothing expires.
            let reason = if scheme == WebhookScheme::FetchHive {
                None
            } else {
                reason
            };
            check.expect(scheme, &headers, &body, &secrets, reason, case);
        }
        // A stale delivery signed with the wrong secret is a mismatch, not
        // "expired": expiry is only reported for authentic deliveries.
        if scheme != WebhookScheme::FetchHive {
            let body = event_body(scheme, "stale-forged");
            let headers = signed(
                scheme,
                &secret(scheme, 9),
                &body,
                now() - tolerance * 3,
                "sf",
            );
            check.expect(
                scheme,
                &headers,
                &body,
                &secrets,
                Some(FailureReason::Mismatch),
                "stale forged",
            );
        }
    }
}

#[test]
fn second_delivery_of_an_event_is_a_replay() {
    for scheme in WebhookScheme::ALL {
        let mut check = Check::new();
        let key = secret(scheme, 1);
        let secrets = [key.clone()];
        let body = event_body(scheme, "run_r");
        let headers = signed(scheme, &key, &body, now(), "r");
        // A forged delivery of the same event first must not claim its id.
        let forged = signed(scheme, &secret(scheme, 7), &body, now(), "r");
        check.expect(
            scheme,
            &forged,
            &body,
            &secrets,
            Some(FailureReason::Mismatch),
            "forged first",
        );
        check.expect(scheme, &headers, &body, &secrets, None, "first");
        check.expect(
            scheme,
            &headers,
            &body,
            &secrets,
            Some(FailureReason::Replayed),
            "byte-identical",
        );
        // The provider re-sending the same event, freshly signed, is a replay too.
        let resigned = signed(scheme, &key, &body, now() - Duration::from_secs(10), "r");
        check.expect(
            scheme,
            &resigned,
            &body,
            &secrets,
            Some(FailureReason::Replayed),
            "re-signed",
        );
        // Another event is not.
        let other = event_body(scheme, "run_r2");
        let other_headers = signed(scheme, &key, &other, now(), "r2");
        check.expect(
            scheme,
            &other_headers,
            &other,
            &secrets,
            None,
            "other event",
        );
        // A verifier's cache is its own.
        let fresh = Verifier::default();
        assert!(
            fresh
                .verify(scheme, &headers, &body, &secrets, now())
                .is_ok()
        );
        check.assert_messages_leak_nothing(&secrets);
    }
}

#[test]
fn knouds_events_of_one_execution_are_distinct() {
    let scheme = WebhookScheme::Knouds;
    let key = secret(scheme, 1);
    let verifier = Verifier::default();
    for event in ["execution.failed", "execution.cancelled"] {
        let body = json!({"event": event, "executionId": "ex-9", "status": "x"}).to_string();
        let headers = signed(scheme, &key, body.as_bytes(), now(), "");
        let delivery = verifier
            .verify(
                scheme,
                &headers,
                body.as_bytes(),
                std::slice::from_ref(&key),
                now(),
            )
            .unwrap();
        assert_eq!(delivery.event.event_id, format!("ex-9:{event}"));
    }
}

#[test]
fn any_active_secret_matches_during_rotation() {
    for scheme in WebhookScheme::ALL {
        let mut check = Check::new();
        let old = secret(scheme, 1);
        let new = secret(scheme, 2);
        let body = event_body(scheme, "run_rot");
        let headers = signed(scheme, &new, &body, now(), "rot");
        let delivery = check
            .expect(
                scheme,
                &headers,
                &body,
                &[old.clone(), new.clone()],
                None,
                "second secret",
            )
            .unwrap();
        assert_eq!(delivery.matched_secret, 1);
    }
}

#[test]
fn any_sent_signature_matches_during_rotation() {
    let verifier = Verifier::default();
    // Knouds: two `v1` entries, old secret's first.
    let (old, new) = (
        secret(WebhookScheme::Knouds, 1),
        secret(WebhookScheme::Knouds, 2),
    );
    let body = event_body(WebhookScheme::Knouds, "run_multi");
    let by_old = sign_knouds(&old, now(), &body);
    let by_new = sign_knouds(&new, now(), &body);
    let v1_new = by_new.split_once(",v1=").unwrap().1;
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-knouds-signature",
        format!("{by_old},v1={v1_new}").parse().unwrap(),
    );
    let delivery = verifier
        .verify(
            WebhookScheme::Knouds,
            &headers,
            &body,
            std::slice::from_ref(&new),
            now(),
        )
        .unwrap();
    assert_eq!(delivery.matched_secret, 0);

    // Standard: a space-separated list.
    let (old, new) = (StandardSecret::generate(), StandardSecret::generate());
    let body = event_body(WebhookScheme::Standard, "run_multi");
    let mut headers = standard_headers(&new, "msg_multi", now(), &body).unwrap();
    let list = format!(
        "{} {}",
        sign_standard(&old, "msg_multi", now(), &body),
        sign_standard(&new, "msg_multi", now(), &body)
    );
    headers.insert("webhook-signature", list.parse().unwrap());
    verifier
        .verify(
            WebhookScheme::Standard,
            &headers,
            &body,
            &[new.to_secret_string()],
            now(),
        )
        .unwrap();
}

#[test]
fn fetchhive_accepts_every_signature_encoding() {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let key = secret(WebhookScheme::FetchHive, 1);
    let verifier = Verifier::default();
    for (n, encode) in [
        (|hex: &str| hex.to_owned()) as fn(&str) -> String,
        |hex| hex.to_uppercase(),
        |hex| format!("sha256={hex}"),
        |hex| STANDARD.encode(hex::decode(hex).unwrap()),
        |hex| URL_SAFE.encode(hex::decode(hex).unwrap()),
        |hex| URL_SAFE_NO_PAD.encode(hex::decode(hex).unwrap()),
    ]
    .into_iter()
    .enumerate()
    {
        let body = event_body(WebhookScheme::FetchHive, &format!("enc{n}"));
        let mut headers = HeaderMap::new();
        let value = encode(&sign_fetchhive(&key, &body));
        headers.insert("x-fetch-hive-signature", value.parse().unwrap());
        verifier
            .verify(
                WebhookScheme::FetchHive,
                &headers,
                &body,
                std::slice::from_ref(&key),
                now(),
            )
            .unwrap_or_else(|e| panic!("encoding {n} ({value}): {e}"));
    }
}

#[test]
fn forwarded_events_read_back_through_the_standard_scheme() {
    let event = ForwardedEvent {
        run_id: "run_fw".into(),
        provider: flowgate_core::ProviderKind::FetchHive,
        upstream_run_id: Some("req_fw".into()),
        status: RunStatus::Failed,
        output: None,
        error: Some(flowgate_core::RunError {
            code: "model_failed".into(),
            message: "502 upstream".into(),
        }),
        time: now() - Duration::from_millis(1500),
    };
    let secret = StandardSecret::generate();
    let body = event.to_body();
    let headers = standard_headers(&secret, &event.event_id(), now(), &body).unwrap();
    let delivery = Verifier::default()
        .verify(
            WebhookScheme::Standard,
            &headers,
            &body,
            &[secret.to_secret_string()],
            now(),
        )
        .unwrap();
    let got = delivery.event;
    assert_eq!(got.event_id, event.event_id());
    assert_eq!(got.event_type, "run.failed");
    assert_eq!(got.run_id.as_deref(), Some("run_fw"));
    assert_eq!(got.upstream_run_id.as_deref(), Some("req_fw"));
    assert_eq!(got.status, Some(RunStatus::Failed));
    assert_eq!(got.error, event.error);
    assert_eq!(got.time, Some(event.time));
}
