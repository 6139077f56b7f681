//! The replay guard through a shared [`ReplayStore`]: an id accepted by one
//! verifier (replica) is `Replayed` on another; while the store is down each
//! verifier falls back to its own guard, and recovers by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use flowgate_core::{ReplayStore, SecretString, StateStoreUnavailable};
use flowgate_webhook::{FailureReason, MemoryReplayStore, Verifier, WebhookScheme, sign_knouds};

#[derive(Debug)]
struct Switchable {
    inner: MemoryReplayStore,
    down: AtomicBool,
}

#[async_trait]
impl ReplayStore for Switchable {
    async fn first_seen(&self, id: &str, ttl: Duration) -> Result<bool, StateStoreUnavailable> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StateStoreUnavailable("switched off".into()));
        }
        self.inner.first_seen(id, ttl).await
    }
}

type Delivery = (http::HeaderMap, Vec<u8>, SecretString, SystemTime);

fn delivery(execution: &str) -> Result<Delivery, http::header::InvalidHeaderValue> {
    let secret = SecretString::new("knouds-webhook-secret");
    let body = format!(
        r#"{{"event":"execution.completed","executionId":"{execution}","status":"completed","result":{{"ok":true}}}}"#
    )
    .into_bytes();
    let now = SystemTime::now();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-knouds-signature",
        sign_knouds(&secret, now, &body).parse()?,
    );
    Ok((headers, body, secret, now))
}

#[tokio::test]
async fn an_id_accepted_by_one_verifier_is_replayed_on_another() {
    let store = Arc::new(Switchable {
        inner: MemoryReplayStore::new(100),
        down: AtomicBool::new(false),
    });
    let a = Verifier::default()
        .with_shared_replay(Arc::clone(&store) as Arc<dyn ReplayStore>, "ingress");
    let b = Verifier::default()
        .with_shared_replay(Arc::clone(&store) as Arc<dyn ReplayStore>, "ingress");
    let (headers, body, secret, now) = delivery("ex-1").unwrap();
    let secrets = [secret];
    a.verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
        .await
        .unwrap();
    let again = b
        .verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
        .await
        .unwrap_err();
    assert_eq!(again.reason(), FailureReason::Replayed);
    // Another guard (VerifyWebhook's) in the same store is separate.
    let rpc = Verifier::default()
        .with_shared_replay(Arc::clone(&store) as Arc<dyn ReplayStore>, "verify_webhook");
    assert!(
        rpc.verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
            .await
            .is_ok()
    );
    // A verifier without the shared store knows nothing of it.
    assert!(
        Verifier::default()
            .verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn while_the_store_is_down_each_verifier_guards_itself_then_recovers() {
    let store = Arc::new(Switchable {
        inner: MemoryReplayStore::new(100),
        down: AtomicBool::new(false),
    });
    let a = Verifier::default()
        .with_shared_replay(Arc::clone(&store) as Arc<dyn ReplayStore>, "ingress");
    let b = Verifier::default()
        .with_shared_replay(Arc::clone(&store) as Arc<dyn ReplayStore>, "ingress");
    let (headers, body, secret, now) = delivery("ex-2").unwrap();
    let secrets = [secret];
    store.down.store(true, Ordering::SeqCst);
    a.verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
        .await
        .unwrap();
    let local = a
        .verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
        .await
        .unwrap_err();
    assert_eq!(local.reason(), FailureReason::Replayed, "A's own guard");
    assert!(
        b.verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
            .await
            .is_ok(),
        "B cannot know while the store is down"
    );
    store.down.store(false, Ordering::SeqCst);
    let (headers, body, secret, now) = delivery("ex-3").unwrap();
    let secrets = [secret];
    a.verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
        .await
        .unwrap();
    let shared = b
        .verify_shared(WebhookScheme::Knouds, &headers, &body, &secrets, now)
        .await
        .unwrap_err();
    assert_eq!(shared.reason(), FailureReason::Replayed, "shared again");
}

#[tokio::test]
async fn a_memory_id_expires_after_its_own_ttl() {
    let store = MemoryReplayStore::new(100);
    assert!(
        store
            .first_seen("k", Duration::from_millis(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .first_seen("long", Duration::from_secs(600))
            .await
            .unwrap()
    );
    // Bounded wait for moka's clock; no timing asserted beyond "eventually".
    let mut expired = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if store
            .first_seen("k", Duration::from_secs(600))
            .await
            .unwrap()
        {
            expired = true;
            break;
        }
    }
    assert!(expired, "a 1 ms id is forgotten");
    assert!(
        !store
            .first_seen("long", Duration::from_secs(600))
            .await
            .unwrap()
    );
}
