//! Test harness: the emulator and an in-process gateway on 127.0.0.1:0,
//! and a real gRPC client; real gateway processes (`process`), captured
//! logs and temporary directories.

// Shared by several test crates, each using a different subset; failing
// fast with a message is what a test helper should do.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod captured_logs;
pub mod pki;
pub mod process;
pub mod receiver;
pub mod temp_dir;

use std::{collections::HashMap, sync::Arc};

use flowgate::{
    config::Config,
    pb::{self, workflow_gateway_client::WorkflowGatewayClient},
    server::{self, RunningServer},
};
use flowgate_core::SchemaCatalog;
use flowgate_emulator::{Emulator, EmulatorConfig, keys};
use tonic::transport::Channel;

/// The secret the emulator's Knouds webhooks are signed with in tests.
pub const KNOUDS_WEBHOOK_SECRET: &str = "knouds_whsec_test_3b9f";
/// flowgate's Standard Webhooks signing secret in tests.
pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub struct Harness {
    pub emulator: Emulator,
    pub server: RunningServer,
    pub client: WorkflowGatewayClient<Channel>,
    pub keys: HashMap<String, String>,
    /// The gateway's schema catalog, for its counters.
    pub schemas: Arc<SchemaCatalog>,
}

/// The gateway configuration the tests use: one provider per dialect plus
/// Knouds providers holding the emulator's special keys, so each can be
/// addressed by name.
pub fn config_text(emulator: &Emulator) -> String {
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        default_deadline = "30s"
        shutdown_grace = "2s"

        [runs]
        poll_initial = "50ms"
        poll_max = "200ms"
        # Tests sign run ids with a known secret (see `sign_run_id`).
        id_secret_env = "FLOWGATE_SIGNING_SECRET"

        [webhooks]
        signing_secret_env = "FLOWGATE_SIGNING_SECRET"
        # Test receivers listen on 127.0.0.1 over plain http; the
        # placeholder host of Fetch Hive pass-through calls is allowed by
        # name, so it is never looked up (tests make no DNS queries).
        callback_allow = ["127.0.0.1", "hooks.example.com"]
        callback_allow_http = true

        [providers.fh]
        kind = "fetchhive"
        base_url = "{fh}"
        api_key_env = "FH_KEY"

        [providers.fh-broke]
        kind = "fetchhive"
        base_url = "{fh}"
        api_key_env = "FH_BROKE_KEY"

        [providers.fh-badkey]
        kind = "fetchhive"
        base_url = "{fh}"
        api_key_env = "FH_BAD_KEY"

        [providers.tutor]
        kind = "aitutor"
        base_url = "{at}"
        api_key_env = "AT_KEY"

        [providers.tutor-broke]
        kind = "aitutor"
        base_url = "{at}"
        api_key_env = "AT_BROKE_KEY"

        [providers.tutor-badkey]
        kind = "aitutor"
        base_url = "{at}"
        api_key_env = "AT_BAD_KEY"

        [providers.kn]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "KN_KEY"
        webhook_secret_env = "KN_WEBHOOK_SECRET"

        [providers.kn-scoped]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "KN_SCOPED_KEY"

        [providers.kn-pro]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "KN_PRO_KEY"

        [providers.kn-broke]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "KN_BROKE_KEY"

        [providers.kn-trial]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "KN_TRIAL_KEY"

        [providers.kn-legacy]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "KN_LEGACY_KEY"

        [providers.kn-badkey]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "KN_BAD_KEY"
        "#,
        fh = emulator.fetchhive_base_url(),
        at = emulator.aitutor_base_url(),
        kn = emulator.knouds_base_url(),
    )
}

impl Harness {
    /// A fresh channel to the gateway, for clients of other services.
    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

pub fn test_keys() -> HashMap<String, String> {
    [
        ("FH_KEY", keys::FETCHHIVE_KEY),
        ("FH_BROKE_KEY", keys::FETCHHIVE_KEY_NO_CREDITS),
        ("FH_BAD_KEY", "fhk_not_a_real_key_91c2"),
        ("AT_KEY", keys::AITUTOR_KEY),
        ("AT_BROKE_KEY", keys::AITUTOR_KEY_NO_CREDITS),
        ("AT_BAD_KEY", "sk_not_a_real_key_44d1"),
        ("KN_LEGACY_KEY", keys::KNOUDS_KEY_LEGACY),
        ("KN_KEY", keys::KNOUDS_KEY),
        ("KN_SCOPED_KEY", keys::KNOUDS_KEY_SCOPED),
        ("KN_PRO_KEY", keys::KNOUDS_KEY_PRO),
        ("KN_BROKE_KEY", keys::KNOUDS_KEY_NO_CREDITS),
        ("KN_TRIAL_KEY", keys::KNOUDS_KEY_TRIAL),
        ("KN_BAD_KEY", "knouds_live_not_a_real_key_5f3a"),
        ("KN_WEBHOOK_SECRET", KNOUDS_WEBHOOK_SECRET),
        ("FLOWGATE_SIGNING_SECRET", SIGNING_SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub async fn start() -> Harness {
    start_with(EmulatorConfig::default(), |text| text).await
}

/// Starts the emulator with `emulator_config`, then the gateway with the
/// config text `edit` returns.
pub async fn start_with(
    emulator_config: EmulatorConfig,
    edit: impl FnOnce(String) -> String,
) -> Harness {
    start_with_config(emulator_config, |emulator| edit(config_text(emulator))).await
}

/// One provider per dialect, so each can be inferred from the target.
pub async fn start_minimal() -> Harness {
    start_with_config(EmulatorConfig::default(), |emulator| {
        format!(
            "[providers.fh]\nkind = \"fetchhive\"\nbase_url = \"{}\"\napi_key_env = \"FH_KEY\"\n\
             [providers.tutor]\nkind = \"aitutor\"\nbase_url = \"{}\"\napi_key_env = \"AT_KEY\"\n\
             [providers.kn]\nkind = \"knouds\"\nbase_url = \"{}\"\napi_key_env = \"KN_KEY\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\n",
            emulator.fetchhive_base_url(),
            emulator.aitutor_base_url(),
            emulator.knouds_base_url()
        )
    })
    .await
}

/// Starts the emulator, then the gateway with the config `build` writes
/// for it.
pub async fn start_with_config(
    emulator_config: EmulatorConfig,
    build: impl FnOnce(&Emulator) -> String,
) -> Harness {
    let emulator = Emulator::start(emulator_config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts");
    let config = Config::parse(&build(&emulator), Vec::new()).expect("config parses");
    let keys = test_keys();
    let app = server::build(&config, |var| keys.get(var).cloned()).expect("gateway builds");
    let schemas = Arc::clone(app.gateway.schemas());
    let server = server::spawn(app).await.expect("gateway starts");
    let client = WorkflowGatewayClient::connect(format!("http://{}", server.addr))
        .await
        .expect("client connects");
    Harness {
        emulator,
        server,
        client,
        keys,
        schemas,
    }
}

pub fn target(
    provider: &str,
    workflow: pb::workflow_target::Workflow,
) -> Option<pb::WorkflowTarget> {
    Some(pb::WorkflowTarget {
        provider: provider.to_owned(),
        workflow: Some(workflow),
    })
}

pub fn deployment(name: &str, variant: &str) -> pb::workflow_target::Workflow {
    pb::workflow_target::Workflow::Deployment(pb::Deployment {
        name: name.to_owned(),
        variant: variant.to_owned(),
    })
}

pub fn workflow_id(id: &str) -> pb::workflow_target::Workflow {
    pb::workflow_target::Workflow::WorkflowId(id.to_owned())
}

pub fn slug(slug: &str) -> pb::workflow_target::Workflow {
    pb::workflow_target::Workflow::Slug(slug.to_owned())
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn inputs(value: serde_json::Value) -> Option<prost_types::Struct> {
    match flowgate::convert::json_to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(object)) => Some(object),
        _ => panic!("inputs must be an object"),
    }
}

/// A `google.protobuf.Value` as JSON.
pub fn json(value: Option<prost_types::Value>) -> serde_json::Value {
    let mut violations = flowgate_core::Violations::new();
    let json = flowgate::convert::value_to_json(value.expect("a value"), "x", &mut violations);
    assert!(violations.is_empty());
    json
}

/// The run id signer of gateways started from [`config_text`] (its
/// `runs.id_secret_env` names the signing secret's variable).
pub fn run_ids() -> flowgate_core::RunIdSigner {
    flowgate_core::RunIdSigner::new(&[flowgate_core::SecretString::new(SIGNING_SECRET)]).unwrap()
}

/// A run id as a gateway started from [`config_text`] would issue it.
pub fn sign_run_id(id: &flowgate_core::RunId) -> String {
    run_ids().sign(id)
}
