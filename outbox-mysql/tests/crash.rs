//! Crash test on the real servers (guarantees 2 and 3), MariaDB/MySQL -> NATS JetStream:
//! 10,000 messages over 100 keys are enqueued while relay child processes publishing to
//! JetStream are SIGKILLed at random moments, at least 20 times, two relays at once for a
//! third of the rounds; a clean relay then drains the rest, and the stream is read back
//! and checked: nothing lost, every key in order. Duplicates are counted and printed: the
//! test stream keeps JetStream's de-duplication window short (100 ms), so that messages
//! a killed relay had published and another relay published again after the lease expired
//! show up in the history instead of being dropped by `Nats-Msg-Id`.
//!
//! This binary has its own `main` (harness = false): run with `OUTBOX_CRASH_CHILD` set, it
//! is the relay child instead.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use outbox_core::{
    CancellationToken, Message, NewMessage, PublishOutcome, Publisher, PublisherCapabilities,
    Relay, RelayConfig, Store,
};
use outbox_mysql::{MySqlConfig, MySqlStore};
use outbox_nats::{KEY_HEADER, MESSAGE_ID_HEADER, NatsConfig, NatsPublisher};
use outbox_testkit::services::{unavailable, url_from_env};
use outbox_testkit::{Committed, ReceivedMessage, check_history};

const MESSAGES: usize = 10_000;
const KEYS: usize = 100;
const KILLS: usize = 20;
/// Messages per producer transaction, and the pause between transactions: the producer
/// keeps enqueueing while the first relays are killed.
const PER_TRANSACTION: usize = 100;
const PRODUCER_PAUSE: Duration = Duration::from_millis(40);

const CHILD: &str = "OUTBOX_CRASH_CHILD";
const CHILD_TABLE: &str = "OUTBOX_CRASH_TABLE";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os(CHILD).is_some() {
        runtime.block_on(run_child());
        return;
    }
    runtime.block_on(relays_killed_twenty_times_lose_nothing());
    println!("test relays_killed_twenty_times_lose_nothing ... ok");
}

fn nats_url() -> String {
    url_from_env("OUTBOX_TEST_NATS_URL", "nats://127.0.0.1:4222")
}

fn store_config(table: String) -> MySqlConfig {
    let mut config = MySqlConfig::default();
    config.table = table;
    config
}

fn relay_config(batch_size: usize) -> RelayConfig {
    let mut config = RelayConfig::default();
    config.batch_size = batch_size;
    config.lease_duration = Duration::from_secs(1);
    config.shutdown_deadline = Duration::from_millis(500);
    config.poll_interval_max = Duration::from_millis(20);
    config
}

/// A slow broker: each publish call waits first, so that a relay lives through many
/// batches before it is killed.
struct SlowNats {
    inner: NatsPublisher,
    delay: Duration,
}

impl Publisher for SlowNats {
    fn capabilities(&self) -> PublisherCapabilities {
        self.inner.capabilities()
    }

    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        tokio::time::sleep(self.delay).await;
        self.inner.publish(batch).await
    }
}

/// The relay child: runs until it is killed.
async fn run_child() {
    let table = std::env::var(CHILD_TABLE).expect("the child needs a table");
    let store = MySqlStore::connect(&common::url(), store_config(table))
        .await
        .expect("child: connect to MySQL");
    let client = async_nats::connect(nats_url())
        .await
        .expect("child: connect to NATS");
    let publisher = SlowNats {
        inner: NatsPublisher::new(client, NatsConfig::default()).expect("publisher"),
        delay: Duration::from_millis(10),
    };
    let relay = Relay::new(store, publisher, relay_config(50)).expect("relay config");
    relay.run(CancellationToken::new()).await.expect("relay");
}

fn spawn_child(table: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .env(CHILD, "1")
        .env(CHILD_TABLE, table)
        .spawn()
        .expect("spawn a relay child")
}

async fn stored(stream: &mut stream::Stream) -> u64 {
    stream.info().await.expect("stream info").state.messages
}

/// Every message in the stream, in stream order.
async fn read_back(stream: &mut stream::Stream) -> Vec<ReceivedMessage> {
    let state = stream.info().await.expect("stream info").state.clone();
    let mut received = Vec::new();
    if state.messages == 0 {
        return received;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("stored message");
        // Compare names as text: async-nats files Nats-Msg-Id under a standard name.
        let header = |name: &str| {
            message
                .headers
                .iter()
                .find(|(n, _)| AsRef::<str>::as_ref(*n) == name)
                .and_then(|(_, values)| values.last())
                .map(|v| v.as_str().to_owned())
        };
        received.push(ReceivedMessage {
            message_id: header(MESSAGE_ID_HEADER)
                .expect("Nats-Msg-Id")
                .parse()
                .expect("a message id"),
            topic: message.subject.to_string(),
            key: header(KEY_HEADER),
            payload: message.payload.to_vec(),
            headers: Default::default(),
        });
    }
    received
}

/// Enqueues the messages in transactions, pausing between them; returns them in commit
/// order.
async fn produce(store: MySqlStore, subject: String) -> Vec<Committed> {
    let mut committed = Vec::with_capacity(MESSAGES);
    for start in (0..MESSAGES).step_by(PER_TRANSACTION) {
        let batch: Vec<NewMessage> = (start..start + PER_TRANSACTION)
            .map(|n| {
                NewMessage::new(&subject, format!("{n}").into_bytes())
                    .with_key(format!("key-{}", n % KEYS))
            })
            .collect();
        let mut tx = store.pool().begin().await.expect("begin");
        store
            .enqueue_batch(&mut *tx, &batch)
            .await
            .expect("enqueue");
        tx.commit().await.expect("commit");
        committed.extend(batch.iter().map(|m| Committed {
            message_id: m.message_id(),
            key: m.key().map(str::to_owned),
        }));
        tokio::time::sleep(PRODUCER_PAUSE).await;
    }
    committed
}

async fn relays_killed_twenty_times_lose_nothing() {
    let Some(pool) = common::pool().await else {
        return;
    };
    let client = match async_nats::connect(nats_url()).await {
        Ok(client) => client,
        Err(err) => {
            unavailable("NATS", &nats_url(), &err);
            return;
        }
    };
    let started = Instant::now();
    let table = common::unique_table();
    let cleanup = common::DropTables::outbox(&table);
    let store = MySqlStore::new(pool, store_config(table.clone())).expect("config");
    store.migrate().await.expect("migrate");
    let jetstream = jetstream::new(client.clone());
    let id = uuid::Uuid::new_v4().simple().to_string();
    let stream_name = format!("OUTBOX_CRASH_{id}");
    let subject = format!("outbox-crash.{id}.events");
    let mut stream = jetstream
        .create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("outbox-crash.{id}.>")],
            storage: stream::StorageType::Memory,
            duplicate_window: Duration::from_millis(100),
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .expect("create the test stream");

    let producer = tokio::spawn(produce(store.clone(), subject));
    let mut kills = 0;
    let mut round = 0;
    while kills < KILLS {
        // Two relays at once for a third of the rounds.
        let pair = (KILLS / 3..2 * KILLS / 3).contains(&kills);
        let before = stored(&mut stream).await;
        let mut children = vec![spawn_child(&table)];
        if pair {
            children.push(spawn_child(&table));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while stored(&mut stream).await == before {
            assert!(
                Instant::now() < deadline,
                "no relay published anything in 20 s (round {round})"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Kill at a random moment while they publish: mid-publish, mid-settle, mid-claim.
        for child in &mut children {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
            child.kill().expect("SIGKILL the relay");
            child.wait().expect("reap the relay");
            kills += 1;
        }
        round += 1;
        println!(
            "round {round}: {} relay(s) killed, {} stored, {:.1} s",
            children.len(),
            stored(&mut stream).await,
            started.elapsed().as_secs_f64()
        );
    }
    let committed = producer.await.expect("producer");
    let before_clean = stored(&mut stream).await;
    assert!(
        before_clean < MESSAGES as u64,
        "the kills came before the backlog drained"
    );

    // A clean relay finishes the job, once the killed relays' leases have expired.
    let publisher = NatsPublisher::new(client, NatsConfig::default()).expect("publisher");
    let relay = Relay::new(store.clone(), publisher, relay_config(200)).expect("relay config");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.backlog().await.expect("backlog").pending > 0 {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    running.await.expect("join").expect("clean relay");

    let received = read_back(&mut stream).await;
    let report = check_history(&committed, &received);
    println!(
        "crash test MySQL -> NATS: {kills} SIGKILLs in {round} rounds, {before_clean} stored before the clean run, {report} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.lost.is_empty(),
        "lost {} messages",
        report.lost.len()
    );
    assert!(
        report.order_violations.is_empty(),
        "order violations: {:?}",
        &report.order_violations[..report.order_violations.len().min(5)]
    );
    assert!(report.unexpected.is_empty());
    // Tidy up only after a pass, so a failure leaves the evidence behind.
    let _ = jetstream.delete_stream(&stream_name).await;
    drop(cleanup);
}
