//! The seeded Knouds workflows: slugs, typed input fields with defaults,
//! validation with per-field details, and deterministic results.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{coded, error};

pub(super) fn invalid_slug() -> Response {
    coded(
        StatusCode::BAD_REQUEST,
        "Invalid workflow slug: use lowercase letters, digits and hyphens",
        "INVALID_SLUG",
    )
}

/// `^[a-z0-9]+(-[a-z0-9]+)*$`
pub(super) fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Field types of the Knouds schema; seeded workflows use only some of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    dead_code,
    reason = "the full Knouds type set; seeded workflows use string and number"
)]
pub(super) enum FieldType {
    String,
    Number,
    Boolean,
    Array,
    Object,
}

impl FieldType {
    pub(super) fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Array => "array",
            FieldType::Object => "object",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match self {
            FieldType::String => value.is_string(),
            FieldType::Number => value.is_number(),
            FieldType::Boolean => value.is_boolean(),
            FieldType::Array => value.is_array(),
            FieldType::Object => value.is_object(),
        }
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One field of a workflow's Request Input node.
#[derive(Debug)]
pub(super) struct Field {
    pub(super) name: &'static str,
    kind: FieldType,
    pub(super) required: bool,
    pub(super) description: &'static str,
    /// Default as JSON text.
    default: Option<&'static str>,
}

impl Field {
    pub(super) fn default_value(&self) -> Option<Value> {
        self.default.and_then(|d| serde_json::from_str(d).ok())
    }

    pub(super) fn to_json(&self) -> Value {
        let mut field = json!({
            "name": self.name,
            "type": self.kind.name(),
            "required": self.required,
            "description": self.description,
        });
        if let Some(default) = self.default_value() {
            field["default"] = default;
        }
        field
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Behaviour {
    Summarize,
    RenderVideo,
    Flaky,
    Premium,
    Static,
}

#[derive(Debug)]
pub(super) struct Workflow {
    pub(super) slug: &'static str,
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) fields: &'static [Field],
    pub(super) supports_async: bool,
    pub(super) premium: bool,
    pub(super) cost: f64,
    behaviour: Behaviour,
}

const WORKFLOWS: &[Workflow] = &[
    Workflow {
        slug: "summarize-text",
        name: "Summarize text",
        description: "Summarizes a text to at most max_words words.",
        fields: &[
            Field {
                name: "text",
                kind: FieldType::String,
                required: true,
                description: "Text to summarize",
                default: None,
            },
            Field {
                name: "style",
                kind: FieldType::String,
                required: false,
                description: "Summary style",
                default: Some("\"short\""),
            },
            Field {
                name: "max_words",
                kind: FieldType::Number,
                required: false,
                description: "Upper bound on summary length",
                default: Some("50"),
            },
        ],
        supports_async: false,
        premium: false,
        cost: 0.5,
        behaviour: Behaviour::Summarize,
    },
    Workflow {
        slug: "render-video",
        name: "Render video",
        description: "Renders a short video clip from a prompt.",
        fields: &[
            Field {
                name: "prompt",
                kind: FieldType::String,
                required: true,
                description: "What the clip shows",
                default: None,
            },
            Field {
                name: "duration",
                kind: FieldType::Number,
                required: false,
                description: "Clip length in seconds",
                default: Some("5"),
            },
        ],
        supports_async: true,
        premium: false,
        cost: 12.5,
        behaviour: Behaviour::RenderVideo,
    },
    Workflow {
        slug: "flaky-pipeline",
        name: "Flaky pipeline",
        description: "A pipeline whose model call always times out.",
        fields: &[Field {
            name: "input",
            kind: FieldType::String,
            required: false,
            description: "Anything",
            default: None,
        }],
        supports_async: true,
        premium: false,
        cost: 1.0,
        behaviour: Behaviour::Flaky,
    },
    Workflow {
        slug: "premium-model",
        name: "Premium model",
        description: "Answers a prompt with a model reserved to higher plan tiers.",
        fields: &[Field {
            name: "prompt",
            kind: FieldType::String,
            required: true,
            description: "Question to answer",
            default: None,
        }],
        supports_async: false,
        premium: true,
        cost: 4.0,
        behaviour: Behaviour::Premium,
    },
    Workflow {
        slug: "no-input",
        name: "No input",
        description: "A workflow without a Request Input node.",
        fields: &[],
        supports_async: false,
        premium: false,
        cost: 0.1,
        behaviour: Behaviour::Static,
    },
];

pub(super) fn workflow_by_slug(slug: &str) -> Option<&'static Workflow> {
    WORKFLOWS.iter().find(|w| w.slug == slug)
}

/// Unknown slugs get a 404 without a code.
pub(super) fn workflow_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        json!({ "error": "Workflow not found" }),
    )
}

const FLAKY_MESSAGE: &str = "Provider call failed: upstream model timed out";

/// Checks `inputs` against the workflow's fields and fills in defaults.
pub(super) fn validate_inputs(
    workflow: &Workflow,
    inputs: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<Value>> {
    let mut details = Vec::new();
    for name in inputs.keys() {
        if !workflow.fields.iter().any(|f| f.name == name) {
            details.push(json!({ "field": name, "message": "Unknown field" }));
        }
    }
    let mut resolved = Map::new();
    for field in workflow.fields {
        match inputs.get(field.name).filter(|v| !v.is_null()) {
            Some(value) if field.kind.accepts(value) => {
                resolved.insert(field.name.to_owned(), value.clone());
            }
            Some(value) => details.push(json!({
                "field": field.name,
                "message": format!("Expected {}, got {}", field.kind.name(), json_type_name(value)),
            })),
            None if field.required => {
                details.push(json!({ "field": field.name, "message": "Field is required" }));
            }
            None => {
                if let Some(default) = field.default_value() {
                    resolved.insert(field.name.to_owned(), default);
                }
            }
        }
    }
    if details.is_empty() {
        Ok(resolved)
    } else {
        Err(details)
    }
}

/// The deterministic result of a workflow: `Ok(result)` or `Err(message)`.
pub(super) fn execute(workflow: &Workflow, inputs: &Map<String, Value>) -> Result<Value, String> {
    let text = |name: &str| {
        inputs
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match workflow.behaviour {
        Behaviour::Summarize => {
            let max_words = inputs
                .get("max_words")
                .and_then(Value::as_f64)
                .map_or(50, |n| n.clamp(1.0, 10_000.0) as usize);
            let words: Vec<&str> = inputs
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            let mut summary = words
                .iter()
                .take(max_words)
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            if words.len() > max_words {
                summary.push('…');
            }
            if text("style") == "bullets" {
                summary = format!("• {summary}");
            }
            Ok(json!({ "summary": summary }))
        }
        Behaviour::RenderVideo => {
            let duration = inputs.get("duration").cloned().unwrap_or(Value::Null);
            let digest = Sha256::digest(format!("{}|{duration}", text("prompt")).as_bytes());
            Ok(
                json!({ "url": format!("https://cdn.example/renders/{}.mp4", hex::encode(&digest[..8])) }),
            )
        }
        Behaviour::Flaky => Err(FLAKY_MESSAGE.to_owned()),
        Behaviour::Premium => {
            Ok(json!({ "text": format!("Premium answer to: {}", text("prompt")) }))
        }
        Behaviour::Static => Ok(json!("static output")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_pattern() {
        assert!(valid_slug("summarize-text"));
        assert!(valid_slug("a1"));
        assert!(!valid_slug("Summarize"));
        assert!(!valid_slug("-a"));
        assert!(!valid_slug("a--b"));
        assert!(!valid_slug("a_b"));
        assert!(!valid_slug(""));
    }

    #[test]
    fn inputs_take_defaults_and_report_details() {
        let wf = &WORKFLOWS[0];
        let ok = validate_inputs(wf, json!({"text": "a b c"}).as_object().unwrap()).unwrap();
        assert_eq!(ok["style"], "short");
        assert_eq!(ok["max_words"], 50);
        let err = validate_inputs(wf, json!({"text": 1, "bogus": true}).as_object().unwrap())
            .unwrap_err();
        assert_eq!(err.len(), 2);
    }
}
