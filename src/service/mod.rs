//! The `flowgate.v1.WorkflowGateway` service: thin glue from gRPC to the
//! engine. Decode, call the engine, encode; errors go through
//! [`crate::status::to_status`].
//!
//! The service holds both halves of the engine: a synchronous Invoke goes
//! straight to the [`Gateway`] (its answer is the response; nothing is
//! recorded), an async one to the [`RunTracker`], which starts the run
//! through the same gateway and follows it. An Invoke with an
//! `idempotency_key` goes through the [`Idempotency`] check first, for both
//! kinds: one store round trip decides between running it (once), replaying
//! the recorded answer ([`crate::recorded`]), waiting for the first call, or
//! refusing a reused key.

use std::{pin::Pin, sync::Arc, time::Duration};

use flowgate_core::{
    Deadline, Gateway, GatewayError, Invocation, Provider, SecretString, WorkflowTarget,
};
use flowgate_state::{
    Idempotency, MemoryIdempotencyStore, RunTracker, Verification, VerifyKey,
    idempotency::{IdempotencyKey, RequestHash, Settlement, records_error},
};
use futures::Stream;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{Instrument as _, field};

pub use crate::grpc_timeout::parse_grpc_timeout;

use crate::{
    auth::{
        Caller, Required,
        quota::{CallerQuotas, QuotaCharge, QuotaTicket},
    },
    convert,
    proto::pb::{self, workflow_gateway_server::WorkflowGateway},
    recorded,
    status::insert_rate_limit,
};

mod access;
mod callback;
mod stream;

use access::{Access, caller_of, denied, owner, reject, unknown_run, workflow_name};

/// Most of a caller's deadline the engine keeps back for answering.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// `idempotency.ttl` when the service is built without a configuration.
const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// `idempotency.capacity` when the service is built without a configuration.
const DEFAULT_IDEMPOTENCY_CAPACITY: usize = 100_000;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct GatewayService {
    gateway: Arc<Gateway>,
    tracker: Arc<RunTracker>,
    idempotency: Idempotency,
    quotas: Arc<CallerQuotas>,
    default_deadline: Duration,
}

impl GatewayService {
    /// Serves `gateway` (synchronous calls, schemas) and `tracker` (async
    /// runs, streams, webhooks; it runs over the same gateway); calls
    /// without a deadline get `default_deadline`.
    pub fn new(
        gateway: Arc<Gateway>,
        tracker: Arc<RunTracker>,
        default_deadline: Duration,
    ) -> Self {
        Self {
            gateway,
            tracker,
            idempotency: Idempotency::new(Arc::new(MemoryIdempotencyStore::new(
                DEFAULT_IDEMPOTENCY_TTL,
                DEFAULT_IDEMPOTENCY_CAPACITY,
            )))
            .with_panic_answer(crate::recorded::panic_answer()),
            quotas: Arc::new(CallerQuotas::memory()),
            default_deadline,
        }
    }

    /// Replaces where caller quotas are counted (default: this process).
    pub fn with_quotas(mut self, quotas: Arc<CallerQuotas>) -> Self {
        self.quotas = quotas;
        self
    }

    /// Replaces the idempotency check (default: a memory store keeping
    /// 100000 answers for 24 h).
    pub fn with_idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = idempotency;
        self
    }

    fn deadline(&self, metadata: &MetadataMap) -> Deadline {
        let caller = metadata
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        // The caller's own deadline wins, longer or shorter; the provider's
        // timeout still caps each upstream request. A small margin lets the
        // engine answer DEADLINE_EXCEEDED with its details before the
        // transport's own timer cancels the call with a bare CANCELLED.
        match caller {
            Some(timeout) => {
                let margin = (timeout / 20).min(DEADLINE_MARGIN);
                Deadline::after(timeout.saturating_sub(margin))
            }
            None => Deadline::after(self.default_deadline),
        }
    }

    /// Runs one Invoke and answers it. A synchronous run's answer is the
    /// response itself: it goes straight to the gateway and is not
    /// recorded. An async one is started (through the same gateway) and
    /// followed by the tracker.
    async fn invoke_now(
        &self,
        resolved: Resolved,
        invocation: Invocation,
        deadline: Deadline,
        trace_parent: Option<String>,
        owner: Option<&str>,
        charge: &QuotaCharge,
    ) -> Result<Response<pb::InvokeResponse>, GatewayError> {
        let span = tracing::Span::current();
        let invoked = if invocation.async_delivery.is_some() {
            // A callback host name is resolved before anything is started.
            callback::check_callback_host(self.gateway.callback_policy(), &invocation, deadline)
                .await?;
            self.tracker
                .start_on(resolved, invocation, deadline, trace_parent)
                .await
        } else {
            match resolved {
                Ok(provider) => {
                    self.gateway
                        .invoke_on(&provider, &invocation, deadline)
                        .await
                }
                Err(error) => Err(error),
            }
        };
        let invoked = invoked?;
        // A run was started: charged to the caller whatever its status.
        charge
            .run_started(invoked.provider.name(), invoked.outcome.usage.credits)
            .await;
        span.record("flowgate.provider", invoked.provider.name());
        // The shape of the target is a guess at the dialect (recorded
        // before routing, for calls that fail there); the provider that
        // answered knows it.
        span.record("flowgate.dialect", invoked.provider.kind().as_str());
        if let Some(status) = invoked.outcome.status {
            span.record("flowgate.run.status", status.as_str());
        }
        let rate_limit = invoked.outcome.rate_limit.clone();
        let response = convert::invoke_response(invoked, self.gateway.run_ids(), owner);
        span.record("flowgate.run_id", response.run_id.as_str());
        let mut response = Response::new(response);
        insert_rate_limit(&rate_limit, response.metadata_mut());
        tracing::debug!("invoked");
        Ok(response)
    }

    /// An Invoke with an `idempotency_key`: at most one upstream run per
    /// key and request (see [`flowgate_state::idempotency`]). The first
    /// call runs detached from its caller, bounded by the caller's deadline
    /// or `server.default_deadline`, whichever is later, so a caller that
    /// timed out can retry with the key and get the answer.
    #[expect(
        clippy::too_many_arguments,
        reason = "the detached work needs each part of the call; a struct would only rename them"
    )]
    async fn invoke_once(
        &self,
        key: IdempotencyKey,
        target: WorkflowTarget,
        resolved: Resolved,
        invocation: Invocation,
        deadline: Deadline,
        trace_parent: Option<String>,
        owner: Option<String>,
        charge: QuotaCharge,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let hash = RequestHash::of(&target, &invocation);
        let work_deadline = match deadline.remaining() {
            Some(left) if left < self.default_deadline => Deadline::after(self.default_deadline),
            _ => deadline,
        };
        let service = self.clone();
        let work = async move {
            let answer = service
                .invoke_now(
                    resolved,
                    invocation,
                    work_deadline,
                    trace_parent,
                    owner.as_deref(),
                    &charge,
                )
                .await;
            // Errors that prove no run started are answered, not recorded.
            let keep = answer.as_ref().err().is_none_or(records_error);
            let recorded = recorded::encode(&answer.map_err(|err| reject(&err)));
            if keep {
                Settlement::Record(recorded)
            } else {
                Settlement::Forget(recorded)
            }
        };
        let answer = self
            .idempotency
            .run(key, hash, deadline, work_deadline, work)
            .await
            .map_err(|err| reject(&err))?;
        let response = recorded::decode(&answer.answer, answer.replayed);
        if answer.replayed
            && let Ok(response) = &response
        {
            tracing::Span::current().record("flowgate.run_id", response.get_ref().run_id.as_str());
        }
        response
    }
}

impl GatewayService {
    /// What a call that runs a workflow passes before anything upstream:
    /// the caller's capability `invoke:<provider>/<workflow>`, then its
    /// quotas (one store round trip when it has any). The ticket holds the
    /// caller's run lease. Records the target in the access log.
    async fn admit_run(
        &self,
        caller: &Caller,
        access: &Access,
        target: &WorkflowTarget,
        resolved: &Resolved,
    ) -> Result<QuotaTicket, Status> {
        let provider = provider_name(resolved, target);
        let workflow = workflow_name(&target.workflow);
        access.target(provider, workflow);
        if !caller.capabilities().may_invoke(provider, workflow) {
            return Err(access.reject(&denied(Required::Invoke(provider, workflow))));
        }
        self.quotas
            .admit(caller)
            .await
            .map_err(|refused| refused.annotate(access.reject(&refused.error)))
    }

    /// The provider `target` resolves to ([`Gateway::resolve`]), once per
    /// call: its capability check names it and the run goes to it.
    fn resolve(&self, target: &WorkflowTarget) -> Resolved {
        self.gateway.resolve(target).cloned()
    }
}

/// A target's provider, or why it has none (answered once the caller is
/// admitted: a caller allowed that far gets the engine's NOT_FOUND).
type Resolved = Result<Arc<dyn Provider>, GatewayError>;

/// The provider a target names or resolves to, for capability checks: a
/// target that resolves to none is checked by the name it gives (`*` when
/// it gives none: only a `*` provider pattern allows it).
fn provider_name<'a>(resolved: &'a Resolved, target: &'a WorkflowTarget) -> &'a str {
    match resolved {
        Ok(provider) => provider.name(),
        Err(_) => target.provider.as_deref().unwrap_or("*"),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunStatusEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WorkflowGateway for GatewayService {
    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        let caller = caller_of(&request)?;
        let access = Access::of(&request);
        // A child of the server span (`flowgate.v1.WorkflowGateway/Invoke`).
        // `flowgate.schema_cache` is recorded by the schema cache
        // (`flowgate_telemetry::Metrics::schema_cache`): `hit` or `miss`.
        let span = tracing::info_span!(
            "Invoke",
            flowgate.caller = caller.name(),
            flowgate.provider = field::Empty,
            flowgate.dialect = field::Empty,
            flowgate.workflow = field::Empty,
            flowgate.run_id = field::Empty,
            flowgate.run.status = field::Empty,
            flowgate.schema_cache = field::Empty,
            error.type = field::Empty,
        );
        async move {
            let (target, invocation) =
                convert::invoke_request(request.into_inner()).map_err(|err| access.reject(&err))?;
            // Before anything is fetched or started.
            let resolved = self.resolve(&target);
            let ticket = self.admit_run(&caller, &access, &target, &resolved).await?;
            // Background work of an async run (polls, gateway-run calls)
            // links back to this call's trace.
            let trace_parent = invocation
                .async_delivery
                .is_some()
                .then(flowgate_telemetry::current_trace_link)
                .flatten()
                .map(String::from);
            let span = tracing::Span::current();
            span.record("flowgate.dialect", target.workflow.kind().as_str());
            span.record("flowgate.workflow", field::display(&target.workflow));
            // The caller's keys are its own: the scope is the caller's name
            // (unique, and `unauthenticated` is reserved for the open gateway).
            let owner = owner(&caller).map(str::to_owned);
            let answer = match invocation.idempotency_key.clone() {
                Some(key) => {
                    let key = IdempotencyKey::new(caller.name(), key)
                        .map_err(|err| access.reject(&err))?;
                    let charge = ticket.charge().clone();
                    self.invoke_once(
                        key,
                        target,
                        resolved,
                        invocation,
                        deadline,
                        trace_parent,
                        owner,
                        charge,
                    )
                    .await
                }
                None => self
                    .invoke_now(
                        resolved,
                        invocation,
                        deadline,
                        trace_parent,
                        owner.as_deref(),
                        ticket.charge(),
                    )
                    .await
                    .map_err(|err| access.reject(&err)),
            };
            if let Ok(response) = &answer {
                access.answered(response.get_ref());
            }
            ticket.answer(answer)
        }
        .instrument(span)
        .await
    }

    type InvokeStreamStream = stream::InvokeEventStream;

    async fn invoke_stream(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<Self::InvokeStreamStream>, Status> {
        self.open_invoke_stream(request).await
    }

    type StreamStatusStream = EventStream;

    async fn stream_status(
        &self,
        request: Request<pb::StreamStatusRequest>,
    ) -> Result<Response<Self::StreamStatusStream>, Status> {
        let caller = caller_of(&request)?;
        let access = Access::of(&request);
        let capabilities = caller.capabilities();
        if !capabilities.may_stream_own() {
            return Err(access.reject(&denied(Required::StreamRuns)));
        }
        let run_id = request.into_inner().run_id;
        access.run_id(&run_id);
        // Another caller's run (or one started without a caller) is
        // answered exactly like a run that does not exist.
        if !capabilities.may_stream_all() {
            let owner = self
                .gateway
                .run_ids()
                .verify_owned(&run_id)
                .and_then(|(_, owner)| owner);
            if owner.as_deref() != Some(caller.name()) {
                return Err(access.reject(&unknown_run(&run_id)));
            }
        }
        let stream = self
            .tracker
            .stream(&run_id)
            .await
            .map_err(|err| access.reject(&err))?;
        // The stream's server span links back to the trace that started the run.
        if let Some(link) = stream
            .trace_parent()
            .and_then(flowgate_telemetry::TraceLink::parse)
        {
            flowgate_telemetry::add_link(&tracing::Span::current(), &link);
        }
        // Ends after the terminal event, or with a typed status when the run
        // cannot be followed further (poller gave up or failed, run lost,
        // `runs.max_watch` reached, shutdown). Dropping it (the caller went
        // away) drops the subscription, and an unwatched run stops being
        // polled. The active-streams gauge counts this stream until it is
        // dropped.
        let active = flowgate_telemetry::metrics().stream_opened();
        let run_ids = Arc::clone(self.gateway.run_ids());
        // Events carry the id the caller asked with (it names the owner).
        let run_id: Arc<str> = run_id.into();
        let events = futures::stream::unfold((stream, active), move |(mut stream, active)| {
            let run_ids = Arc::clone(&run_ids);
            let run_id = Arc::clone(&run_id);
            let access = access.clone();
            async move {
                let event = match stream.next().await? {
                    Ok(record) => {
                        let mut event = convert::run_event(record, &run_ids);
                        event.run_id = run_id.to_string();
                        Ok(event)
                    }
                    Err(err) => Err(access.reject(&err)),
                };
                Some((event, (stream, active)))
            }
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn verify_webhook(
        &self,
        request: Request<pb::VerifyWebhookRequest>,
    ) -> Result<Response<pb::VerifyWebhookResponse>, Status> {
        let access = Access::of(&request);
        if !caller_of(&request)?.capabilities().may_verify_webhooks() {
            return Err(access.reject(&denied(Required::VerifyWebhooks)));
        }
        let request = request.into_inner();
        let scheme = convert::webhook_scheme(request.scheme());
        let provider = (!request.provider.is_empty()).then_some(request.provider.as_str());
        let key = match request.key {
            Some(pb::verify_webhook_request::Key::Secret(secret)) if !secret.is_empty() => {
                VerifyKey::Secret(SecretString::new(secret))
            }
            Some(pb::verify_webhook_request::Key::RunId(run_id)) if !run_id.is_empty() => {
                VerifyKey::RunId(run_id)
            }
            _ => VerifyKey::Configured,
        };
        let headers = convert::header_map(request.headers);
        let verification = self
            .tracker
            .verify(scheme, provider, &headers, &request.body, key)
            .await
            .map_err(|err| access.reject(&err))?;
        let response = match verification {
            Verification::Valid { event, run_id } => pb::VerifyWebhookResponse {
                valid: true,
                reason: pb::WebhookFailureReason::Unspecified.into(),
                event: Some(convert::webhook_event(*event, run_id)),
            },
            Verification::Invalid(reason) => pb::VerifyWebhookResponse {
                valid: false,
                reason: convert::webhook_failure(reason).into(),
                event: None,
            },
        };
        Ok(Response::new(response))
    }

    async fn get_workflow_schema(
        &self,
        request: Request<pb::GetWorkflowSchemaRequest>,
    ) -> Result<Response<pb::GetWorkflowSchemaResponse>, Status> {
        let deadline = self.deadline(request.metadata());
        let caller = caller_of(&request)?;
        let access = Access::of(&request);
        let span = tracing::info_span!(
            "GetWorkflowSchema",
            flowgate.caller = caller.name(),
            workflow = field::Empty,
            error = field::Empty,
        );
        async move {
            let target =
                convert::schema_request(request.into_inner()).map_err(|err| access.reject(&err))?;
            // Before the schema is looked up or fetched.
            let resolved = self.resolve(&target);
            let provider = provider_name(&resolved, &target);
            let workflow = workflow_name(&target.workflow);
            access.target(provider, workflow);
            if !caller.capabilities().may_read_schema(provider, workflow) {
                return Err(access.reject(&denied(Required::Schemas(provider, workflow))));
            }
            tracing::Span::current().record("workflow", field::display(target.workflow.label()));
            match self.gateway.workflow_schema(&target, deadline).await {
                Ok(schema) => Ok(Response::new(convert::schema_response(&schema))),
                Err(err) => Err(access.reject(&err)),
            }
        }
        .instrument(span)
        .await
    }
}
