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
