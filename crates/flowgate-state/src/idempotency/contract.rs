//! The behaviour every [`IdempotencyStore`] must show, as one suite run
//! against each implementation (the memory store here, Redis in its crate).
//! Each check uses keys under `prefix`, so suites can share a server.

use std::time::Duration;

use bytes::Bytes;

use super::{
    Claim, IdempotencyKey, IdempotencyStore, RecordedAnswer, RequestHash, SHARED_SCOPE, Settled,
};

const LEASE: Duration = Duration::from_secs(30);

fn key(prefix: &str, name: &str) -> IdempotencyKey {
    IdempotencyKey {
        scope: SHARED_SCOPE.into(),
        key: format!("{prefix}-{name}"),
    }
}

fn hash(byte: u8) -> RequestHash {
    RequestHash::from_bytes([byte; 32])
}

fn answer(text: &'static str) -> RecordedAnswer {
    RecordedAnswer(Bytes::from_static(text.as_bytes()))
}

/// Runs every check; panics (with the check's name) on the first failure.
pub async fn run_all(store: &dyn IdempotencyStore, prefix: &str) {
    first_claim_wins_and_its_answer_is_replayed(store, prefix).await;
    a_different_request_is_a_mismatch_pending_or_recorded(store, prefix).await;
    a_released_key_can_be_claimed_again(store, prefix).await;
    only_the_owner_records_or_releases(store, prefix).await;
    waiters_see_the_answer(store, prefix).await;
    waiters_see_a_release(store, prefix).await;
    a_wait_ends_in_flight_at_its_limit(store, prefix).await;
    scopes_keep_keys_apart(store, prefix).await;
}

async fn claim(store: &dyn IdempotencyStore, key: &IdempotencyKey, byte: u8) -> Claim {
    match store.claim(key, hash(byte), LEASE).await {
        Ok(claim) => claim,
        Err(err) => panic!("claim failed: {err}"),
    }
}

/// The first claim owns the key; a second is in flight; after recording,
/// every claim gets the answer.
pub async fn first_claim_wins_and_its_answer_is_replayed(
    store: &dyn IdempotencyStore,
    prefix: &str,
) {
    let key = key(prefix, "replay");
    assert_eq!(claim(store, &key, 1).await, Claim::Claimed);
    assert_eq!(claim(store, &key, 1).await, Claim::InFlight);
    assert!(store.record(&key, hash(1), answer("first")).await.is_ok());
    for _ in 0..2 {
        assert_eq!(
            claim(store, &key, 1).await,
            Claim::Recorded(answer("first"))
        );
    }
}

/// Another request under the key is refused, whether the first is
/// pending or recorded.
pub async fn a_different_request_is_a_mismatch_pending_or_recorded(
    store: &dyn IdempotencyStore,
    prefix: &str,
) {
    let key = key(prefix, "mismatch");
    assert_eq!(claim(store, &key, 1).await, Claim::Claimed);
    assert_eq!(claim(store, &key, 2).await, Claim::Mismatch);
    assert!(store.record(&key, hash(1), answer("a")).await.is_ok());
    assert_eq!(claim(store, &key, 2).await, Claim::Mismatch);
}

/// A released claim leaves the key free, for any request.
pub async fn a_released_key_can_be_claimed_again(store: &dyn IdempotencyStore, prefix: &str) {
    let key = key(prefix, "release");
    assert_eq!(claim(store, &key, 1).await, Claim::Claimed);
    assert!(store.release(&key, hash(1)).await.is_ok());
    assert_eq!(claim(store, &key, 2).await, Claim::Claimed);
}

/// Recording or releasing under another request's hash changes nothing.
pub async fn only_the_owner_records_or_releases(store: &dyn IdempotencyStore, prefix: &str) {
    let key = key(prefix, "owner");
    assert_eq!(claim(store, &key, 1).await, Claim::Claimed);
    assert!(store.release(&key, hash(2)).await.is_ok());
    assert!(store.record(&key, hash(2), answer("other")).await.is_ok());
    assert_eq!(claim(store, &key, 1).await, Claim::InFlight);
    assert!(store.record(&key, hash(1), answer("mine")).await.is_ok());
    assert!(store.release(&key, hash(1)).await.is_ok());
    assert_eq!(claim(store, &key, 1).await, Claim::Recorded(answer("mine")));
}

/// A waiter gets the answer soon after it is recorded.
pub async fn waiters_see_the_answer(store: &dyn IdempotencyStore, prefix: &str) {
    let key = key(prefix, "wait-answer");
    assert_eq!(claim(store, &key, 1).await, Claim::Claimed);
    let wait = store.settled(&key, hash(1), Duration::from_secs(10));
    let finish = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(store.record(&key, hash(1), answer("done")).await.is_ok());
    };
    let (settled, ()) = tokio::join!(wait, finish);
    assert_eq!(settled.ok(), Some(Settled::Recorded(answer("done"))));
}

/// A waiter learns that the claim was released.
pub async fn waiters_see_a_release(store: &dyn IdempotencyStore, prefix: &str) {
    let key = key(prefix, "wait-release");
    assert_eq!(claim(store, &key, 1).await, Claim::Claimed);
    let wait = store.settled(&key, hash(1), Duration::from_secs(10));
    let finish = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(store.release(&key, hash(1)).await.is_ok());
    };
    let (settled, ()) = tokio::join!(wait, finish);
    assert_eq!(settled.ok(), Some(Settled::Released));
}

/// A wait is bounded: still in flight when it ends.
pub async fn a_wait_ends_in_flight_at_its_limit(store: &dyn IdempotencyStore, prefix: &str) {
    let key = key(prefix, "wait-limit");
    assert_eq!(claim(store, &key, 1).await, Claim::Claimed);
    let settled = store
        .settled(&key, hash(1), Duration::from_millis(100))
        .await;
    assert_eq!(settled.ok(), Some(Settled::InFlight));
}

/// The same key in two scopes is two keys.
pub async fn scopes_keep_keys_apart(store: &dyn IdempotencyStore, prefix: &str) {
    let a = key(prefix, "scoped");
    let b = IdempotencyKey {
        scope: "caller-b".into(),
        key: a.key.clone(),
    };
    assert_eq!(claim(store, &a, 1).await, Claim::Claimed);
    assert_eq!(claim(store, &b, 2).await, Claim::Claimed);
}
