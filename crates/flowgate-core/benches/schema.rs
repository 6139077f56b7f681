//! The per-call cost of schema enforcement: a schema-cache hit plus the
//! validation of a typical 10-field input, as `Gateway::invoke` pays it.
//!
//! `cargo bench -p flowgate-core --bench schema`

use std::hint::black_box;

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use flowgate_core::{
    Deadline, FieldViolation, GatewayError, Invocation, Provider, ProviderKind, RunOutcome,
    SchemaCatalog, SchemaField, SchemaLookup, ValueType, WorkflowRef, WorkflowSchema,
};
use futures::executor::block_on;
use serde_json::{Map, Value, json};

/// A Knouds-like provider whose schema endpoint answers at once.
#[derive(Debug)]
struct Discovering;

#[async_trait]
impl Provider for Discovering {
    fn name(&self) -> &str {
        "kn"
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::Knouds
    }
    fn validate(&self, _: &Invocation) -> Vec<FieldViolation> {
        Vec::new()
    }
    async fn invoke(&self, _: &Invocation, _: Deadline) -> Result<RunOutcome, GatewayError> {
        Ok(RunOutcome::default())
    }
    async fn fetch_schema(
        &self,
        _: &WorkflowRef,
        _: Deadline,
    ) -> Result<Option<WorkflowSchema>, GatewayError> {
        Ok(Some(ten_field_schema()))
    }
}

fn ten_field_schema() -> WorkflowSchema {
    WorkflowSchema::new(vec![
        SchemaField::new("text", ValueType::String).required(),
        SchemaField::new("title", ValueType::String).required(),
        SchemaField::new("language", ValueType::String).with_default(json!("en")),
        SchemaField::new("max_words", ValueType::Number).with_default(json!(50)),
        SchemaField::new("temperature", ValueType::Number),
        SchemaField::new("bullet_points", ValueType::Boolean),
        SchemaField::new("tags", ValueType::Array),
        SchemaField::new("companies", ValueType::Array),
        SchemaField::new("options", ValueType::Object),
        SchemaField::new("extra", ValueType::Any),
    ])
}

fn ten_inputs() -> Map<String, Value> {
    let Value::Object(inputs) = json!({
        "text": "flowgate translates gRPC calls to the REST dialects of workflow vendors",
        "title": "flowgate",
        "language": "en",
        "max_words": 40,
        "temperature": 0.2,
        "bullet_points": true,
        "tags": ["gateway", "grpc"],
        "companies": [{"name": "Fetch Hive"}, {"name": "Knouds"}],
        "options": {"tone": "neutral"},
        "extra": null,
    }) else {
        unreachable!("an object literal")
    };
    inputs
}

fn cache_hit_and_validation(c: &mut Criterion) {
    let catalog = SchemaCatalog::default();
    let provider: std::sync::Arc<dyn flowgate_core::Provider> = std::sync::Arc::new(Discovering);
    let workflow = WorkflowRef::Slug("summarize-text".into());
    let inputs = ten_inputs();
    // Warm the cache: every measured lookup is a hit.
    block_on(catalog.schema(&provider, &workflow, Deadline::NONE));

    c.bench_function("schema cache hit + validate 10 fields", |b| {
        b.iter(|| {
            let lookup = block_on(catalog.schema(
                black_box(&provider),
                black_box(&workflow),
                Deadline::NONE,
            ));
            let SchemaLookup::Found { schema, .. } = lookup else {
                unreachable!("the schema is cached")
            };
            let violations = schema.validate(black_box(&inputs));
            assert!(violations.is_empty());
            violations
        });
    });

    let schema = ten_field_schema();
    c.bench_function("validate 10 fields", |b| {
        b.iter(|| schema.validate(black_box(&inputs)));
    });
    assert_eq!(catalog.stats().misses, 1, "every measured lookup was a hit");
}

criterion_group!(benches, cache_hit_and_validation);
criterion_main!(benches);
