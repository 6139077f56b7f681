//! AI Tutor dialect: `POST /aitutor/api/v1/run/{workflow_id}` with a flat map
//! of template variables, Bearer keys, a per-second sliding window, and the
//! single-use token + plain-text streaming endpoint.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::clock::unix_now;
use crate::ids::random_hex;
use crate::keys;
use crate::keys::bearer;
use crate::ratelimit::{RateDecision, SlidingWindow};
use crate::reply::{Rejection, json_response, with_headers};
use crate::shared::{DialectShared, Shared};
use crate::store::{BoundedStore, STORE_CAPACITY, lock};

/// Delay between streamed chunks, so clients really see a stream.
const STREAM_CHUNK_DELAY: Duration = Duration::from_millis(5);
/// Allowed token lifetimes in seconds.
const TOKEN_TTL: std::ops::RangeInclusive<u64> = 1..=300;

/// What the AI Tutor handlers share.
type AiTutor = DialectShared<AiTutorState>;

/// The AI Tutor routes, with their own state beside the emulator-wide one.
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/aitutor/api/v1/run/{workflow_id}", post(run))
        .route("/aitutor/api/v1/run/{workflow_id}/stream", post(run_stream))
        .route("/aitutor/api/v1/token", get(token))
        .with_state(Arc::new(DialectShared::new(shared, AiTutorState::new())))
}

/// An AI Tutor error body: `{"success": false, "error", "code"?}`.
pub(crate) fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    reject(status, message, code).into_response()
}

fn reject(status: StatusCode, message: &str, code: Option<&str>) -> Rejection {
    let mut body = json!({ "success": false, "error": message });
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    Rejection { status, body }
}

/// Rate window and stream tokens.
#[derive(Debug)]
struct AiTutorState {
    window: SlidingWindow,
    tokens: Mutex<BoundedStore<StreamToken>>,
}

impl AiTutorState {
    fn new() -> Self {
        Self {
            window: SlidingWindow::new(Duration::from_secs(1)),
            tokens: Mutex::new(BoundedStore::new(STORE_CAPACITY)),
        }
    }
}

#[derive(Debug)]
struct StreamToken {
    key: ApiKey,
    expires: Instant,
}

#[derive(Clone, Copy, Debug)]
struct ApiKey {
    id: &'static str,
    has_credits: bool,
}

fn key_by_secret(secret: &str) -> Option<ApiKey> {
    match secret {
        keys::AITUTOR_KEY => Some(ApiKey {
            id: keys::AITUTOR_KEY,
            has_credits: true,
        }),
        keys::AITUTOR_KEY_NO_CREDITS => Some(ApiKey {
            id: keys::AITUTOR_KEY_NO_CREDITS,
            has_credits: false,
        }),
        _ => None,
    }
}

fn unauthorized(shared: &AiTutor) -> Response {
    let limit = shared.config.aitutor_per_second_limit;
    with_headers(
        error(StatusCode::UNAUTHORIZED, "Unauthorized", None),
        &RateDecision::untouched(limit, unix_now() + 1).count_headers(),
    )
}

/// Authenticates the Bearer key, then counts and runs `handle` as [`limited`] does.
fn gated(
    shared: &AiTutor,
    headers: &HeaderMap,
    handle: impl FnOnce(ApiKey) -> Response,
) -> Response {
    let Some(key) = bearer(headers).and_then(key_by_secret) else {
        return unauthorized(shared);
    };
    limited(shared, key, || handle(key))
}

/// Counts the request for `key`, then runs `handle` (or answers 429).
fn limited(shared: &AiTutor, key: ApiKey, handle: impl FnOnce() -> Response) -> Response {
    let rate = shared
        .dialect
        .window
        .hit(key.id, shared.config.aitutor_per_second_limit);
    rate.respond(
        &rate.count_headers(),
        1,
        || {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                Some("rate_limited"),
            )
        },
        handle,
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Story,
    Research,
    Unpublished,
    Broken,
    Blocked,
}

#[derive(Debug)]
struct Workflow {
    id: &'static str,
    variables: &'static [&'static str],
    behaviour: Behaviour,
}

const WORKFLOWS: &[Workflow] = &[
    Workflow {
        id: "wf_story",
        variables: &["story"],
        behaviour: Behaviour::Story,
    },
    Workflow {
        id: "wf_research",
        variables: &["topic"],
        behaviour: Behaviour::Research,
    },
    Workflow {
        id: "wf_unpublished",
        variables: &[],
        behaviour: Behaviour::Unpublished,
    },
    Workflow {
        id: "wf_broken",
        variables: &[],
        behaviour: Behaviour::Broken,
    },
    Workflow {
        id: "wf_blocked",
        variables: &[],
        behaviour: Behaviour::Blocked,
    },
];

/// A finished run: the text result and optional citations.
#[derive(Debug)]
struct RunResult {
    result: String,
    citations: Option<Vec<String>>,
}

fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

fn parse_variables(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let invalid = |message: &str| reject(StatusCode::BAD_REQUEST, message, Some("invalid_body"));
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(vars)) => {
            if let Some((name, _)) = vars.iter().find(|(_, v)| v.is_object() || v.is_array()) {
                return Err(invalid(&format!(
                    "Variable '{name}' must be a string, number or boolean: the body is a flat map of template variables"
                )));
            }
            Ok(vars)
        }
        Ok(_) => Err(invalid(
            "Request body must be a JSON object of template variables",
        )),
        Err(_) => Err(invalid("Invalid JSON body")),
    }
}

fn variable(vars: &Map<String, Value>, name: &str) -> Option<String> {
    match vars.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Validates and runs `workflow_id` for `key` with the raw `body`.
fn execute(key: ApiKey, workflow_id: &str, body: &[u8]) -> Result<RunResult, Rejection> {
    let not_found = || {
        reject(
            StatusCode::NOT_FOUND,
            "Workflow not found or not published",
            Some("workflow_not_found"),
        )
    };
    let workflow = WORKFLOWS
        .iter()
        .find(|w| w.id == workflow_id)
        .ok_or_else(not_found)?;
    if workflow.behaviour == Behaviour::Unpublished {
        return Err(not_found());
    }
    if !key.has_credits {
        return Err(reject(
            StatusCode::PAYMENT_REQUIRED,
            "No credits remaining",
            Some("invalid_billing"),
        ));
    }
    let vars = parse_variables(body)?;
    let mut values = Vec::new();
    for name in workflow.variables {
        match variable(&vars, name) {
            Some(v) => values.push(v),
            None => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    &format!("Missing input: {name}"),
                    Some("missing_input"),
                ));
            }
        }
    }
    match workflow.behaviour {
        Behaviour::Story => {
            let story = values.first().cloned().unwrap_or_default();
            Ok(RunResult {
                result: format!(
                    "Once upon a time, {story}. And so the tale came to a quiet, happy end."
                ),
                citations: None,
            })
        }
        Behaviour::Research => {
            let topic = values.first().cloned().unwrap_or_default();
            let slug = slugify(&topic);
            let result = json!({
                "topic": topic,
                "findings": [
                    format!("{topic} is an active area of research."),
                    format!("Recent work on {topic} focuses on evaluation and reliability."),
                    format!("Practitioners adopting {topic} report productivity gains."),
                ],
            });
            Ok(RunResult {
                result: result.to_string(),
                citations: Some(vec![
                    format!("https://example.org/research/{slug}"),
                    format!("https://example.org/reviews/{slug}-survey"),
                ]),
            })
        }
        Behaviour::Blocked => Err(reject(
            StatusCode::FORBIDDEN,
            "Request blocked by content policy",
            Some("request_blocked"),
        )),
        Behaviour::Broken | Behaviour::Unpublished => Err(reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Workflow run failed",
            Some("workflow_run_failed"),
        )),
    }
}

async fn run(
    State(shared): State<Arc<AiTutor>>,
    Path(workflow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gated(&shared, &headers, |key| {
        match execute(key, &workflow_id, &body) {
            Ok(run) => {
                let mut reply = json!({ "success": true, "result": run.result });
                if let Some(citations) = run.citations {
                    reply["citations"] = json!(citations);
                }
                json_response(StatusCode::OK, &reply, &[])
            }
            Err(rejection) => rejection.into_response(),
        }
    })
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn token(
    State(shared): State<Arc<AiTutor>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    gated(&shared, &headers, |key| {
        let ttl = match query_param(query.as_deref(), "ttl") {
            None => Some(60),
            Some(raw) => raw.parse::<u64>().ok().filter(|t| TOKEN_TTL.contains(t)),
        };
        let Some(ttl) = ttl else {
            return error(
                StatusCode::BAD_REQUEST,
                "ttl must be an integer between 1 and 300 seconds",
                Some("invalid_ttl"),
            );
        };
        let token = format!("pub_tok_{}", random_hex(24));
        lock(&shared.dialect.tokens).insert(
            token.clone(),
            StreamToken {
                key,
                expires: Instant::now() + Duration::from_secs(ttl),
            },
        );
        json_response(
            StatusCode::OK,
            &json!({ "success": true, "token": token, "ttl": ttl }),
            &[],
        )
    })
}

async fn run_stream(
    State(shared): State<Arc<AiTutor>>,
    Path(workflow_id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    // Single use: the token is consumed whether or not the run succeeds.
    let token = query_param(query.as_deref(), "token")
        .and_then(|t| lock(&shared.dialect.tokens).remove(t))
        .filter(|t| t.expires > Instant::now());
    let Some(StreamToken { key, .. }) = token else {
        return unauthorized(&shared);
    };
    limited(&shared, key, || match execute(key, &workflow_id, &body) {
        Ok(run) => text_stream(&shared, run.result),
        Err(rejection) => rejection.into_response(),
    })
}

/// `text` as a chunked `text/plain` body, one word per chunk (or as the
/// stream controls say: see [`crate::Emulator::hold_stream_tails`] and its
/// neighbours).
fn text_stream(shared: &AiTutor, text: String) -> Response {
    let controls = &shared.streams;
    let chunks: VecDeque<Bytes> = match controls.chunk_bytes.load(Ordering::SeqCst) {
        0 => text
            .split_inclusive(' ')
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect(),
        size => text
            .as_bytes()
            .chunks(size)
            .map(Bytes::copy_from_slice)
            .collect(),
    };
    let state = StreamState {
        chunks,
        sent: 0,
        fail_after: controls.fail_after.load(Ordering::SeqCst),
        hold: controls.hold_tail.subscribe(),
        watch: DropWatch {
            shared: Arc::clone(shared.shared()),
            finished: false,
        },
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        if state.fail_after != 0 && state.sent == state.fail_after {
            // Let the chunks already sent reach the client first.
            tokio::time::sleep(STREAM_CHUNK_DELAY).await;
            state.watch.finish();
            return Some((
                Err(std::io::Error::other("stream cut by the emulator")),
                state,
            ));
        }
        let Some(chunk) = state.chunks.pop_front() else {
            state.watch.finish();
            return None;
        };
        if state.sent > 0 {
            tokio::time::sleep(STREAM_CHUNK_DELAY).await;
        }
        if state.chunks.is_empty() {
            // The tail waits while tests hold it (or the stream is dropped).
            let _ = state.hold.wait_for(|held| !held).await;
        }
        state.sent += 1;
        Some((Ok::<_, std::io::Error>(chunk), state))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// One stream's progress.
struct StreamState {
    chunks: VecDeque<Bytes>,
    sent: usize,
    fail_after: usize,
    hold: tokio::sync::watch::Receiver<bool>,
    watch: DropWatch,
}

/// Counts the stream as dropped when it goes away unfinished.
struct DropWatch {
    shared: Arc<Shared>,
    finished: bool,
}

impl DropWatch {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.streams.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}
