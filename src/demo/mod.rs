//! `flowgate demo`: the emulator and the gateway on loopback, and real gRPC
//! calls to every dialect through the generated client, printing what a
//! user needs to see: status, output, usage, rate-limit data, and typed
//! errors with their details. [`keep`]: the same, kept running for calls
//! by hand.

pub mod keep;

use std::collections::HashMap;

use flowgate_emulator::{Emulator, EmulatorConfig, keys};
use serde_json::json;
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

use crate::{
    auth::{KeyHash, key::generate_key},
    config::{Config, LogFormat},
    convert, logging,
    pb::{self, workflow_gateway_client::WorkflowGatewayClient, workflow_target::Workflow},
    server,
};

type Client = WorkflowGatewayClient<InterceptedService<Channel, BearerKey>>;

/// Sends the demo caller's key as `authorization: Bearer …` on every call.
#[derive(Debug, Clone)]
struct BearerKey(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for BearerKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the demo's output is for the person running it"
)]
fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

/// Runs the demo end to end.
pub async fn run() -> Result<(), String> {
    // The demo prints what a user needs on stdout; only errors are logged.
    logging::init(LogFormat::Text, "error");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let emulator = Emulator::start(EmulatorConfig::default(), loopback)
        .await
        .map_err(|err| format!("starting the emulator: {err}"))?;
    // The demo's one caller: a fresh key, of which the config holds only
    // the hash (what `flowgate hash-key --generate` prints).
    let key = generate_key();
    let key_hash = KeyHash::of(key.as_bytes()).to_config();
    let config_text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [callers.demo]
        key_hashes = ["{key_hash}"]
        capabilities = ["invoke:*/*", "schemas:read", "runs:stream", "webhooks:verify"]

        [runs]
        poll_initial = "200ms"

        [webhooks]
        # The placeholder callback host of the Fetch Hive async call:
        # allowed by name, so it is never looked up.
        callback_allow = ["hooks.example.com"]

        [providers.fetchhive]
        kind = "fetchhive"
        base_url = "{}"
        api_key_env = "DEMO_FETCHHIVE_KEY"

        [providers.aitutor]
        kind = "aitutor"
        base_url = "{}"
        api_key_env = "DEMO_AITUTOR_KEY"

        [providers.knouds]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "DEMO_KNOUDS_KEY"

        [providers.knouds-ci]
        kind = "knouds"
        base_url = "{kn}"
        api_key_env = "DEMO_KNOUDS_SCOPED_KEY"
        "#,
        emulator.fetchhive_base_url(),
        emulator.aitutor_base_url(),
        kn = emulator.knouds_base_url(),
    );
    let config = Config::parse(&config_text, Vec::new()).map_err(|err| err.to_string())?;
    let demo_keys: HashMap<&str, &str> = HashMap::from([
        ("DEMO_FETCHHIVE_KEY", keys::FETCHHIVE_KEY),
        ("DEMO_AITUTOR_KEY", keys::AITUTOR_KEY),
        ("DEMO_KNOUDS_KEY", keys::KNOUDS_KEY),
        ("DEMO_KNOUDS_SCOPED_KEY", keys::KNOUDS_KEY_SCOPED),
    ]);
    let app = server::build(&config, |var| demo_keys.get(var).map(|k| k.to_string()))
        .map_err(|err| err.to_string())?;
    let running = server::spawn(app)
        .await
        .map_err(|err| format!("starting the gateway: {err}"))?;
    say(format!(
        "flowgate demo: gateway on {} (gRPC), provider emulator on {}",
        running.addr,
        emulator.addr()
    ));
    let channel = Channel::from_shared(format!("http://{}", running.addr))
        .map_err(|err| format!("connecting to the gateway: {err}"))?
        .connect()
        .await
        .map_err(|err| format!("connecting to the gateway: {err}"))?;
    let bearer = MetadataValue::try_from(format!("Bearer {key}"))
        .map_err(|err| format!("the demo key is not a header value: {err}"))?;
    say(
        "calling as the caller `demo` (an API key generated for this run; the config holds its sha256)",
    );
    let mut client = WorkflowGatewayClient::with_interceptor(channel, BearerKey(bearer));

    let result = calls(&mut client).await;
    drop(client);
    let _ = running.shutdown().await;
    emulator.shutdown().await;
    result
}

async fn calls(client: &mut Client) -> Result<(), String> {
    section("Fetch Hive: deployment summarize/default, synchronous");
    invoke(
        client,
        request(
            "fetchhive",
            Workflow::Deployment(pb::Deployment {
                name: "summarize".into(),
                variant: "default".into(),
            }),
            json!({"topic": "State of enterprise AI in 2026"}),
        ),
    )
    .await?;

    section("Fetch Hive: an output string holding JSON comes back as structured data");
    invoke(
        client,
        request(
            "fetchhive",
            Workflow::Deployment(pb::Deployment {
                name: "company-extractor".into(),
                variant: "default".into(),
            }),
            json!({"companies": [{"name": "Fetch Hive"}, {"name": "Knouds"}]}),
        ),
    )
    .await?;

    section("Fetch Hive: async run with callback delivery");
    let mut async_request = request(
        "fetchhive",
        Workflow::Deployment(pb::Deployment {
            name: "summarize".into(),
            variant: "default".into(),
        }),
        json!({"topic": "long report"}),
    );
    async_request.async_options = Some(pb::AsyncOptions {
        enabled: true,
        callback_url: "https://hooks.example.com/flowgate".into(),
    });
    invoke(client, async_request).await?;

    section("AI Tutor: workflow wf_research (provider inferred from the target)");
    invoke(
        client,
        request(
            "",
            Workflow::WorkflowId("wf_research".into()),
            json!({"topic": "gRPC gateways"}),
        ),
    )
    .await?;

    section("AI Tutor: InvokeStream sends the story while it is being written");
    invoke_stream(
        client,
        request(
            "",
            Workflow::WorkflowId("wf_story".into()),
            json!({"story": "a gateway learned to stream"}),
        ),
    )
    .await?;

    section("Knouds: slug summarize-text, synchronous");
    invoke(
        client,
        request(
            "knouds",
            Workflow::Slug("summarize-text".into()),
            json!({"text": "flowgate gives every workflow vendor one typed gRPC API."}),
        ),
    )
    .await?;

    section("Knouds: slug render-video, async (?async=true), then StreamStatus to completion");
    let mut knouds_async = request(
        "knouds",
        Workflow::Slug("render-video".into()),
        json!({"prompt": "a fox in the snow"}),
    );
    knouds_async.async_options = Some(pb::AsyncOptions {
        enabled: true,
        callback_url: String::new(),
    });
    if let Some(run_id) = invoke(client, knouds_async).await? {
        stream(client, run_id).await?;
    }

    section("AI Tutor has no async mode: flowgate runs it in the background and streams it");
    let mut tutor_async = request(
        "",
        Workflow::WorkflowId("wf_story".into()),
        json!({"story": "a gateway that never sleeps"}),
    );
    tutor_async.async_options = Some(pb::AsyncOptions {
        enabled: true,
        callback_url: String::new(),
    });
    if let Some(run_id) = invoke(client, tutor_async).await? {
        stream(client, run_id).await?;
    }

    section("Typed error: a least-privilege key scoped to another slug");
    invoke(
        client,
        request(
            "knouds-ci",
            Workflow::Slug("render-video".into()),
            json!({"prompt": "x"}),
        ),
    )
    .await?;

    section("Typed error: bad input is refused before any upstream call");
    let mut bad = request("knouds", Workflow::Slug("Not_A_Slug".into()), json!({}));
    bad.metadata.insert(
        "plan".into(),
        convert::json_to_value(json!({"tier": "nested"})),
    );
    invoke(client, bad).await?;
    say(
        "\nDone. `flowgate demo --keep` keeps the emulator and a gateway running for calls by \
         hand; README.md has the configuration and the error table.",
    );
    Ok(())
}

fn section(title: &str) {
    say(format!("\n== {title}"));
}

fn request(provider: &str, workflow: Workflow, inputs: serde_json::Value) -> pb::InvokeRequest {
    let inputs = match convert::json_to_value(inputs).kind {
        Some(prost_types::value::Kind::StructValue(object)) => Some(object),
        _ => None,
    };
    pb::InvokeRequest {
        target: Some(pb::WorkflowTarget {
            provider: provider.into(),
            workflow: Some(workflow),
        }),
        inputs,
        ..Default::default()
    }
}

/// Follows a run with StreamStatus until its terminal event.
async fn stream(client: &mut Client, run_id: String) -> Result<(), String> {
    let mut request = Request::new(pb::StreamStatusRequest { run_id });
    request.set_timeout(std::time::Duration::from_secs(30));
    let mut events = client
        .stream_status(request)
        .await
        .map_err(|status| format!("StreamStatus: {}", status.message()))?
        .into_inner();
    while let Some(event) = events
        .message()
        .await
        .map_err(|status| format!("StreamStatus: {}", status.message()))?
    {
        let output = event.output.clone().map(|output| {
            let mut ignored = flowgate_core::Violations::new();
            convert::value_to_json(output, "output", &mut ignored).to_string()
        });
        say(format!(
            "  stream        {:?}{}",
            event.status(),
            output.map(|o| format!(" output {o}")).unwrap_or_default()
        ));
    }
    Ok(())
}

/// Runs InvokeStream and prints each event as it arrives.
async fn invoke_stream(client: &mut Client, request: pb::InvokeRequest) -> Result<(), String> {
    use pb::invoke_stream_event::Event;
    let mut request = Request::new(request);
    request.set_timeout(std::time::Duration::from_secs(30));
    let failed = |status: Status| format!("InvokeStream: {}", status.message());
    let mut events = client
        .invoke_stream(request)
        .await
        .map_err(failed)?
        .into_inner();
    while let Some(event) = events.message().await.map_err(failed)? {
        match event.event {
            Some(Event::Started(started)) => say(format!(
                "  started       run {} on {}",
                started.run_id, started.provider
            )),
            Some(Event::OutputDelta(delta)) => say(format!("  delta         {:?}", delta.text)),
            Some(Event::Completed(completed)) => {
                say(format!("  completed     {:?}", completed.status()));
            }
            None => {}
        }
    }
    Ok(())
}

/// Invokes and prints the answer; returns the run id of accepted async runs.
async fn invoke(client: &mut Client, request: pb::InvokeRequest) -> Result<Option<String>, String> {
    let mut request = Request::new(request);
    request.set_timeout(std::time::Duration::from_secs(30));
    match client.invoke(request).await {
        Ok(response) => {
            let response = response.into_inner();
            let pending = matches!(
                response.status(),
                pb::RunStatus::Running | pb::RunStatus::Queued
            )
            .then(|| response.run_id.clone());
            say(format!("  status        {:?}", response.status()));
            say(format!("  provider      {}", response.provider));
            say(format!("  run_id        {}", response.run_id));
            if !response.upstream_run_id.is_empty() {
                say(format!("  upstream id   {}", response.upstream_run_id));
            }
            if let Some(output) = response.output {
                let mut ignored = flowgate_core::Violations::new();
                let output = convert::value_to_json(output, "output", &mut ignored);
                say(format!("  output        {output}"));
            }
            if !response.citations.is_empty() {
                say(format!("  citations     {}", response.citations.join(", ")));
            }
            if let Some(usage) = response.usage {
                let credits = usage.credits.map_or("-".into(), |c| c.to_string());
                let duration = usage.duration.map_or("-".into(), |d| {
                    format!("{}.{:03}s", d.seconds, d.nanos / 1_000_000)
                });
                say(format!(
                    "  usage         credits {credits}, duration {duration}"
                ));
            }
            if !response.webhook_secret.is_empty() {
                let shown: String = response.webhook_secret.chars().take(6).collect();
                say(format!(
                    "  webhook       secret issued ({shown}…, keep it to verify the callback)"
                ));
            }
            if let Some(error) = response.error {
                say(format!("  run error     {}: {}", error.code, error.message));
            }
            if let Some(rate) = response.rate_limit {
                let part = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                say(format!(
                    "  rate limit    {} of {} left{}",
                    part(rate.remaining),
                    part(rate.limit),
                    rate.reset_time
                        .map(|t| format!(", resets at unix {}", t.seconds))
                        .unwrap_or_default()
                ));
            }
            return Ok(pending);
        }
        Err(status) => {
            say(format!(
                "  gRPC status   {:?}: {}",
                status.code(),
                status.message()
            ));
            let details = status.get_error_details();
            if let Some(info) = details.error_info() {
                let mut metadata: Vec<_> = info
                    .metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                metadata.sort();
                say(format!(
                    "  ErrorInfo     reason={} domain={} {}",
                    info.reason,
                    info.domain,
                    metadata.join(" ")
                ));
            }
            if let Some(bad) = details.bad_request() {
                for violation in &bad.field_violations {
                    say(format!(
                        "  BadRequest    {}: {}",
                        violation.field, violation.description
                    ));
                }
            }
            if let Some(retry) = details.retry_info().and_then(|r| r.retry_delay) {
                say(format!("  RetryInfo     retry after {retry:?}"));
            }
        }
    }
    Ok(None)
}
