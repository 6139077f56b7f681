//! What an upstream string may carry out of the gateway.
//!
//! Redaction is done here, in one place below the dialects, the HTTP
//! client and the error builders, for every upstream-derived string
//! (error reason, `X-Request-Id`, messages, the error of a FAILED run), and
//! always BEFORE truncation, so a cut can never leave part of a key behind:
//! - [`redact`] replaces the key and every fragment of it of
//!   [`MIN_FRAGMENT`] or more characters with `[redacted]`;
//! - [`safe_message`] redacts, then truncates to [`MAX_MESSAGE_CHARS`];
//! - [`upstream_reason`] keeps a vendor code only when it is a plain code
//!   token (`[A-Za-z0-9_.-]{1,64}`) with nothing of the key in it, else
//!   `UPSTREAM_ERROR`;
//! - [`upstream_request_id`] keeps a request id only when it is a plain
//!   token of at most 128 characters with nothing of the key in it;
//! - [`also_redacting`] extends all of the above to one more secret (a
//!   single-use token a request carried) for decoding that request's
//!   answer, and [`redact_secret`] redacts such a secret from a message
//!   built elsewhere.

use flowgate_core::reason::Reason;

use flowgate_core::SecretString;

use crate::ProviderSettings;

/// Longest upstream message text carried into an error message.
pub(crate) const MAX_MESSAGE_CHARS: usize = 300;
/// Shortest run of key characters that is redacted wherever it appears
/// (a vendor may echo part of a key; shorter keys are matched whole).
pub(crate) const MIN_FRAGMENT: usize = 10;
/// Longest vendor code kept as an `ErrorInfo` reason.
const MAX_REASON_CHARS: usize = 64;
/// Longest upstream request id kept.
const MAX_REQUEST_ID_CHARS: usize = 128;
/// The reason used when a vendor's code is not a plain code token.
pub const UNREADABLE_REASON: &str = Reason::UpstreamError.as_str();

/// `text` with the provider key (and the key it replaced, after a
/// rotation), and every fragment of them of [`MIN_FRAGMENT`] or more
/// characters, replaced by `[redacted]`.
pub(crate) fn redact(settings: &ProviderSettings, text: &str) -> String {
    let mut text = text.to_owned();
    settings
        .api_key
        .for_each_key(|key| text = redact_key(key, &text));
    text
}

/// `settings` whose redaction also covers `secret` (and every fragment of
/// it of [`MIN_FRAGMENT`] or more characters), before any truncation: for
/// decoding the answer to a request that carried `secret`.
pub(crate) fn also_redacting(
    settings: &ProviderSettings,
    secret: &SecretString,
) -> ProviderSettings {
    ProviderSettings {
        api_key: settings.api_key.also_redacting(secret),
        ..settings.clone()
    }
}

/// `text` with `secret`, and every fragment of it of [`MIN_FRAGMENT`] or
/// more characters, replaced by `[redacted]`.
pub(crate) fn redact_secret(secret: &SecretString, text: &str) -> String {
    redact_key(secret.expose(), text)
}

fn redact_key(key: &str, text: &str) -> String {
    if key.len() < MIN_FRAGMENT {
        return flowgate_core::SecretString::new(key).redact_from(text);
    }
    // Mark every byte of `text` covered by some key fragment (a window of
    // MIN_FRAGMENT bytes; overlapping windows cover longer echoes).
    let mut covered = vec![false; text.len()];
    let mut any = false;
    for start in 0..=key.len() - MIN_FRAGMENT {
        let Some(fragment) = key.get(start..start + MIN_FRAGMENT) else {
            continue;
        };
        for (at, _) in text.match_indices(fragment) {
            covered[at..at + MIN_FRAGMENT].fill(true);
            any = true;
        }
    }
    if !any {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut in_secret = false;
    for (at, ch) in text.char_indices() {
        if covered[at] {
            if !in_secret {
                out.push_str("[redacted]");
                in_secret = true;
            }
        } else {
            in_secret = false;
            out.push(ch);
        }
    }
    out
}

/// The upstream's message made safe for a caller: key redacted first, then
/// truncated to [`MAX_MESSAGE_CHARS`] (marked with `…`).
pub fn safe_message(settings: &ProviderSettings, message: &str) -> String {
    truncate(
        &redact(settings, bounded(settings, message)),
        MAX_MESSAGE_CHARS,
    )
}

/// A prefix of `text` long enough that redacting it and then truncating to
/// [`MAX_MESSAGE_CHARS`] gives the same result as for the whole text (any key
/// occurrence overlapping the kept part lies inside it), so an upstream's
/// megabyte-long message costs no more than a short one.
fn bounded<'a>(settings: &ProviderSettings, text: &'a str) -> &'a str {
    let mut longest_key = 0;
    settings
        .api_key
        .for_each_key(|key| longest_key = longest_key.max(key.chars().count()));
    let limit = MAX_MESSAGE_CHARS + longest_key + 1;
    match text.char_indices().nth(limit) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// True for a plain code token: `[A-Za-z0-9_.-]{1,max}`.
fn is_token(text: &str, max: usize, extra: &[u8]) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') || extra.contains(&b)
        })
}

/// A vendor's code as an `ErrorInfo` reason (also logged): kept when it is
/// a plain code token with nothing of the key in it, else `UPSTREAM_ERROR`.
pub fn upstream_reason(settings: &ProviderSettings, code: &str) -> String {
    if is_token(code, MAX_REASON_CHARS, b"") && redact(settings, code) == code {
        code.to_owned()
    } else {
        UNREADABLE_REASON.to_owned()
    }
}

/// An upstream request id (`X-Request-Id`) as the gateway passes it on:
/// a plain token (`:` allowed) of at most 128 characters with nothing of
/// the key in it; anything else is dropped.
pub(crate) fn upstream_request_id(settings: &ProviderSettings, raw: &str) -> Option<String> {
    let raw = raw.trim();
    (is_token(raw, MAX_REQUEST_ID_CHARS, b":") && redact(settings, raw) == raw)
        .then(|| raw.to_owned())
}
