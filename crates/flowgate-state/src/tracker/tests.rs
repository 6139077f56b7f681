//! Paused-time tests: no run wedges, every stream ends with a typed error.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;
use flowgate_core::{
    AsyncDelivery, ErrorClass, FieldViolation, Invocation, Provider, RunError, WorkflowRef,
};

use super::*;
use crate::{MemoryRunStore, StoreLimits};

/// How a fake provider answers status polls (and, for AI Tutor-like
/// ones, runs).
#[derive(Debug, Clone, Copy)]
enum Polls {
    /// Panics on the first poll, then reports the run completed.
    PanicOnce,
    /// Always fails (UNAVAILABLE).
    Fail,
    /// Has no status endpoint (`Ok(None)`).
    NoEndpoint,
    /// Always RUNNING.
    Running,
    /// (AI Tutor-like) the run itself never answers.
    Hang,
}

#[derive(Debug)]
struct Fake {
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
        if matches!(self.polls, Polls::Hang) {
            std::future::pending::<()>().await;
        }
        panic!("the background run's task dies");
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
            Polls::Running | Polls::Hang => running(RunStatus::Running),
        }
    }
}

fn tracker(polls: Polls, native_async: bool) -> (Arc<RunTracker>, Arc<Fake>) {
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
    let tracker = RunTracker::new(
        gateway,
        Arc::new(MemoryRunStore::new(StoreLimits::default())),
        config,
        IngressConfig::default(),
        None,
    );
    (tracker, provider)
}

async fn running_run(tracker: &RunTracker) -> String {
    let id = RunId::new("kn", "e-1");
    tracker
        .store
        .insert(RunRecord::new(id.clone(), RunStatus::Running))
        .await;
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
    let mut invocation = Invocation::new(WorkflowRef::WorkflowId("wf".into()));
    invocation.async_delivery = Some(AsyncDelivery { callback_url: None });
    let target = WorkflowTarget {
        provider: None,
        workflow: invocation.workflow.clone(),
    };
    let invoked = tracker
        .start(&target, invocation, Deadline::NONE, None)
        .await
        .unwrap();
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
    let mut invocation = Invocation::new(WorkflowRef::WorkflowId("wf".into()));
    invocation.async_delivery = Some(AsyncDelivery { callback_url: None });
    let target = WorkflowTarget {
        provider: None,
        workflow: invocation.workflow.clone(),
    };
    tracker
        .start(&target, invocation, Deadline::NONE, None)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let grace = Duration::from_secs(5);
    let report = tracker.drain(started + grace).await;
    assert_eq!(report.background_runs, 1, "{report:?}");
    assert_eq!(started.elapsed(), grace, "it got the whole grace");
}
