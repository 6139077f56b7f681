//! Paused-time tests: no run wedges, every stream ends with a typed error.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;
use flowgate_core::{
    AsyncDelivery, ErrorClass, FieldViolation, Invocation, Provider, ProviderKind, RunError,
    SchemaField, UpstreamContext, ValueType, WorkflowRef, WorkflowSchema,
};
use serde_json::json;

use super::*;
use crate::{MemoryRunStore, StoreLimits};

/// How a fake provider answers status polls (and, for AI Tutor-like
/// ones, runs).
#[derive(Debug, Clone, Copy)]
pub(super) enum Polls {
    /// Panics on the first poll, then reports the run completed.
    PanicOnce,
    /// Always fails (UNAVAILABLE).
    Fail,
    /// Has no status endpoint (`Ok(None)`).
    NoEndpoint,
    /// Always RUNNING.
    Running,
    /// RUNNING for the first `n` polls, COMPLETED (output `"done"`) after.
    CompletesAfter(usize),
    /// Fails twice, answers RUNNING once, and again: never `max_poll_failures`
    /// (3) failures in a row.
    Flaky,
    /// (AI Tutor-like) the run itself never answers.
    Hang,
    /// (AI Tutor-like) publishes a schema the inputs pass, but the run is
    /// refused upstream with INVALID_ARGUMENT (the workflow changed).
    RejectsInputs,
}

#[derive(Debug)]
pub(super) struct Fake {
    polls: Polls,
    count: AtomicUsize,
    native_async: bool,
}

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        "kn"
    }
    fn kind(&self) -> ProviderKind {
        if self.native_async {
            ProviderKind::Knouds
        } else {
            ProviderKind::AiTutor
        }
    }
    fn validate(&self, _: &Invocation) -> Vec<FieldViolation> {
        Vec::new()
    }
    fn native_async(&self) -> bool {
        self.native_async
    }
    async fn invoke(&self, _: &Invocation, _: Deadline) -> Result<RunOutcome, GatewayError> {
        match self.polls {
            Polls::Hang => std::future::pending::<()>().await,
            Polls::RejectsInputs => {
                return Err(GatewayError::invalid_argument(vec![FieldViolation::new(
                    "inputs.tone",
                    "Field is required",
                )])
                .with_upstream(UpstreamContext {
                    provider: "kn".into(),
                    kind: ProviderKind::AiTutor,
                    http_status: Some(422),
                    request_id: None,
                }));
            }
            _ => {}
        }
        panic!("the background run's task dies");
    }
    async fn fetch_schema(
        &self,
        _: &WorkflowRef,
        _: Deadline,
    ) -> Result<Option<WorkflowSchema>, GatewayError> {
        Ok(matches!(self.polls, Polls::RejectsInputs).then(|| {
            WorkflowSchema::new(vec![SchemaField::new("text", ValueType::String).required()])
        }))
    }
    async fn run_status(&self, _: &str, _: Deadline) -> Result<Option<RunOutcome>, GatewayError> {
        let count = self.count.fetch_add(1, Ordering::SeqCst);
        let running = |status| {
            Ok(Some(RunOutcome {
                status: Some(status),
                error: None::<RunError>,
                ..RunOutcome::default()
            }))
        };
        match self.polls {
            Polls::PanicOnce if count == 0 => panic!("a poll panics"),
            Polls::PanicOnce => running(RunStatus::Completed),
            Polls::Fail => Err(GatewayError::new(
                ErrorClass::Unavailable,
                "UPSTREAM_UNAVAILABLE",
                "down",
            )),
            Polls::NoEndpoint => Ok(None),
            Polls::CompletesAfter(n) if count >= n => Ok(Some(RunOutcome {
                status: Some(RunStatus::Completed),
                output: Some(json!("done")),
                ..RunOutcome::default()
            })),
            Polls::Flaky if count % 3 < 2 => Err(GatewayError::new(
                ErrorClass::Unavailable,
                "UPSTREAM_UNAVAILABLE",
                "down",
            )),
            Polls::Running
            | Polls::Hang
            | Polls::CompletesAfter(_)
            | Polls::Flaky
            | Polls::RejectsInputs => running(RunStatus::Running),
        }
    }
}

pub(super) fn tracker(polls: Polls, native_async: bool) -> (Arc<RunTracker>, Arc<Fake>) {
    tracker_with(polls, native_async, |_| {})
}

/// [`tracker`] with `edit` applied to its config.
fn tracker_with(
    polls: Polls,
    native_async: bool,
    edit: impl FnOnce(&mut TrackerConfig),
) -> (Arc<RunTracker>, Arc<Fake>) {
    let provider = Arc::new(Fake {
        polls,
        count: AtomicUsize::new(0),
        native_async,
    });
    let gateway = Arc::new(Gateway::new(vec![
        Arc::clone(&provider) as Arc<dyn flowgate_core::Provider>
    ]));
    let config = TrackerConfig {
        poll_initial: Duration::from_millis(100),
        poll_max: Duration::from_millis(100),
        max_watch: Duration::from_secs(60),
        max_poll_failures: 3,
        ..TrackerConfig::default()
    };
    let mut config = config;
    edit(&mut config);
    let tracker = RunTracker::new(
        gateway,
        Arc::new(MemoryRunStore::new(StoreLimits::default())),
        config,
        IngressConfig::default(),
        None,
    );
    (tracker, provider)
}

/// Starts a gateway-run (AI Tutor-like) async run of workflow `wf`.
pub(super) async fn start_background(tracker: &Arc<RunTracker>) -> Invoked {
    let mut invocation = Invocation::new(WorkflowRef::WorkflowId("wf".into()));
    invocation.async_delivery = Some(AsyncDelivery { callback_url: None });
    let target = WorkflowTarget {
        provider: None,
        workflow: invocation.workflow.clone(),
    };
    tracker
        .start(&target, invocation, Deadline::NONE, None)
        .await
        .unwrap()
}

pub(super) async fn running_run(tracker: &RunTracker) -> String {
    let id = RunId::new("kn", "e-1");
    tracker
        .store
        .insert(RunRecord::new(id.clone(), RunStatus::Running))
        .await
        .unwrap();
    tracker.gateway.run_ids().sign(&id)
}

async fn first_then_error(stream: &mut RunStream) -> GatewayError {
    let first = stream.next().await.and_then(Result::ok);
    assert_eq!(first.map(|r| r.status), Some(RunStatus::Running));
    match stream.next().await {
        Some(Err(error)) => {
            assert!(stream.next().await.is_none(), "an error ends the stream");
            error
        }
        other => panic!("expected the stream to end with an error: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_poller_releases_its_key_and_its_streams_end() {
    let (tracker, _) = tracker(Polls::PanicOnce, true);
    let run_id = running_run(&tracker).await;
    let mut stream = tracker.stream(&run_id).await.unwrap();
    let error = first_then_error(&mut stream).await;
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::Unavailable, REASON_WATCH_FAILED)
    );
    assert_eq!(tracker.watchers.len(), 0, "the key was released");
    // A new stream polls again and sees the run complete.
    let mut stream = tracker.stream(&run_id).await.unwrap();
    stream.next().await.unwrap().unwrap();
    let last = stream.next().await.unwrap().unwrap();
    assert_eq!(last.status, RunStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_poller_that_keeps_failing_gives_up_and_says_so() {
    let (tracker, provider) = tracker(Polls::Fail, true);
    let run_id = running_run(&tracker).await;
    let mut stream = tracker.stream(&run_id).await.unwrap();
    let error = first_then_error(&mut stream).await;
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::Unavailable, REASON_POLL_GAVE_UP)
    );
    assert!(error.metadata.contains(&("failures".into(), "3".into())));
    assert_eq!(provider.count.load(Ordering::SeqCst), 3);
    assert_eq!(tracker.watchers.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stream_nothing_updates_ends_at_max_watch() {
    let (tracker, _) = tracker(Polls::NoEndpoint, true);
    let run_id = running_run(&tracker).await;
    let mut stream = tracker.stream(&run_id).await.unwrap();
    let opened = tokio::time::Instant::now();
    let error = first_then_error(&mut stream).await;
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::DeadlineExceeded, REASON_WATCH_LIMIT)
    );
    assert!(opened.elapsed() >= Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_stream_no_poller_can_follow_ends_at_once_with_retry_info() {
    let (tracker, provider) = tracker_with(Polls::Running, true, |config| config.max_watchers = 1);
    let polled = running_run(&tracker).await;
    let mut first = tracker.stream(&polled).await.unwrap();
    first.next().await.unwrap().unwrap();
    let other = RunId::new("kn", "e-2");
    let record = RunRecord::new(other.clone(), RunStatus::Running);
    tracker.store.insert(record).await.unwrap();
    let other = tracker.gateway.run_ids().sign(&other);
    let opened = tokio::time::Instant::now();
    let mut refused = tracker.stream(&other).await.unwrap();
    let error = first_then_error(&mut refused).await;
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::Unavailable, REASON_WATCHERS_EXHAUSTED)
    );
    assert_eq!(error.retry_after, Some(WATCHERS_EXHAUSTED_RETRY));
    assert!(
        opened.elapsed() < Duration::from_secs(1),
        "ended at once, not at max_watch"
    );
    // Once the first run is no longer polled, the other one is.
    drop(first);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(tracker.watchers.len(), 0);
    let before = polls(&provider);
    let mut followed = tracker.stream(&other).await.unwrap();
    followed.next().await.unwrap().unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), followed.next()).await;
    assert!(waited.is_err(), "a polled stream stays open: {waited:?}");
    assert!(polls(&provider) > before);
}

#[tokio::test(start_paused = true)]
async fn a_poller_stops_at_max_watch_and_ends_its_streams() {
    let (tracker, provider) = tracker(Polls::Running, true);
    let run_id = running_run(&tracker).await;
    let mut stream = tracker.stream(&run_id).await.unwrap();
    let error = first_then_error(&mut stream).await;
    assert_eq!(error.reason, REASON_WATCH_LIMIT);
    let polls = provider.count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        provider.count.load(Ordering::SeqCst),
        polls,
        "polling stopped"
    );
    assert_eq!(tracker.watchers.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_open_streams_and_refuses_new_ones() {
    let (tracker, _) = tracker(Polls::Running, true);
    let run_id = running_run(&tracker).await;
    let mut stream = tracker.stream(&run_id).await.unwrap();
    stream.next().await.unwrap().unwrap();
    tracker.begin_shutdown();
    let error = stream.next().await.unwrap().unwrap_err();
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::Unavailable, REASON_SHUTTING_DOWN)
    );
    let refused = tracker.stream(&run_id).await.unwrap_err();
    assert_eq!(refused.reason, REASON_SHUTTING_DOWN);
    let report = tracker
        .drain(tokio::time::Instant::now() + Duration::from_secs(30))
        .await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(tracker.watchers.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_background_run_that_dies_ends_its_streams_and_later_ones() {
    let (tracker, _) = tracker(Polls::Running, false);
    let invoked = start_background(&tracker).await;
    let run_id = tracker.gateway.run_ids().sign(&invoked.run_id);
    let mut stream = tracker.stream(&run_id).await.unwrap();
    let error = first_then_error(&mut stream).await;
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::Unavailable, REASON_WATCH_FAILED)
    );
    let later = tracker.stream(&run_id).await.unwrap_err();
    assert_eq!(later.reason, REASON_WATCH_FAILED);
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_background_runs_until_the_deadline_and_reports_the_rest() {
    let (tracker, _) = tracker(Polls::Hang, false);
    start_background(&tracker).await;
    let started = tokio::time::Instant::now();
    let grace = Duration::from_secs(5);
    let report = tracker.drain(started + grace).await;
    assert_eq!(report.background_runs, 1, "{report:?}");
    assert_eq!(started.elapsed(), grace, "it got the whole grace");
}

/// The provider's status polls so far.
pub(super) fn polls(provider: &Fake) -> usize {
    provider.count.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn two_streams_on_one_run_share_one_poller() {
    let (tracker, provider) = tracker(Polls::CompletesAfter(10), true);
    let run_id = running_run(&tracker).await;
    let mut a = tracker.stream(&run_id).await.unwrap();
    let mut b = tracker.stream(&run_id).await.unwrap();
    assert_eq!(tracker.watchers.len(), 1, "one poller for the run");
    // Polls every 100 ms: one poller has polled 5 times by 550 ms (two
    // would have polled 10 times, and the run would be complete).
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(polls(&provider), 5);
    for stream in [&mut a, &mut b] {
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.status, RunStatus::Running);
        let last = stream.next().await.unwrap().unwrap();
        assert_eq!(
            (last.status, last.output),
            (RunStatus::Completed, Some(json!("done")))
        );
        assert!(
            stream.next().await.is_none(),
            "ends after the terminal state"
        );
    }
    // The eleventh poll answered COMPLETED; both streams saw that one.
    assert_eq!(polls(&provider), 11);
    // The poller notices the terminal state at its next tick and leaves
    // without polling again.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(polls(&provider), 11);
    assert_eq!(tracker.watchers.len(), 0, "the poller left");
}

#[tokio::test(start_paused = true)]
async fn a_shared_poller_that_gives_up_ends_every_stream_and_a_new_stream_polls_again() {
    let (tracker, provider) = tracker(Polls::Fail, true);
    let run_id = running_run(&tracker).await;
    let mut a = tracker.stream(&run_id).await.unwrap();
    let mut b = tracker.stream(&run_id).await.unwrap();
    for stream in [&mut a, &mut b] {
        let error = first_then_error(stream).await;
        assert_eq!(
            (error.class, error.reason.as_str()),
            (ErrorClass::Unavailable, REASON_POLL_GAVE_UP)
        );
        assert!(error.metadata.contains(&("failures".into(), "3".into())));
    }
    assert_eq!(polls(&provider), 3, "max_poll_failures polls, shared");
    assert_eq!(tracker.watchers.len(), 0);
    // The run itself is not failed: it is still RUNNING as far as anyone
    // knows, and a new stream resumes polling (and gives up again).
    let record = tracker
        .store
        .get(&RunId::new("kn", "e-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RunStatus::Running);
    let mut again = tracker.stream(&run_id).await.unwrap();
    let error = first_then_error(&mut again).await;
    assert_eq!(error.reason, REASON_POLL_GAVE_UP);
    assert_eq!(polls(&provider), 6);
}

#[tokio::test(start_paused = true)]
async fn only_consecutive_poll_failures_count_towards_giving_up() {
    let (tracker, provider) = tracker(Polls::Flaky, true);
    let run_id = running_run(&tracker).await;
    let mut stream = tracker.stream(&run_id).await.unwrap();
    let error = first_then_error(&mut stream).await;
    // Two failures, a success, two failures...: never three in a row, so
    // the poller keeps going until the watch limit (60 s at 100 ms).
    assert_eq!(
        (error.class, error.reason.as_str()),
        (ErrorClass::DeadlineExceeded, REASON_WATCH_LIMIT)
    );
    assert!(polls(&provider) > 100, "{} polls", polls(&provider));
}

#[tokio::test(start_paused = true)]
async fn the_poller_stops_when_its_last_stream_is_dropped() {
    let (tracker, provider) = tracker(Polls::Running, true);
    let run_id = running_run(&tracker).await;
    let a = tracker.stream(&run_id).await.unwrap();
    let b = tracker.stream(&run_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(polls(&provider), 2);
    // One stream left: polling goes on for the other.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(polls(&provider), 4);
    assert_eq!(tracker.watchers.len(), 1);
    // Nobody watches: at its next tick the poller leaves without polling.
    drop(b);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(polls(&provider), 4, "polling stopped");
    assert_eq!(tracker.watchers.len(), 0);
    // Watching again starts a new poller.
    let _c = tracker.stream(&run_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(polls(&provider), 5);
    assert_eq!(tracker.watchers.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_that_owes_a_forward_is_polled_with_nobody_watching() {
    let (tracker, provider) = tracker(Polls::CompletesAfter(20), true);
    let id = RunId::new("kn", "e-1");
    let mut record = RunRecord::new(id.clone(), RunStatus::Running);
    record.callback_url = Some("https://caller.example/done".into());
    tracker.store.insert(record).await.unwrap();
    let run_id = tracker.gateway.run_ids().sign(&id);
    drop(tracker.stream(&run_id).await.unwrap());
    // The completion event is owed to the caller's callback URL: the
    // poller goes on without streams until the run ends, then leaves.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(polls(&provider), 21);
    assert_eq!(
        tracker.store.get(&id).await.unwrap().map(|r| r.status),
        Some(RunStatus::Completed)
    );
    assert_eq!(tracker.watchers.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_terminal_state_is_never_overwritten_by_a_later_event() {
    let (tracker, provider) = tracker(Polls::CompletesAfter(1), true);
    let run_id = running_run(&tracker).await;
    let id = RunId::new("kn", "e-1");
    let mut stream = tracker.stream(&run_id).await.unwrap();
    stream.next().await.unwrap().unwrap();
    let done = stream.next().await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    // Late events (a duplicate callback, a delayed poll answer) say
    // otherwise; none of them moves the run.
    for status in [RunStatus::Failed, RunStatus::Running, RunStatus::Cancelled] {
        tracker
            .apply(
                &id,
                RunChange {
                    status,
                    output: None,
                    error: Some(RunError {
                        code: "LATE".into(),
                        message: "late".into(),
                    }),
                    usage: Default::default(),
                },
            )
            .await
            .unwrap();
    }
    let record = tracker.store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.output, record.error),
        (RunStatus::Completed, Some(json!("done")), None)
    );
    // A stream opened now gets the terminal state and ends, without
    // starting a poller.
    let polled = polls(&provider);
    let mut late = tracker.stream(&run_id).await.unwrap();
    let first = late.next().await.unwrap().unwrap();
    assert_eq!(first.status, RunStatus::Completed);
    assert!(late.next().await.is_none());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(polls(&provider), polled);
    assert_eq!(tracker.watchers.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_background_run_goes_through_the_gateway_and_invalidates_a_stale_schema() {
    let (tracker, _) = tracker(Polls::RejectsInputs, false);
    let mut invocation = Invocation::new(WorkflowRef::WorkflowId("wf".into()));
    invocation.inputs.insert("text".into(), json!("hello"));
    invocation.async_delivery = Some(AsyncDelivery { callback_url: None });
    let target = WorkflowTarget {
        provider: None,
        workflow: invocation.workflow.clone(),
    };
    // Checked up front against the (cached) schema: accepted.
    let invoked = tracker
        .start(&target, invocation.clone(), Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(tracker.gateway.schemas().stats().fetches, 1);
    let run_id = tracker.gateway.run_ids().sign(&invoked.run_id);
    let mut stream = tracker.stream(&run_id).await.unwrap();
    let mut last = stream.next().await.unwrap().unwrap();
    while let Some(next) = stream.next().await {
        last = next.unwrap();
    }
    assert_eq!(last.status, RunStatus::Failed);
    assert_eq!(last.error.map(|e| e.code), Some("INVALID_REQUEST".into()));
    // The upstream refused what the cached schema accepted: the entry is
    // dropped, and the next run fetches the schema afresh.
    assert_eq!(tracker.gateway.schemas().stats().invalidations, 1);
    tracker
        .start(&target, invocation, Deadline::NONE, None)
        .await
        .unwrap();
    assert_eq!(tracker.gateway.schemas().stats().fetches, 2);
}

#[tokio::test(start_paused = true)]
async fn a_synchronous_call_is_not_the_trackers_business() {
    let (tracker, provider) = tracker(Polls::Running, true);
    let invocation = Invocation::new(WorkflowRef::Slug("s".into()));
    let target = WorkflowTarget {
        provider: None,
        workflow: invocation.workflow.clone(),
    };
    let error = tracker
        .start(&target, invocation, Deadline::NONE, None)
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::Internal);
    assert_eq!(polls(&provider), 0);
}
