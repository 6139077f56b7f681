//! The catalog's tests: single-flight fetches, per-answer lifetimes,
//! declared schemas and caller deadlines, against a fake provider.

use super::*;
use crate::{FieldViolation, Invocation, ProviderKind, RunOutcome, SchemaField, ValueType};
use async_trait::async_trait;
use std::sync::atomic::AtomicUsize;

/// A Knouds-like provider whose schema endpoint answers by slug:
/// `missing` is unknown, `broken` fails, anything else has one field.
#[derive(Debug, Default)]
struct Fake {
    fetches: AtomicUsize,
}

/// Yields once, so concurrent lookups overlap on one executor.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

#[async_trait]
impl Provider for Fake {
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
        workflow: &WorkflowRef,
        _: Deadline,
    ) -> Result<Option<WorkflowSchema>, GatewayError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        yield_now().await;
        match workflow.label().as_str() {
            "missing" => Err(GatewayError::not_found(
                "WORKFLOW_NOT_FOUND",
                "knouds.workflow",
                "missing",
                "no such workflow",
            )),
            "broken" => Err(GatewayError::new(
                ErrorClass::Unavailable,
                "UPSTREAM_UNREACHABLE",
                "down",
            )),
            _ => Ok(Some(WorkflowSchema::new(vec![
                SchemaField::new("text", ValueType::String).required(),
            ]))),
        }
    }
}

fn as_dyn<P: Provider + 'static>(provider: &Arc<P>) -> Arc<dyn Provider> {
    Arc::clone(provider) as Arc<dyn Provider>
}

fn slug(slug: &str) -> WorkflowRef {
    WorkflowRef::Slug(slug.into())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

#[test]
fn concurrent_misses_fetch_once() {
    let catalog = SchemaCatalog::default();
    let provider = Arc::new(Fake::default());
    let workflow = slug("summarize");
    let shared = as_dyn(&provider);
    let lookups = (0..1000).map(|_| catalog.schema(&shared, &workflow, Deadline::NONE));
    let results = block_on(futures::future::join_all(lookups));
    assert!(
        results
            .iter()
            .all(|r| matches!(r, SchemaLookup::Found { .. }))
    );
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);
    let stats = catalog.stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.hits + stats.misses, 1000);
}

#[test]
fn hits_after_the_first_fetch_and_invalidation_refetches() {
    let catalog = SchemaCatalog::default();
    let provider = Arc::new(Fake::default());
    let workflow = slug("summarize");
    block_on(catalog.schema(&as_dyn(&provider), &workflow, Deadline::NONE));
    block_on(catalog.schema(&as_dyn(&provider), &workflow, Deadline::NONE));
    assert_eq!((catalog.stats().hits, catalog.stats().misses), (1, 1));
    block_on(catalog.invalidate("kn", &workflow));
    block_on(catalog.schema(&as_dyn(&provider), &workflow, Deadline::NONE));
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);
    assert_eq!(catalog.stats().invalidations, 1);
}

#[test]
fn unknown_and_failed_fetches_are_remembered_apart() {
    let catalog = SchemaCatalog::default();
    let provider = Arc::new(Fake::default());
    for _ in 0..3 {
        let missing =
            block_on(catalog.schema(&as_dyn(&provider), &slug("missing"), Deadline::NONE));
        assert!(matches!(missing, SchemaLookup::UnknownWorkflow(_)));
        let broken = block_on(catalog.schema(&as_dyn(&provider), &slug("broken"), Deadline::NONE));
        assert!(matches!(broken, SchemaLookup::Unavailable(_)));
    }
    let stats = catalog.stats();
    assert_eq!(
        (stats.fetches, stats.fetch_failures, stats.unknown_workflows),
        (2, 1, 1)
    );
}

#[test]
fn entries_expire_after_their_ttl() {
    let settings = SchemaCacheSettings {
        ttl: Duration::from_millis(50),
        ..SchemaCacheSettings::default()
    };
    let catalog = SchemaCatalog::new(settings, DeclaredSchemas::new());
    let provider = Arc::new(Fake::default());
    block_on(catalog.schema(&as_dyn(&provider), &slug("a"), Deadline::NONE));
    std::thread::sleep(Duration::from_millis(120));
    block_on(catalog.schema(&as_dyn(&provider), &slug("a"), Deadline::NONE));
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);
}

#[test]
fn declared_schemas_win_and_never_fetch() {
    let mut declared = DeclaredSchemas::new();
    declared.insert("kn", "summarize", WorkflowSchema::default());
    let catalog = SchemaCatalog::new(SchemaCacheSettings::default(), declared);
    let provider = Arc::new(Fake::default());
    let lookup = block_on(catalog.schema(&as_dyn(&provider), &slug("summarize"), Deadline::NONE));
    assert!(matches!(
        lookup,
        SchemaLookup::Found {
            source: SchemaSource::Declared,
            ..
        }
    ));
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 0);
    assert_eq!(catalog.stats().declared, 1);
}

#[derive(Debug)]
struct Hive(Option<&'static str>);

#[async_trait]
impl Provider for Hive {
    fn name(&self) -> &str {
        "fh"
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::FetchHive
    }
    fn validate(&self, _: &Invocation) -> Vec<FieldViolation> {
        Vec::new()
    }
    async fn invoke(&self, _: &Invocation, _: Deadline) -> Result<RunOutcome, GatewayError> {
        Ok(RunOutcome::default())
    }
    fn default_variant(&self) -> Option<&str> {
        self.0
    }
}

#[test]
fn deployment_keys_prefer_the_variant_then_the_deployment() {
    let named = |name: &str| WorkflowSchema {
        name: Some(name.into()),
        ..WorkflowSchema::default()
    };
    let mut declared = DeclaredSchemas::new();
    declared.insert("fh", "summarize/concise", named("concise"));
    declared.insert("fh", "summarize", named("any"));
    let catalog = SchemaCatalog::new(SchemaCacheSettings::default(), declared);
    let name_of = |provider: Hive, variant: Option<&str>| {
        let provider: Arc<dyn Provider> = Arc::new(provider);
        let workflow = WorkflowRef::Deployment {
            name: "summarize".into(),
            variant: variant.map(str::to_owned),
        };
        match block_on(catalog.schema(&provider, &workflow, Deadline::NONE)) {
            SchemaLookup::Found { schema, .. } => schema.name.clone(),
            _ => None,
        }
    };
    assert_eq!(
        name_of(Hive(None), Some("concise")).as_deref(),
        Some("concise")
    );
    assert_eq!(name_of(Hive(None), Some("long")).as_deref(), Some("any"));
    assert_eq!(name_of(Hive(None), None).as_deref(), Some("any"));
    assert_eq!(
        name_of(Hive(Some("concise")), None).as_deref(),
        Some("concise")
    );
}

/// Knouds-like, with a schema endpoint that takes a second and honours
/// the deadline it is given (answering DEADLINE_EXCEEDED when cut).
#[derive(Debug, Default)]
struct Slow {
    fetches: AtomicUsize,
}

const SLOW_FETCH: Duration = Duration::from_secs(1);

#[async_trait]
impl Provider for Slow {
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
        deadline: Deadline,
    ) -> Result<Option<WorkflowSchema>, GatewayError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let wait = deadline.budget(SLOW_FETCH);
        tokio::time::sleep(wait).await;
        if wait < SLOW_FETCH {
            return Err(GatewayError::new(
                ErrorClass::DeadlineExceeded,
                "UPSTREAM_TIMEOUT",
                "cut short",
            ));
        }
        Ok(Some(WorkflowSchema::new(vec![SchemaField::new(
            "text",
            ValueType::String,
        )])))
    }
}

#[tokio::test(start_paused = true)]
async fn a_short_caller_deadline_never_turns_validation_off_for_others() {
    let catalog = SchemaCatalog::default();
    let provider = Arc::new(Slow::default());
    let workflow = slug("summarize");
    let impatient = catalog
        .schema(
            &as_dyn(&provider),
            &workflow,
            Deadline::after(Duration::from_millis(100)),
        )
        .await;
    let SchemaLookup::Unavailable(error) = impatient else {
        panic!("the impatient caller stops waiting: {impatient:?}");
    };
    assert_eq!(error.class, ErrorClass::DeadlineExceeded);
    assert_eq!(error.reason, "SCHEMA_FETCH_PENDING");
    // The next caller joins the same fetch, which ran on under the
    // fetch timeout and found the schema.
    let patient = catalog
        .schema(
            &as_dyn(&provider),
            &workflow,
            Deadline::after(Duration::from_secs(10)),
        )
        .await;
    assert!(matches!(patient, SchemaLookup::Found { .. }), "{patient:?}");
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(catalog.stats().fetch_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_nobody_waits_for_still_caches_its_answer() {
    let catalog = SchemaCatalog::default();
    let provider = Arc::new(Slow::default());
    let workflow = slug("summarize");
    let impatient = catalog
        .schema(
            &as_dyn(&provider),
            &workflow,
            Deadline::after(Duration::from_millis(10)),
        )
        .await;
    assert!(matches!(impatient, SchemaLookup::Unavailable(_)));
    tokio::time::sleep(SLOW_FETCH * 2).await;
    let later = catalog
        .schema(&as_dyn(&provider), &workflow, Deadline::NONE)
        .await;
    assert!(matches!(later, SchemaLookup::Found { .. }), "{later:?}");
    assert_eq!(catalog.stats().hits, 1, "answered from the cache");
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_fetch_timeout_still_bounds_the_fetch_and_its_failure_is_cached() {
    let settings = SchemaCacheSettings {
        fetch_timeout: Duration::from_millis(200),
        ..SchemaCacheSettings::default()
    };
    let catalog = SchemaCatalog::new(settings, DeclaredSchemas::new());
    let provider = Arc::new(Slow::default());
    let workflow = slug("summarize");
    for _ in 0..2 {
        let lookup = catalog
            .schema(&as_dyn(&provider), &workflow, Deadline::NONE)
            .await;
        let SchemaLookup::Unavailable(error) = lookup else {
            panic!("the endpoint is slower than the fetch timeout: {lookup:?}");
        };
        assert_eq!(error.reason, "UPSTREAM_TIMEOUT");
    }
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1, "failure cached");
}
