//! The `flowgate` binary's configuration commands.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::process::{Command, Output};

/// Writes `text` to a fresh file and runs `flowgate check-config` on it
/// with `env` added to the environment.
fn check_config(name: &str, text: &str, env: &[(&str, &str)]) -> Output {
    let path = std::env::temp_dir().join(format!("flowgate-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .arg("check-config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_config_accepts_the_example_when_keys_are_readable() {
    let key_file = std::env::temp_dir().join(format!("flowgate-knouds-key-{}", std::process::id()));
    std::fs::write(&key_file, "knouds_live_example\n").unwrap();
    let example = std::fs::read_to_string("flowgate.example.toml")
        .unwrap()
        .replace(
            "/var/run/secrets/flowgate/knouds-api-key",
            key_file.to_str().unwrap(),
        );
    let output = check_config(
        "example",
        &example,
        &[
            ("FETCHHIVE_API_KEY", "fhk_example"),
            ("AITUTOR_API_KEY", "sk_example"),
            ("KNOUDS_WEBHOOK_SECRET", "knouds_whsec_example"),
            ("FLOWGATE_RUN_ID_SECRET", "run-id-secret-of-32-bytes-000000"),
            (
                "FLOWGATE_WEBHOOK_SIGNING_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr(&output));
    assert!(stdout.contains("OK (3 providers"), "{stdout}");
    assert!(!stdout.contains("fhk_example"));
}

#[test]
fn check_config_names_the_bad_field_and_fails() {
    let output = check_config(
        "bad-duration",
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"FLOWGATE_TEST_UNSET_VAR\"\ntimeout = \"soon\"\n",
        &[],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("providers.kn.timeout"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_config_fails_when_a_key_cannot_be_read() {
    let output = check_config(
        "unset-key",
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"FLOWGATE_TEST_UNSET_VAR\"\n",
        &[],
    );
    assert!(!output.status.success());
    let stderr = stderr(&output);
    assert!(
        stderr.contains("providers.kn.api_key_env") && stderr.contains("FLOWGATE_TEST_UNSET_VAR"),
        "{stderr}"
    );
}

#[test]
fn env_overrides_apply_to_check_config() {
    let output = check_config(
        "env",
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n",
        &[
            ("KN", "knouds_live_x"),
            ("FLOWGATE__PROVIDERS__KN__TIMEOUT", "forever"),
        ],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("providers.kn.timeout"));
}

#[test]
fn check_config_reports_every_value_outside_its_range_and_fails() {
    let output = check_config(
        "ranges",
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n\
         [providers.kn.circuit_breaker]\nopen_for = \"9000000h\"\n\
         [runs]\nttl = \"9000000h\"\n\
         [server]\nmax_queued_requests = 1000000000\ndefault_deadline = \"0s\"\n\
         [webhooks]\nmax_body_bytes = 99999999999\n",
        &[("KN", "knouds_live_x")],
    );
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    for path in [
        "providers.kn.circuit_breaker.open_for",
        "runs.ttl",
        "server.max_queued_requests",
        "server.default_deadline",
        "webhooks.max_body_bytes",
    ] {
        assert!(
            stderr.contains(&format!("{path}: must be between")),
            "{path}: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_config_gives_a_string_field_a_numeric_env_value() {
    let output = check_config(
        "env-string",
        "[providers.fh]\nkind = \"fetchhive\"\napi_key_env = \"FH\"\n",
        &[
            ("FH", "fhk_x"),
            ("FLOWGATE__PROVIDERS__FH__DEFAULT_VARIANT", "2024"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn check_config_reports_errors_of_several_sections_in_one_run() {
    let output = check_config(
        "several-sections",
        "[server]\nlisten = \"nowhere\"\n\
         [log]\nformat = \"yaml\"\n\
         [providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\ntimeout = \"soon\"\n\
         [providers.fh]\nkind = \"fetchhive\"\napi_key_env = \"FH\"\nretry.max_attempts = 0\n\
         [webhooks]\ntolerance = \"1 fortnight\"\n\
         [runs]\ncapcity = 5\n\
         [schemas]\nttl = -1\n",
        &[("KN", "knouds_live_x"), ("FH", "fhk_x")],
    );
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    for path in [
        "server.listen:",
        "log.format:",
        "providers.kn.timeout:",
        "providers.fh.retry.max_attempts: must be between",
        "webhooks.tolerance:",
        "runs.capcity:",
        "schemas.ttl:",
    ] {
        assert!(stderr.contains(path), "{path}: {stderr}");
    }
}

#[test]
fn check_config_reports_every_unreadable_secret_in_one_run() {
    let output = check_config(
        "secrets",
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"FLOWGATE_TEST_UNSET_KN\"\n\
         [providers.fh]\nkind = \"fetchhive\"\napi_key_file = \"/nonexistent/flowgate-fh-key\"\n\
         [runs]\nid_secret_env = \"FLOWGATE_TEST_UNSET_RUN_IDS\"\n\
         [webhooks]\nsigning_secret_env = \"FLOWGATE_TEST_SIGNING\"\n",
        &[("FLOWGATE_TEST_SIGNING", "not-a-whsec")],
    );
    let stderr = stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    for path in [
        "providers.fh.api_key_file:",
        "providers.kn.api_key_env:",
        "runs.id_secret_env:",
        "webhooks.signing_secret_env:",
    ] {
        assert!(stderr.contains(path), "{path}: {stderr}");
    }
    assert!(!stderr.contains("not-a-whsec"), "{stderr}");
}
