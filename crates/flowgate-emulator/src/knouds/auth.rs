//! Knouds keys: `x-api-key` only, capabilities, a plan tier with its
//! per-window limit, and billing states; the gate every route passes.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::keys;

use super::{Knouds, coded, error};

/// A plan tier; decides the per-window limit and premium-model access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tier {
    Pro,
    Business,
}

impl Tier {
    fn limit(self) -> u32 {
        match self {
            Tier::Pro => 100,
            Tier::Business => 1000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Billing {
    Credits,
    NoCredits,
    TrialExhausted,
}

#[derive(Debug)]
pub(super) struct ApiKey {
    pub(super) secret: &'static str,
    capabilities: &'static [&'static str],
    pub(super) tier: Tier,
    pub(super) billing: Billing,
}

const FULL: &[&str] = &["workflow:run", "workflow:read", "execution:read"];

const KEYS: &[ApiKey] = &[
    ApiKey {
        secret: keys::KNOUDS_KEY,
        capabilities: FULL,
        tier: Tier::Business,
        billing: Billing::Credits,
    },
    ApiKey {
        secret: keys::KNOUDS_KEY_SCOPED,
        capabilities: &["workflow:summarize-text:run"],
        tier: Tier::Business,
        billing: Billing::Credits,
    },
    ApiKey {
        secret: keys::KNOUDS_KEY_NO_CREDITS,
        capabilities: FULL,
        tier: Tier::Business,
        billing: Billing::NoCredits,
    },
    ApiKey {
        secret: keys::KNOUDS_KEY_TRIAL,
        capabilities: FULL,
        tier: Tier::Pro,
        billing: Billing::TrialExhausted,
    },
    ApiKey {
        secret: keys::KNOUDS_KEY_PRO,
        capabilities: FULL,
        tier: Tier::Pro,
        billing: Billing::Credits,
    },
];

impl ApiKey {
    pub(super) fn can(&self, capability: &str) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// Authenticates `x-api-key` (Bearer is not accepted), counts the request
/// against the key's tier window, then runs `handle`.
pub(super) fn gated(
    shared: &Knouds,
    headers: &HeaderMap,
    handle: impl FnOnce(&'static ApiKey) -> Response,
) -> Response {
    let secret = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return coded_401(None);
    };
    if secret.starts_with("knouds_legacy_") {
        return coded_401(Some(secret));
    }
    let Some(key) = KEYS.iter().find(|k| k.secret == secret) else {
        return coded_401(None);
    };
    let rate = shared.dialect.window.hit(key.secret, key.tier.limit());
    rate.respond(
        &rate.headers(),
        rate.retry_after_secs,
        || {
            coded(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded",
                "RATE_LIMIT_EXCEEDED",
            )
        },
        || handle(key),
    )
}

/// [`gated`], then refuses keys without `capability`.
pub(super) fn gated_with(
    shared: &Knouds,
    headers: &HeaderMap,
    capability: &str,
    handle: impl FnOnce(&'static ApiKey) -> Response,
) -> Response {
    gated(shared, headers, |key| {
        if !key.can(capability) {
            return capability_denied(capability);
        }
        handle(key)
    })
}

fn coded_401(legacy: Option<&str>) -> Response {
    match legacy {
        Some(_) => coded(
            StatusCode::UNAUTHORIZED,
            "Legacy API keys are retired",
            "LEGACY_KEY_RETIRED",
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "Invalid or missing API key" }),
        ),
    }
}

pub(super) fn capability_denied(required: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        json!({
            "error": format!("API key lacks the required capability {required}"),
            "code": "CAPABILITY_DENIED",
            "required": required,
        }),
    )
}
