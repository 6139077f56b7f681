//! AI Tutor's streaming endpoint: real-time output as it is generated.
//!
//! Per call: `GET {base}/api/v1/token?ttl=<s>` with the Bearer key returns a
//! single-use `pub_tok_…` token; `POST {base}/api/v1/run/{id}/stream?token=…`
//! with the same flat body as a unary run answers a plain-text stream
//! (`text/plain; charset=utf-8`, not SSE). Error answers are the unary
//! error bodies and go through the same error table.
//!
//! - **The token is a secret.** One per call, with the shortest TTL that
//!   covers what is left of the call's deadline (1 to 300 s), never cached,
//!   reused or logged: it only ever sits in the request's query string,
//!   client spans record the path only, and every error message from the
//!   stream request has it redacted.
//! - **Text is forwarded as it arrives.** Each body chunk becomes one delta
//!   (split at [`MAX_DELTA_BYTES`]); a UTF-8 character split across chunks
//!   is held back (at most 3 bytes) until it is whole; invalid UTF-8 and a
//!   body over [`MAX_STREAM_BYTES`] are `UPSTREAM_PROTOCOL_ERROR`. Nothing
//!   else is buffered: the [`OutputSink`] waits for a slow caller, and while
//!   it waits no more of the body is read.

use std::ops::RangeInclusive;

use flowgate_core::{
    Deadline, GatewayError, Invocation, OutputSink, RunOutcome, RunStatus, SecretString,
    StreamEvent,
};
use serde::Deserialize;

use super::AiTutor;
use crate::{
    dialect::Request,
    errors::{decode_body, protocol_error},
    http::OpenResponse,
    redaction::{also_redacting, redact_secret},
};

/// Largest streamed output accepted (the unary body limit).
pub const MAX_STREAM_BYTES: usize = 16 * 1024 * 1024;
/// Largest delta sent to the caller; a bigger chunk becomes several.
pub const MAX_DELTA_BYTES: usize = 64 * 1024;
/// The token lifetimes AI Tutor accepts, in seconds.
const TOKEN_TTL: RangeInclusive<u64> = 1..=300;
/// Longest token accepted from the token endpoint.
const MAX_TOKEN_BYTES: usize = 512;

#[derive(Deserialize)]
struct TokenBody {
    success: Option<bool>,
    token: Option<String>,
}

/// Runs `invocation` through the streaming endpoint (see the module docs).
pub(super) async fn invoke(
    provider: &AiTutor,
    invocation: &Invocation,
    deadline: Deadline,
    sink: &OutputSink,
) -> Result<RunOutcome, GatewayError> {
    let token = match token(provider, invocation, deadline).await? {
        Ok(token) => token,
        Err(outcome) => return Ok(outcome),
    };
    // An error answer is decoded with the token redacted like the key,
    // before any message is cut to length; messages built outside the
    // decoders (transport failures) are redacted after the fact.
    let redact = |mut error: GatewayError| {
        error.message = redact_secret(&token, &error.message);
        error
    };
    let mut run = provider.invoke_request(invocation)?;
    run.path.push("stream");
    let mut request = provider.upstream(run)?;
    request
        .url
        .query_pairs_mut()
        .append_pair("token", token.expose());
    request.accept = "text/plain";
    let mut open = provider.open(request, deadline).await.map_err(&redact)?;
    if open.status != 200 {
        let settings = also_redacting(provider.settings(), &token);
        let response = open.read_all(&settings).await.map_err(&redact)?;
        return provider
            .decode_run_as(&settings, &response, &invocation.workflow)
            .map_err(redact);
    }
    drop(token);
    forward(provider, &mut open, sink).await?;
    Ok(RunOutcome {
        upstream_request_id: open
            .headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok().map(str::to_owned)),
        status: Some(RunStatus::Completed),
        rate_limit: open.rate_limit,
        ..RunOutcome::default()
    })
}

/// A fresh single-use token, or the outcome of a run the token endpoint
/// already answered for (an error table entry that is a FAILED run).
async fn token(
    provider: &AiTutor,
    invocation: &Invocation,
    deadline: Deadline,
) -> Result<Result<SecretString, RunOutcome>, GatewayError> {
    let settings = provider.settings();
    let ttl = token_ttl(deadline.budget(settings.timeout).as_secs_f64());
    let mut request = provider.upstream(Request::get(vec!["api", "v1", "token"]))?;
    request
        .url
        .query_pairs_mut()
        .append_pair("ttl", &ttl.to_string());
    let response = provider.send_prepared(request, deadline).await?;
    if response.status != 200 {
        return provider
            .decode_run(&response, &invocation.workflow)
            .map(Err);
    }
    let body: TokenBody = decode_body(settings, &response, "a body that is not a token object")?;
    match body.token {
        Some(token)
            if body.success != Some(false)
                && !token.is_empty()
                && token.len() <= MAX_TOKEN_BYTES
                && token.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Ok(SecretString::new(token)))
        }
        _ => Err(protocol_error(
            settings,
            &response,
            "a token answer without a usable token",
        )),
    }
}

/// The whole seconds covering `seconds`, within [`TOKEN_TTL`].
fn token_ttl(seconds: f64) -> u64 {
    // `as` saturates: NaN is 0, a huge budget is u64::MAX; both clamp.
    (seconds.ceil() as u64).clamp(*TOKEN_TTL.start(), *TOKEN_TTL.end())
}

/// Reads the body, sending each piece of text into `sink` as it arrives.
async fn forward(
    provider: &AiTutor,
    open: &mut OpenResponse,
    sink: &OutputSink,
) -> Result<(), GatewayError> {
    let settings = provider.settings();
    sink.send(StreamEvent::Started {
        rate_limit: open.rate_limit.clone(),
    })
    .await?;
    let mut text = Utf8Joiner::default();
    let mut total = 0usize;
    while let Some(chunk) = open.chunk(settings).await? {
        total = total.saturating_add(chunk.len());
        if total > MAX_STREAM_BYTES {
            return Err(open.protocol(
                settings,
                format!(
                    "{} streamed more than {MAX_STREAM_BYTES} bytes",
                    settings.name
                ),
            ));
        }
        for piece in chunk.chunks(MAX_DELTA_BYTES) {
            let delta = text.push(piece).map_err(|()| {
                open.protocol(
                    settings,
                    format!("{} streamed invalid UTF-8", settings.name),
                )
            })?;
            if !delta.is_empty() {
                sink.send(StreamEvent::Delta(delta)).await?;
            }
        }
    }
    if text.pending() {
        return Err(open.protocol(
            settings,
            format!("{}'s stream ended inside a UTF-8 character", settings.name),
        ));
    }
    Ok(())
}

/// Joins UTF-8 text that arrives in arbitrary byte pieces: a character
/// split between pieces is held back (at most 3 bytes) until it is whole.
#[derive(Debug, Default)]
pub struct Utf8Joiner {
    carry: Vec<u8>,
}

impl Utf8Joiner {
    /// The whole characters `piece` completes, in order; `Err` on bytes
    /// that are not UTF-8.
    #[expect(clippy::result_unit_err, reason = "the caller adds the context")]
    pub fn push(&mut self, piece: &[u8]) -> Result<String, ()> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(piece);
        match std::str::from_utf8(&bytes) {
            Ok(_) => String::from_utf8(bytes).map_err(|_| ()),
            // A character cut short at the end: keep its bytes for later.
            Err(error) if error.error_len().is_none() => {
                self.carry = bytes.split_off(error.valid_up_to());
                String::from_utf8(bytes).map_err(|_| ())
            }
            Err(_) => Err(()),
        }
    }

    /// True while part of a character is held back.
    pub fn pending(&self) -> bool {
        !self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stream request's error answer echoing the token, long enough to
    /// be cut to length mid-token: decoded as the stream path decodes it,
    /// no 10-character piece of the token survives, in a call error or a
    /// FAILED run.
    #[test]
    fn an_echoed_token_cut_mid_way_leaves_no_fragment() {
        use crate::{HttpClient, ProviderSettings, http::UpstreamResponse};
        use flowgate_core::{ProviderKind, WorkflowRef};

        let token = SecretString::new("pub_tok_Zx81Qm3Vb7Lp0Rt5Yw2Kd9Hs4Nf6Gj");
        let settings = ProviderSettings::new(
            "at",
            ProviderKind::AiTutor,
            SecretString::new("aitutor_sk_live_0000000000000000"),
        );
        let provider = AiTutor::new(settings, HttpClient::new().unwrap());
        let scoped = also_redacting(provider.settings(), &token);
        let workflow = WorkflowRef::WorkflowId("wf".into());
        let secret = token.expose();
        let leaks =
            |text: &str| (0..=secret.len() - 10).any(|at| text.contains(&secret[at..at + 10]));
        // The cut (300 characters of message) falls inside the token.
        for pad in [270, 280, 290, 299] {
            for (status, code) in [(403, "request_blocked"), (500, "workflow_run_failed")] {
                let body = serde_json::json!({
                    "success": false,
                    "code": code,
                    "error": format!("{} token={secret} was refused", "x".repeat(pad)),
                });
                let response = UpstreamResponse::new(
                    status,
                    http::HeaderMap::new(),
                    bytes::Bytes::from(body.to_string()),
                );
                let message = match provider.decode_run_as(&scoped, &response, &workflow) {
                    Ok(outcome) => outcome.error.unwrap().message,
                    Err(error) => error.message.clone(),
                };
                assert!(!leaks(&message), "pad {pad}, {code}: {message}");
                // Without the token in the redaction, the cut keeps part of it.
                let unscoped =
                    match provider.decode_run_as(provider.settings(), &response, &workflow) {
                        Ok(outcome) => outcome.error.unwrap().message,
                        Err(error) => error.message.clone(),
                    };
                assert!(pad > 283 || leaks(&unscoped), "pad {pad}: {unscoped}");
            }
        }
        assert!(!leaks(&redact_secret(
            &token,
            &format!("{}{secret}", "y".repeat(3))
        )));
    }

    #[test]
    fn ttl_covers_the_deadline_within_the_accepted_range() {
        assert_eq!(token_ttl(0.0), 1);
        assert_eq!(token_ttl(1.2), 2);
        assert_eq!(token_ttl(60.0), 60);
        assert_eq!(token_ttl(310.0), 300);
        assert_eq!(token_ttl(f64::NAN), 1);
    }

    #[test]
    fn a_character_split_across_pieces_arrives_whole() {
        let mut joiner = Utf8Joiner::default();
        let crab = "🦀".as_bytes();
        assert_eq!(joiner.push(&[b'a', crab[0]]).unwrap(), "a");
        assert!(joiner.pending());
        assert_eq!(joiner.push(&crab[1..3]).unwrap(), "");
        assert_eq!(joiner.push(&[crab[3], b'b']).unwrap(), "🦀b");
        assert!(!joiner.pending());
        assert!(joiner.push(&[0xff]).is_err());
    }

    proptest! {
        #[test]
        fn any_split_gives_back_the_text(text in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut joiner = Utf8Joiner::default();
            let mut out = String::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                out.push_str(&joiner.push(&bytes[from..cut]).unwrap());
                from = cut;
            }
            prop_assert!(!joiner.pending());
            prop_assert_eq!(out, text);
        }
    }
}
