//! The schema catalog: where a workflow's [`WorkflowSchema`] comes from,
//! and the moka cache in front of providers' schema endpoints.
//!
//! Lookup order for a (provider, workflow):
//! 1. a schema **declared** in the configuration ([`DeclaredSchemas`]): for
//!    dialects without a schema endpoint, or to override discovery;
//! 2. the **cache** of discovered schemas, keyed by provider name and
//!    workflow label, bounded by `capacity`;
//! 3. on a miss, one **fetch** through [`Provider::fetch_schema`]. Loading
//!    is single-flight (moka `get_with`): however many calls miss the same
//!    key at once, one request goes upstream and every caller gets its
//!    answer.
//!
//! Every answer is cached with its own lifetime: a schema (or "this dialect
//! publishes none") for `ttl`; an unknown workflow (404) for `negative_ttl`;
//! a failed fetch (timeout, 5xx, 403 without `workflow:read`, …) for
//! `failure_ttl`, so an unhealthy schema endpoint costs one slow fetch per
//! `failure_ttl`, not one per call. A failed fetch never blocks a call: the
//! gateway sends it unvalidated, and the failure is logged (warn, with
//! provider, workflow and reason) and counted. The gateway
//! [invalidates](SchemaCatalog::invalidate) an entry when the upstream
//! rejects inputs the cached schema accepted.
//!
//! Hits and misses are `tracing` debug events with `schema_cache = "hit"`
//! or `"miss"`, and counters in [`SchemaCatalog::stats`].

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use moka::{Expiry, future::Cache};

use crate::{Deadline, ErrorClass, GatewayError, Provider, WorkflowRef, WorkflowSchema};

/// Cache sizing and lifetimes (`[schemas]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaCacheSettings {
    /// How long a fetched schema is trusted. Default 5 minutes.
    pub ttl: Duration,
    /// Most (provider, workflow) entries kept. Default 10,000.
    pub capacity: u64,
    /// How long "no such workflow" (404) is remembered. Default 30 s.
    pub negative_ttl: Duration,
    /// How long a failed fetch is remembered, during which calls go
    /// unvalidated without retrying it. Default 10 s.
    pub failure_ttl: Duration,
    /// Longest a schema fetch may take (the caller's deadline may cut it
    /// shorter). Default 5 s.
    pub fetch_timeout: Duration,
}

impl Default for SchemaCacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            capacity: 10_000,
            negative_ttl: Duration::from_secs(30),
            failure_ttl: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Schemas declared in the configuration, per provider and workflow key.
///
/// Workflow keys are the label a call's target has: the Knouds slug, the AI
/// Tutor workflow id, or for Fetch Hive `deployment/variant` (one variant)
/// or `deployment` (every variant without a more specific entry).
#[derive(Clone, Debug, Default)]
pub struct DeclaredSchemas {
    by_provider: HashMap<String, HashMap<String, Arc<WorkflowSchema>>>,
}

impl DeclaredSchemas {
    /// No declared schemas.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `schema` for `workflow` (a key as described above) of
    /// `provider`.
    pub fn insert(
        &mut self,
        provider: impl Into<String>,
        workflow: impl Into<String>,
        schema: WorkflowSchema,
    ) {
        self.by_provider
            .entry(provider.into())
            .or_default()
            .insert(workflow.into(), Arc::new(schema));
    }

    /// True when nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.by_provider.values().all(HashMap::is_empty)
    }

    /// The declared schema for `workflow` on `provider`, the most specific
    /// key first.
    fn get(&self, provider: &dyn Provider, workflow: &WorkflowRef) -> Option<Arc<WorkflowSchema>> {
        let declared = self.by_provider.get(provider.name())?;
        let found = match workflow {
            WorkflowRef::Deployment { name, variant } => {
                let variant = variant
                    .as_deref()
                    .filter(|variant| !variant.is_empty())
                    .or(provider.default_variant());
                variant
                    .and_then(|variant| declared.get(&format!("{name}/{variant}")))
                    .or_else(|| declared.get(name))
            }
            WorkflowRef::WorkflowId(id) => declared.get(id),
            WorkflowRef::Slug(slug) => declared.get(slug),
        };
        found.cloned()
    }
}

/// Where a schema came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaSource {
    /// Declared in the configuration.
    Declared,
    /// Fetched from the provider's schema endpoint (possibly cached).
    Discovered,
}

/// What the catalog knows about one workflow's inputs.
#[derive(Clone, Debug)]
pub enum SchemaLookup {
    /// The schema.
    Found {
        /// The schema.
        schema: Arc<WorkflowSchema>,
        /// Declared or discovered.
        source: SchemaSource,
    },
    /// The provider says the workflow does not exist (NOT_FOUND, with a
    /// resource).
    UnknownWorkflow(Arc<GatewayError>),
    /// The dialect publishes no schema endpoint and none is declared:
    /// nothing is assumed.
    NotPublished,
    /// Fetching the schema failed; calls go ahead unvalidated.
    Unavailable(Arc<GatewayError>),
}

/// A snapshot of the catalog's counters (monotonic since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchemaCacheStats {
    /// Lookups answered by the cache.
    pub hits: u64,
    /// Lookups that found nothing cached (and waited for a fetch, theirs
    /// or a concurrent caller's).
    pub misses: u64,
    /// Fetches sent to providers' schema endpoints.
    pub fetches: u64,
    /// Fetches that failed (not counting unknown workflows).
    pub fetch_failures: u64,
    /// Fetches that found the workflow unknown (404).
    pub unknown_workflows: u64,
    /// Lookups answered from declared schemas.
    pub declared: u64,
    /// Entries dropped because the upstream rejected inputs.
    pub invalidations: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    unknown_workflows: AtomicU64,
    declared: AtomicU64,
    invalidations: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One cached answer. Clones are cheap (Arcs).
#[derive(Clone, Debug)]
enum Cached {
    Found(Arc<WorkflowSchema>),
    NotPublished,
    Unknown(Arc<GatewayError>),
    Failed(Arc<GatewayError>),
}

impl From<Cached> for SchemaLookup {
    fn from(cached: Cached) -> Self {
        match cached {
            Cached::Found(schema) => SchemaLookup::Found {
                schema,
                source: SchemaSource::Discovered,
            },
            Cached::NotPublished => SchemaLookup::NotPublished,
            Cached::Unknown(error) => SchemaLookup::UnknownWorkflow(error),
            Cached::Failed(error) => SchemaLookup::Unavailable(error),
        }
    }
}

/// Per-entry lifetimes: each kind of answer is trusted for its own time.
struct EntryLifetimes(SchemaCacheSettings);

type CacheKey = (String, String);

impl Expiry<CacheKey, Cached> for EntryLifetimes {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Cached,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Cached::Found(_) | Cached::NotPublished => self.0.ttl,
            Cached::Unknown(_) => self.0.negative_ttl,
            Cached::Failed(_) => self.0.failure_ttl,
        })
    }
}

/// Declared schemas plus the cache of discovered ones. See the module docs.
pub struct SchemaCatalog {
    settings: SchemaCacheSettings,
    declared: DeclaredSchemas,
    cache: Cache<CacheKey, Cached>,
    counters: Counters,
    observer: Option<SchemaCacheObserver>,
}

/// Told of every cache lookup: the provider name and whether it hit (for
/// metrics exporters; the engine itself stays free of them).
pub type SchemaCacheObserver = Arc<dyn Fn(&str, bool) + Send + Sync>;

impl fmt::Debug for SchemaCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaCatalog")
            .field("settings", &self.settings)
            .field("declared", &self.declared)
            .field("cached_entries", &self.cache.entry_count())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for SchemaCatalog {
    fn default() -> Self {
        Self::new(SchemaCacheSettings::default(), DeclaredSchemas::new())
    }
}

impl SchemaCatalog {
    /// A catalog with `settings` and the `declared` schemas.
    pub fn new(settings: SchemaCacheSettings, declared: DeclaredSchemas) -> Self {
        let cache = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(EntryLifetimes(settings))
            .build();
        Self {
            settings,
            declared,
            cache,
            counters: Counters::default(),
            observer: None,
        }
    }

    /// Reports every cache hit and miss to `observer`.
    pub fn with_observer(mut self, observer: SchemaCacheObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The cache settings.
    pub fn settings(&self) -> &SchemaCacheSettings {
        &self.settings
    }

    /// The schema of `workflow` on `provider`: declared, cached, or fetched
    /// once (single-flight) within `deadline` and the fetch timeout.
    pub async fn schema(
        &self,
        provider: &dyn Provider,
        workflow: &WorkflowRef,
        deadline: Deadline,
    ) -> SchemaLookup {
        if let Some(schema) = self.declared.get(provider, workflow) {
            bump(&self.counters.declared);
            tracing::debug!(
                provider = provider.name(),
                workflow = %workflow.label(),
                schema_source = "declared",
                "schema lookup"
            );
            return SchemaLookup::Found {
                schema,
                source: SchemaSource::Declared,
            };
        }
        let key = (provider.name().to_owned(), workflow.label());
        if let Some(cached) = self.cache.get(&key).await {
            bump(&self.counters.hits);
            if let Some(observer) = &self.observer {
                observer(&key.0, true);
            }
            tracing::debug!(
                provider = %key.0,
                workflow = %key.1,
                schema_cache = "hit",
                "schema lookup"
            );
            return cached.into();
        }
        bump(&self.counters.misses);
        if let Some(observer) = &self.observer {
            observer(&key.0, false);
        }
        tracing::debug!(
            provider = %key.0,
            workflow = %key.1,
            schema_cache = "miss",
            "schema lookup"
        );
        let deadline = deadline.earlier(Deadline::after(self.settings.fetch_timeout));
        self.cache
            .get_with(key, self.fetch(provider, workflow, deadline))
            .await
            .into()
    }

    /// Forgets what is cached for `workflow` on `provider` (the schema may
    /// have changed upstream); the next lookup fetches again.
    pub async fn invalidate(&self, provider: &str, workflow: &WorkflowRef) {
        let key = (provider.to_owned(), workflow.label());
        if self.cache.remove(&key).await.is_some() {
            bump(&self.counters.invalidations);
            tracing::debug!(
                provider,
                workflow = %key.1,
                "schema cache entry invalidated: the upstream rejected the inputs"
            );
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SchemaCacheStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        SchemaCacheStats {
            hits: read(&c.hits),
            misses: read(&c.misses),
            fetches: read(&c.fetches),
            fetch_failures: read(&c.fetch_failures),
            unknown_workflows: read(&c.unknown_workflows),
            declared: read(&c.declared),
            invalidations: read(&c.invalidations),
        }
    }

    async fn fetch(
        &self,
        provider: &dyn Provider,
        workflow: &WorkflowRef,
        deadline: Deadline,
    ) -> Cached {
        bump(&self.counters.fetches);
        match provider.fetch_schema(workflow, deadline).await {
            Ok(Some(schema)) => Cached::Found(Arc::new(schema)),
            Ok(None) => Cached::NotPublished,
            Err(error) if error.class == ErrorClass::NotFound && error.resource.is_some() => {
                bump(&self.counters.unknown_workflows);
                Cached::Unknown(Arc::new(error))
            }
            Err(error) => {
                bump(&self.counters.fetch_failures);
                tracing::warn!(
                    provider = provider.name(),
                    workflow = %workflow.label(),
                    reason = %error.reason,
                    error_class = error.class.as_str(),
                    "schema fetch failed: calls go ahead unvalidated"
                );
                Cached::Failed(Arc::new(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn slug(slug: &str) -> WorkflowRef {
        WorkflowRef::Slug(slug.into())
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        futures::executor::block_on(future)
    }

    #[test]
    fn concurrent_misses_fetch_once() {
        let catalog = SchemaCatalog::default();
        let provider = Fake::default();
        let workflow = slug("summarize");
        let lookups = (0..1000).map(|_| catalog.schema(&provider, &workflow, Deadline::NONE));
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
        let provider = Fake::default();
        let workflow = slug("summarize");
        block_on(catalog.schema(&provider, &workflow, Deadline::NONE));
        block_on(catalog.schema(&provider, &workflow, Deadline::NONE));
        assert_eq!((catalog.stats().hits, catalog.stats().misses), (1, 1));
        block_on(catalog.invalidate("kn", &workflow));
        block_on(catalog.schema(&provider, &workflow, Deadline::NONE));
        assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(catalog.stats().invalidations, 1);
    }

    #[test]
    fn unknown_and_failed_fetches_are_remembered_apart() {
        let catalog = SchemaCatalog::default();
        let provider = Fake::default();
        for _ in 0..3 {
            let missing = block_on(catalog.schema(&provider, &slug("missing"), Deadline::NONE));
            assert!(matches!(missing, SchemaLookup::UnknownWorkflow(_)));
            let broken = block_on(catalog.schema(&provider, &slug("broken"), Deadline::NONE));
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
        let provider = Fake::default();
        block_on(catalog.schema(&provider, &slug("a"), Deadline::NONE));
        std::thread::sleep(Duration::from_millis(120));
        block_on(catalog.schema(&provider, &slug("a"), Deadline::NONE));
        assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn declared_schemas_win_and_never_fetch() {
        let mut declared = DeclaredSchemas::new();
        declared.insert("kn", "summarize", WorkflowSchema::default());
        let catalog = SchemaCatalog::new(SchemaCacheSettings::default(), declared);
        let provider = Fake::default();
        let lookup = block_on(catalog.schema(&provider, &slug("summarize"), Deadline::NONE));
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
        let name_of = |provider: &Hive, variant: Option<&str>| {
            let workflow = WorkflowRef::Deployment {
                name: "summarize".into(),
                variant: variant.map(str::to_owned),
            };
            match block_on(catalog.schema(provider, &workflow, Deadline::NONE)) {
                SchemaLookup::Found { schema, .. } => schema.name.clone(),
                _ => None,
            }
        };
        assert_eq!(
            name_of(&Hive(None), Some("concise")).as_deref(),
            Some("concise")
        );
        assert_eq!(name_of(&Hive(None), Some("long")).as_deref(), Some("any"));
        assert_eq!(name_of(&Hive(None), None).as_deref(), Some("any"));
        assert_eq!(
            name_of(&Hive(Some("concise")), None).as_deref(),
            Some("concise")
        );
    }
}
