//! A string that must never be printed: provider keys, webhook secrets.

use std::fmt;

/// A secret value. `Debug` and `Display` print `[redacted]`; the value is
/// reachable only through [`SecretString::expose`], so every use is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text` with `[redacted]`.
    /// A last line of defence for text that came from elsewhere (an upstream
    /// error message may echo a header back).
    pub fn redact_from(&self, text: &str) -> String {
        if self.0.len() < 4 || !text.contains(&self.0) {
            return text.to_owned();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let secret = SecretString::new("fhk_live_abcdef");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "fhk_live_abcdef");
    }

    #[test]
    fn redacts_echoed_secrets() {
        let secret = SecretString::new("sk_123456");
        assert_eq!(
            secret.redact_from("bad key sk_123456 given"),
            "bad key [redacted] given"
        );
    }
}
