//! The schema catalog: where a workflow's [`WorkflowSchema`] comes from,
//! and the moka cache in front of providers' schema endpoints.
//!
//! Lookup order for a (provider, workflow):
//! 1. a schema **declared** in the configuration ([`DeclaredSchemas`]): for
//!    dialects without a schema endpoint, or to override discovery;
//! 2. the **cache** of discovered schemas, keyed by provider name and
//!    workflow label, bounded by `capacity`;
//! 3. on a miss, one **fetch** through [`Provider::fetch_schema`]. Loading
//!    is single-flight: however many calls miss the same key at once, one
//!    request goes upstream and every caller gets its answer.
//!
//! The fetch belongs to nobody: it runs as its own task under
//! `fetch_timeout` only, never under a caller's deadline, and it caches its
//! answer when it ends even if every caller has stopped waiting. Each
//! caller waits with its own deadline; a caller whose deadline passes first
//! gets [`SchemaLookup::Unavailable`] (DEADLINE_EXCEEDED, reason
//! `SCHEMA_FETCH_PENDING`), which is never cached, so one impatient caller
//! cannot turn validation off for the others. (Outside a Tokio runtime the
//! fetch runs on the caller's task, without the caller's deadline.)
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
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{
    FutureExt as _,
    future::{BoxFuture, Shared},
};
use moka::{Expiry, future::Cache};

use crate::{
    Deadline, ErrorClass, GatewayError, Provider, WorkflowRef, WorkflowSchema, reason::Reason,
};

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

/// A fetch in flight, awaited by every caller that missed its key.
type Fetch = Shared<BoxFuture<'static, Cached>>;

/// Fetches in flight, by key (single-flight).
type InFlight = Arc<Mutex<HashMap<CacheKey, Fetch>>>;

/// Declared schemas plus the cache of discovered ones. See the module docs.
pub struct SchemaCatalog {
    settings: SchemaCacheSettings,
    declared: DeclaredSchemas,
    cache: Cache<CacheKey, Cached>,
    in_flight: InFlight,
    counters: Arc<Counters>,
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
            in_flight: InFlight::default(),
            counters: Arc::default(),
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
    /// once (single-flight, under the fetch timeout), waited for until
    /// `deadline`.
    pub async fn schema(
        &self,
        provider: &Arc<dyn Provider>,
        workflow: &WorkflowRef,
        deadline: Deadline,
    ) -> SchemaLookup {
        if let Some(schema) = self.declared.get(provider.as_ref(), workflow) {
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
        let fetch = self.join_or_start_fetch(provider, workflow, key);
        let Some(left) = deadline.remaining() else {
            return fetch.await.into();
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return fetch.await.into();
        }
        match tokio::time::timeout(left, fetch).await {
            Ok(cached) => cached.into(),
            Err(_) => {
                tracing::debug!(
                    provider = provider.name(),
                    workflow = %workflow.label(),
                    "caller's deadline passed while the schema fetch runs on"
                );
                SchemaLookup::Unavailable(Arc::new(GatewayError::new(
                    ErrorClass::DeadlineExceeded,
                    Reason::SchemaFetchPending,
                    "the deadline passed while the workflow's schema was being fetched",
                )))
            }
        }
    }

    /// The fetch in flight for `key`, or a new one: started as its own
    /// task (when a runtime is there) so it finishes, and caches its
    /// answer, whoever stops waiting for it.
    fn join_or_start_fetch(
        &self,
        provider: &Arc<dyn Provider>,
        workflow: &WorkflowRef,
        key: CacheKey,
    ) -> Fetch {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(fetch) = in_flight.get(&key) {
            return fetch.clone();
        }
        let fetch = fetch(
            Arc::clone(provider),
            workflow.clone(),
            key.clone(),
            self.settings.fetch_timeout,
            self.cache.clone(),
            Arc::clone(&self.in_flight),
            Arc::clone(&self.counters),
        )
        .boxed()
        .shared();
        in_flight.insert(key, fetch.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(fetch.clone());
        }
        fetch
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
}

/// One fetch under `timeout`: caches its answer, then leaves the in-flight
/// map. A fetch that panics is answered as a failure and not cached.
async fn fetch(
    provider: Arc<dyn Provider>,
    workflow: WorkflowRef,
    key: CacheKey,
    timeout: Duration,
    cache: Cache<CacheKey, Cached>,
    in_flight: InFlight,
    counters: Arc<Counters>,
) -> Cached {
    bump(&counters.fetches);
    let fetched = AssertUnwindSafe(fetch_once(
        provider.as_ref(),
        &workflow,
        Deadline::after(timeout),
        &counters,
    ))
    .catch_unwind()
    .await;
    let cached = match fetched {
        Ok(cached) => {
            cache.insert(key.clone(), cached.clone()).await;
            cached
        }
        Err(_) => {
            bump(&counters.fetch_failures);
            tracing::error!(
                provider = provider.name(),
                workflow = %workflow.label(),
                "schema fetch panicked: calls go ahead unvalidated"
            );
            Cached::Failed(Arc::new(GatewayError::internal("the schema fetch failed")))
        }
    };
    in_flight
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&key);
    cached
}

async fn fetch_once(
    provider: &dyn Provider,
    workflow: &WorkflowRef,
    deadline: Deadline,
    counters: &Counters,
) -> Cached {
    {
        match provider.fetch_schema(workflow, deadline).await {
            Ok(Some(schema)) => Cached::Found(Arc::new(schema)),
            Ok(None) => Cached::NotPublished,
            Err(error) if error.class == ErrorClass::NotFound && error.resource.is_some() => {
                bump(&counters.unknown_workflows);
                Cached::Unknown(Arc::new(error))
            }
            Err(error) => {
                bump(&counters.fetch_failures);
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
            let broken =
                block_on(catalog.schema(&as_dyn(&provider), &slug("broken"), Deadline::NONE));
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
        let lookup =
            block_on(catalog.schema(&as_dyn(&provider), &slug("summarize"), Deadline::NONE));
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
}
