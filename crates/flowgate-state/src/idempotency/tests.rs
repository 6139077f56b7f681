use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn store() -> Idempotency {
    Idempotency::new(Arc::new(MemoryIdempotencyStore::new(
        Duration::from_secs(3600),
        100,
    )))
}

fn key(name: &str) -> IdempotencyKey {
    match IdempotencyKey::new(SHARED_SCOPE, name) {
        Ok(key) => key,
        Err(err) => panic!("{err}"),
    }
}

fn answer(text: &'static str) -> RecordedAnswer {
    RecordedAnswer(Bytes::from_static(text.as_bytes()))
}

/// Work that counts its runs, sleeps `delay`, then settles.
fn work(
    calls: &Arc<AtomicUsize>,
    delay: Duration,
    settlement: fn() -> Settlement,
) -> impl Future<Output = Settlement> + Send + 'static {
    let calls = Arc::clone(calls);
    async move {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        settlement()
    }
}

fn recorded() -> Settlement {
    Settlement::Record(answer("ok"))
}

fn forgotten() -> Settlement {
    Settlement::Forget(answer("refused"))
}

const HASH: RequestHash = RequestHash::from_bytes([7; 32]);
const LATER: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn the_contract_holds_for_the_memory_store() {
    let store = MemoryIdempotencyStore::new(Duration::from_secs(3600), 100);
    contract::run_all(&store, "mem").await;
}

#[tokio::test(start_paused = true)]
async fn a_replay_does_not_run_the_work_again() {
    let idempotency = store();
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let got = idempotency
            .run(
                key("k"),
                HASH,
                Deadline::after(LATER),
                Deadline::after(LATER),
                work(&calls, Duration::from_millis(10), recorded),
            )
            .await;
        assert_eq!(got.ok().map(|got| got.answer), Some(answer("ok")));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_share_one_run() {
    let idempotency = store();
    let calls = Arc::new(AtomicUsize::new(0));
    let call = || {
        idempotency.run(
            key("k"),
            HASH,
            Deadline::after(LATER),
            Deadline::after(LATER),
            work(&calls, Duration::from_secs(1), recorded),
        )
    };
    let (a, b, c) = tokio::join!(call(), call(), call());
    let mut replays = 0;
    for got in [a, b, c] {
        let got = got.unwrap();
        assert_eq!(got.answer, answer("ok"));
        replays += usize::from(got.replayed);
    }
    assert_eq!(replays, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_different_request_is_refused() {
    let idempotency = store();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = idempotency
        .run(
            key("k"),
            HASH,
            Deadline::NONE,
            Deadline::NONE,
            work(&calls, Duration::ZERO, recorded),
        )
        .await;
    assert!(first.is_ok());
    let err = idempotency
        .run(
            key("k"),
            RequestHash::from_bytes([8; 32]),
            Deadline::NONE,
            Deadline::NONE,
            work(&calls, Duration::ZERO, recorded),
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::FailedPrecondition);
    assert!(err.has_reason(Reason::IdempotencyKeyReused));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_answer_lets_the_retry_run() {
    let idempotency = store();
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let got = idempotency
            .run(
                key("k"),
                HASH,
                Deadline::NONE,
                Deadline::NONE,
                work(&calls, Duration::ZERO, forgotten),
            )
            .await;
        assert_eq!(got.ok().map(|got| got.answer), Some(answer("refused")));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_leaves_the_run_to_finish_for_the_retry() {
    let idempotency = store();
    let calls = Arc::new(AtomicUsize::new(0));
    let err = idempotency
        .run(
            key("k"),
            HASH,
            Deadline::after(Duration::from_secs(1)),
            Deadline::after(LATER),
            work(&calls, Duration::from_secs(5), recorded),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.class, err.has_reason(Reason::IdempotentRequestInFlight)),
        (ErrorClass::DeadlineExceeded, true)
    );
    // The retry waits for the detached first run instead of starting one.
    let got = idempotency
        .run(
            key("k"),
            HASH,
            Deadline::after(LATER),
            Deadline::after(LATER),
            work(&calls, Duration::ZERO, recorded),
        )
        .await;
    assert_eq!(got.ok().map(|got| got.answer), Some(answer("ok")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_at_its_own_deadline() {
    let idempotency = store();
    let calls = Arc::new(AtomicUsize::new(0));
    let first = idempotency.run(
        key("k"),
        HASH,
        Deadline::after(LATER),
        Deadline::after(LATER),
        work(&calls, Duration::from_secs(30), recorded),
    );
    let second = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        idempotency
            .run(
                key("k"),
                HASH,
                Deadline::after(Duration::from_secs(2)),
                Deadline::after(Duration::from_secs(2)),
                work(&calls, Duration::ZERO, recorded),
            )
            .await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first.is_ok());
    assert!(
        second
            .unwrap_err()
            .has_reason(Reason::IdempotentRequestInFlight)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn answers_expire_after_the_ttl() {
    let idempotency = Idempotency::new(Arc::new(MemoryIdempotencyStore::new(
        Duration::from_secs(10),
        100,
    )));
    let calls = Arc::new(AtomicUsize::new(0));
    let run = || {
        idempotency.run(
            key("k"),
            HASH,
            Deadline::NONE,
            Deadline::NONE,
            work(&calls, Duration::ZERO, recorded),
        )
    };
    assert!(run().await.is_ok());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(run().await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(run().await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_store_drops_the_oldest_answers_but_never_a_pending_claim() {
    let store = MemoryIdempotencyStore::new(Duration::from_secs(3600), 2);
    let claim = |name: &'static str| {
        let store = store.clone();
        async move { store.claim(&key(name), HASH, LATER).await.ok() }
    };
    assert_eq!(claim("pending").await, Some(Claim::Claimed));
    assert_eq!(claim("a").await, Some(Claim::Claimed));
    assert!(store.record(&key("a"), HASH, answer("x")).await.is_ok());
    // Full: the answer of `a` makes room for `b`; the pending claim stays.
    assert_eq!(claim("b").await, Some(Claim::Claimed));
    assert_eq!(store.len(), 2);
    assert_eq!(claim("pending").await, Some(Claim::InFlight));
    // Full of pending claims: refused rather than unguarded.
    assert_eq!(claim("c").await, None);
}

#[test]
fn keys_are_bounded() {
    assert!(IdempotencyKey::new(SHARED_SCOPE, "a".repeat(MAX_KEY_BYTES)).is_ok());
    for bad in [String::new(), "a".repeat(MAX_KEY_BYTES + 1)] {
        let err = IdempotencyKey::new(SHARED_SCOPE, bad).unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidArgument);
        assert_eq!(err.violations[0].field, "idempotency_key");
    }
}

#[test]
fn only_errors_that_may_have_started_a_run_are_recorded() {
    let error = |class| GatewayError::new(class, "R", "m");
    assert!(records_error(&error(ErrorClass::DeadlineExceeded)));
    assert!(records_error(&error(ErrorClass::UpstreamFailure)));
    assert!(records_error(&error(ErrorClass::Unavailable)));
    assert!(!records_error(&error(ErrorClass::Unavailable).never_sent()));
    assert!(!records_error(&error(ErrorClass::RateLimited)));
    assert!(!records_error(&error(ErrorClass::InvalidArgument)));
    assert!(!records_error(&error(ErrorClass::QuotaExhausted)));
}

async fn blows_up() -> Settlement {
    panic!("work blew up")
}

/// A first call whose work panics, then up to ten retries (10 ms apart)
/// with work that would record "ok": the first answer that comes, and how
/// often the retries' work ran.
async fn panic_then_retry(idempotency: &Idempotency) -> (Option<RecordedAnswer>, usize) {
    let panicked = idempotency
        .run(
            key("k"),
            HASH,
            Deadline::after(LATER),
            Deadline::after(LATER),
            blows_up(),
        )
        .await;
    let Err(error) = panicked else {
        panic!("a panicking call answered");
    };
    assert_eq!(error.class, ErrorClass::Internal);
    assert_eq!(error.reason, Reason::InternalPanic.as_str());
    assert!(!error.message.contains("blew up"), "{}", error.message);
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let got = idempotency
            .run(
                key("k"),
                HASH,
                Deadline::after(Duration::from_millis(50)),
                Deadline::after(LATER),
                work(&calls, Duration::from_millis(1), recorded),
            )
            .await;
        if let Ok(got) = got {
            return (Some(got.answer), calls.load(Ordering::SeqCst));
        }
    }
    (None, calls.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn a_panicking_first_call_answers_internal_panic_and_its_retries_replay_it() {
    let idempotency = store().with_panic_answer(answer("panicked"));
    // The upstream run may have started: retries replay, never run again.
    assert_eq!(
        panic_then_retry(&idempotency).await,
        (Some(answer("panicked")), 0)
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_panic_answer_the_claim_of_a_panicked_call_is_kept() {
    let idempotency = store();
    // Not released: retries keep waiting (in flight) and run nothing.
    assert_eq!(panic_then_retry(&idempotency).await, (None, 0));
}

/// A first call under `name` whose caller stops waiting after 1 s while
/// its work (`work_time`) goes on detached.
async fn give_up_after_a_second(
    idempotency: &Idempotency,
    name: &str,
    calls: &Arc<AtomicUsize>,
    work_time: Duration,
) {
    let gave_up = idempotency
        .run(
            key(name),
            HASH,
            Deadline::after(Duration::from_secs(1)),
            Deadline::after(LATER),
            work(calls, work_time, recorded),
        )
        .await;
    assert!(gave_up.is_err());
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_detached_first_calls_within_the_grace() {
    let idempotency = store();
    let calls = Arc::new(AtomicUsize::new(0));
    // The caller gives up after 1 s; its work needs 3 s.
    give_up_after_a_second(&idempotency, "k", &calls, Duration::from_secs(3)).await;
    let started = Instant::now();
    let abandoned = idempotency.drain(started + Duration::from_secs(10)).await;
    assert_eq!(abandoned, 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited for the work only"
    );
    // Its answer was recorded before drain returned.
    let replay = idempotency
        .run(
            key("k"),
            HASH,
            Deadline::after(LATER),
            Deadline::after(LATER),
            work(&calls, Duration::ZERO, recorded),
        )
        .await;
    assert_eq!(
        replay.ok().map(|got| (got.answer, got.replayed)),
        Some((answer("ok"), true))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn drain_abandons_and_counts_what_outlives_the_grace() {
    let idempotency = store();
    let calls = Arc::new(AtomicUsize::new(0));
    give_up_after_a_second(&idempotency, "slow", &calls, Duration::from_secs(600)).await;
    let started = Instant::now();
    let abandoned = idempotency.drain(started + Duration::from_secs(5)).await;
    assert_eq!(abandoned, 1);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}
