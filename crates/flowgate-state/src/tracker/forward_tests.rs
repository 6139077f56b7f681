//! Forward leases (real time, short leases, the memory store, a real
//! receiver on 127.0.0.1): a forward holds its lease while its delivery is
//! pending and releases it when the delivery ends; a dead replica's forward
//! (a lease nobody renews) is queued again here with the same `webhook-id`.

use flowgate_core::{CallbackPolicy, ProviderKind};
use flowgate_webhook::{
    DeliveryOutcome, DeliveryResult, Forwarder, ForwarderConfig, StandardSecret, callback_client,
};
use tokio::{io::AsyncReadExt as _, io::AsyncWriteExt as _, net::TcpListener};

use super::forward::forward_lease_id;
use super::tests::{Polls, tracker as plain_tracker};
use super::*;
use crate::{MemoryRunStore, StoreLimits};

const DEAD: &str = "dead-replica-1";
const LEASE: Duration = Duration::from_millis(300);

/// A tracker forwarding with `attempts` attempts 200 to 400 ms apart.
fn tracker(attempts: u32) -> Arc<RunTracker> {
    let (plain, _) = plain_tracker(Polls::Running, true);
    let policy = CallbackPolicy::new(&["127.0.0.1".to_owned()], true).unwrap();
    let forwarder = Forwarder::new(
        ForwarderConfig {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(400),
            max_backoff: Duration::from_millis(400),
            request_timeout: Duration::from_secs(2),
            ..ForwarderConfig::default()
        },
        callback_client(Arc::new(policy)).unwrap(),
    );
    let secret = StandardSecret::generate();
    RunTracker::new(
        Arc::clone(&plain.gateway),
        Arc::new(MemoryRunStore::new(StoreLimits::default())),
        TrackerConfig {
            owner_lease: LEASE,
            ..plain.config.clone()
        },
        IngressConfig::default(),
        Some(Forwarding {
            forwarder,
            secrets: SigningSecrets::new(secret.clone(), vec![secret.to_secret_string()]),
        }),
    )
}

/// A completed run owing its event to `url`, recorded.
async fn completed_run(tracker: &RunTracker, url: String) -> RunRecord {
    let mut record = RunRecord::new(RunId::new("kn", "e-fwd"), RunStatus::Completed);
    record.callback_url = Some(url);
    tracker.store.insert(record.clone()).await.unwrap();
    tracker.store.get(&record.run_id).await.unwrap().unwrap()
}

/// A URL on 127.0.0.1 where nothing listens.
async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}/hook", listener.local_addr().unwrap())
}

/// A receiver answering 204 to every request, counting the `webhook-id`s.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let ids = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ids);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = vec![0; 64 * 1024];
            let read = socket.read(&mut buffer).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buffer[..read]).to_ascii_lowercase();
            if let Some(id) = head
                .lines()
                .find_map(|line| line.strip_prefix("webhook-id:"))
            {
                seen.lock().unwrap().push(id.trim().to_owned());
            }
            let _ = socket
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, ids)
}

async fn outcome_of(
    outcomes: &mut tokio::sync::broadcast::Receiver<DeliveryOutcome>,
    event_id: &str,
) -> DeliveryOutcome {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let outcome = outcomes.recv().await.unwrap();
            if outcome.event_id == event_id {
                return outcome;
            }
        }
    })
    .await
    .expect("the delivery ends within 5 s")
}

/// Whether a "dead replica" can claim `lease_id` (then it holds it, and
/// never renews it).
async fn dead_claims(tracker: &RunTracker, lease_id: &RunId) -> bool {
    tracker
        .store
        .claim_owner(lease_id, DEAD, LEASE)
        .await
        .unwrap()
}

fn forwarder(tracker: &RunTracker) -> &Forwarder {
    &tracker.forwarding.as_ref().unwrap().forwarder
}

#[tokio::test]
async fn a_forward_holds_its_lease_until_its_delivery_is_given_up() {
    // Given up 600 to 1200 ms after the first attempt.
    let tracker = tracker(4);
    let record = completed_run(&tracker, closed_url().await).await;
    let event_id = tracker.delivery(&record).unwrap().event_id;
    let lease_id = forward_lease_id(&record.run_id);
    let mut outcomes = forwarder(&tracker).subscribe();
    tracker.forward(&record);
    // Backing off between attempts for longer than a lease: renewed.
    tokio::time::sleep(LEASE + LEASE / 2).await;
    assert!(
        !dead_claims(&tracker, &lease_id).await,
        "held while the delivery is pending"
    );
    assert!(tracker.store.expired_owners(10).await.unwrap().is_empty());
    let outcome = outcome_of(&mut outcomes, &event_id).await;
    assert!(matches!(outcome.result, DeliveryResult::Exhausted { .. }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        dead_claims(&tracker, &lease_id).await,
        "released once given up"
    );
}

#[tokio::test]
async fn a_dead_replicas_forward_is_delivered_here_with_the_same_webhook_id() {
    let tracker = tracker(1);
    let (url, ids) = receiver().await;
    let record = completed_run(&tracker, url).await;
    let event_id = tracker.delivery(&record).unwrap().event_id;
    let lease_id = forward_lease_id(&record.run_id);
    let mut outcomes = forwarder(&tracker).subscribe();
    let started = tokio::time::Instant::now();
    // The replica that queued the event died holding the forward's lease.
    assert!(dead_claims(&tracker, &lease_id).await);
    let outcome = outcome_of(&mut outcomes, &event_id).await;
    let took = started.elapsed();
    assert!(
        matches!(outcome.result, DeliveryResult::Delivered { status: 204 }),
        "{outcome:?}"
    );
    assert!(
        took >= LEASE && took <= LEASE * 2 + Duration::from_millis(500),
        "delivered after {took:?}: once the lease lapsed, at the next sweep"
    );
    assert_eq!(*ids.lock().unwrap(), vec![event_id], "the same webhook-id");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tracker.store.expired_owners(10).await.unwrap().is_empty(),
        "released once delivered"
    );
    assert!(dead_claims(&tracker, &lease_id).await);
}

#[tokio::test]
async fn a_lapsed_lease_of_a_run_still_running_forwards_nothing() {
    let tracker = tracker(1);
    let (url, ids) = receiver().await;
    let mut record = RunRecord::new(RunId::new("kn", "e-fwd"), RunStatus::Running);
    record.callback_url = Some(url);
    tracker.store.insert(record.clone()).await.unwrap();
    let lease_id = forward_lease_id(&record.run_id);
    assert!(dead_claims(&tracker, &lease_id).await);
    tokio::time::sleep(LEASE * 3).await;
    assert!(ids.lock().unwrap().is_empty(), "nothing is owed yet");
    assert!(
        tracker.store.expired_owners(10).await.unwrap().is_empty(),
        "the sweep released the lease it took"
    );
}

#[test]
fn forward_lease_ids_never_name_a_run() {
    let run = RunId::new("kn", "e-1");
    let lease = forward_lease_id(&run);
    assert_ne!(lease, run);
    assert_eq!(super::forward::forwarded_run(&lease), Some(run.clone()));
    assert_eq!(RunId::decode(&lease.encode()), Some(lease));
    assert_eq!(super::forward::forwarded_run(&run), None);
}

/// The event of a run whose provider left the configuration names the
/// dialect the run started with (kept on its record), not a guess; a
/// record that names none and whose provider is gone owes no event.
#[tokio::test]
async fn a_forwarded_event_names_the_dialect_its_record_keeps() {
    let tracker = tracker(1);
    let mut record = RunRecord::new(RunId::new("gone", "req_9"), RunStatus::Completed);
    record.callback_url = Some("http://127.0.0.1:9/hook".into());
    record.provider_kind = Some(ProviderKind::FetchHive);
    let delivery = tracker.delivery(&record).expect("an event is owed");
    let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(body["data"]["provider"], "fetchhive", "{body}");
    record.provider_kind = None;
    assert!(tracker.delivery(&record).is_none());
    // A provider still configured answers for a record that names none.
    record.run_id = RunId::new("kn", "e-1");
    let delivery = tracker.delivery(&record).expect("an event is owed");
    let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(body["data"]["provider"], "knouds", "{body}");
}
