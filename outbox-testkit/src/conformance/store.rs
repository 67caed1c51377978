//! The `Store` conformance suite.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use outbox_core::{
    Claim, ClaimOptions, Error, Lease, Message, MessageId, NewMessage, NoJitter, Relay,
    RelayConfig, RetryPolicy, SettleAction, Settlement, Store,
};

use crate::scripted::ScriptedPublisher;

/// What a store's test needs besides the [`Store`] itself: its write side, and time.
///
/// Each call of the macro's constructor must give a fresh, empty outbox (its own file,
/// schema or table), so that the tests run in parallel.
pub trait StoreHarness: Send + Sync {
    /// The store under test; clones share the same outbox (the relay gets one).
    type Store: Store + Clone;

    /// The store.
    fn store(&self) -> &Self::Store;

    /// Enqueues `messages` in one transaction (the store's batch form) and commits.
    fn enqueue(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = outbox_core::Result<()>> + Send;

    /// Enqueues `messages` in one transaction and rolls it back.
    fn enqueue_rolled_back(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = outbox_core::Result<()>> + Send;

    /// Starts a transaction that enqueues `message` and stays open until the handle commits.
    /// Only called when the store's capabilities say `concurrent_writers`.
    fn enqueue_held(
        &self,
        message: NewMessage,
    ) -> impl Future<Output = outbox_core::Result<Box<dyn HeldTransaction>>> + Send;

    /// Lets `duration` pass on the store's clock (a manual clock advances; a database
    /// clock is waited for).
    fn advance(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// An open transaction that has enqueued a message.
pub trait HeldTransaction: Send {
    /// Commits it.
    fn commit(self: Box<Self>) -> BoxFuture<'static, outbox_core::Result<()>>;
}

/// Lease used where a test lets a lease expire; short, so that waiting for a database
/// clock stays quick.
const SHORT_LEASE: Duration = Duration::from_millis(300);
const LONG_LEASE: Duration = Duration::from_secs(60);

fn msg(n: usize, key: Option<&str>) -> NewMessage {
    let m = NewMessage::new("conformance.topic", format!("payload-{n}").into_bytes());
    match key {
        Some(k) => m.with_key(k),
        None => m,
    }
}

async fn claim<H: StoreHarness>(h: &H, batch: usize, lease: Duration) -> Claim {
    h.store()
        .claim(&ClaimOptions::new(batch, lease))
        .await
        .expect("claim")
}

fn ids(messages: &[Message]) -> Vec<MessageId> {
    messages.iter().map(|m| m.message_id).collect()
}

async fn settle_all<H: StoreHarness>(h: &H, claim: &Claim, action: SettleAction) {
    let settlements: Vec<Settlement> = claim
        .messages
        .iter()
        .map(|m| Settlement {
            id: m.id,
            action: action.clone(),
        })
        .collect();
    let report = h
        .store()
        .settle(&claim.lease, &settlements)
        .await
        .expect("settle");
    assert_eq!(
        report.applied,
        settlements.len(),
        "settle under a held lease applies"
    );
}

async fn settle_one<H: StoreHarness>(h: &H, lease: &Lease, id: i64, action: SettleAction) {
    let report = h
        .store()
        .settle(lease, &[Settlement { id, action }])
        .await
        .expect("settle");
    assert_eq!(report.applied, 1, "settle under a held lease applies");
}

/// Guarantee 1: a rolled-back transaction leaves no message; a committed one exactly its own.
pub async fn atomic_enqueue<H: StoreHarness>(h: &H) {
    h.enqueue_rolled_back(vec![msg(0, None), msg(1, Some("k"))])
        .await
        .expect("enqueue then roll back");
    assert_eq!(h.store().backlog().await.expect("backlog").pending, 0);
    assert!(claim(h, 10, LONG_LEASE).await.messages.is_empty());

    let committed = vec![msg(2, None), msg(3, Some("k"))];
    let expected: Vec<MessageId> = committed.iter().map(NewMessage::message_id).collect();
    h.enqueue(committed).await.expect("enqueue");
    assert_eq!(h.store().backlog().await.expect("backlog").pending, 2);
    let got = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&got.messages), expected);
}

/// Topic, key, binary payload, headers and message id come back as they were enqueued.
pub async fn message_round_trip<H: StoreHarness>(h: &H) {
    let payload: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let new = NewMessage::new("round.trip", payload.clone())
        .with_key("key-ü")
        .with_header("content-type", "application/octet-stream")
        .with_header("x-trace", "abc=1; d=\"2\"");
    let unkeyed = NewMessage::new("round.trip.2", Vec::new());
    h.enqueue(vec![new.clone(), unkeyed.clone()])
        .await
        .expect("enqueue");
    let got = claim(h, 10, LONG_LEASE).await.messages;
    assert_eq!(got.len(), 2);
    let m = &got[0];
    assert_eq!(m.message_id, new.message_id());
    assert_eq!(m.topic, "round.trip");
    assert_eq!(m.key.as_deref(), Some("key-ü"));
    assert_eq!(m.payload, payload);
    assert_eq!(&m.headers, new.headers());
    assert_eq!(m.attempts, 0);
    assert!(got[0].id < got[1].id, "ids grow with enqueue order");
    assert_eq!(got[1].key, None);
    assert!(got[1].payload.is_empty());
    assert!(got[1].headers.is_empty());
}

/// Enqueueing the same message id twice is refused; the first copy stays.
pub async fn duplicate_message_id_is_refused<H: StoreHarness>(h: &H) {
    let first = msg(0, None);
    h.enqueue(vec![first.clone()]).await.expect("enqueue");
    let again = msg(1, None).with_message_id(first.message_id());
    let err = h
        .enqueue(vec![again])
        .await
        .expect_err("duplicate id must fail");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert_eq!(
        ids(&claim(h, 10, LONG_LEASE).await.messages),
        vec![first.message_id()]
    );
}

/// A claim takes at most the batch size, lowest ids first.
pub async fn claim_honours_batch_size<H: StoreHarness>(h: &H) {
    let all: Vec<NewMessage> = (0..5).map(|n| msg(n, None)).collect();
    let expected: Vec<MessageId> = all.iter().map(NewMessage::message_id).collect();
    h.enqueue(all).await.expect("enqueue");
    let first = claim(h, 2, LONG_LEASE).await;
    assert_eq!(ids(&first.messages), expected[..2]);
    let rest = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&rest.messages), expected[2..]);
}

/// A message under an unexpired lease is never returned to a second claimer.
pub async fn claim_respects_lease<H: StoreHarness>(h: &H) {
    h.enqueue((0..3).map(|n| msg(n, None)).collect())
        .await
        .expect("enqueue");
    assert_eq!(claim(h, 10, LONG_LEASE).await.messages.len(), 3);
    assert!(claim(h, 10, LONG_LEASE).await.messages.is_empty());
    assert_eq!(h.store().backlog().await.expect("backlog").leased, 3);
}

/// Two claimers racing never get the same message, and together they get all of them.
pub async fn concurrent_claims_are_disjoint<H: StoreHarness>(h: &H) {
    let all: Vec<NewMessage> = (0..200).map(|n| msg(n, None)).collect();
    let expected: HashSet<MessageId> = all.iter().map(NewMessage::message_id).collect();
    h.enqueue(all).await.expect("enqueue");
    let mut seen = HashSet::new();
    loop {
        let (a, b) = futures::join!(claim(h, 17, LONG_LEASE), claim(h, 17, LONG_LEASE));
        if a.messages.is_empty() && b.messages.is_empty() {
            break;
        }
        for id in ids(&a.messages).into_iter().chain(ids(&b.messages)) {
            assert!(seen.insert(id), "message {id} claimed twice");
        }
    }
    assert_eq!(seen, expected);
}

/// When a lease expires its messages are due again, for a new lease.
pub async fn expired_lease_is_reclaimable<H: StoreHarness>(h: &H) {
    h.enqueue(vec![msg(0, Some("k"))]).await.expect("enqueue");
    let first = claim(h, 10, SHORT_LEASE).await;
    assert_eq!(first.messages.len(), 1);
    h.advance(SHORT_LEASE + Duration::from_millis(200)).await;
    let second = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&second.messages), ids(&first.messages));
    assert_ne!(second.lease.token, first.lease.token);
    assert_eq!(
        second.messages[0].attempts, 0,
        "an expiry is not a failed attempt"
    );
}

/// Settling or renewing under a lease that was taken over is refused and changes nothing.
pub async fn stale_lease_is_refused<H: StoreHarness>(h: &H) {
    h.enqueue(vec![msg(0, None)]).await.expect("enqueue");
    let stale = claim(h, 10, SHORT_LEASE).await;
    h.advance(SHORT_LEASE + Duration::from_millis(200)).await;
    let current = claim(h, 10, LONG_LEASE).await;
    assert_eq!(current.messages.len(), 1);

    let id = stale.messages[0].id;
    let report = h
        .store()
        .settle(
            &stale.lease,
            &[Settlement {
                id,
                action: SettleAction::Published,
            }],
        )
        .await
        .expect("settle");
    assert_eq!((report.applied, report.lost), (0, 1));
    let renewed = h.store().renew(&stale.lease, LONG_LEASE).await;
    assert!(
        matches!(renewed, Err(Error::LeaseLost { .. })),
        "{renewed:?}"
    );

    // The current holder still holds it: its settlement applies.
    settle_one(h, &current.lease, id, SettleAction::Published).await;
    assert_eq!(h.store().backlog().await.expect("backlog").pending, 0);
}

/// Renewing keeps the messages leased past the original expiry.
pub async fn renew_extends_the_lease<H: StoreHarness>(h: &H) {
    h.enqueue(vec![msg(0, None)]).await.expect("enqueue");
    let held = claim(h, 10, SHORT_LEASE).await;
    let renewed = h
        .store()
        .renew(&held.lease, LONG_LEASE)
        .await
        .expect("renew");
    assert_eq!(renewed.token, held.lease.token);
    assert!(renewed.expires_at > held.lease.expires_at);
    h.advance(SHORT_LEASE + Duration::from_millis(200)).await;
    assert!(claim(h, 10, LONG_LEASE).await.messages.is_empty());
}

/// A released message is due at once, without counting an attempt.
pub async fn release_makes_due_without_an_attempt<H: StoreHarness>(h: &H) {
    h.enqueue(vec![msg(0, Some("k"))]).await.expect("enqueue");
    let first = claim(h, 10, LONG_LEASE).await;
    settle_all(h, &first, SettleAction::Release).await;
    let again = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&again.messages), ids(&first.messages));
    assert_eq!(again.messages[0].attempts, 0);
}

/// A key's consecutive messages may come in one claim, in enqueue order, beside other keys.
pub async fn claim_returns_key_runs_in_order<H: StoreHarness>(h: &H) {
    let all = vec![
        msg(0, Some("a")),
        msg(1, Some("b")),
        msg(2, Some("a")),
        msg(3, None),
        msg(4, Some("a")),
    ];
    let expected: Vec<MessageId> = all.iter().map(NewMessage::message_id).collect();
    h.enqueue(all).await.expect("enqueue");
    assert_eq!(ids(&claim(h, 10, LONG_LEASE).await.messages), expected);
}

/// Guarantee 3: while a key's head is leased or waiting for a retry, its later messages
/// are not claimed; once the head is due they come after it.
pub async fn head_of_key_blocks_its_key<H: StoreHarness>(h: &H) {
    let (k1, k2) = (msg(0, Some("k")), msg(1, Some("k")));
    h.enqueue(vec![k1.clone(), k2.clone()])
        .await
        .expect("enqueue");
    let head = claim(h, 1, LONG_LEASE).await;
    assert_eq!(ids(&head.messages), vec![k1.message_id()]);
    assert!(
        claim(h, 10, LONG_LEASE).await.messages.is_empty(),
        "k2 waits for leased k1"
    );

    let delay = Duration::from_millis(500);
    settle_all(
        h,
        &head,
        SettleAction::Retry {
            delay,
            error: "broker down".into(),
        },
    )
    .await;
    assert!(
        claim(h, 10, LONG_LEASE).await.messages.is_empty(),
        "k2 waits for retrying k1"
    );

    h.advance(delay + Duration::from_millis(200)).await;
    // k1 comes first; k2 may come in the same claim (a run) or once k1 is settled.
    let next = claim(h, 10, LONG_LEASE).await;
    assert_eq!(
        next.messages.first().map(|m| m.message_id),
        Some(k1.message_id())
    );
    assert_eq!(next.messages[0].attempts, 1);
    if next.messages.len() == 1 {
        settle_all(h, &next, SettleAction::Published).await;
        let rest = claim(h, 10, LONG_LEASE).await;
        assert_eq!(ids(&rest.messages), vec![k2.message_id()]);
        assert_eq!(rest.messages[0].attempts, 0);
    } else {
        assert_eq!(ids(&next.messages), vec![k1.message_id(), k2.message_id()]);
        assert_eq!(next.messages[1].attempts, 0);
    }
}

/// A key with a long queue under someone else's lease does not hold back other keys:
/// claims do not have to wade through blocked messages to find due ones.
pub async fn busy_key_does_not_hold_back_other_keys<H: StoreHarness>(h: &H) {
    if !h.store().capabilities().skips_busy_keys {
        println!(
            "busy_key_does_not_hold_back_other_keys: not applicable, this store reads a bounded \
             window of due messages (StoreCapabilities::skips_busy_keys is false)"
        );
        return;
    }
    h.enqueue((0..700).map(|n| msg(n, Some("hot"))).collect())
        .await
        .expect("enqueue");
    let (cold, unkeyed) = (msg(700, Some("cold")), msg(701, None));
    h.enqueue(vec![cold.clone(), unkeyed.clone()])
        .await
        .expect("enqueue");
    let hot = claim(h, 1, LONG_LEASE).await;
    assert_eq!(
        hot.messages[0].key.as_deref(),
        Some("hot"),
        "the oldest first"
    );
    let others = claim(h, 10, LONG_LEASE).await;
    assert_eq!(
        ids(&others.messages),
        vec![cold.message_id(), unkeyed.message_id()]
    );
}

/// However small the batch, a claim never returns a key's later message before an earlier
/// one: not after a retry (with messages enqueued meanwhile), not after a requeue.
pub async fn small_claims_keep_key_order_after_retry_and_requeue<H: StoreHarness>(h: &H) {
    let j1 = msg(0, Some("j"));
    h.enqueue(vec![j1.clone()]).await.expect("enqueue");
    let first = claim(h, 1, LONG_LEASE).await;
    let delay = Duration::from_millis(500);
    settle_all(
        h,
        &first,
        SettleAction::Retry {
            delay,
            error: "e".into(),
        },
    )
    .await;
    let j2 = msg(1, Some("j"));
    h.enqueue(vec![j2.clone()])
        .await
        .expect("enqueue while j1 waits");
    h.advance(delay + Duration::from_millis(200)).await;
    assert_eq!(
        ids(&claim(h, 1, LONG_LEASE).await.messages),
        vec![j1.message_id()]
    );

    let (k1, k2, k3) = (msg(2, Some("k")), msg(3, Some("k")), msg(4, Some("k")));
    h.enqueue(vec![k1.clone(), k2.clone(), k3.clone()])
        .await
        .expect("enqueue");
    let head = claim(h, 1, LONG_LEASE).await;
    assert_eq!(ids(&head.messages), vec![k1.message_id()]);
    settle_all(h, &head, SettleAction::Dead { reason: "r".into() }).await;
    let rest = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&rest.messages), vec![k2.message_id(), k3.message_id()]);
    settle_all(h, &rest, SettleAction::Release).await;
    h.store()
        .requeue_dead(&[head.messages[0].id])
        .await
        .expect("requeue");
    h.advance(Duration::from_millis(50)).await;
    assert_eq!(
        ids(&claim(h, 1, LONG_LEASE).await.messages),
        vec![k1.message_id()]
    );
    assert!(
        claim(h, 10, LONG_LEASE).await.messages.is_empty(),
        "k2, k3 wait for k1"
    );
}

/// A retrying key holds back only itself: other keys and unkeyed messages keep flowing.
pub async fn other_keys_flow_while_one_retries<H: StoreHarness>(h: &H) {
    let stuck = msg(0, Some("stuck"));
    let behind = msg(1, Some("stuck"));
    h.enqueue(vec![
        stuck.clone(),
        behind.clone(),
        msg(2, Some("free")),
        msg(3, None),
    ])
    .await
    .expect("enqueue");
    let first = claim(h, 10, LONG_LEASE).await;
    assert_eq!(first.messages.len(), 4);
    let mut settlements = vec![
        Settlement {
            id: first.messages[0].id,
            action: SettleAction::Retry {
                delay: Duration::from_secs(3600),
                error: "no".into(),
            },
        },
        Settlement {
            id: first.messages[1].id,
            action: SettleAction::Release,
        },
    ];
    settlements.extend(first.messages[2..].iter().map(|m| Settlement {
        id: m.id,
        action: SettleAction::Published,
    }));
    h.store()
        .settle(&first.lease, &settlements)
        .await
        .expect("settle");

    let later = vec![msg(4, Some("free")), msg(5, None), msg(6, Some("stuck"))];
    let expected: Vec<MessageId> = later[..2].iter().map(NewMessage::message_id).collect();
    h.enqueue(later).await.expect("enqueue");
    assert_eq!(ids(&claim(h, 10, LONG_LEASE).await.messages), expected);
}

/// Guarantee 5: a retried message is not due before its delay and is due after it; a
/// message with a future not-before time waits too.
pub async fn backoff_schedule_is_honoured<H: StoreHarness>(h: &H) {
    let held_back = msg(9, None).with_not_before(chrono::Utc::now() + chrono::Duration::hours(1));
    h.enqueue(vec![msg(0, None), held_back])
        .await
        .expect("enqueue");
    let first = claim(h, 10, LONG_LEASE).await;
    assert_eq!(first.messages.len(), 1, "the not-before message waits");
    let delay = Duration::from_millis(800);
    settle_all(
        h,
        &first,
        SettleAction::Retry {
            delay,
            error: "e".into(),
        },
    )
    .await;
    h.advance(delay / 4).await;
    assert!(
        claim(h, 10, LONG_LEASE).await.messages.is_empty(),
        "not due before its delay"
    );
    h.advance(delay).await;
    let again = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&again.messages), ids(&first.messages));
    assert_eq!(again.messages[0].attempts, 1);
}

/// Dead messages are listed with their reason, do not block their key, and can be requeued.
pub async fn dead_letters_are_listed_and_requeued<H: StoreHarness>(h: &H) {
    let (k1, k2) = (msg(0, Some("k")), msg(1, Some("k")));
    h.enqueue(vec![k1.clone(), k2.clone()])
        .await
        .expect("enqueue");
    let head = claim(h, 1, LONG_LEASE).await;
    settle_all(
        h,
        &head,
        SettleAction::Dead {
            reason: "rejected: no such topic".into(),
        },
    )
    .await;

    let next = claim(h, 10, LONG_LEASE).await;
    assert_eq!(
        ids(&next.messages),
        vec![k2.message_id()],
        "a dead head does not block its key"
    );
    settle_all(h, &next, SettleAction::Published).await;

    let dead = h.store().dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.message_id, k1.message_id());
    assert_eq!(dead[0].reason, "rejected: no such topic");
    assert_eq!(dead[0].message.attempts, 1);
    let backlog = h.store().backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.dead), (0, 1));

    assert_eq!(
        h.store()
            .requeue_dead(&[dead[0].message.id, 999_999])
            .await
            .expect("requeue"),
        1
    );
    let again = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&again.messages), vec![k1.message_id()]);
    assert_eq!(again.messages[0].attempts, 0);
    assert!(
        h.store()
            .dead_letters(10)
            .await
            .expect("dead letters")
            .is_empty()
    );
}

/// Through a relay: a poison message is retried up to the maximum, then dead with its last
/// error, while every other message (other keys, and its own key's later ones once it is
/// dead) is published.
pub async fn poison_message_dies_after_max_attempts<H: StoreHarness>(h: &H) {
    let poison = msg(0, Some("p"));
    let mut all = vec![poison.clone()];
    all.extend((1..30).map(|n| msg(n, Some(["p", "q", "r"][n % 3]))));
    h.enqueue(all.clone()).await.expect("enqueue");

    let (publisher, script) = ScriptedPublisher::new();
    script.fail_forever(poison.message_id());
    let mut config = RelayConfig::default();
    config.batch_size = 7;
    config.lease_duration = Duration::from_secs(5);
    config.shutdown_deadline = Duration::from_secs(1);
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(20),
    };
    let relay = Relay::new(h.store().clone(), publisher, config)
        .expect("config")
        .with_jitter(Arc::new(NoJitter));
    for _ in 0..20 {
        relay.drain().await.expect("drain");
        if !h.store().dead_letters(1).await.expect("dead").is_empty() {
            break;
        }
        h.advance(Duration::from_millis(30)).await;
    }
    relay.drain().await.expect("drain");

    let dead = h.store().dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.message_id, poison.message_id());
    assert_eq!(dead[0].message.attempts, 3);
    assert!(dead[0].reason.contains("poison"), "{}", dead[0].reason);
    let published: HashSet<MessageId> = ids_of_received(&script);
    let others: HashSet<MessageId> = all[1..].iter().map(NewMessage::message_id).collect();
    assert_eq!(published, others);
    assert_eq!(h.store().backlog().await.expect("backlog").pending, 0);
}

fn ids_of_received(script: &crate::ScriptHandle) -> HashSet<MessageId> {
    script.received().iter().map(|r| r.message_id).collect()
}

/// Purging removes only published messages: unsettled and dead ones stay.
pub async fn purge_keeps_unsettled_and_dead<H: StoreHarness>(h: &H) {
    h.enqueue(vec![msg(0, None), msg(1, None), msg(2, None)])
        .await
        .expect("enqueue");
    let c = claim(h, 2, LONG_LEASE).await;
    settle_one(h, &c.lease, c.messages[0].id, SettleAction::Published).await;
    settle_one(
        h,
        &c.lease,
        c.messages[1].id,
        SettleAction::Dead { reason: "r".into() },
    )
    .await;
    h.advance(Duration::from_millis(50)).await;
    h.store()
        .purge_published(Duration::ZERO)
        .await
        .expect("purge");
    let backlog = h.store().backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.dead), (1, 1));
    assert_eq!(claim(h, 10, LONG_LEASE).await.messages.len(), 1);
    assert_eq!(h.store().dead_letters(10).await.expect("dead").len(), 1);
}

/// Guarantee 4: a transaction that took a lower id and commits after a higher id was
/// published is still published; a rolled-back id gap stalls nothing.
pub async fn late_commit_is_published<H: StoreHarness>(h: &H) {
    if !h.store().capabilities().concurrent_writers {
        println!("late_commit_is_published: not applicable, this store has a single writer");
        return;
    }
    let late = msg(0, Some("late"));
    let held = h.enqueue_held(late.clone()).await.expect("enqueue held");
    h.enqueue_rolled_back(vec![msg(1, None)])
        .await
        .expect("rollback");
    let early = msg(2, None);
    h.enqueue(vec![early.clone()]).await.expect("enqueue");
    let first = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&first.messages), vec![early.message_id()]);
    settle_all(h, &first, SettleAction::Published).await;

    held.commit().await.expect("commit the late transaction");
    let second = claim(h, 10, LONG_LEASE).await;
    assert_eq!(ids(&second.messages), vec![late.message_id()]);
}
