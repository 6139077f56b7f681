//! Unit tests of the configuration loader.

use super::*;

const EXAMPLE: &str = r#"
    [server]
    listen = "0.0.0.0:50051"
    default_deadline = "60s"

    [providers.fh]
    kind = "fetchhive"
    api_key_env = "FH_KEY"
    default_variant = "default"

    [providers.kn]
    kind = "knouds"
    base_url = "http://127.0.0.1:8700/knouds/"
    api_key_env = "KN_KEY"
    timeout = "90s"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn example_parses_with_defaults() {
    let config = Config::parse(EXAMPLE, env(&[])).unwrap();
    assert_eq!(config.server.listen.port(), 50051);
    assert_eq!(config.server.default_deadline, Duration::from_secs(60));
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(
        config.providers["kn"].timeout,
        Some(Duration::from_secs(90))
    );
    let keys = |var: &str| Some(format!("key-for-{var}"));
    let settings = config.provider_settings(keys).unwrap();
    assert_eq!(settings[0].base_url, "https://api.fetchhive.com/v1");
    assert_eq!(settings[1].base_url, "http://127.0.0.1:8700/knouds");
    assert_eq!(settings[1].api_key.current().expose(), "key-for-KN_KEY");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let text = EXAMPLE.replace("timeout = \"90s\"", "timeout = \"90s\"\ntimout = 3");
    let err = Config::parse(&text, env(&[])).unwrap_err();
    assert_eq!(err.issues[0].path, "providers.kn.timout");
    assert!(
        err.issues[0].message.contains("unknown field `timout`"),
        "{err}"
    );
}

#[test]
fn bad_values_name_the_field() {
    let text = EXAMPLE.replace("\"90s\"", "\"soon\"");
    let err = Config::parse(&text, env(&[])).unwrap_err();
    assert_eq!(err.issues[0].path, "providers.kn.timeout");
    let text = EXAMPLE.replace("kind = \"knouds\"", "kind = \"openai\"");
    let err = Config::parse(&text, env(&[])).unwrap_err();
    assert_eq!(err.issues[0].path, "providers.kn.kind");
}

#[test]
fn env_overrides_win() {
    let config = Config::parse(
        EXAMPLE,
        env(&[
            ("FLOWGATE__SERVER__LISTEN", "127.0.0.1:6000"),
            ("FLOWGATE__PROVIDERS__KN__TIMEOUT", "5"),
            ("FLOWGATE__SERVER__MAX_CONCURRENT_REQUESTS", "8"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(config.server.listen.port(), 6000);
    assert_eq!(config.server.max_concurrent_requests, 8);
    assert_eq!(config.providers["kn"].timeout, Some(Duration::from_secs(5)));
}

#[test]
fn env_override_of_an_unknown_key_is_rejected() {
    let err = Config::parse(EXAMPLE, env(&[("FLOWGATE__SERVER__LISTN", "x")])).unwrap_err();
    assert_eq!(err.issues[0].path, "server.listn");
    assert!(err.issues[0].message.contains("listn"));
}

#[test]
fn validation_lists_every_problem() {
    let text = r#"
        [providers.Bad]
        kind = "aitutor"
        api_key_env = "A"
        api_key_file = "/x"
        default_variant = "v"
        base_url = "ftp://x"
    "#;
    let err = Config::parse(text, env(&[])).unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "providers.Bad",
            "providers.Bad.api_key_env",
            "providers.Bad.base_url",
            "providers.Bad.default_variant"
        ]
    );
}

/// Which dialect takes a configured webhook secret or a default variant is
/// the dialect's to say (its registration); the messages name them.
#[test]
fn dialect_only_fields_are_refused_elsewhere_by_what_the_dialect_says() {
    let text = r#"
        [providers.fh]
        kind = "fetchhive"
        api_key_env = "A"
        default_variant = "v"
        webhook_secret_env = "W"
        [providers.at]
        kind = "aitutor"
        api_key_env = "A"
        webhook_secret_env = "W"
        [providers.kn]
        kind = "knouds"
        api_key_env = "A"
        default_variant = "v"
        webhook_secret_env = "W"
    "#;
    let err = Config::parse(text, env(&[])).unwrap_err();
    let issues: Vec<_> = err
        .issues
        .iter()
        .map(|i| (i.path.as_str(), i.message.as_str()))
        .collect();
    assert_eq!(
        issues,
        vec![
            (
                "providers.at.webhook_secret_env",
                "only knouds providers sign webhooks with a configured secret"
            ),
            (
                "providers.fh.webhook_secret_env",
                "only knouds providers sign webhooks with a configured secret (fetchhive issues one per run)"
            ),
            (
                "providers.kn.default_variant",
                "only fetchhive providers have variants"
            ),
        ]
    );
}

#[test]
fn missing_key_names_the_variable_not_a_value() {
    let config = Config::parse(EXAMPLE, env(&[])).unwrap();
    let err = config.provider_settings(|_| None).unwrap_err();
    assert_eq!(err.issues[0].path, "providers.fh.api_key_env");
    assert!(err.issues[0].message.contains("FH_KEY"));
}

const DECLARED: &str = r#"
    [schemas]
    ttl = "2m"
    negative_ttl = "5s"

    [providers.fh]
    kind = "fetchhive"
    api_key_env = "FH_KEY"

    [providers.fh.workflows."summarize/default"]
    description = "Summarizes a topic"
    inputs = [
      { name = "topic", type = "string", required = true },
      { name = "depth", type = "number", default = 2, description = "How deep" },
      { name = "tags", type = "array" },
    ]

    [providers.kn]
    kind = "knouds"
    api_key_env = "KN_KEY"
    workflows.summarize-text.inputs = [{ name = "text", type = "string", required = true }]
"#;

#[test]
fn declared_schemas_and_cache_settings_parse() {
    let config = Config::parse(DECLARED, env(&[])).unwrap();
    let settings = config.schemas;
    assert_eq!(settings.ttl, Duration::from_secs(120));
    assert_eq!(settings.negative_ttl, Duration::from_secs(5));
    assert_eq!(settings.capacity, 10_000);
    let schema = config.providers["fh"].workflows["summarize/default"].schema();
    assert_eq!(schema.description.as_deref(), Some("Summarizes a topic"));
    assert_eq!(schema.fields.len(), 3);
    let depth = schema.field("depth").unwrap();
    assert_eq!(depth.value_type, ValueType::Number);
    assert_eq!(depth.default, Some(serde_json::json!(2)));
    assert!(schema.field("topic").unwrap().required);
    assert!(!config.declared_schemas().is_empty());
}

#[test]
fn declared_schema_problems_name_their_path() {
    let text = DECLARED.replace("type = \"array\"", "type = \"list\"");
    let err = Config::parse(&text, env(&[])).unwrap_err();
    assert_eq!(
        err.issues[0].path,
        "providers.fh.workflows.summarize/default.inputs[2].type"
    );
    assert!(
        err.issues[0].message.contains("unknown variant `list`"),
        "{err}"
    );

    let text = DECLARED
        .replace("default = 2", "default = \"two\"")
        .replace("name = \"tags\"", "name = \"topic\"")
        .replace("workflows.summarize-text", "workflows.Summarize_Text")
        .replace("ttl = \"2m\"", "ttl = \"2m\"\ncapacity = 0");
    let err = Config::parse(&text, env(&[])).unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "providers.fh.workflows.summarize/default.inputs[1].default",
            "providers.fh.workflows.summarize/default.inputs[2].name",
            "providers.kn.workflows.Summarize_Text",
            "schemas.capacity",
        ]
    );

    let text = DECLARED.replace("required = true }", "required = true, requird = 1 }");
    let err = Config::parse(&text, env(&[])).unwrap_err();
    assert!(
        err.issues[0].message.contains("unknown field `requird`"),
        "{err}"
    );
}

#[test]
fn resilience_settings_override_defaults_and_are_checked() {
    let text = EXAMPLE.replace(
        "timeout = \"90s\"",
        "timeout = \"90s\"\n[providers.kn.retry]\nmax_attempts = 5\n[providers.kn.limits]\nmax_concurrent_runs = 3\n[providers.kn.circuit_breaker]\nopen_for = \"5s\"",
    );
    let config = Config::parse(&text, env(&[])).unwrap();
    let resilience = config.providers["kn"].resilience();
    assert_eq!(resilience.retry.max_attempts, 5);
    assert_eq!(resilience.retry.initial_backoff, Duration::from_millis(100));
    assert_eq!(resilience.limits.max_concurrent_runs, Some(3));
    assert_eq!(resilience.circuit.open_for, Duration::from_secs(5));
    assert_eq!(config.providers["fh"].resilience(), Resilience::default());

    let text = EXAMPLE.replace(
        "timeout = \"90s\"",
        "[providers.kn.retry]\nmax_attempts = 0\nbudget_percent = -1.0",
    );
    let err = Config::parse(&text, env(&[])).unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "providers.kn.retry.budget_percent",
            "providers.kn.retry.max_attempts",
        ]
    );
}

#[test]
fn telemetry_section_is_strict_and_checked() {
    let config = Config::parse(EXAMPLE, env(&[])).unwrap();
    assert!(config.telemetry.prometheus);
    assert_eq!(config.server.admin_listen.port(), 9464);
    let settings = config.telemetry_settings();
    assert_eq!(settings.otlp_endpoint, None);

    let text = format!(
        "{EXAMPLE}\n[telemetry]\notlp_endpoint = \"http://collector:4317\"\nservice_name = \"gw\"\nsample_ratio = 0.25\nprometheus = false\n"
    );
    let config = Config::parse(
        &text,
        env(&[("FLOWGATE__SERVER__ADMIN_LISTEN", "0.0.0.0:9100")]),
    )
    .unwrap();
    let settings = config.telemetry_settings();
    assert_eq!(
        settings.otlp_endpoint.as_deref(),
        Some("http://collector:4317")
    );
    assert_eq!(settings.sample_ratio, Some(0.25));
    assert!(!settings.prometheus);
    assert_eq!(config.server.admin_listen.port(), 9100);

    let text = format!(
        "{EXAMPLE}\n[telemetry]\notlp_endpoint = \"https://c:4317\"\nsample_ratio = 2.0\nservice_name = \" \"\nexporter = \"x\"\n"
    );
    let err = Config::parse(&text, env(&[])).unwrap_err();
    assert_eq!(err.issues[0].path, "telemetry.exporter");
    let text = text.replace("exporter = \"x\"", "");
    let err = Config::parse(&text, env(&[])).unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "telemetry.otlp_endpoint",
            "telemetry.sample_ratio",
            "telemetry.service_name"
        ]
    );
}

#[test]
fn unreadable_secrets_name_their_source() {
    let text =
        format!("{EXAMPLE}\n[webhooks]\nsigning_secret_file = \"/nonexistent/flowgate-signing\"\n");
    let config = Config::parse(&text, env(&[])).unwrap();
    let err = config.webhook_secrets(|_| None).unwrap_err();
    assert_eq!(err.issues[0].path, "webhooks.signing_secret_file");
    assert!(
        err.issues[0]
            .message
            .contains("/nonexistent/flowgate-signing")
    );

    let text = format!("{EXAMPLE}\n[webhooks]\nsigning_secret_env = \"SIGNING\"\n");
    let config = Config::parse(&text, env(&[])).unwrap();
    let err = config.webhook_secrets(|_| Some("  ".into())).unwrap_err();
    assert_eq!(err.issues[0].path, "webhooks.signing_secret_env");
    assert!(err.issues[0].message.contains("SIGNING"));
    assert!(config.webhook_secrets(|_| None).is_err(), "set but missing");
}

#[test]
fn parse_errors_of_every_section_are_reported_in_one_run() {
    let text = r#"
        colour = "blue"
        [server]
        listen = "nowhere"
        [log]
        format = "yaml"
        [telemetry]
        prometheus = "yes"
        [providers.fh]
        kind = "fetchhive"
        api_key_env = "FH_KEY"
        timeout = "soon"
        [providers.kn]
        kind = "knouds"
        api_key_env = "KN_KEY"
        retry.max_attempts = 0
        [providers.ai]
        kind = "openai"
        [webhooks]
        tolerance = "1 fortnight"
        [runs]
        capcity = 5
        [schemas]
        ttl = -1
    "#;
    let err = Config::parse(text, env(&[])).unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "colour",
            "log.format",
            "providers.ai.kind",
            "providers.fh.timeout",
            "providers.kn.retry.max_attempts",
            "runs.capcity",
            "schemas.ttl",
            "server.listen",
            "telemetry.prometheus",
            "webhooks.tolerance",
        ],
        "{err}"
    );
    let message = |path: &str| {
        err.issues
            .iter()
            .find(|issue| issue.path == path)
            .map(|issue| issue.message.clone())
            .unwrap_or_default()
    };
    assert!(
        message("colour").contains("unknown field `colour`"),
        "{err}"
    );
    assert!(
        message("providers.fh.timeout").contains("\"soon\" is not a duration"),
        "{err}"
    );
    assert!(
        message("providers.kn.retry.max_attempts").contains("between 1 and 10"),
        "{err}"
    );
}

#[test]
fn a_section_that_fails_to_parse_adds_no_issues_of_its_defaults() {
    // The only provider fails: no "at least one provider" on top of it.
    let text = "[providers.kn]\nkind = \"knouds\"\napi_key_env = \"KN\"\ntimeout = \"soon\"\n";
    let err = Config::parse(text, env(&[])).unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, vec!["providers.kn.timeout"]);
    // A provider that reads is still validated beside one that does not.
    let text = format!("{text}[providers.Fh]\nkind = \"fetchhive\"\napi_key_env = \"FH\"\n");
    let err = Config::parse(&text, env(&[])).unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, vec!["providers.Fh", "providers.kn.timeout"]);
}

#[test]
fn a_section_that_is_not_a_table_is_named() {
    let err = Config::parse("server = 5\nproviders = \"none\"\n", env(&[])).unwrap_err();
    let paths: Vec<_> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, vec!["providers", "server"], "{err}");
}

#[test]
fn the_state_section_selects_the_store_and_checks_it() {
    let config = Config::parse(EXAMPLE, env(&[])).unwrap();
    assert_eq!(config.state.store, StoreKind::Memory);
    assert!(config.state.redis(|_| None).unwrap().is_none());

    let text = format!(
        "{EXAMPLE}\n[state]\nstore = \"redis\"\nurl = \"redis://redis:6379/2\"\npassword_env = \"REDIS_PW\"\nkey_prefix = \"fg-a:\"\nop_timeout = \"250ms\"\n"
    );
    let config = Config::parse(&text, env(&[])).unwrap();
    let redis = config
        .state
        .redis(|name| (name == "REDIS_PW").then(|| "s3cret".to_owned()))
        .unwrap()
        .unwrap();
    assert_eq!(
        redis.endpoint,
        flowgate_redis::RedisEndpoint::Node("redis://:s3cret@redis:6379/2".into())
    );
    assert_eq!(redis.key_prefix, "fg-a:");
    assert_eq!(redis.op_timeout, Duration::from_millis(250));
    let missing = config.state.redis(|_| None).unwrap_err();
    assert_eq!(missing.issues[0].path, "state.password_env");

    let text = format!(
        "{EXAMPLE}\n[state]\nstore = \"redis\"\ncluster_nodes = [\"redis://a:7000\", \"redis://b:7000\"]\n"
    );
    let config = Config::parse(&text, env(&[])).unwrap();
    let redis = config.state.redis(|_| None).unwrap().unwrap();
    assert!(
        matches!(redis.endpoint, flowgate_redis::RedisEndpoint::Cluster(seeds) if seeds.len() == 2)
    );
}

#[test]
fn a_bad_state_section_is_reported_with_its_paths() {
    let paths = |state: &str| {
        let text = format!("{EXAMPLE}\n[state]\n{state}\n");
        let mut paths: Vec<String> = Config::parse(&text, env(&[]))
            .unwrap_err()
            .issues
            .into_iter()
            .map(|issue| issue.path)
            .collect();
        paths.dedup();
        paths
    };
    assert_eq!(paths("store = \"redis\""), ["state.store"]);
    assert_eq!(
        paths("store = \"redis\"\nurl = \"redis://a:1\"\ncluster_nodes = [\"redis://b:2\"]"),
        ["state.store"]
    );
    assert_eq!(paths("url = \"redis://a:1\""), ["state.store"]);
    assert_eq!(paths("store = \"etcd\""), ["state.store"]);
    assert_eq!(
        paths("store = \"redis\"\nurl = \"rediss://a:1/#insecure\""),
        ["state.url"]
    );
    assert_eq!(
        paths("store = \"redis\"\nurl = \"redis://:pw@a:1\""),
        ["state.url"]
    );
    assert_eq!(
        paths("store = \"redis\"\ncluster_nodes = [\"http://a:1\"]\nkey_prefix = \"{x}\""),
        ["state.cluster_nodes", "state.key_prefix"]
    );
    assert_eq!(paths("op_timeout = \"1h\""), ["state.op_timeout"]);
}

#[test]
fn state_limits_set_the_failure_policy_and_the_slot_lease() {
    let config = Config::parse(EXAMPLE, env(&[])).unwrap();
    assert_eq!(
        config.state.limits,
        flowgate_core::SharedLimitsSettings::default()
    );
    assert_eq!(
        config.state.limits.on_unavailable,
        flowgate_core::LimitFailurePolicy::Local
    );
    let text =
        format!("{EXAMPLE}\n[state.limits]\non_unavailable = \"closed\"\nslot_lease = \"45s\"\n");
    let config = Config::parse(&text, env(&[])).unwrap();
    assert_eq!(
        config.state.limits.on_unavailable,
        flowgate_core::LimitFailurePolicy::Closed
    );
    assert_eq!(config.state.limits.slot_lease, Duration::from_secs(45));

    for bad in [
        "on_unavailable = \"maybe\"",
        "slot_lease = \"100ms\"",
        "slot_lease = \"1h\"",
        "lease = \"1s\"",
    ] {
        let text = format!("{EXAMPLE}\n[state.limits]\n{bad}\n");
        let issues = Config::parse(&text, env(&[])).unwrap_err().issues;
        assert!(
            issues
                .iter()
                .all(|issue| issue.path.starts_with("state.limits")),
            "{bad}: {issues:?}"
        );
        assert!(!issues.is_empty());
    }
}
