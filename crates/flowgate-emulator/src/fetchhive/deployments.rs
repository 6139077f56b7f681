//! The seeded Fetch Hive deployments: their variants and Start-step inputs,
//! invoke-body validation, and the deterministic result of each.

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::reply::Rejection;

use super::{invalid, reject};

/// Type of a variable declared on a deployment's Start step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputType {
    Text,
    Array,
}

#[derive(Debug)]
struct StartInput {
    name: &'static str,
    kind: InputType,
    required: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Behaviour {
    Summarize,
    ExtractCompanies,
    HumanInTheLoop,
    FailingStep,
    ModelOutage,
}

#[derive(Debug)]
pub(super) struct Deployment {
    name: &'static str,
    variants: &'static [&'static str],
    inputs: &'static [StartInput],
    pub(super) behaviour: Behaviour,
}

const DEPLOYMENTS: &[Deployment] = &[
    Deployment {
        name: "summarize",
        variants: &["default", "concise"],
        inputs: &[StartInput {
            name: "topic",
            kind: InputType::Text,
            required: true,
        }],
        behaviour: Behaviour::Summarize,
    },
    Deployment {
        name: "company-extractor",
        variants: &["default"],
        inputs: &[StartInput {
            name: "companies",
            kind: InputType::Array,
            required: true,
        }],
        behaviour: Behaviour::ExtractCompanies,
    },
    Deployment {
        name: "approval-flow",
        variants: &["default"],
        inputs: &[],
        behaviour: Behaviour::HumanInTheLoop,
    },
    Deployment {
        name: "failing-flow",
        variants: &["default"],
        inputs: &[],
        behaviour: Behaviour::FailingStep,
    },
    Deployment {
        name: "model-outage",
        variants: &["default"],
        inputs: &[],
        behaviour: Behaviour::ModelOutage,
    },
];

/// The validated parts of an invoke body.
#[derive(Debug)]
pub(super) struct Invocation {
    pub(super) deployment: &'static Deployment,
    variant: String,
    inputs: Map<String, Value>,
    pub(super) callback_url: Option<String>,
}

pub(super) fn parse_invocation(body: &[u8]) -> Result<Invocation, Rejection> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid(
            "Request body must be a JSON object",
            "invalid_request",
        ));
    };
    let (Some(Value::String(deployment)), Some(Value::String(variant))) =
        (body.get("deployment"), body.get("variant"))
    else {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing required field: deployment or variant",
            None,
        ));
    };
    if deployment.is_empty() || variant.is_empty() {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing required field: deployment or variant",
            None,
        ));
    }
    let inputs = match body.get("inputs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(invalid("inputs must be an object", "invalid_request")),
    };
    match body.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if let Some((k, _)) = m.iter().find(|(_, v)| v.is_object() || v.is_array()) {
                return Err(invalid(
                    format!(
                        "metadata must be flat: value of '{k}' must be a string, number, boolean or null"
                    ),
                    "invalid_metadata",
                ));
            }
        }
        Some(_) => {
            return Err(invalid(
                "metadata must be flat: expected an object of scalar values",
                "invalid_metadata",
            ));
        }
    }
    if body
        .get("user")
        .is_some_and(|u| !u.is_string() && !u.is_null())
    {
        return Err(invalid("user must be a string", "invalid_request"));
    }
    let callback_url = match body.get("async") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => match a.get("enabled") {
            Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => match a.get("callback_url") {
                Some(Value::String(url))
                    if url.starts_with("http://") || url.starts_with("https://") =>
                {
                    Some(url.clone())
                }
                Some(Value::String(url)) if !url.is_empty() => {
                    return Err(invalid(
                        "async.callback_url must be an absolute http(s) URL",
                        "invalid_request",
                    ));
                }
                _ => {
                    return Err(invalid(
                        "async.callback_url is required when async is enabled",
                        "invalid_request",
                    ));
                }
            },
            _ => {
                return Err(invalid(
                    "async.enabled must be a boolean",
                    "invalid_request",
                ));
            }
        },
        Some(_) => return Err(invalid("async must be an object", "invalid_request")),
    };
    let Some(deployment) = DEPLOYMENTS
        .iter()
        .find(|d| d.name == deployment && d.variants.contains(&variant.as_str()))
    else {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "Deployment not found",
            Some("not_found"),
        ));
    };
    for input in deployment.inputs {
        match (inputs.get(input.name), input.kind) {
            (None | Some(Value::Null), _) if input.required => {
                return Err(invalid(
                    format!("Missing required input: {}", input.name),
                    "invalid_request",
                ));
            }
            (None | Some(Value::Null), _) | (Some(Value::String(_)), InputType::Text) => {}
            (Some(Value::Array(_)), InputType::Array) => {}
            (Some(_), InputType::Text) => {
                return Err(invalid(
                    format!("Input '{}' must be text (a string)", input.name),
                    "invalid_request",
                ));
            }
            (Some(_), InputType::Array) => {
                return Err(invalid(
                    format!("Input '{}' must be a JSON array", input.name),
                    "invalid_request",
                ));
            }
        }
    }
    Ok(Invocation {
        deployment,
        variant: variant.clone(),
        inputs,
        callback_url,
    })
}

/// How a run ends (decided deterministically at submission).
#[derive(Clone, Debug)]
pub(super) enum RunOutcome {
    Completed(Value),
    Failed(String),
}

/// The deterministic result of running `inv`.
pub(super) fn execute(inv: &Invocation) -> RunOutcome {
    match inv.deployment.behaviour {
        Behaviour::Summarize => {
            let topic = inv
                .inputs
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let text = if inv.variant == "concise" {
                format!("Summary (concise) of {topic}: in short, {topic} matters.")
            } else {
                format!(
                    "Summary ({}) of {topic}: {topic} is moving from experimentation to operational systems with stricter evaluation, governance, and tooling.",
                    inv.variant
                )
            };
            RunOutcome::Completed(json!(text))
        }
        Behaviour::ExtractCompanies => {
            let names: Vec<String> = inv
                .inputs
                .get("companies")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|c| match c {
                            Value::String(s) => s.clone(),
                            other => other
                                .get("name")
                                .and_then(Value::as_str)
                                .map_or_else(|| other.to_string(), str::to_owned),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let count = names.len();
            // The output is a string holding JSON, as Fetch Hive returns it.
            RunOutcome::Completed(json!(
                json!({ "companies": names, "count": count }).to_string()
            ))
        }
        Behaviour::HumanInTheLoop => RunOutcome::Completed(json!("approved")),
        Behaviour::FailingStep => {
            RunOutcome::Failed("Step 2 (LLM) failed: model returned no content".to_owned())
        }
        Behaviour::ModelOutage => RunOutcome::Failed("Model provider failed".to_owned()),
    }
}

pub(super) fn token_estimate(inv: &Invocation) -> u64 {
    let chars = Value::Object(inv.inputs.clone()).to_string().len() as u64;
    40 + chars / 4
}
