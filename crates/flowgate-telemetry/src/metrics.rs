//! flowgate's metric instruments and the hooks that record them.
//!
//! | OTLP name | Prometheus name | kind | labels |
//! |---|---|---|---|
//! | `flowgate.rpc.requests` | `flowgate_rpc_requests_total` | counter | `rpc_service`, `rpc_method`, `rpc_grpc_status_code` |
//! | `flowgate.rpc.duration` | `flowgate_rpc_duration_seconds` | histogram (s) | same |
//! | `flowgate.upstream.requests` | `flowgate_upstream_requests_total` | counter | `flowgate_provider`, `flowgate_dialect`, `http_response_status_code` (`0` = no answer) |
//! | `flowgate.upstream.duration` | `flowgate_upstream_duration_seconds` | histogram (s) | same |
//! | `flowgate.schema_cache.hits` / `.misses` | `flowgate_schema_cache_hits_total` / `_misses_total` | counter | `flowgate_provider` |
//! | `flowgate.upstream.rate_limit.remaining` | `flowgate_upstream_rate_limit_remaining` | gauge | `flowgate_provider` |
//! | `flowgate.circuit.open` | `flowgate_circuit_open` | gauge (0/1) | `flowgate_provider` |
//! | `flowgate.invoke_stream.first_byte` | `flowgate_invoke_stream_first_byte_seconds` | histogram (s) | `flowgate_provider` |
//! | `flowgate.invoke_stream.duration` | `flowgate_invoke_stream_duration_seconds` | histogram (s) | `flowgate_provider` |
//! | `flowgate.streams.active` | `flowgate_streams_active` | up-down counter | none |
//! | `flowgate.shutdown.abandoned` | `flowgate_shutdown_abandoned_total` | counter | `kind` (`background_run`, `run_watch`, `forward`) |
//! | `flowgate.state_store.degraded` | `flowgate_state_store_degraded_total` | counter | `component` (`limits`, `replay`, `caller_quotas`), `policy` (`local`, `open`, `closed`) |
//! | `flowgate.credits.used` | `flowgate_credits_used_total` | counter (f64) | `caller`, `flowgate_provider` |
//! | `flowgate.state_store.up` | `flowgate_state_store_up` | gauge (1/0; absent on the memory store) | none |
//! | `flowgate.state_store.errors` | `flowgate_state_store_errors_total` | counter | `operation` (`command`, `pipeline`, `script`, `subscribe`, `unsubscribe`, `check`), `kind` (`timeout`, `connection`, `auth`, `server`) |
//! | `flowgate.config.reload_failures` | `flowgate_config_reload_failures_total` | counter | `kind` (`api_key`, `webhook_signing_secret`, `tls`) |
//! | `flowgate.telemetry.export_failures` | `flowgate_telemetry_export_failures_total` | counter | `signal` (`traces`, `metrics`) |
//!
//! Labels are low-cardinality by construction: configured provider names,
//! dialects, known RPC names (others are `_OTHER`) and status codes; never
//! run ids, workflow ids or anything a caller controls.
//!
//! Until the binary's telemetry set-up installs a meter ([`install_meter`]), [`metrics()`]
//! returns no-op instruments and the hooks cost a branch.

use std::{
    sync::{
        Arc, LazyLock, OnceLock,
        atomic::{AtomicI8, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    metrics::{
        Counter, Gauge, Histogram, Meter, MeterProvider as _, ObservableGauge, UpDownCounter,
    },
};

/// Latency buckets, in seconds: sub-millisecond gateway answers up to
/// five-minute synchronous workflow runs.
const LATENCY_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// The instruments. Get them with [`metrics()`].
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    rpc_requests: Counter<u64>,
    rpc_duration: Histogram<f64>,
    upstream_requests: Counter<u64>,
    upstream_duration: Histogram<f64>,
    schema_cache_hits: Counter<u64>,
    schema_cache_misses: Counter<u64>,
    rate_limit_remaining: Gauge<i64>,
    circuit_open: Gauge<i64>,
    streams_active: UpDownCounter<i64>,
    invoke_stream_first_byte: Histogram<f64>,
    invoke_stream_duration: Histogram<f64>,
    shutdown_abandoned: Counter<u64>,
    state_store_degraded: Counter<u64>,
    credits_used: Counter<f64>,
    state_store_errors: Counter<u64>,
    /// Observes [`STATE_STORE_UP`] at each collection.
    _state_store_up: ObservableGauge<i64>,
    reload_failures: Counter<u64>,
    export_failures: Counter<u64>,
}

/// Whether the shared state store answered last: 1 yes, 0 no, -1 not
/// known yet (the memory store: the gauge is then not reported). One value
/// per process, read by the observable gauge at each collection, so the
/// exported value is always the latest outcome whatever the thread order.
static STATE_STORE_UP: AtomicI8 = AtomicI8::new(-1);

static INSTALLED: OnceLock<Metrics> = OnceLock::new();
static NOOP: LazyLock<Metrics> = LazyLock::new(|| {
    let provider = opentelemetry::metrics::noop::NoopMeterProvider::new();
    Metrics::new(&provider.meter("flowgate"), false)
});

/// The process's instruments (no-ops until telemetry installs a meter).
pub fn metrics() -> &'static Metrics {
    INSTALLED.get().unwrap_or(&NOOP)
}

/// Installs the instruments built from `meter` (the first call wins).
pub fn install_meter(meter: &Meter) {
    let _ = INSTALLED.set(Metrics::new(meter, true));
}

/// A schema lookup's outcome, for [`Metrics::schema_cache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCacheOutcome {
    /// Answered from the cache.
    Hit,
    /// Fetched from the provider.
    Miss,
}

impl SchemaCacheOutcome {
    /// `hit` or `miss`: the value recorded on the Invoke span's
    /// `flowgate.schema_cache` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

/// One open StreamStatus stream; counted in `flowgate.streams.active` until
/// dropped.
#[derive(Debug)]
#[must_use = "the stream counts as active until this is dropped"]
pub struct ActiveStream(());

impl Drop for ActiveStream {
    fn drop(&mut self) {
        metrics().streams_active.add(-1, &[]);
    }
}

fn provider_label(provider: &str) -> KeyValue {
    KeyValue::new("flowgate.provider", provider.to_owned())
}

impl Metrics {
    fn new(meter: &Meter, enabled: bool) -> Self {
        Self {
            enabled,
            rpc_requests: meter
                .u64_counter("flowgate.rpc.requests")
                .with_description("gRPC calls handled, by method and status code")
                .build(),
            rpc_duration: meter
                .f64_histogram("flowgate.rpc.duration")
                .with_unit("s")
                .with_description("gRPC call latency, until the last response byte")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            upstream_requests: meter
                .u64_counter("flowgate.upstream.requests")
                .with_description(
                    "HTTP requests to providers, by provider and response status (0: no answer)",
                )
                .build(),
            upstream_duration: meter
                .f64_histogram("flowgate.upstream.duration")
                .with_unit("s")
                .with_description("provider HTTP request latency, until the whole body is read")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            schema_cache_hits: meter
                .u64_counter("flowgate.schema_cache.hits")
                .with_description("workflow schema lookups answered from the cache")
                .build(),
            schema_cache_misses: meter
                .u64_counter("flowgate.schema_cache.misses")
                .with_description("workflow schema lookups that went to the provider")
                .build(),
            rate_limit_remaining: meter
                .i64_gauge("flowgate.upstream.rate_limit.remaining")
                .with_description("requests left in the provider's window, as last reported")
                .build(),
            circuit_open: meter
                .i64_gauge("flowgate.circuit.open")
                .with_description("1 while the provider's circuit is open or probing, else 0")
                .build(),
            streams_active: meter
                .i64_up_down_counter("flowgate.streams.active")
                .with_description("StreamStatus streams currently open")
                .build(),
            invoke_stream_first_byte: meter
                .f64_histogram("flowgate.invoke_stream.first_byte")
                .with_unit("s")
                .with_description("InvokeStream calls: time until the first output reached the caller")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            invoke_stream_duration: meter
                .f64_histogram("flowgate.invoke_stream.duration")
                .with_unit("s")
                .with_description("InvokeStream calls: time until the stream ended")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            state_store_degraded: meter
                .u64_counter("flowgate.state_store.degraded")
                .with_description(
                    "decisions taken without the shared state store (it was unavailable), by component and failure policy",
                )
                .build(),
            credits_used: meter
                .f64_counter("flowgate.credits.used")
                .with_description(
                    "credits the providers reported for runs, by caller and provider",
                )
                .build(),
            state_store_errors: meter
                .u64_counter("flowgate.state_store.errors")
                .with_description(
                    "state store (Redis) operations that failed, by operation and kind of failure",
                )
                .build(),
            _state_store_up: meter
                .i64_observable_gauge("flowgate.state_store.up")
                .with_description(
                    "1 while the state store (Redis) answers, 0 while it cannot be reached; from the outcome of the operations made and of reconnections",
                )
                .with_callback(|observer| {
                    let up = STATE_STORE_UP.load(Ordering::Relaxed);
                    if up >= 0 {
                        observer.observe(i64::from(up), &[]);
                    }
                })
                .build(),
            shutdown_abandoned: meter
                .u64_counter("flowgate.shutdown.abandoned")
                .with_description(
                    "work that could not finish within the shutdown grace period, by kind",
                )
                .build(),
            reload_failures: meter
                .u64_counter("flowgate.config.reload_failures")
                .with_description(
                    "changed secret or certificate files that could not be used (the previous values stay), by kind",
                )
                .build(),
            export_failures: meter
                .u64_counter("flowgate.telemetry.export_failures")
                .with_description(
                    "OTLP exports that failed (the batch is dropped), by signal",
                )
                .build(),
        }
    }

    /// True when a meter is installed (skip building labels otherwise).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// One finished gRPC call (recorded by [`crate::RpcTelemetryLayer`]).
    /// `caller` is a configured caller name (`None`: `unauthenticated`),
    /// so the label stays bounded.
    pub fn record_rpc(
        &self,
        service: &'static str,
        method: &'static str,
        caller: Option<&Arc<str>>,
        code: i32,
        elapsed: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let caller = match caller {
            Some(name) => opentelemetry::Value::from(Arc::clone(name)),
            None => opentelemetry::Value::from(crate::UNAUTHENTICATED),
        };
        let labels = [
            KeyValue::new("rpc.service", service),
            KeyValue::new("rpc.method", method),
            KeyValue::new("rpc.grpc.status_code", i64::from(code)),
            KeyValue::new("caller", caller),
        ];
        self.rpc_requests.add(1, &labels);
        self.rpc_duration.record(elapsed.as_secs_f64(), &labels);
    }

    /// One upstream HTTP request; `status` is `None` when no answer came.
    pub fn record_upstream(
        &self,
        provider: &str,
        dialect: &'static str,
        status: Option<u16>,
        elapsed: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let labels = [
            provider_label(provider),
            KeyValue::new("flowgate.dialect", dialect),
            KeyValue::new(
                "http.response.status_code",
                i64::from(status.unwrap_or_default()),
            ),
        ];
        self.upstream_requests.add(1, &labels);
        self.upstream_duration
            .record(elapsed.as_secs_f64(), &labels);
    }

    /// One ended InvokeStream call on `provider`: the time to its first
    /// output (`None`: none came) and its whole duration.
    pub fn record_invoke_stream(
        &self,
        provider: &str,
        first_byte: Option<Duration>,
        total: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let labels = [provider_label(provider)];
        if let Some(first_byte) = first_byte {
            self.invoke_stream_first_byte
                .record(first_byte.as_secs_f64(), &labels);
        }
        self.invoke_stream_duration
            .record(total.as_secs_f64(), &labels);
    }

    /// The provider's reported `x-ratelimit-remaining`.
    pub fn record_rate_limit_remaining(&self, provider: &str, remaining: u64) {
        if self.enabled {
            self.rate_limit_remaining.record(
                i64::try_from(remaining).unwrap_or(i64::MAX),
                &[provider_label(provider)],
            );
        }
    }

    /// The provider's circuit opened (`true`) or closed (`false`).
    pub fn record_circuit(&self, provider: &str, open: bool) {
        if self.enabled {
            self.circuit_open
                .record(i64::from(open), &[provider_label(provider)]);
        }
    }

    /// A workflow schema lookup (the schema cache calls this): counts it and
    /// records `flowgate.schema_cache` = `hit`/`miss` on the current span
    /// (the Invoke span declares that field).
    pub fn schema_cache(&self, provider: &str, outcome: SchemaCacheOutcome) {
        tracing::Span::current().record("flowgate.schema_cache", outcome.as_str());
        if !self.enabled {
            return;
        }
        let counter = match outcome {
            SchemaCacheOutcome::Hit => &self.schema_cache_hits,
            SchemaCacheOutcome::Miss => &self.schema_cache_misses,
        };
        counter.add(1, &[provider_label(provider)]);
    }

    /// `count` units of work of `kind` (`background_run`, `run_watch`,
    /// `forward`) abandoned when the shutdown grace ran out.
    pub fn shutdown_abandoned(&self, kind: &'static str, count: u64) {
        if self.enabled {
            self.shutdown_abandoned
                .add(count, &[KeyValue::new("kind", kind)]);
        }
    }

    /// One decision of `component` (`limits`, `replay`, `caller_quotas`) taken without the
    /// shared state store, under failure `policy` (`local`, `open`, `closed`).
    pub fn state_store_degraded(&self, component: &'static str, policy: &'static str) {
        if self.enabled {
            self.state_store_degraded.add(
                1,
                &[
                    KeyValue::new("component", component),
                    KeyValue::new("policy", policy),
                ],
            );
        }
    }

    /// `credits` a provider reported for a run `caller` (a configured
    /// name or `unauthenticated`) started; negative or non-finite amounts
    /// are not counted.
    pub fn credits_used(&self, caller: &str, provider: &str, credits: f64) {
        if self.enabled && credits.is_finite() && credits >= 0.0 {
            self.credits_used.add(
                credits,
                &[
                    KeyValue::new("caller", caller.to_owned()),
                    provider_label(provider),
                ],
            );
        }
    }

    /// The state store answered (`up`) or could not be reached. Costs one
    /// atomic swap; returns `true` when this changed what was known (the
    /// caller logs the transition, once per change).
    pub fn state_store_reachable(&self, up: bool) -> bool {
        let value = i8::from(up);
        STATE_STORE_UP.swap(value, Ordering::Relaxed) != value
    }

    /// One state store operation failed: `operation` (`command`,
    /// `pipeline`, `script`, `subscribe`, `unsubscribe`, `check`) and `kind`
    /// (`timeout`, `connection`, `auth`, `server`).
    pub fn state_store_error(&self, operation: &'static str, kind: &'static str) {
        if self.enabled {
            self.state_store_errors.add(
                1,
                &[
                    KeyValue::new("operation", operation),
                    KeyValue::new("kind", kind),
                ],
            );
        }
    }

    /// A changed file of `kind` (`api_key`, `webhook_signing_secret`,
    /// `tls`) could not be used; the previous values stay in use.
    pub fn config_reload_failed(&self, kind: &'static str) {
        if self.enabled {
            self.reload_failures.add(1, &[KeyValue::new("kind", kind)]);
        }
    }

    /// One OTLP export of `signal` (`traces`, `metrics`) failed.
    pub fn telemetry_export_failed(&self, signal: &'static str) {
        if self.enabled {
            self.export_failures
                .add(1, &[KeyValue::new("signal", signal)]);
        }
    }

    /// A StreamStatus stream opened; it counts as active until the returned
    /// guard is dropped (keep it in the stream).
    pub fn stream_opened(&self) -> ActiveStream {
        self.streams_active.add(1, &[]);
        ActiveStream(())
    }
}
