//! The Knouds schema answer and its normalization into a [`WorkflowSchema`].

use flowgate_core::{SchemaField, ValueType, WorkflowSchema};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
pub(super) struct SchemaBody {
    fields: Vec<SchemaFieldBody>,
    #[serde(default)]
    values: Map<String, Value>,
    name: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct SchemaFieldBody {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    required: bool,
    description: Option<String>,
    default: Option<Value>,
}

impl SchemaBody {
    pub(super) fn normalize(mut self) -> WorkflowSchema {
        let fields = self
            .fields
            .into_iter()
            .map(|field| {
                let upstream_type = field.kind.unwrap_or_default();
                SchemaField {
                    value_type: ValueType::from_upstream(&upstream_type),
                    upstream_type,
                    required: field.required,
                    default: field
                        .default
                        .filter(|value| !value.is_null())
                        .or_else(|| self.values.remove(&field.name))
                        .filter(|value| !value.is_null()),
                    description: field.description.filter(|text| !text.is_empty()),
                    name: field.name,
                }
            })
            .collect();
        WorkflowSchema {
            name: self.name.filter(|text| !text.is_empty()),
            description: self.description.filter(|text| !text.is_empty()),
            fields,
        }
    }
}
