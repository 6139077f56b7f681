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

/// Cache sizing and lifetimes: `[schemas]` in the configuration, which
/// deserializes into this directly (a missing key keeps its default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaCacheSettings {
    /// How long a fetched schema is trusted. Default 5 minutes.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub ttl: Duration,
    /// Most (provider, workflow) entries kept. Default 10,000.
    pub capacity: u64,
    /// How long "no such workflow" (404) is remembered. Default 30 s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub negative_ttl: Duration,
    /// How long a failed fetch is remembered, during which calls go
    /// unvalidated without retrying it. Default 10 s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub failure_ttl: Duration,
    /// Longest a schema fetch may take (the caller's deadline may cut it
    /// shorter). Default 5 s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
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
        // At most two turns: the second never returns `None`.
        let mut unless_cached = true;
        let fetch = loop {
            if let Some(fetch) =
                self.join_or_start_fetch(provider, workflow, key.clone(), unless_cached)
            {
                break fetch;
            }
            // A fetch finished between the miss above and taking the lock:
            // its answer is cached now (unless an invalidation or expiry
            // took it away again, then fetch anew).
            if let Some(cached) = self.cache.get(&key).await {
                return cached.into();
            }
            unless_cached = false;
        };
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
    /// answer, whoever stops waiting for it. With `unless_cached`, `None`
    /// when the key is cached by now: a fetch caches its answer before it
    /// leaves `in_flight`, so checking under the lock closes the gap in
    /// which a second fetch would start.
    fn join_or_start_fetch(
        &self,
        provider: &Arc<dyn Provider>,
        workflow: &WorkflowRef,
        key: CacheKey,
        unless_cached: bool,
    ) -> Option<Fetch> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(fetch) = in_flight.get(&key) {
            return Some(fetch.clone());
        }
        if unless_cached && self.cache.contains_key(&key) {
            return None;
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
        Some(fetch)
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
mod tests;
