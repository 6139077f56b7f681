//! Declared workflow schemas (`[providers.<name>.workflows."<workflow>"]`).
//!
//! `[schemas]`, the cache of discovered ones, deserializes straight into
//! the engine's [`SchemaCacheSettings`].

use super::*;

/// `[providers.<name>.workflows."<workflow>"]`: a declared input schema.
///
/// The key is the workflow as calls address it: a Knouds slug, an AI Tutor
/// workflow id, or a Fetch Hive `deployment/variant` (one variant) or
/// `deployment` (every variant without its own entry). Declared inputs are
/// enforced exactly like discovered ones; for Knouds they replace discovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSchemaConfig {
    /// Display name returned by GetWorkflowSchema.
    pub name: Option<String>,
    /// Description returned by GetWorkflowSchema.
    pub description: Option<String>,
    /// The inputs; an empty list means the workflow takes none.
    pub inputs: Vec<InputConfig>,
}

/// One declared input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// The input's name.
    pub name: String,
    /// Its JSON type.
    #[serde(rename = "type")]
    pub value_type: InputType,
    /// True when calls must give it (unless it has a default).
    #[serde(default)]
    pub required: bool,
    /// What it is for.
    pub description: Option<String>,
    /// The value the provider uses when it is omitted.
    pub default: Option<Value>,
}

/// The type names accepted for a declared input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// A JSON string.
    String,
    /// A JSON number.
    Number,
    /// A boolean.
    Boolean,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
    /// Any value (not enforced).
    Any,
}

impl From<InputType> for ValueType {
    fn from(kind: InputType) -> Self {
        match kind {
            InputType::String => ValueType::String,
            InputType::Number => ValueType::Number,
            InputType::Boolean => ValueType::Boolean,
            InputType::Array => ValueType::Array,
            InputType::Object => ValueType::Object,
            InputType::Any => ValueType::Any,
        }
    }
}

impl WorkflowSchemaConfig {
    /// The engine's schema.
    pub fn schema(&self) -> WorkflowSchema {
        WorkflowSchema {
            name: self.name.clone(),
            description: self.description.clone(),
            fields: self
                .inputs
                .iter()
                .map(|input| {
                    let value_type = ValueType::from(input.value_type);
                    SchemaField {
                        name: input.name.clone(),
                        value_type,
                        upstream_type: value_type.as_str().to_owned(),
                        required: input.required,
                        default: input.default.clone(),
                        description: input.description.clone(),
                    }
                })
                .collect(),
        }
    }
}

impl Config {
    /// The declared workflow schemas of every provider.
    pub fn declared_schemas(&self) -> DeclaredSchemas {
        let mut declared = DeclaredSchemas::new();
        for (name, provider) in &self.providers {
            for (workflow, schema) in &provider.workflows {
                declared.insert(name.clone(), workflow.clone(), schema.schema());
            }
        }
        declared
    }
}
