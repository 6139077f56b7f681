//! One call to run a workflow, after the edge decoded it.

use serde_json::{Map, Value};

use crate::{CallbackPolicy, FieldViolation, Violations, WorkflowRef};

/// Asynchronous delivery requested by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AsyncDelivery {
    /// Where the completion event should go, if anywhere.
    pub callback_url: Option<String>,
}

/// A call to run one workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    /// The workflow.
    pub workflow: WorkflowRef,
    /// Its inputs (values keep their JSON types).
    pub inputs: Map<String, Value>,
    /// Flat scalar caller metadata.
    pub metadata: Map<String, Value>,
    /// Opaque end-user id.
    pub user: Option<String>,
    /// `Some` for an asynchronous run.
    pub async_delivery: Option<AsyncDelivery>,
    /// Caller-chosen key that makes a retry safe.
    pub idempotency_key: Option<String>,
}

/// Longest accepted metadata key or value string, in bytes.
const MAX_METADATA_TEXT: usize = 1024;
/// Most metadata entries accepted.
const MAX_METADATA_ENTRIES: usize = 64;

impl Invocation {
    /// A synchronous invocation with no inputs or metadata.
    pub fn new(workflow: WorkflowRef) -> Self {
        Self {
            workflow,
            inputs: Map::new(),
            metadata: Map::new(),
            user: None,
            async_delivery: None,
            idempotency_key: None,
        }
    }

    /// Dialect-independent checks: metadata is flat and scalar (Fetch Hive's
    /// documented rule, applied everywhere so callers learn one contract),
    /// and the callback URL, when given, is an absolute http(s) URL.
    /// Bounded like every check (see [`crate::violations`]).
    pub fn validate(&self) -> Violations {
        let mut violations = Violations::new();
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            violations.push(FieldViolation::new(
                "metadata",
                format!("at most {MAX_METADATA_ENTRIES} entries are accepted"),
            ));
        }
        for (key, value) in &self.metadata {
            let field = || format!("metadata.{key}");
            if key.is_empty() || key.len() > MAX_METADATA_TEXT {
                violations.push_with(|| {
                    FieldViolation::new(
                        field(),
                        format!("keys must be 1 to {MAX_METADATA_TEXT} bytes"),
                    )
                });
            }
            match value {
                Value::Object(_) | Value::Array(_) => violations.push_with(|| {
                    FieldViolation::new(
                        field(),
                        "metadata must be flat: only string, number, bool or null values",
                    )
                }),
                Value::String(text) if text.len() > MAX_METADATA_TEXT => {
                    violations.push_with(|| {
                        FieldViolation::new(field(), format!("at most {MAX_METADATA_TEXT} bytes"))
                    });
                }
                _ => {}
            }
        }
        if let Some(url) = self
            .async_delivery
            .as_ref()
            .and_then(|delivery| delivery.callback_url.as_deref())
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            violations.push(FieldViolation::new(
                "async_options.callback_url",
                "must be an absolute http:// or https:// URL",
            ));
        }
        violations
    }

    /// The caller's `callback_url` against the operator's destination
    /// policy (https only, no loopback, link-local, private, unspecified or
    /// metadata IP literal and no `localhost` name, unless allowed; other
    /// host names are resolved by the edge). Checked on the URL the caller
    /// sent, before the gateway substitutes its own ingress URL for a
    /// vendor's callback, for every dialect (Fetch Hive passes the URL on
    /// to the vendor, who then calls it).
    pub fn callback_violations(&self, policy: &CallbackPolicy) -> Vec<FieldViolation> {
        self.async_delivery
            .as_ref()
            .and_then(|delivery| delivery.callback_url.as_deref())
            .and_then(|url| policy.check_url(url).err())
            .map(|why| FieldViolation::new("async_options.callback_url", why))
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_metadata(metadata: Value) -> Invocation {
        let mut invocation = Invocation::new(WorkflowRef::Slug("s".into()));
        if let Value::Object(map) = metadata {
            invocation.metadata = map;
        }
        invocation
    }

    #[test]
    fn flat_scalar_metadata_is_valid() {
        let invocation =
            with_metadata(json!({"customer_id": "cus_1", "seats": 3, "beta": true, "x": null}));
        assert!(invocation.validate().is_empty());
    }

    #[test]
    fn nested_metadata_names_each_field() {
        let invocation = with_metadata(json!({"ok": 1, "plan": {"tier": "pro"}, "tags": ["a"]}));
        let fields: Vec<_> = invocation
            .validate()
            .into_parts()
            .0
            .into_iter()
            .map(|violation| violation.field)
            .collect();
        assert_eq!(fields, vec!["metadata.plan", "metadata.tags"]);
    }

    #[test]
    fn callback_urls_follow_the_policy() {
        let mut invocation = Invocation::new(WorkflowRef::Slug("s".into()));
        let with = |url: &str| AsyncDelivery {
            callback_url: Some(url.into()),
        };
        let strict = CallbackPolicy::strict();
        invocation.async_delivery = Some(with("https://hooks.example.com/cb"));
        assert!(invocation.callback_violations(&strict).is_empty());
        for url in [
            "http://hooks.example.com/cb",
            "https://127.0.0.1:9/cb",
            "https://169.254.169.254/",
        ] {
            invocation.async_delivery = Some(with(url));
            let violations = invocation.callback_violations(&strict);
            assert_eq!(violations.len(), 1, "{url}");
            assert_eq!(violations[0].field, "async_options.callback_url");
        }
        let allowed = CallbackPolicy::new(&["127.0.0.1".into()], true).unwrap();
        invocation.async_delivery = Some(with("http://127.0.0.1:9/cb"));
        assert!(invocation.callback_violations(&allowed).is_empty());
    }

    #[test]
    fn callback_url_must_be_http() {
        let mut invocation = Invocation::new(WorkflowRef::Slug("s".into()));
        invocation.async_delivery = Some(AsyncDelivery {
            callback_url: Some("ftp://x".into()),
        });
        assert_eq!(
            invocation.validate().listed()[0].field,
            "async_options.callback_url"
        );
    }
}
