//! Upstream request URLs: a provider's base URL parsed once, path segments
//! appended (percent-encoded) per request, and the check every upstream id
//! passes before it goes into a path.

use flowgate_core::GatewayError;

/// Longest upstream id put into a request path.
const MAX_UPSTREAM_ID: usize = 128;

/// True for an upstream id (run, execution) that names one resource when
/// put into a URL path: 1 to 128 characters of `[A-Za-z0-9_.-]`, starting
/// with a letter or digit (so never `.` or `..`, which would address the
/// collection). The floor of every dialect's id check before a status
/// request; a dialect may tighten it ([`crate::Dialect::accepts_run_id`]).
pub(crate) fn is_upstream_id(id: &str) -> bool {
    id.len() <= MAX_UPSTREAM_ID
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A provider's base URL, parsed once; request URLs are made by appending
/// path segments (percent-encoded) to a copy, never by re-parsing text.
#[derive(Clone, Debug)]
pub(crate) struct BaseUrl(Result<reqwest::Url, String>);

impl BaseUrl {
    /// Parses `text` (configuration already checked it; a bad one fails
    /// each call with INTERNAL instead of at start-up).
    pub fn parse(text: &str) -> Self {
        Self(reqwest::Url::parse(text).map_err(|err| err.to_string()))
    }

    /// `base/segment/…[?query]`.
    pub fn join(
        &self,
        segments: &[&str],
        query: Option<&str>,
    ) -> Result<reqwest::Url, GatewayError> {
        // The url crate drops `.` and `..` segments, which would turn a
        // request for one resource into one for its collection.
        if segments
            .iter()
            .any(|segment| segment.is_empty() || *segment == "." || *segment == "..")
        {
            return Err(GatewayError::internal(
                "refusing to build an upstream URL with an empty or dot path segment",
            ));
        }
        let mut url = self.0.clone().map_err(|err| {
            GatewayError::internal(format!("the provider's base_url is invalid: {err}"))
        })?;
        url.path_segments_mut()
            .map_err(|()| GatewayError::internal("the provider's base_url cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        url.set_query(query);
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_take_segments_without_reparsing() {
        let base = BaseUrl::parse("http://127.0.0.1:8700/knouds/");
        let url = base
            .join(&["api", "workflows", "my-flow", "run"], Some("async=true"))
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8700/knouds/api/workflows/my-flow/run?async=true"
        );
        assert_eq!(
            url.path(),
            "/knouds/api/workflows/my-flow/run",
            "the span records no query"
        );
        let odd = BaseUrl::parse("https://api.fetchhive.com/v1")
            .join(&["workflow_runs", "a/b?c"], None)
            .unwrap();
        assert_eq!(
            odd.as_str(),
            "https://api.fetchhive.com/v1/workflow_runs/a%2Fb%3Fc"
        );
        assert!(BaseUrl::parse("not a url").join(&["x"], None).is_err());
    }

    #[test]
    fn upstream_ids_name_one_resource() {
        for good in [
            "3f0c9d1e-0000-4000-8000-000000000000",
            "req_123",
            "42",
            "exec.7",
        ] {
            assert!(is_upstream_id(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "...",
            "-x",
            "a/b",
            "a b",
            "a%2e",
            &"a".repeat(129),
        ] {
            assert!(!is_upstream_id(bad), "{bad}");
        }
        let base = BaseUrl::parse("http://127.0.0.1:1/");
        for segment in [".", "..", ""] {
            assert!(base.join(&["api", "executions", segment], None).is_err());
        }
    }
}
