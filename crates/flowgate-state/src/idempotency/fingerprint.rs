//! What counts as "the same request": a SHA-256 over a canonical JSON
//! document of everything that shapes the upstream call.

use std::fmt;

use flowgate_core::{Invocation, WorkflowRef, WorkflowTarget};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Version of the canonical document; bumped if its shape ever changes
/// (a stored record under an older version then reads as a different
/// request, never as the same one).
const CANONICAL_VERSION: u64 = 1;

/// SHA-256 of an Invoke's canonical form. Two requests are the same when
/// their hashes are equal.
///
/// Counted (all as the caller sent them, after decoding): the provider name
/// as given in the target (absent and named are different requests, even
/// when the gateway would pick the same provider), the workflow reference
/// (its kind and fields; a Fetch Hive variant left empty differs from one
/// named explicitly), `inputs` and `metadata` as canonical JSON (object keys
/// sorted, no whitespace, numbers as decoded: an integral number is an
/// integer, so `5` and `5.0` are the same), `user`, and the async options
/// (enabled or not, and the callback URL). Not counted: the key itself, the
/// gRPC deadline and any other call metadata.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHash([u8; 32]);

impl RequestHash {
    /// The hash of `target` + `invocation`.
    pub fn of(target: &WorkflowTarget, invocation: &Invocation) -> Self {
        let mut workflow = Map::new();
        match &invocation.workflow {
            WorkflowRef::Deployment { name, variant } => {
                workflow.insert("deployment".into(), Value::String(name.clone()));
                workflow.insert(
                    "variant".into(),
                    variant.clone().map_or(Value::Null, Value::String),
                );
            }
            WorkflowRef::WorkflowId(id) => {
                workflow.insert("workflow_id".into(), Value::String(id.clone()));
            }
            WorkflowRef::Slug(slug) => {
                workflow.insert("slug".into(), Value::String(slug.clone()));
            }
        }
        let delivery = invocation.async_delivery.as_ref().map(|delivery| {
            let mut options = Map::new();
            options.insert(
                "callback_url".into(),
                delivery
                    .callback_url
                    .clone()
                    .map_or(Value::Null, Value::String),
            );
            Value::Object(options)
        });
        let mut document = Map::new();
        document.insert("v".into(), Value::from(CANONICAL_VERSION));
        document.insert(
            "provider".into(),
            target.provider.clone().map_or(Value::Null, Value::String),
        );
        document.insert("workflow".into(), Value::Object(workflow));
        document.insert("inputs".into(), Value::Object(invocation.inputs.clone()));
        document.insert(
            "metadata".into(),
            Value::Object(invocation.metadata.clone()),
        );
        document.insert(
            "user".into(),
            invocation.user.clone().map_or(Value::Null, Value::String),
        );
        document.insert("async".into(), delivery.unwrap_or(Value::Null));
        let mut canonical = String::new();
        write_canonical(&Value::Object(document), &mut canonical);
        Self(Sha256::digest(canonical.as_bytes()).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes (as a store kept them).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for RequestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestHash({})", self.to_hex())
    }
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings and numbers as serde_json writes them. Written out here rather
/// than relying on `serde_json::Map` being sorted (a `preserve_order`
/// feature anywhere in the build would silently change that).
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgate_core::AsyncDelivery;
    use serde_json::json;

    fn request(inputs: Value) -> (WorkflowTarget, Invocation) {
        let workflow = WorkflowRef::Slug("summarize".into());
        let mut invocation = Invocation::new(workflow.clone());
        if let Value::Object(map) = inputs {
            invocation.inputs = map;
        }
        invocation.idempotency_key = Some("k".into());
        let target = WorkflowTarget {
            provider: Some("kn".into()),
            workflow,
        };
        (target, invocation)
    }

    fn hash(parts: &(WorkflowTarget, Invocation)) -> RequestHash {
        RequestHash::of(&parts.0, &parts.1)
    }

    #[test]
    fn key_order_does_not_matter_but_values_do() {
        let a = request(json!({"a": 1, "b": {"y": [1, 2], "x": "t"}}));
        let b = request(json!({"b": {"x": "t", "y": [1, 2]}, "a": 1}));
        assert_eq!(hash(&a), hash(&b));
        let c = request(json!({"a": 1, "b": {"x": "t", "y": [2, 1]}}));
        assert_ne!(hash(&a), hash(&c));
        let d = request(json!({"a": "1", "b": {"x": "t", "y": [1, 2]}}));
        assert_ne!(hash(&a), hash(&d));
    }

    #[test]
    fn every_counted_field_changes_the_hash() {
        let base = request(json!({"a": 1}));
        let mut seen = vec![hash(&base)];
        let mut provider = base.clone();
        provider.0.provider = None;
        let mut workflow = base.clone();
        workflow.1.workflow = WorkflowRef::Slug("other".into());
        let mut metadata = base.clone();
        metadata.1.metadata.insert("m".into(), json!(1));
        let mut user = base.clone();
        user.1.user = Some("u".into());
        let mut asynchronous = base.clone();
        asynchronous.1.async_delivery = Some(AsyncDelivery::default());
        let mut callback = asynchronous.clone();
        callback.1.async_delivery = Some(AsyncDelivery {
            callback_url: Some("https://x.example/cb".into()),
        });
        for changed in [provider, workflow, metadata, user, asynchronous, callback] {
            let hash = hash(&changed);
            assert!(!seen.contains(&hash), "{changed:?}");
            seen.push(hash);
        }
    }

    #[test]
    fn the_key_itself_is_not_counted() {
        let a = request(json!({"a": 1}));
        let mut b = a.clone();
        b.1.idempotency_key = Some("other".into());
        assert_eq!(hash(&a), hash(&b));
        assert_eq!(hash(&a).to_hex().len(), 64);
    }
}
