//! The `flowgate` binary's configuration commands.

use std::process::Command;

fn flowgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowgate"))
}

#[test]
fn check_config_accepts_the_example_when_keys_are_readable() {
    let key_file = std::env::temp_dir().join(format!("flowgate-knouds-key-{}", std::process::id()));
    std::fs::write(&key_file, "knouds_live_example\n").unwrap();
    let example = std::fs::read_to_string("flowgate.example.toml").unwrap();
    let config = std::env::temp_dir().join(format!("flowgate-example-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        example.replace(
            "/var/run/secrets/flowgate/knouds-api-key",
            key_file.to_str().unwrap(),
        ),
    )
    .unwrap();
    let output = flowgate()
        .arg("check-config")
        .arg(&config)
        .env("FETCHHIVE_API_KEY", "fhk_example")
        .env("AITUTOR_API_KEY", "sk_example")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("OK (3 providers"), "{stdout}");
    assert!(!stdout.contains("fhk_example"));
}

#[test]
fn check_config_names_every_bad_field_and_fails() {
    let config = std::env::temp_dir().join(format!("flowgate-bad-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"FLOWGATE_TEST_UNSET_VAR\"\ntimeout = \"soon\"\n",
    )
    .unwrap();
    let output = flowgate()
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("providers.kn.timeout"), "{stderr}");

    std::fs::write(
        &config,
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"FLOWGATE_TEST_UNSET_VAR\"\n",
    )
    .unwrap();
    let output = flowgate()
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("providers.kn.api_key_env") && stderr.contains("FLOWGATE_TEST_UNSET_VAR"),
        "{stderr}"
    );
}

#[test]
fn env_overrides_apply_to_check_config() {
    let config = std::env::temp_dir().join(format!("flowgate-env-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\n",
    )
    .unwrap();
    let output = flowgate()
        .arg("check-config")
        .arg(&config)
        .env("KN", "knouds_live_x")
        .env("FLOWGATE__PROVIDERS__KN__TIMEOUT", "forever")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("providers.kn.timeout"));
}
