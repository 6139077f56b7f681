//! Our Standard Webhooks implementation against the reference ones: the
//! crates.io `standardwebhooks` crate and the official Python library
//! (PyPI `standardwebhooks`, through `tests/standard_crosscheck.py`).
//!
//! Python interpreter: `$FLOWGATE_PYTHON` (default `python3`). When the
//! library is not importable the Python test is skipped loudly, unless
//! `FLOWGATE_REQUIRE_PYTHON=1`, in which case it fails.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] fns: a failure there fails the test"
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowgate_core::SecretString;
use flowgate_webhook::{StandardSecret, Verifier, WebhookScheme, sign_standard, standard_headers};
use http::HeaderMap;
use serde_json::json;

struct Case {
    secret: SecretString,
    id: String,
    body: String,
}

/// Secrets in every accepted form, ids and bodies with non-ASCII text.
fn cases() -> Vec<Case> {
    let secrets = [
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_owned(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        "whsec_AAE".to_owned(), // unpadded
        StandardSecret::generate()
            .to_secret_string()
            .expose()
            .to_owned(),
        StandardSecret::from_key(vec![0xff; 64])
            .unwrap()
            .to_secret_string()
            .expose()
            .to_owned(),
    ];
    let bodies = [
        r#"{"email":"test@example.com","username":"test_user"}"#.to_owned(),
        json!({"type": "run.completed", "timestamp": "2024-05-01T12:00:00Z",
            "data": {"run_id": "run_1", "provider": "knouds", "status": "completed",
                "output": {"text": "héllo ✓ 日本"}}})
        .to_string(),
        String::new(),
        "not json, still signed".to_owned(),
    ];
    let mut cases = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        for (j, body) in bodies.iter().enumerate() {
            cases.push(Case {
                secret: SecretString::new(secret.clone()),
                id: format!("msg_{i}_{j}_2YzJq8"),
                body: body.clone(),
            });
        }
    }
    cases
}

fn headers(id: &str, ts: i64, signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", id.parse().unwrap());
    headers.insert("webhook-timestamp", ts.into());
    headers.insert("webhook-signature", signature.parse().unwrap());
    headers
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn crates_io_standardwebhooks_agrees_both_ways() {
    let now = SystemTime::now();
    let ts = unix_now();
    for case in cases() {
        let ours = StandardSecret::parse(case.secret.expose()).unwrap();
        // The crate, unlike the Python library and ours, rejects unpadded
        // secrets; those are covered by the Python cross-check.
        let Ok(theirs) = standardwebhooks::Webhook::new(case.secret.expose()) else {
            assert!(!case.secret.expose().ends_with('='));
            continue;
        };
        let body = case.body.as_bytes();

        // Same signature for the same input.
        let their_signature = theirs.sign(&case.id, ts, body).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(ts as u64);
        assert_eq!(sign_standard(&ours, &case.id, at, body), their_signature);

        // Ours → theirs.
        let signed = standard_headers(&ours, &case.id, at, body).unwrap();
        theirs.verify(body, &signed).unwrap();
        assert!(theirs.verify(b"tampered", &signed).is_err());

        // Theirs → ours.
        let their_headers = headers(&case.id, ts, &their_signature);
        if serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.get("type").is_some())
        {
            Verifier::default()
                .verify(
                    WebhookScheme::Standard,
                    &their_headers,
                    body,
                    std::slice::from_ref(&case.secret),
                    now,
                )
                .unwrap();
        }
        flowgate_webhook::verify_signature(
            WebhookScheme::Standard,
            &their_headers,
            body,
            std::slice::from_ref(&case.secret),
            now,
            Duration::from_secs(300),
        )
        .unwrap();
    }
}

const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);
/// The script's exit code when `standardwebhooks` cannot be imported.
const EXIT_LIBRARY_MISSING: i32 = 77;

fn python() -> String {
    std::env::var("FLOWGATE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn python_required() -> bool {
    std::env::var("FLOWGATE_REQUIRE_PYTHON").is_ok_and(|v| v == "1")
}

fn skip_or_fail(reason: &str) {
    assert!(!python_required(), "FLOWGATE_REQUIRE_PYTHON=1 but {reason}");
    let banner = "!".repeat(76);
    let notice = format!(
        "\n{banner}\n!! SKIPPED standard_crosscheck (Python): {reason}\n\
         !! Install it (pip install -r scripts/requirements-test.txt) and set\n\
         !! FLOWGATE_PYTHON, or run scripts/test.sh, which does both.\n{banner}\n"
    );
    // Written to the raw stderr handle so the test harness does not capture it.
    let _ = std::io::stderr().write_all(notice.as_bytes());
}

/// Runs `command` with a deadline; returns (exit code, stdout+stderr).
fn run_bounded(mut command: Command, log: &PathBuf) -> (Option<i32>, String) {
    let file = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the python interpreter: {e}"));
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > PYTHON_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(log).unwrap_or_default();
            panic!("standard_crosscheck.py timed out; output:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(log).unwrap_or_default())
}

#[test]
fn official_python_standardwebhooks_agrees_both_ways() {
    if Command::new(python())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return skip_or_fail(&format!("python interpreter `{}` not found", python()));
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let tag = format!("standard_crosscheck-{}", std::process::id());
    let (input, output, log) = (
        dir.join(format!("{tag}-in.json")),
        dir.join(format!("{tag}-out.json")),
        dir.join(format!("{tag}.log")),
    );
    let ts = unix_now();
    let at = UNIX_EPOCH + Duration::from_secs(ts as u64);
    let cases = cases();
    let documents: Vec<_> = cases
        .iter()
        .map(|case| {
            let secret = StandardSecret::parse(case.secret.expose()).unwrap();
            json!({
                "secret": case.secret.expose(),
                "id": case.id,
                "timestamp": ts,
                "body": case.body,
                "signature": sign_standard(&secret, &case.id, at, case.body.as_bytes()),
            })
        })
        .collect();
    std::fs::write(&input, json!({ "cases": documents }).to_string()).unwrap();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/standard_crosscheck.py");
    let mut command = Command::new(python());
    command.arg(&script).arg(&input).arg(&output);
    let (code, text) = run_bounded(command, &log);
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&log);
    if code == Some(EXIT_LIBRARY_MISSING) {
        return skip_or_fail(&format!(
            "standardwebhooks is not importable with `{}`",
            python()
        ));
    }
    assert_eq!(code, Some(0), "standard_crosscheck.py failed:\n{text}");
    assert!(text.contains("all checks passed"), "{text}");

    let signatures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    let _ = std::fs::remove_file(&output);
    let signatures = signatures["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), cases.len());
    for (case, signature) in cases.iter().zip(signatures) {
        let id = format!("{}-py", case.id);
        let headers = headers(&id, ts, signature.as_str().unwrap());
        flowgate_webhook::verify_signature(
            WebhookScheme::Standard,
            &headers,
            case.body.as_bytes(),
            std::slice::from_ref(&case.secret),
            SystemTime::now(),
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("python's signature for {id} rejected: {e}"));
    }
}
