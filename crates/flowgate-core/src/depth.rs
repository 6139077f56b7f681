//! How deep a workflow output may nest.
//!
//! Outputs travel to callers as `google.protobuf.Value`, and protobuf
//! parsers refuse messages nested deeper than 100 levels (the default of the
//! C++/Python/upb runtimes and of prost). Each JSON level costs up to three
//! protobuf levels (a `Value`, its `Struct`, and the `Struct`'s map entry),
//! so a reply is only readable everywhere when the output nests at most
//! [`MAX_OUTPUT_DEPTH`] (32) objects or arrays deep. A deeper output is a
//! vendor answer the gateway cannot deliver: INTERNAL /
//! `UPSTREAM_PROTOCOL_ERROR` (checked once, in the providers' guard, for
//! every dialect's Invoke and status poll), and a callback carrying one is
//! refused as malformed at the webhook ingress.

use serde_json::Value;

/// The deepest nesting of objects and arrays an output may have.
pub const MAX_OUTPUT_DEPTH: usize = 32;

/// True when `value` nests objects and arrays more than `max` levels deep
/// (a scalar is depth 0, `{}` and `[]` depth 1). Iterative, and stops at
/// the first level past `max`.
pub fn exceeds_depth(value: &Value, max: usize) -> bool {
    let mut pending: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        if depth + 1 > max {
            return true;
        }
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!("leaf"), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn depth_counts_containers() {
        assert!(!exceeds_depth(&json!("text"), 0));
        assert!(exceeds_depth(&json!({}), 0));
        assert!(!exceeds_depth(&nested(MAX_OUTPUT_DEPTH), MAX_OUTPUT_DEPTH));
        assert!(exceeds_depth(
            &nested(MAX_OUTPUT_DEPTH + 1),
            MAX_OUTPUT_DEPTH
        ));
        let wide = json!([1, [2, [3]], {"x": [[[]]]}]);
        assert!(!exceeds_depth(&wide, 5));
        assert!(exceeds_depth(&wide, 4));
    }
}
