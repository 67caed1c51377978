//! RabbitMQ-specific behaviour against the local broker: returns, nacks, channel errors,
//! connections closed by the broker, connection errors, and a relay end to end.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{
    RabbitHarness, Sharing, admin, assert_acked, close_connection, connection_pid, declare_queue,
    failure, message, rabbit_url, unique,
};
use lapin::types::{AMQPValue, FieldTable};
use outbox_core::{
    CancellationToken, MessageId, NewMessage, PublishOutcome, Publisher, Relay, RelayConfig,
    RetryPolicy, Store,
};
use outbox_rabbitmq::{ConnectError, RabbitMqConfig, RabbitMqPublisher, Route};
use outbox_testkit::{Committed, InMemoryStore, check_history};
use tokio::time::Instant;

/// A message no queue is bound for is returned by the broker: a failure with the broker's
/// reply text, not a success, although the broker confirms it too. The rest of the batch
/// is published.
#[tokio::test]
async fn unroutable_message_fails_with_the_brokers_reply() {
    let Some(h) = RabbitHarness::connect().await else {
        return;
    };
    let nowhere = message(&unique("outbox-test-unbound"), None, "lost?");
    let routed = h.message(None, "routed");
    let outcomes = h
        .publisher
        .publish(&[nowhere.clone(), routed.clone()])
        .await;
    match &outcomes[..] {
        [PublishOutcome::Failed(err), PublishOutcome::Acked] => {
            assert!(!err.is_transient(), "{}", err.describe());
            let text = err.to_string();
            assert!(text.contains("NO_ROUTE"), "{text}");
            assert!(text.contains("312"), "{text}");
            assert!(text.contains(&nowhere.topic), "{text}");
        }
        other => panic!("expected [Failed, Acked], got {other:?}"),
    }
    let got = h.read(1, Duration::from_secs(5)).await;
    assert_eq!(
        got.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![routed.message_id]
    );

    // Returns and confirms interleave on a busy channel: each return still fails exactly
    // its own message.
    let mut batch = Vec::new();
    for n in 0..60 {
        batch.push(if n % 3 == 0 {
            message(&unique("outbox-test-unbound"), None, format!("{n}"))
        } else {
            h.message(None, format!("{n}"))
        });
    }
    let outcomes = h.publisher.publish(&batch).await;
    for (n, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.is_acked(), n % 3 != 0, "message {n}: {outcome:?}");
    }
    let got = h.read(41, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 41);

    // Configured as transient, the same failure is retried instead.
    let Some(h) = RabbitHarness::connect_with(Sharing::Shared, |mut config| {
        config.unroutable_is_transient = true;
        config
    })
    .await
    else {
        return;
    };
    let err = failure(
        &h.publisher,
        message(&unique("outbox-test-unbound"), None, "x"),
    )
    .await;
    assert!(err.is_transient(), "{}", err.describe());
    assert!(err.to_string().contains("NO_ROUTE"), "{err}");
}

/// A message for an exchange that does not exist makes the broker close the channel; only
/// that message fails (permanently, with the broker's NOT_FOUND text), the rest of the
/// batch is published, and the publisher stays usable.
#[tokio::test]
async fn missing_exchange_fails_only_its_message() {
    let Some(h) = RabbitHarness::connect_with(Sharing::Shared, |config| {
        config.with_route(|message| match message.topic.strip_prefix("missing:") {
            Some(exchange) => Route::new(exchange, "x"),
            None => Route::new(common::EXCHANGE, message.topic.clone()),
        })
    })
    .await
    else {
        return;
    };
    let missing = unique("outbox-test-no-such-exchange");
    let mut batch: Vec<_> = (0..10).map(|n| h.message(None, format!("{n}"))).collect();
    batch.insert(4, message(&format!("missing:{missing}"), None, "doomed"));
    let outcomes = h.publisher.publish(&batch).await;
    for (n, outcome) in outcomes.iter().enumerate() {
        if n == 4 {
            let PublishOutcome::Failed(err) = outcome else {
                panic!("the message for a missing exchange was Acked");
            };
            assert!(!err.is_transient(), "{}", err.describe());
            let text = err.describe();
            assert!(text.contains("NOT_FOUND"), "{text}");
            assert!(text.contains(&missing), "{text}");
        } else {
            assert!(outcome.is_acked(), "message {n}: {outcome:?}");
        }
    }
    // Messages sent before the channel closed may arrive twice (sent again one by one).
    let got = h.read(10, Duration::from_secs(5)).await;
    let ids: HashSet<MessageId> = got.iter().map(|m| m.message_id).collect();
    let expected: HashSet<MessageId> = batch
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != 4)
        .map(|(_, m)| m.message_id)
        .collect();
    assert_eq!(ids, expected);

    let after = h.message(None, "after");
    assert_acked(&h.publisher.publish(std::slice::from_ref(&after)).await);
}

/// A queue that refuses messages (full, with `reject-publish`) makes the broker nack
/// them: a transient failure, never Acked.
#[tokio::test]
async fn nacked_messages_are_transient_failures() {
    let Some(h) = RabbitHarness::connect().await else {
        return;
    };
    let Some((_connection, channel)) = admin().await else {
        return;
    };
    let full = unique("outbox-test-full");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    declare_queue(&channel, &full, arguments).await;

    let first = message(&full, None, "fits");
    let outcomes = h
        .publisher
        .publish(&[
            first,
            message(&full, None, "over"),
            message(&full, None, "over"),
        ])
        .await;
    match &outcomes[..] {
        [
            PublishOutcome::Acked,
            PublishOutcome::Failed(a),
            PublishOutcome::Failed(b),
        ] => {
            for err in [a, b] {
                assert!(err.is_transient(), "{}", err.describe());
                assert!(err.to_string().contains("nacked"), "{err}");
            }
        }
        other => panic!("expected [Acked, Failed, Failed], got {other:?}"),
    }
    let _ = channel
        .queue_delete(full.as_str().into(), Default::default())
        .await;
}

/// The broker closes the publisher's connection while batches are in flight (as
/// `rabbitmqctl close_connection` does): what was not confirmed fails transiently, nothing
/// unconfirmed is reported Acked, and the publisher reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closed_by_the_broker_is_reopened() {
    let Some(h) = RabbitHarness::connect().await else {
        return;
    };
    let h = Arc::new(h);
    let first_pid = connection_pid(&h.connection_name).await;
    let stop = CancellationToken::new();
    let publishing = tokio::spawn({
        let (h, stop) = (h.clone(), stop.clone());
        async move {
            let mut acked = Vec::new();
            let mut failed = Vec::new();
            let mut acked_after_stop = 0;
            let mut round = 0;
            // Until told to stop, and then until a few batches went through again.
            while !stop.is_cancelled() || acked_after_stop < 5 {
                let batch: Vec<_> = (0..50)
                    .map(|n| h.message(None, format!("{round}-{n}")))
                    .collect();
                round += 1;
                let outcomes = h.publisher.publish(&batch).await;
                assert_eq!(outcomes.len(), batch.len());
                let mut all_acked = true;
                for (message, outcome) in batch.iter().zip(outcomes) {
                    match outcome {
                        PublishOutcome::Acked => acked.push(message.message_id),
                        PublishOutcome::Failed(err) => {
                            all_acked = false;
                            failed.push((message.message_id, err));
                        }
                    }
                }
                if stop.is_cancelled() && all_acked {
                    acked_after_stop += 1;
                }
            }
            (acked, failed)
        }
    });

    // Close the connection twice, once it has carried some messages each time.
    let mut pid = first_pid;
    for _ in 0..2 {
        let closed = close_connection(&h.connection_name).await;
        assert_eq!(closed, pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        pid = loop {
            let now = connection_pid(&h.connection_name).await;
            if now != closed {
                break now;
            }
            assert!(Instant::now() < deadline, "the publisher did not reconnect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
    }
    stop.cancel();
    let (acked, failed) = publishing.await.expect("the publishing task");

    for (id, err) in &failed {
        assert!(err.is_transient(), "{id}: {}", err.describe());
    }
    let got = h.read(acked.len(), Duration::from_secs(10)).await;
    let received: HashSet<MessageId> = got.iter().map(|m| m.message_id).collect();
    let missing: Vec<_> = acked.iter().filter(|id| !received.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} Acked messages are not in the queue: {missing:?}",
        missing.len(),
        acked.len()
    );
    assert!(h.publisher.is_connected());
    println!(
        "acked {}, failed (transient) {}, in the queue {}",
        acked.len(),
        failed.len(),
        got.len()
    );
}

/// End to end: producers enqueue into an in-memory outbox while a relay publishes to
/// RabbitMQ, and the broker closes the publisher's connection twice mid-flow; the relay
/// carries on by itself, nothing is lost or dead, every key keeps its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_message_in_key_order_across_closed_connections() {
    let Some(h) = RabbitHarness::connect().await else {
        return;
    };
    let store = InMemoryStore::new();
    let mut config = RelayConfig::default();
    config.batch_size = 100;
    config.retry = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    };
    let relay = Relay::new(store.clone(), h.publisher.clone(), config).expect("relay config");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });
    let stop_producing = CancellationToken::new();
    let producing = tokio::spawn(produce(
        store.clone(),
        h.queue.clone(),
        stop_producing.clone(),
    ));

    // Twice: once the relay has published through the current connection, close it.
    let mut previous = None;
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid = loop {
            let pid = connection_pid(&h.connection_name).await;
            if previous.as_ref() != Some(&pid) {
                break pid;
            }
            assert!(Instant::now() < deadline, "the publisher did not reconnect");
        };
        assert_eq!(close_connection(&h.connection_name).await, pid);
        previous = Some(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while connection_pid(&h.connection_name).await == *previous.as_ref().expect("closed") {
        assert!(Instant::now() < deadline, "the publisher did not reconnect");
    }
    stop_producing.cancel();
    let committed = producing.await.expect("producer task");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let backlog = store.backlog().await.expect("backlog");
        assert_eq!(backlog.dead, 0, "{backlog:?}");
        if backlog.pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not drain: {backlog:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let stats = running.await.expect("relay task").expect("relay run");
    assert_eq!(stats.dead, 0, "{stats:?}");
    let got = h.read(committed.len(), Duration::from_secs(10)).await;
    let report = check_history(&committed, &got);
    assert!(report.is_ok(), "{report}");
    assert!(
        got.iter()
            .all(|m| m.headers.get("content-type").map(String::as_str) == Some("text/plain"))
    );
    println!("{report}; relay {stats:?}");
}

/// Enqueues messages for `topic`, 20 per transaction every 10 ms, over 13 keys and some
/// without a key, until `stop`; returns them in commit order.
async fn produce(store: InMemoryStore, topic: String, stop: CancellationToken) -> Vec<Committed> {
    let mut committed = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    while !stop.is_cancelled() {
        pace.tick().await;
        let mut tx = store.begin();
        for _ in 0..20 {
            let n = committed.len();
            let key = (n % 10 != 9).then(|| format!("customer-{}", n % 13));
            let mut new = NewMessage::new(topic.clone(), format!("{n}").into_bytes())
                .with_header("content-type", "text/plain");
            if let Some(key) = &key {
                new = new.with_key(key);
            }
            tx.enqueue(new.clone()).expect("enqueue");
            committed.push(Committed {
                message_id: new.message_id(),
                key,
            });
        }
        tx.commit();
    }
    committed
}

/// A broker that is not there is a clear, transient connect error that names the address
/// and never shows the password.
#[tokio::test]
async fn unreachable_broker_is_a_clear_transient_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.local_addr().expect("local address").port()
    };
    let url = format!("amqp://app:s3cret@127.0.0.1:{port}/%2f");
    let err = RabbitMqPublisher::connect(&url, RabbitMqConfig::default())
        .await
        .expect_err("nothing listens on a port just released");
    assert!(err.is_transient(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("amqp://app:***@127.0.0.1:{port}/%2f")),
        "{text}"
    );
    let mut chain = format!("{err} {err:?}");
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        chain.push_str(&c.to_string());
        cause = c.source();
    }
    assert!(!chain.contains("s3cret"), "{chain}");
}

/// Refused credentials are a permanent connect error, without the password.
#[tokio::test]
async fn refused_credentials_are_a_permanent_connect_error() {
    let Some(_h) = RabbitHarness::connect().await else {
        return;
    };
    let url = rabbit_url();
    let Some((scheme, rest)) = url.split_once("://") else {
        panic!("OUTBOX_TEST_RABBITMQ_URL {url} has no scheme");
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let wrong = format!("{scheme}://nobody:s3cret@{host}");
    let err = RabbitMqPublisher::connect(&wrong, RabbitMqConfig::default())
        .await
        .expect_err("unknown user");
    assert!(!err.is_transient(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
}

/// Credentials in the URL stay out of `Debug` output, and an unparsable URL is reported
/// without them too.
#[tokio::test]
async fn debug_output_and_url_errors_hide_the_password() {
    let Some(h) = RabbitHarness::connect().await else {
        return;
    };
    let debug = format!("{:?}", h.publisher);
    assert!(debug.contains("***"), "{debug}");
    assert!(!debug.contains(":guest@"), "{debug}");
    assert!(debug.contains("connected: true"), "{debug}");

    let err = RabbitMqPublisher::connect("amqp://app:s3cret@[::1", RabbitMqConfig::default())
        .await
        .expect_err("not a URL");
    assert!(!err.is_transient());
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
}

/// A bad configuration is refused before connecting.
#[tokio::test]
async fn invalid_configuration_is_refused() {
    let mut config = RabbitMqConfig::default();
    config.confirm_timeout = Duration::ZERO;
    let err = RabbitMqPublisher::connect("amqp://127.0.0.1:1", config)
        .await
        .expect_err("zero confirm timeout");
    assert!(matches!(err, ConnectError::Config(_)), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("confirm_timeout"), "{err}");

    let mut config = RabbitMqConfig::default();
    config.declare_exchange = Some(outbox_rabbitmq::ExchangeKind::Topic);
    let err = RabbitMqPublisher::connect("amqp://127.0.0.1:1", config)
        .await
        .expect_err("declaring the default exchange");
    assert!(err.to_string().contains("declare_exchange"), "{err}");
}

/// Messages the publisher cannot put into AMQP fail permanently without reaching the
/// broker; the rest of the batch is published.
#[tokio::test]
async fn unusable_messages_fail_permanently_without_sending() {
    let Some(h) = RabbitHarness::connect().await else {
        return;
    };
    let mut reserved = h.message(Some("k"), "x");
    reserved
        .headers
        .insert("outbox-key".into(), "forged".into());
    let long_topic = message(&"t".repeat(300), None, "x");
    let good = h.message(None, "good");
    let outcomes = h
        .publisher
        .publish(&[reserved, long_topic, good.clone()])
        .await;
    match &outcomes[..] {
        [
            PublishOutcome::Failed(reserved),
            PublishOutcome::Failed(long),
            PublishOutcome::Acked,
        ] => {
            assert!(!reserved.is_transient() && !long.is_transient());
            assert!(reserved.to_string().contains("reserved"), "{reserved}");
            assert!(long.to_string().contains("routing key"), "{long}");
        }
        other => panic!("expected [Failed, Failed, Acked], got {other:?}"),
    }
    let got = h.read(1, Duration::from_secs(5)).await;
    assert_eq!(
        got.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![good.message_id]
    );
    assert_eq!(
        h.publisher.capabilities().max_message_bytes,
        Some(16 * 1024 * 1024)
    );
}

/// Many publishes are in flight on the channel at once: a large batch costs about as much
/// as a few round trips, not one per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_confirmed_together() {
    let Some(h) = RabbitHarness::connect().await else {
        return;
    };
    let batch: Vec<_> = (0..2_000)
        .map(|n| h.message(None, vec![b'x'; n % 512]))
        .collect();
    let outcomes = h.publisher.publish(&batch).await;
    assert_acked(&outcomes);
    let got = h.read(batch.len(), Duration::from_secs(10)).await;
    let order: Vec<MessageId> = got.iter().map(|m| m.message_id).collect();
    assert_eq!(
        order,
        batch.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        "one channel keeps the publish order"
    );
}
