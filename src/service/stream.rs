//! InvokeStream: a synchronous run whose text output is sent as it is
//! generated.
//!
//! The handler does what Invoke does before anything upstream (decode,
//! capability `invoke:<provider>/<workflow>`, caller quotas), refuses async
//! options, then drives the engine's [`Gateway::invoke_stream`] from inside
//! the response stream itself ([`Pump`]): no task is spawned, so the
//! upstream read only advances while the caller reads (backpressure through
//! the bounded [`OutputSink`]), and when the caller goes away the response
//! stream, the engine future and the upstream connection are dropped
//! together. The caller's deadline ends the stream (and the upstream read)
//! with DEADLINE_EXCEEDED.
//!
//! The handler waits for the first event: an error before it is the RPC's
//! status (as for Invoke, with the caller's quota balance); after it, an
//! error ends the stream with the same typed status and details.
//!
//! With an `idempotency_key` the call goes through the same idempotency
//! check as Invoke (a unary run, recorded and replayed), answered as the
//! `started` and `completed` events.
//!
//! [`Gateway::invoke_stream`]: flowgate_core::Gateway::invoke_stream

use std::{collections::VecDeque, pin::Pin, sync::Arc};

use flowgate_core::{
    ErrorClass, FieldViolation, GatewayError, Invoked, OutputSink, RateLimitInfo, RunId,
    RunIdSigner, StreamEvent, reason::Reason,
};
use flowgate_state::idempotency::IdempotencyKey;
use flowgate_telemetry::OutputStreamStats;
use futures::{Stream, StreamExt as _};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, field};

use super::{Access, GatewayService, caller_of, owner, provider_name};
use crate::{auth::quota::QuotaCharge, convert, proto::pb, status::insert_rate_limit};

/// The events of one InvokeStream call.
pub(crate) type InvokeEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::InvokeStreamEvent, Status>> + Send>>;

/// The engine's streamed run, owning its [`OutputSink`].
type Work = Pin<Box<dyn Future<Output = Result<Invoked, GatewayError>> + Send>>;

impl GatewayService {
    /// Serves one InvokeStream call (see the module docs).
    pub(super) async fn open_invoke_stream(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<InvokeEventStream>, Status> {
        let deadline = self.deadline(request.metadata());
        let caller = caller_of(&request)?;
        let access = Access::of(&request);
        let span = tracing::info_span!(
            "InvokeStream",
            flowgate.caller = caller.name(),
            flowgate.provider = field::Empty,
            flowgate.dialect = field::Empty,
            flowgate.workflow = field::Empty,
            flowgate.run_id = field::Empty,
            flowgate.run.status = field::Empty,
            flowgate.schema_cache = field::Empty,
            flowgate.stream.first_byte_ms = field::Empty,
            flowgate.stream.duration_ms = field::Empty,
            flowgate.stream.chunks = field::Empty,
            flowgate.stream.bytes = field::Empty,
            error.type = field::Empty,
        );
        let stats = OutputStreamStats::start(span.clone());
        async move {
            let (target, invocation) =
                convert::invoke_request(request.into_inner()).map_err(|err| access.reject(&err))?;
            if invocation.async_delivery.is_some() {
                return Err(access.reject(&GatewayError::invalid_argument(vec![
                    FieldViolation::new(
                        "async_options.enabled",
                        "InvokeStream runs synchronously; use Invoke for async runs",
                    ),
                ])));
            }
            let resolved = self.resolve(&target);
            let ticket = self.admit_run(&caller, &access, &target, &resolved).await?;
            let provider = provider_name(&resolved, &target).to_owned();
            let span = tracing::Span::current();
            span.record("flowgate.dialect", target.workflow.kind().as_str());
            span.record("flowgate.workflow", field::display(&target.workflow));
            let owner = owner(&caller).map(str::to_owned);
            if let Some(key) = invocation.idempotency_key.clone() {
                let key =
                    IdempotencyKey::new(caller.name(), key).map_err(|err| access.reject(&err))?;
                let charge = ticket.charge().clone();
                let answer = self
                    .invoke_once(
                        key, target, resolved, invocation, deadline, None, owner, charge,
                    )
                    .await;
                if let Ok(response) = &answer {
                    access.answered(response.get_ref());
                }
                return ticket.answer(answer.map(|response| replayed(response, stats)));
            }
            let gateway = Arc::clone(&self.gateway);
            let (sink, events) = OutputSink::channel();
            let work: Work = Box::pin(async move {
                let sink = sink;
                gateway
                    .invoke_stream(&target, &invocation, deadline, &sink)
                    .await
            });
            let mut pump = Pump {
                work: Some(work),
                events,
                events_open: true,
                result: None,
                queue: VecDeque::new(),
                run_id: None,
                opened_rate_limit: None,
                provider,
                owner,
                run_ids: Arc::clone(self.gateway.run_ids()),
                charge: ticket.charge().clone(),
                access: access.clone(),
                deadline: deadline
                    .instant()
                    .map(|at| Box::pin(tokio::time::sleep_until(at))),
                stats,
                span: span.clone(),
                done: false,
            };
            // The first event decides between a stream and a plain status.
            let first = match pump.next().await {
                Some(Ok(first)) => first,
                Some(Err(status)) => return ticket.answer(Err(status)),
                None => return Err(access.reject(&GatewayError::internal("empty stream"))),
            };
            let rate_limit = pump.opened_rate_limit.take();
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Some(rate_limit) = rate_limit {
                insert_rate_limit(&rate_limit, &mut metadata);
            }
            // The run lease lasts as long as the stream.
            ticket.insert_balance(&mut metadata);
            let rest = futures::stream::unfold((pump, ticket), |(mut pump, ticket)| async move {
                let span = pump.span.clone();
                let event = pump.next().instrument(span).await?;
                Some((event, (pump, ticket)))
            });
            let events = futures::stream::once(async { Ok(first) }).chain(rest);
            let mut response = Response::new(Box::pin(events) as InvokeEventStream);
            *response.metadata_mut() = metadata;
            Ok(response)
        }
        .instrument(span)
        .await
    }
}

/// An idempotent call's answer (run now or replayed) as `started` +
/// `completed`, with the same response metadata.
fn replayed(
    response: Response<pb::InvokeResponse>,
    mut stats: OutputStreamStats,
) -> Response<InvokeEventStream> {
    let (metadata, completed, extensions) = response.into_parts();
    stats.provider(&completed.provider);
    stats.output(output_len(&completed));
    let events = [started_event(&completed), completed_event(completed)].map(Ok);
    let stream: InvokeEventStream = Box::pin(futures::stream::iter(events));
    Response::from_parts(metadata, stream, extensions)
}

/// The `started` event of a run whose answer is `response`.
fn started_event(response: &pb::InvokeResponse) -> pb::InvokeStreamEvent {
    pb::InvokeStreamEvent {
        event: Some(pb::invoke_stream_event::Event::Started(
            pb::InvokeStreamStarted {
                run_id: response.run_id.clone(),
                provider: response.provider.clone(),
                rate_limit: response.rate_limit,
            },
        )),
    }
}

fn completed_event(response: pb::InvokeResponse) -> pb::InvokeStreamEvent {
    pb::InvokeStreamEvent {
        event: Some(pb::invoke_stream_event::Event::Completed(response)),
    }
}

/// The output's size as the caller receives it, for the byte count.
fn output_len(response: &pb::InvokeResponse) -> usize {
    use prost::Message;
    response.output.as_ref().map_or(0, Message::encoded_len)
}

/// Drives the engine's run from inside the response stream and turns what
/// it produces into events (see the module docs).
struct Pump {
    /// The run; `None` once it finished (or was cut off).
    work: Option<Work>,
    events: mpsc::Receiver<StreamEvent>,
    /// False once the sink is gone (the run finished).
    events_open: bool,
    /// The run's answer, once it finished and its events were drained.
    result: Option<Result<Invoked, GatewayError>>,
    /// Events to send before anything else.
    queue: VecDeque<pb::InvokeStreamEvent>,
    /// The signed run id, once `started` went out.
    run_id: Option<String>,
    /// The rate-limit window the `started` event carried, for the
    /// response headers.
    opened_rate_limit: Option<RateLimitInfo>,
    provider: String,
    owner: Option<String>,
    run_ids: Arc<RunIdSigner>,
    charge: QuotaCharge,
    access: Access,
    /// The caller's deadline (every call has one: `grpc-timeout` or
    /// `server.default_deadline`).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    stats: OutputStreamStats,
    span: tracing::Span,
    done: bool,
}

impl Pump {
    /// The next event; `None` after the last one (or after an error).
    async fn next(&mut self) -> Option<Result<pb::InvokeStreamEvent, Status>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let Some(work) = self.work.as_mut() else {
                // The run finished: what it sent first, then its answer.
                if let Ok(event) = self.events.try_recv() {
                    return Some(self.event(event).await);
                }
                self.done = true;
                let result = self.result.take()?;
                match self.finish(result).await {
                    Ok(()) => continue,
                    Err(status) => return Some(Err(status)),
                }
            };
            let deadline = &mut self.deadline;
            let deadline_passed = async {
                match deadline {
                    Some(sleep) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                event = self.events.recv(), if self.events_open => match event {
                    Some(event) => return Some(self.event(event).await),
                    None => self.events_open = false,
                },
                result = work.as_mut() => {
                    self.work = None;
                    self.result = Some(result);
                }
                () = deadline_passed => {
                    // Dropping the run closes the upstream connection.
                    self.work = None;
                    self.done = true;
                    return Some(Err(self.access.reject(&GatewayError::new(
                        ErrorClass::DeadlineExceeded,
                        Reason::DeadlineExceeded,
                        "the caller's deadline passed while the output was streaming",
                    ))));
                }
            }
        }
    }

    /// One event from the provider.
    async fn event(&mut self, event: StreamEvent) -> Result<pb::InvokeStreamEvent, Status> {
        let event = match event {
            StreamEvent::Started { rate_limit } => {
                let run_id = self
                    .run_ids
                    .sign_owned(&RunId::local(self.provider.as_str()), self.owner.as_deref());
                self.span
                    .record("flowgate.provider", self.provider.as_str());
                self.span.record("flowgate.run_id", run_id.as_str());
                self.access.run_id(&run_id);
                self.stats.provider(&self.provider);
                // The vendor accepted the run: charged whatever comes next.
                self.charge.run_started(&self.provider, None).await;
                self.run_id = Some(run_id.clone());
                let event = pb::InvokeStreamStarted {
                    run_id,
                    provider: self.provider.clone(),
                    rate_limit: convert::rate_limit(&rate_limit),
                };
                self.opened_rate_limit = Some(rate_limit);
                pb::invoke_stream_event::Event::Started(event)
            }
            StreamEvent::Delta(text) => {
                self.stats.output(text.len());
                pb::invoke_stream_event::Event::OutputDelta(pb::InvokeStreamDelta { text })
            }
        };
        Ok(pb::InvokeStreamEvent { event: Some(event) })
    }

    /// Queues the final events of a finished run, or says how it failed.
    async fn finish(&mut self, result: Result<Invoked, GatewayError>) -> Result<(), Status> {
        let invoked = result.map_err(|error| self.access.reject(&error))?;
        let provider = invoked.provider.name().to_owned();
        if self.run_id.is_none() {
            self.charge
                .run_started(&provider, invoked.outcome.usage.credits)
                .await;
        }
        self.span.record("flowgate.provider", provider.as_str());
        self.span
            .record("flowgate.dialect", invoked.provider.kind().as_str());
        if let Some(status) = invoked.outcome.status {
            self.span.record("flowgate.run.status", status.as_str());
        }
        self.stats.provider(&provider);
        if self.run_id.is_none() {
            self.opened_rate_limit = Some(invoked.outcome.rate_limit.clone());
        }
        let mut response = convert::invoke_response(invoked, &self.run_ids, self.owner.as_deref());
        match &self.run_id {
            // The id the caller already has.
            Some(run_id) => response.run_id.clone_from(run_id),
            None => {
                self.span
                    .record("flowgate.run_id", response.run_id.as_str());
                self.stats.output(output_len(&response));
                self.queue.push_back(started_event(&response));
            }
        }
        self.access.answered(&response);
        self.queue.push_back(completed_event(response));
        Ok(())
    }
}
