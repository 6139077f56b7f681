//! Workflow input schemas and their enforcement.
//!
//! A [`WorkflowSchema`] is a workflow's input fields, normalized from
//! whatever the provider publishes (Knouds' schema endpoint) or the operator
//! declares in the configuration (Fetch Hive, AI Tutor, or a Knouds override).
//! [`WorkflowSchema::validate`] checks a call's inputs against it before any
//! paid upstream call: unknown names, wrong JSON types and missing required
//! inputs each become one [`FieldViolation`] on `inputs.<name>`, all at once.
//!
//! Rules, chosen to never refuse a call the provider would accept:
//! - a `null` value counts as omitted (Knouds fills in the default);
//! - a field typed [`ValueType::Any`] accepts every value;
//! - a required field with a default is satisfied by the default;
//! - numbers are one type: integers and fractions both satisfy `number`.

use std::fmt;

use serde_json::{Map, Value};

use crate::{FieldViolation, Violations};

/// The JSON type an input takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A JSON string.
    String,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON array (sent as a native array, never a string).
    Array,
    /// A JSON object.
    Object,
    /// Anything: the provider did not say, or named a type flowgate does not
    /// know. Never enforced.
    Any,
}

impl ValueType {
    /// Every type, in a stable order.
    pub const ALL: [ValueType; 6] = [
        Self::String,
        Self::Number,
        Self::Boolean,
        Self::Array,
        Self::Object,
        Self::Any,
    ];

    /// The configuration name (`string`, `number`, …, `any`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Object => "object",
            Self::Any => "any",
        }
    }

    /// Parses a configuration name exactly.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Reads a provider's type name, accepting common spellings
    /// (`text`, `integer`, `bool`, `list`, `json`, …); anything else is
    /// [`ValueType::Any`], so an unfamiliar type is never enforced.
    pub fn from_upstream(name: &str) -> Self {
        match name.trim().to_ascii_lowercase().as_str() {
            "string" | "str" | "text" | "textarea" | "url" | "email" | "enum" | "select" => {
                Self::String
            }
            "number" | "integer" | "int" | "float" | "double" | "decimal" => Self::Number,
            "boolean" | "bool" | "checkbox" => Self::Boolean,
            "array" | "list" => Self::Array,
            "object" | "json" | "dict" | "map" => Self::Object,
            _ => Self::Any,
        }
    }

    /// True when `value` has this type.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::Array => value.is_array(),
            Self::Object => value.is_object(),
            Self::Any => true,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON type name of a value, for messages.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One input field of a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaField {
    /// The input's name (the key in `inputs`).
    pub name: String,
    /// The JSON type it takes.
    pub value_type: ValueType,
    /// The provider's own name for the type (`string`, `file`, …); for a
    /// declared schema, the configured type.
    pub upstream_type: String,
    /// True when a call must give it (unless it has a default).
    pub required: bool,
    /// The value used when the input is omitted.
    pub default: Option<Value>,
    /// What the input is for.
    pub description: Option<String>,
}

impl SchemaField {
    /// A field of `value_type`, optional, without default or description.
    pub fn new(name: impl Into<String>, value_type: ValueType) -> Self {
        Self {
            name: name.into(),
            value_type,
            upstream_type: value_type.as_str().to_owned(),
            required: false,
            default: None,
            description: None,
        }
    }

    /// Marks the field required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Gives the field a default.
    pub fn with_default(mut self, default: Value) -> Self {
        self.default = Some(default);
        self
    }

    /// True when a call that omits the field must be refused.
    pub fn must_be_given(&self) -> bool {
        self.required && self.default.is_none()
    }
}

/// A workflow's normalized input schema.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkflowSchema {
    /// Display name, when known.
    pub name: Option<String>,
    /// Description, when known.
    pub description: Option<String>,
    /// The input fields, in the provider's order. Empty: the workflow takes
    /// no inputs (every input given is unknown).
    pub fields: Vec<SchemaField>,
}

/// Most field names listed in an "unknown input" message.
const MAX_LISTED_NAMES: usize = 20;

impl WorkflowSchema {
    /// A schema of `fields` without name or description.
    pub fn new(fields: Vec<SchemaField>) -> Self {
        Self {
            name: None,
            description: None,
            fields,
        }
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&SchemaField> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// Checks `inputs`: one violation per unknown name, per value of the
    /// wrong JSON type, and per missing required input without a default.
    /// Empty when the inputs may be sent. See the module docs for the rules.
    /// Bounded: past [`crate::MAX_LISTED_VIOLATIONS`] violations are only
    /// counted, never described.
    pub fn validate(&self, inputs: &Map<String, Value>) -> Violations {
        let mut violations = Violations::new();
        let mut given = 0;
        for (name, value) in inputs {
            match self.field(name) {
                None => violations.push_with(|| {
                    FieldViolation::new(format!("inputs.{name}"), self.unknown_input_message())
                }),
                Some(_) if value.is_null() => {}
                Some(field) => {
                    given += 1;
                    if !field.value_type.accepts(value) {
                        violations.push_with(|| {
                            FieldViolation::new(
                                format!("inputs.{name}"),
                                format!(
                                    "must be a {}, got a {}",
                                    field.value_type,
                                    json_type_name(value)
                                ),
                            )
                        });
                    }
                }
            }
        }
        // Fast path: every field was given a value, so none is missing.
        if given < self.fields.len() {
            for field in &self.fields {
                if field.must_be_given() && inputs.get(&field.name).is_none_or(Value::is_null) {
                    violations.push_with(|| {
                        FieldViolation::new(
                            format!("inputs.{}", field.name),
                            format!("required: a {} with no default", field.value_type),
                        )
                    });
                }
            }
        }
        violations
    }

    fn unknown_input_message(&self) -> String {
        if self.fields.is_empty() {
            return "unknown input: this workflow takes no inputs".to_owned();
        }
        let mut names: Vec<&str> = self
            .fields
            .iter()
            .take(MAX_LISTED_NAMES)
            .map(|field| field.name.as_str())
            .collect();
        if self.fields.len() > MAX_LISTED_NAMES {
            names.push("…");
        }
        format!("unknown input: this workflow accepts {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn schema() -> WorkflowSchema {
        WorkflowSchema::new(vec![
            SchemaField::new("text", ValueType::String).required(),
            SchemaField::new("max_words", ValueType::Number).with_default(json!(50)),
            SchemaField::new("style", ValueType::String)
                .required()
                .with_default(json!("short")),
            SchemaField::new("tags", ValueType::Array),
            SchemaField::new("options", ValueType::Object),
            SchemaField::new("draft", ValueType::Boolean),
            SchemaField::new("extra", ValueType::Any),
        ])
    }

    fn inputs(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    /// The violated fields, sorted (input order depends on serde_json's map).
    fn fields(violations: &Violations) -> Vec<&str> {
        let mut fields: Vec<&str> = violations
            .listed()
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        fields.sort_unstable();
        fields
    }

    #[test]
    fn valid_inputs_pass() {
        let ok = inputs(json!({
            "text": "t", "max_words": 10, "tags": ["a", 1], "options": {"k": 1},
            "draft": false, "extra": [1], "style": null
        }));
        assert!(schema().validate(&ok).is_empty());
        assert!(schema().validate(&inputs(json!({"text": "t"}))).is_empty());
    }

    #[test]
    fn unknown_names_are_violations_listing_the_accepted_ones() {
        let violations = schema().validate(&inputs(json!({"text": "t", "txet": "x"})));
        assert_eq!(fields(&violations), vec!["inputs.txet"]);
        assert!(
            violations.listed()[0]
                .description
                .contains("text, max_words"),
            "{violations:?}"
        );
        let none = WorkflowSchema::new(vec![]).validate(&inputs(json!({"a": 1})));
        assert!(none.listed()[0].description.contains("takes no inputs"));
    }

    #[test]
    fn each_wrong_type_is_named() {
        let violations = schema().validate(&inputs(json!({
            "text": 5, "max_words": "ten", "tags": "a,b", "options": [1], "draft": "yes"
        })));
        assert_eq!(
            fields(&violations),
            vec![
                "inputs.draft",
                "inputs.max_words",
                "inputs.options",
                "inputs.tags",
                "inputs.text"
            ]
        );
        let tags = violations
            .listed()
            .iter()
            .find(|v| v.field == "inputs.tags")
            .unwrap();
        assert_eq!(tags.description, "must be a array, got a string");
    }

    #[test]
    fn missing_required_without_default_is_a_violation() {
        let violations = schema().validate(&inputs(json!({"max_words": 3})));
        assert_eq!(fields(&violations), vec!["inputs.text"]);
        assert!(violations.listed()[0].description.starts_with("required"));
        let null = schema().validate(&inputs(json!({"text": null})));
        assert_eq!(fields(&null), vec!["inputs.text"]);
    }

    #[test]
    fn every_problem_comes_back_at_once() {
        let violations = schema().validate(&inputs(json!({"max_words": "x", "colour": "red"})));
        assert_eq!(
            fields(&violations),
            vec!["inputs.colour", "inputs.max_words", "inputs.text"]
        );
    }

    #[test]
    fn sixty_thousand_unknown_inputs_list_twenty_and_count_the_rest() {
        let many: Map<String, Value> = (0..60_000)
            .map(|index| (format!("unknown{index}"), Value::Null))
            .chain([("text".to_owned(), json!("t"))])
            .collect();
        let violations = schema().validate(&many);
        assert_eq!(violations.listed().len(), crate::MAX_LISTED_VIOLATIONS);
        assert_eq!(violations.len(), 60_000);
    }

    #[test]
    fn upstream_type_names_are_normalized() {
        assert_eq!(ValueType::from_upstream("Integer"), ValueType::Number);
        assert_eq!(ValueType::from_upstream("text"), ValueType::String);
        assert_eq!(ValueType::from_upstream("list"), ValueType::Array);
        assert_eq!(ValueType::from_upstream("file"), ValueType::Any);
        for kind in ValueType::ALL {
            assert_eq!(ValueType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ValueType::parse("strng"), None);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// A violation is reported exactly for the names and values that
        /// break a rule, and never twice for one field.
        #[test]
        fn violations_match_the_rules(
            values in prop::collection::btree_map(
                prop_oneof![Just("text".to_owned()), Just("max_words".to_owned()),
                            Just("tags".to_owned()), Just("draft".to_owned()), "[a-z]{1,6}"],
                json_value(),
                0..6,
            )
        ) {
            let schema = schema();
            let inputs: Map<String, Value> = values.into_iter().collect();
            let violations = schema.validate(&inputs);
            let mut expected = Vec::new();
            for (name, value) in &inputs {
                match schema.field(name) {
                    None => expected.push(format!("inputs.{name}")),
                    Some(field) if !value.is_null() && !field.value_type.accepts(value) => {
                        expected.push(format!("inputs.{name}"));
                    }
                    Some(_) => {}
                }
            }
            if inputs.get("text").is_none_or(Value::is_null) {
                expected.push("inputs.text".to_owned());
            }
            let mut got: Vec<String> = violations.listed().iter().map(|v| v.field.clone()).collect();
            got.sort();
            expected.sort();
            prop_assert_eq!(got, expected);
        }

        /// Inputs built from the schema's own types always pass.
        #[test]
        fn well_typed_inputs_always_pass(text in ".{0,8}", n in any::<i32>(), flag in any::<bool>()) {
            let inputs = inputs(json!({"text": text, "max_words": n, "draft": flag, "tags": [n]}));
            prop_assert!(schema().validate(&inputs).is_empty());
        }
    }
}
