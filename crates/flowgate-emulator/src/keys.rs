//! API keys seeded into the emulator (the dialects read them, tests and
//! the demo use them), and how a Bearer key is read.

/// Fetch Hive key with credits.
pub const FETCHHIVE_KEY: &str = "fhk_emulator_demo";
/// Fetch Hive key whose workspace has no credits (402 `insufficient_credits`).
pub const FETCHHIVE_KEY_NO_CREDITS: &str = "fhk_emulator_nocredits";
/// AI Tutor key with credits.
pub const AITUTOR_KEY: &str = "sk_emulator_demo";
/// AI Tutor key without credits (402 `invalid_billing`).
pub const AITUTOR_KEY_NO_CREDITS: &str = "sk_emulator_nocredits";
/// Knouds key with `workflow:run`, `workflow:read`, `execution:read`; business tier (1000/min).
pub const KNOUDS_KEY: &str = "knouds_live_emulator_demo";
/// Knouds key with only `workflow:summarize-text:run`.
pub const KNOUDS_KEY_SCOPED: &str = "knouds_live_emulator_scoped";
/// Knouds key without credits (402 `INSUFFICIENT_CREDITS`).
pub const KNOUDS_KEY_NO_CREDITS: &str = "knouds_live_emulator_nocredits";
/// Knouds key whose trial grant is used up (402 `grant_exhausted`).
pub const KNOUDS_KEY_TRIAL: &str = "knouds_live_emulator_trial";
/// Knouds pro-tier key: 100/min, `MODEL_TIER_REQUIRED` on premium workflows.
pub const KNOUDS_KEY_PRO: &str = "knouds_live_emulator_pro";
/// Retired legacy Knouds key (401 `LEGACY_KEY_RETIRED`).
pub const KNOUDS_KEY_LEGACY: &str = "knouds_legacy_emulator";

/// The bearer token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn bearer_parses() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
    }
}
