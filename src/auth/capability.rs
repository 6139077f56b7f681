//! Capabilities: what a caller may do, parsed once at config load.
//!
//! The grammar (least privilege: a caller has nothing it was not given):
//!
//! | capability | allows |
//! |---|---|
//! | `invoke:<provider>/<workflow>` | Invoke (sync or async) of matching workflows |
//! | `schemas:read` | GetWorkflowSchema of any workflow (= `schemas:*/*`) |
//! | `schemas:<provider>/<workflow>` | GetWorkflowSchema of matching workflows |
//! | `runs:stream` | StreamStatus of the caller's own runs |
//! | `runs:stream-all` | StreamStatus of any run |
//! | `webhooks:verify` | VerifyWebhook |
//!
//! `<provider>` is a configured provider name and `<workflow>` the Fetch Hive
//! deployment name, AI Tutor workflow id or Knouds slug; either may hold `*`
//! globs (any run of characters, e.g. `invoke:knouds/render-*`,
//! `invoke:*/*`). Matching walks the pattern without allocating.

use std::fmt;

/// A `*` glob over a name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Glob(Box<str>);

impl Glob {
    fn parse(text: &str, what: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err(format!("the {what} pattern is empty (use `*` for any)"));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == '/')
        {
            return Err(format!("the {what} pattern holds {bad:?}"));
        }
        Ok(Self(text.into()))
    }

    /// True when `text` matches (`*` is any run of bytes, possibly empty).
    fn matches(&self, text: &str) -> bool {
        let (pattern, text) = (self.0.as_bytes(), text.as_bytes());
        let (mut p, mut t) = (0, 0);
        // Where the last `*` was, and where in `text` it began to match.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some(b'*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&c) if c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        star = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
    }
}

/// `<provider pattern>/<workflow pattern>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    provider: Glob,
    workflow: Glob,
}

impl Scope {
    fn parse(text: &str) -> Result<Self, String> {
        let (provider, workflow) = text
            .split_once('/')
            .ok_or("expected <provider>/<workflow pattern>, e.g. knouds/render-*")?;
        Ok(Self {
            provider: Glob::parse(provider, "provider")?,
            workflow: Glob::parse(workflow, "workflow")?,
        })
    }

    fn any() -> Self {
        Self {
            provider: Glob("*".into()),
            workflow: Glob("*".into()),
        }
    }

    fn matches(&self, provider: &str, workflow: &str) -> bool {
        self.provider.matches(provider) && self.workflow.matches(workflow)
    }
}

/// One capability (see the module docs for the grammar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// `invoke:<provider>/<workflow>`.
    Invoke(Scope),
    /// `schemas:read` or `schemas:<provider>/<workflow>`.
    Schemas(Scope),
    /// `runs:stream`: the caller's own runs.
    StreamOwnRuns,
    /// `runs:stream-all`: any run.
    StreamAllRuns,
    /// `webhooks:verify`.
    VerifyWebhooks,
}

impl Capability {
    /// Parses one capability; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "schemas:read" => return Ok(Self::Schemas(Scope::any())),
            "runs:stream" => return Ok(Self::StreamOwnRuns),
            "runs:stream-all" => return Ok(Self::StreamAllRuns),
            "webhooks:verify" => return Ok(Self::VerifyWebhooks),
            _ => {}
        }
        if let Some(scope) = text.strip_prefix("invoke:") {
            return Scope::parse(scope).map(Self::Invoke);
        }
        if let Some(scope) = text.strip_prefix("schemas:") {
            return Scope::parse(scope).map(Self::Schemas);
        }
        Err(format!(
            "unknown capability {text:?}: expected invoke:<provider>/<workflow>, schemas:read, \
             schemas:<provider>/<workflow>, runs:stream, runs:stream-all or webhooks:verify"
        ))
    }
}

/// The capability a denied call would have needed, for ErrorInfo metadata
/// `required_capability` (written when denied, never on the happy path).
#[derive(Clone, Copy, Debug)]
pub enum Required<'a> {
    /// `invoke:<provider>/<workflow>`.
    Invoke(&'a str, &'a str),
    /// `schemas:<provider>/<workflow>`.
    Schemas(&'a str, &'a str),
    /// `runs:stream`.
    StreamRuns,
    /// `webhooks:verify`.
    VerifyWebhooks,
}

impl fmt::Display for Required<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invoke(provider, workflow) => write!(f, "invoke:{provider}/{workflow}"),
            Self::Schemas(provider, workflow) => write!(f, "schemas:{provider}/{workflow}"),
            Self::StreamRuns => f.write_str("runs:stream"),
            Self::VerifyWebhooks => f.write_str("webhooks:verify"),
        }
    }
}

/// What one caller may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    granted: Vec<Capability>,
    /// Everything (the `unauthenticated` caller of an open gateway).
    all: bool,
}

impl Capabilities {
    /// Exactly `granted`.
    pub fn new(granted: Vec<Capability>) -> Self {
        Self {
            granted,
            all: false,
        }
    }

    /// Every capability.
    pub fn all() -> Self {
        Self {
            granted: Vec::new(),
            all: true,
        }
    }

    fn any(&self, allows: impl Fn(&Capability) -> bool) -> bool {
        self.all || self.granted.iter().any(allows)
    }

    /// May Invoke `workflow` of `provider`.
    pub fn may_invoke(&self, provider: &str, workflow: &str) -> bool {
        self.any(|c| matches!(c, Capability::Invoke(scope) if scope.matches(provider, workflow)))
    }

    /// May read the schema of `workflow` of `provider`.
    pub fn may_read_schema(&self, provider: &str, workflow: &str) -> bool {
        self.any(|c| matches!(c, Capability::Schemas(scope) if scope.matches(provider, workflow)))
    }

    /// May stream its own runs (`runs:stream` or `runs:stream-all`).
    pub fn may_stream_own(&self) -> bool {
        self.any(|c| matches!(c, Capability::StreamOwnRuns | Capability::StreamAllRuns))
    }

    /// May stream any caller's runs.
    pub fn may_stream_all(&self) -> bool {
        self.any(|c| matches!(c, Capability::StreamAllRuns))
    }

    /// May verify webhooks.
    pub fn may_verify_webhooks(&self) -> bool {
        self.any(|c| matches!(c, Capability::VerifyWebhooks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn caps(list: &[&str]) -> Capabilities {
        Capabilities::new(list.iter().map(|c| Capability::parse(c).unwrap()).collect())
    }

    #[test]
    fn grammar() {
        for good in [
            "invoke:knouds/render-*",
            "invoke:*/*",
            "schemas:read",
            "schemas:fh/*",
            "runs:stream",
            "runs:stream-all",
            "webhooks:verify",
        ] {
            assert!(Capability::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "invoke:knouds",
            "invoke:/x",
            "invoke:a/",
            "invoke:a/b/c",
            "invoke:a b/c",
            "schemas:write",
            "runs:*",
            "admin",
            "",
        ] {
            assert!(Capability::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn least_privilege() {
        let ci = caps(&["invoke:knouds/render-*"]);
        assert!(ci.may_invoke("knouds", "render-report"));
        assert!(ci.may_invoke("knouds", "render-"));
        assert!(!ci.may_invoke("knouds", "summarize"));
        assert!(!ci.may_invoke("knouds-eu", "render-report"));
        assert!(!ci.may_read_schema("knouds", "render-report"));
        assert!(!ci.may_stream_own() && !ci.may_stream_all() && !ci.may_verify_webhooks());
        assert!(caps(&["runs:stream-all"]).may_stream_own());
        assert!(!caps(&["runs:stream"]).may_stream_all());
        assert!(caps(&["schemas:read"]).may_read_schema("fh", "x"));
        let all = Capabilities::all();
        assert!(all.may_invoke("a", "b") && all.may_stream_all() && all.may_verify_webhooks());
        assert_eq!(Required::Invoke("kn", "x").to_string(), "invoke:kn/x");
    }

    #[test]
    fn globs() {
        let glob = |p: &str| Glob(p.into());
        assert!(glob("a*b*c").matches("aXXbYYc"));
        assert!(glob("a*b*c").matches("abc"));
        assert!(!glob("a*b*c").matches("acb"));
        assert!(glob("*").matches(""));
        assert!(glob("**x").matches("x"));
        assert!(!glob("x").matches("xx"));
        assert!(glob("*-v2").matches("render-v2-v2"));
    }

    /// A naive recursive matcher, to check the iterative one against.
    fn naive(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
            (Some(a), Some(b)) if a == b => naive(&p[1..], &t[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_the_naive_matcher(p in "[ab*]{0,8}", t in "[ab]{0,10}") {
            prop_assert_eq!(Glob(p.as_str().into()).matches(&t), naive(p.as_bytes(), t.as_bytes()));
        }
    }
}
