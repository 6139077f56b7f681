//! What a tool needs from reflection: the service, the `google.rpc` error
//! detail types and the well-known types, each with every file it imports,
//! over reflection v1 and v1alpha; and, when buf is installed, `buf curl`
//! getting the same Invoke and StreamStatus answers over gRPC, gRPC-Web and
//! Connect through reflection, and what it prints for a failed call's
//! details.
//!
//! buf is looked up as `$FLOWGATE_BUF`, then `.tools/node_modules/.bin/buf`
//! (where scripts/test.sh installs it), then `buf` on `PATH`. Without it the
//! buf test is skipped loudly, unless `FLOWGATE_REQUIRE_BUF=1`, in which case
//! it fails.

#![expect(clippy::expect_used, reason = "test helpers fail loudly")]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use prost::Message as _;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;
use tonic_reflection::pb::{v1, v1alpha};
use tonic_types::pb as pb_rpc;

/// One reflection question, asked on its own stream.
enum Ask {
    Symbol(&'static str),
    File(String),
}

/// Generates a function asking one reflection version for the files that
/// answer `ask` (the two versions have identical, separately generated
/// types).
macro_rules! asker {
    ($name:ident, $v:ident) => {
        async fn $name(channel: Channel, ask: Ask) -> Vec<FileDescriptorProto> {
            use $v::{
                server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let message_request = match ask {
                Ask::Symbol(symbol) => MessageRequest::FileContainingSymbol(symbol.to_owned()),
                Ask::File(name) => MessageRequest::FileByFilename(name),
            };
            let request = $v::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message_request.clone()),
            };
            let mut stream = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let response = stream.message().await.unwrap().expect("an answer");
            match response.message_response {
                Some(MessageResponse::FileDescriptorResponse(files)) => files
                    .file_descriptor_proto
                    .iter()
                    .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).unwrap())
                    .collect(),
                other => panic!("{message_request:?}: {other:?}"),
            }
        }
    };
}

asker!(ask_v1, v1);
asker!(ask_v1alpha, v1alpha);

/// Resolves `symbol` the way a tool does: the file holding it, then every
/// file it imports, transitively, each by name. Returns the files by name.
async fn resolve(
    channel: &Channel,
    alpha: bool,
    symbol: &'static str,
) -> BTreeMap<String, FileDescriptorProto> {
    let ask = |ask| {
        let channel = channel.clone();
        async move {
            if alpha {
                ask_v1alpha(channel, ask).await
            } else {
                ask_v1(channel, ask).await
            }
        }
    };
    let mut files = BTreeMap::new();
    let mut wanted: Vec<FileDescriptorProto> = ask(Ask::Symbol(symbol)).await;
    // Bounded: a file is fetched at most once, and there are few.
    while let Some(file) = wanted.pop() {
        let name = file.name().to_owned();
        if files.contains_key(&name) {
            continue;
        }
        for dependency in &file.dependency {
            if !files.contains_key(dependency) {
                wanted.extend(ask(Ask::File(dependency.clone())).await);
            }
        }
        files.insert(name, file);
        assert!(files.len() < 64, "runaway imports: {:?}", files.keys());
    }
    files
}

/// The message `package.Name` in `files`, with the name of its file.
fn message<'a>(
    files: &'a BTreeMap<String, FileDescriptorProto>,
    full_name: &str,
) -> (&'a str, &'a prost_types::DescriptorProto) {
    files
        .iter()
        .find_map(|(file_name, file)| {
            file.message_type
                .iter()
                .find(|m| format!("{}.{}", file.package(), m.name()) == full_name)
                .map(|m| (file_name.as_str(), m))
        })
        .unwrap_or_else(|| panic!("{full_name} not in {:?}", files.keys()))
}

fn field_names(message: &prost_types::DescriptorProto) -> BTreeSet<&str> {
    message.field.iter().map(|f| f.name()).collect()
}

#[tokio::test]
async fn reflection_resolves_the_error_details_the_well_known_types_and_the_service() {
    let h = common::start_minimal().await;
    let channel = h.channel().await;
    for alpha in [false, true] {
        let version = if alpha { "v1alpha" } else { "v1" };

        let files = resolve(&channel, alpha, "google.rpc.ErrorInfo").await;
        let (file, info) = message(&files, "google.rpc.ErrorInfo");
        assert_eq!(file, "google/rpc/error_details.proto", "{version}");
        assert_eq!(
            field_names(info),
            BTreeSet::from(["reason", "domain", "metadata"]),
            "{version}"
        );

        // RetryInfo's delay is a Duration from an imported file, which the
        // closure must hold too.
        let files = resolve(&channel, alpha, "google.rpc.RetryInfo").await;
        let (_, retry) = message(&files, "google.rpc.RetryInfo");
        let delay = retry.field.iter().find(|f| f.name() == "retry_delay");
        assert_eq!(
            delay.map(|f| f.type_name()),
            Some(".google.protobuf.Duration"),
            "{version}"
        );
        let (file, _) = message(&files, "google.protobuf.Duration");
        assert_eq!(file, "google/protobuf/duration.proto", "{version}");

        for detail in [
            "google.rpc.QuotaFailure",
            "google.rpc.BadRequest",
            "google.rpc.PreconditionFailure",
            "google.rpc.ResourceInfo",
        ] {
            message(
                &resolve(&channel, alpha, "google.rpc.ErrorInfo").await,
                detail,
            );
        }
        // The Status envelope and the Any its details are packed in.
        let files = resolve(&channel, alpha, "google.rpc.Status").await;
        message(&files, "google.rpc.Status");
        message(&files, "google.protobuf.Any");

        for well_known in [
            "google.protobuf.Duration",
            "google.protobuf.Timestamp",
            "google.protobuf.Struct",
            "google.protobuf.Empty",
            "google.protobuf.FieldMask",
            "google.protobuf.StringValue",
        ] {
            message(&resolve(&channel, alpha, well_known).await, well_known);
        }

        let files = resolve(&channel, alpha, "flowgate.v1.WorkflowGateway").await;
        let service = files
            .values()
            .flat_map(|f| &f.service)
            .find(|s| s.name() == "WorkflowGateway")
            .expect("the service");
        let methods: BTreeSet<&str> = service.method.iter().map(|m| m.name()).collect();
        for method in [
            "Invoke",
            "InvokeStream",
            "StreamStatus",
            "VerifyWebhook",
            "GetWorkflowSchema",
        ] {
            assert!(methods.contains(method), "{version}: {methods:?}");
        }
        // Its request and response types and their imports resolve too.
        message(&files, "flowgate.v1.InvokeRequest");
        message(&files, "google.protobuf.Struct");
    }
}

/// The buf binary, if there is one.
fn buf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLOWGATE_BUF") {
        return Some(path.into());
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/buf");
    if local.is_file() {
        return Some(local);
    }
    let on_path = std::process::Command::new("buf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    on_path.then(|| PathBuf::from("buf"))
}

fn skip_without_buf() -> Option<PathBuf> {
    let found = buf();
    if found.is_none() {
        let required = std::env::var("FLOWGATE_REQUIRE_BUF").is_ok_and(|v| v == "1");
        assert!(!required, "FLOWGATE_REQUIRE_BUF=1 but buf is not installed");
        eprintln!("SKIPPED: buf is not installed (scripts/test.sh installs it)");
    }
    found
}

/// buf, a gateway (one provider per dialect) and its Invoke URL; none
/// without buf.
async fn buf_and_gateway() -> Option<(PathBuf, common::Harness, String)> {
    let buf = skip_without_buf()?;
    let h = common::start_minimal().await;
    let url = format!(
        "http://{}/flowgate.v1.WorkflowGateway/Invoke",
        h.server.addr
    );
    Some((buf, h, url))
}

/// Runs `buf curl` with `args`, bounded in time.
async fn buf_curl(buf: &PathBuf, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(buf)
        .arg("curl")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("buf curl finishes")
        .expect("buf curl runs")
}

#[tokio::test]
async fn buf_curl_prints_a_failed_calls_details_as_type_names_and_bytes() {
    let Some((buf, _h, url)) = buf_and_gateway().await else {
        return;
    };
    let data = r#"{"target":{"provider":"kn","slug":"no-such-flow"}}"#;
    let output = buf_curl(
        &buf,
        &[
            "--http2-prior-knowledge",
            "--protocol",
            "grpc",
            "-d",
            data,
            &url,
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the call fails: {stdout}");
    // buf curl (1.75) prints the error as Connect's JSON error on stderr:
    // each detail's `type` and its bytes as unpadded base64 `value`. It
    // decodes a detail into a `debug` member only for types compiled into
    // buf itself, never through reflection, so the google.rpc details stay
    // base64 there (grpcurl resolves them through reflection).
    let error: serde_json::Value = serde_json::from_str(stderr.trim())
        .unwrap_or_else(|err| panic!("{err}: not JSON: {stderr}"));
    assert_eq!(error["code"], "not_found", "{error:#}");
    let details = error["details"].as_array().expect("details");
    let detail = |type_name: &str| {
        let detail = details
            .iter()
            .find(|d| d["type"] == type_name)
            .unwrap_or_else(|| panic!("no {type_name}: {error:#}"));
        let value = detail["value"].as_str().expect("a base64 value");
        STANDARD_NO_PAD
            .decode(value.trim_end_matches('='))
            .unwrap_or_else(|err| panic!("{err}: {value}"))
    };
    let info = pb_rpc::ErrorInfo::decode(detail("google.rpc.ErrorInfo").as_slice()).unwrap();
    assert_eq!(info.reason, "WORKFLOW_NOT_FOUND");
    assert_eq!(info.domain, "knouds");
    assert_eq!(
        info.metadata.get("provider").map(String::as_str),
        Some("kn")
    );
    let resource =
        pb_rpc::ResourceInfo::decode(detail("google.rpc.ResourceInfo").as_slice()).unwrap();
    assert_eq!(resource.resource_type, "knouds.workflow");
    assert_eq!(resource.resource_name, "no-such-flow");
}

#[tokio::test]
async fn buf_curl_over_connect_prints_a_failed_calls_details_in_clear() {
    let Some((buf, _h, url)) = buf_and_gateway().await else {
        return;
    };
    let data = r#"{"target":{"provider":"kn","slug":"no-such-flow"}}"#;
    let output = buf_curl(&buf, &["--protocol", "connect", "-d", data, &url]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    // flowgate's Connect door sends each detail's JSON as `debug`, which
    // buf curl prints as it is: the reason in clear text.
    let error: serde_json::Value = serde_json::from_str(stderr.trim())
        .unwrap_or_else(|err| panic!("{err}: not JSON: {stderr}"));
    assert_eq!(error["code"], "not_found", "{error:#}");
    let info = error["details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|d| d["type"] == "google.rpc.ErrorInfo")
        .unwrap_or_else(|| panic!("no ErrorInfo: {error:#}"));
    assert_eq!(info["debug"]["reason"], "WORKFLOW_NOT_FOUND", "{error:#}");
    assert_eq!(info["debug"]["metadata"]["provider"], "kn", "{error:#}");
    let resource = error["details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|d| d["type"] == "google.rpc.ResourceInfo")
        .unwrap_or_else(|| panic!("no ResourceInfo: {error:#}"));
    assert_eq!(resource["debug"]["resourceName"], "no-such-flow");
}

/// Every JSON message `buf curl` printed, in order (a stream prints one
/// object per message).
fn messages(stdout: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .expect("buf curl prints JSON messages")
}

/// The three protocols buf curl speaks, as its arguments: gRPC needs HTTP/2
/// (prior knowledge on plaintext); gRPC-Web and Connect go over HTTP/1.1
/// here, as from a browser or curl.
const PROTOCOLS: [&[&str]; 3] = [
    &["--http2-prior-knowledge", "--protocol", "grpc"],
    &["--protocol", "grpcweb"],
    &["--protocol", "connect"],
];

#[tokio::test]
async fn buf_curl_gets_the_same_answers_over_grpc_grpc_web_and_connect() {
    let Some((buf, mut h, url)) = buf_and_gateway().await else {
        return;
    };
    // Invoke: the same synchronous answer (each call its own run id and a
    // step further in the vendor's rate window).
    let data = r#"{"target":{"provider":"kn","slug":"summarize-text"},"inputs":{"text":"hello"}}"#;
    let mut answers = Vec::new();
    for protocol in PROTOCOLS {
        let output = buf_curl(&buf, &[protocol, &["-d", data, &url]].concat()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{protocol:?}: {stderr}");
        let mut answer = messages(&output.stdout).remove(0);
        assert!(
            answer["runId"].as_str().is_some_and(|id| !id.is_empty()),
            "{answer:#}"
        );
        answer["runId"] = serde_json::Value::Null;
        // The vendor's window moves with every call; its limit does not.
        let window = answer["rateLimit"]
            .as_object_mut()
            .expect("rate-limit data");
        assert!(window.remove("remaining").is_some() && window.remove("resetTime").is_some());
        answers.push(answer);
    }
    assert_eq!(
        answers[0]["status"], "RUN_STATUS_COMPLETED",
        "{:#}",
        answers[0]
    );
    assert_eq!(answers[0], answers[1], "gRPC vs gRPC-Web");
    assert_eq!(answers[0], answers[2], "gRPC vs Connect");

    // StreamStatus of a finished async run: the same events in each.
    let accepted = h
        .client
        .invoke(flowgate::pb::InvokeRequest {
            target: common::target("kn", common::slug("render-video")),
            inputs: common::inputs(serde_json::json!({"prompt": "a fox"})),
            async_options: Some(flowgate::pb::AsyncOptions {
                enabled: true,
                callback_url: String::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("async run accepted")
        .into_inner();
    let stream_url = url.replace("/Invoke", "/StreamStatus");
    let request = format!(r#"{{"runId":"{}"}}"#, accepted.run_id);
    let mut streams = Vec::new();
    for protocol in PROTOCOLS {
        let output = buf_curl(&buf, &[protocol, &["-d", &request, &stream_url]].concat()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{protocol:?}: {stderr}");
        streams.push(messages(&output.stdout));
    }
    let last = streams[0].last().expect("at least one event");
    assert_eq!(last["status"], "RUN_STATUS_COMPLETED", "{:#?}", streams[0]);
    assert_eq!(last["runId"], accepted.run_id.as_str());
    // The first stream may still have seen RUNNING; once finished, every
    // protocol replays the same terminal event.
    for (protocol, stream) in PROTOCOLS.iter().zip(&streams).skip(1) {
        assert_eq!(stream.last(), Some(last), "{protocol:?}");
    }
}
