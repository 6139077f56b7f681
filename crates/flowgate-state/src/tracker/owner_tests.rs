//! Owner leases in the tracker (paused time, the memory store): a lease
//! held by a "dead replica" (a token nobody renews) lapses, and this
//! tracker's sweep fails the gateway-run run or polls the run on; a live
//! holding is renewed and never swept; a stream polls only while no other
//! replica does.

use super::tests::{Polls, polls, running_run, start_background, tracker};
use super::*;

const DEAD: &str = "dead-replica-1";

/// The default lease: these tests follow the real schedule.
fn lease(tracker: &RunTracker) -> Duration {
    tracker.config.owner_lease
}

#[tokio::test(start_paused = true)]
async fn a_gateway_run_run_whose_owner_died_fails_with_gateway_replica_lost() {
    let (tracker, _) = tracker(Polls::Running, false);
    let id = RunId::local("kn");
    tracker
        .store
        .insert(RunRecord::new(id.clone(), RunStatus::Running))
        .await
        .unwrap();
    let lease = lease(&tracker);
    assert!(tracker.store.claim_owner(&id, DEAD, lease).await.unwrap());
    let started = tokio::time::Instant::now();
    let mut stream = tracker
        .stream(&tracker.gateway.run_ids().sign(&id))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.status, RunStatus::Running);
    let last = stream.next().await.unwrap().unwrap();
    let took = started.elapsed();
    assert_eq!(last.status, RunStatus::Failed);
    let error = last.error.unwrap();
    assert_eq!(error.code, "GATEWAY_REPLICA_LOST");
    assert!(error.message.contains("cannot be resumed"), "{error:?}");
    assert!(
        took >= lease && took <= lease + lease / 3 + Duration::from_millis(50),
        "failed after {took:?}: once the lease lapsed, at the next sweep"
    );
    assert!(stream.next().await.is_none(), "the stream ends");
    assert!(
        tracker.store.expired_owners(10).await.unwrap().is_empty(),
        "the sweep released the lease it took"
    );
}

#[tokio::test(start_paused = true)]
async fn a_running_background_run_keeps_its_lease() {
    let (tracker, _) = tracker(Polls::Hang, false);
    let invoked = start_background(&tracker).await;
    tokio::time::sleep(lease(&tracker) * 4).await;
    assert!(tracker.store.expired_owners(10).await.unwrap().is_empty());
    let record = tracker.store.get(&invoked.run_id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Running, "renewed, never swept");
    assert!(
        !tracker
            .store
            .claim_owner(&invoked.run_id, DEAD, lease(&tracker))
            .await
            .unwrap(),
        "still owned"
    );
}

#[tokio::test(start_paused = true)]
async fn a_polled_run_whose_owner_died_is_polled_on_here() {
    let (tracker, provider) = tracker(Polls::CompletesAfter(2), true);
    let id = RunId::new("kn", "e-owned");
    let mut record = RunRecord::new(id.clone(), RunStatus::Running);
    // A completion event is owed: the run must be followed to its end
    // although nobody streams it.
    record.callback_url = Some("https://hooks.example.com/done".into());
    tracker.store.insert(record).await.unwrap();
    let lease = lease(&tracker);
    assert!(tracker.store.claim_owner(&id, DEAD, lease).await.unwrap());
    tokio::time::sleep(lease - Duration::from_secs(1)).await;
    assert_eq!(polls(&provider), 0, "its owner polls it (until it died)");
    tokio::time::sleep(lease).await;
    let record = tracker.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Completed, "polled on here");
    assert_eq!(polls(&provider), 3);
    assert!(tracker.store.expired_owners(10).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stream_polls_only_while_no_other_replica_does() {
    let (tracker, provider) = tracker(Polls::CompletesAfter(2), true);
    let run_id = running_run(&tracker).await;
    let id = RunId::new("kn", "e-1");
    let other = "other-replica-1";
    assert!(
        tracker
            .store
            .claim_owner(&id, other, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let mut stream = tracker.stream(&run_id).await.unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap().status,
        RunStatus::Running
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(polls(&provider), 0, "the other replica polls it");
    tracker.store.release_owner(&id, other).await.unwrap();
    let last = stream.next().await.unwrap().unwrap();
    assert_eq!(
        last.status,
        RunStatus::Completed,
        "polled here once released"
    );
    assert_eq!(polls(&provider), 3);
}
