//! Crash test on the real servers (issue 3): 10,000 messages over 100 keys flow from
//! PostgreSQL to NATS JetStream while relay processes (this example's `relay` command) are
//! SIGKILLed at random moments, at least 20 times, with two relays at once for part of it.
//! The stream is then read back: nothing lost, every key in order; duplicates are printed
//! (JetStream drops most of them by `Nats-Msg-Id`).

use std::process::Child;

use outbox::nats::{KEY_HEADER, MESSAGE_ID_HEADER, async_nats};
use outbox::postgres::PostgresStore;
use outbox::testkit::services::{unavailable, url_from_env};
use outbox::testkit::{ReceivedMessage, check_history};

const MESSAGES: usize = 10_000;
const KEYS: usize = 100;
const KILLS: usize = 20;

struct Setup {
    store: PostgresStore,
    jetstream: async_nats::jetstream::Context,
    stream: async_nats::jetstream::stream::Stream,
    env: Vec<(&'static str, String)>,
}

async fn setup() -> Option<Setup> {
    let (store, db_url) = pg_orders::crash_store().await?;
    let schema = store.config().schema.clone();
    let nats_url = url_from_env("OUTBOX_TEST_NATS_URL", "nats://127.0.0.1:4222");
    let client = match async_nats::connect(&nats_url).await {
        Ok(client) => client,
        Err(err) => {
            unavailable("NATS", &nats_url, &err);
            return None;
        }
    };
    let jetstream = async_nats::jetstream::new(client);
    let stream_name = format!("CRASH_{}", uuid::Uuid::new_v4().simple());
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{schema}.>")],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create the test stream");
    let env = vec![
        ("DATABASE_URL", db_url),
        ("NATS_URL", nats_url),
        ("OUTBOX_SCHEMA", schema.clone()),
        ("NATS_STREAM", stream_name),
        ("EVENT_SUBJECT", format!("{schema}.events")),
        ("RELAY_BATCH", "100".into()),
        ("RELAY_LEASE_MS", "1000".into()),
    ];
    Some(Setup {
        store,
        jetstream,
        stream,
        env,
    })
}

fn spawn_relay(env: &[(&'static str, String)]) -> Child {
    pg_orders::spawn_relay(env!("CARGO_BIN_EXE_postgres-nats"), env)
}

/// Every message in the stream, in stream order.
async fn read_back(stream: &async_nats::jetstream::stream::Stream) -> Vec<ReceivedMessage> {
    let state = stream.get_info().await.expect("stream info").state;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_twenty_times_lose_nothing() {
    let Some(Setup {
        store,
        jetstream,
        stream,
        env,
    }) = setup().await
    else {
        return;
    };
    let subject = env
        .iter()
        .find(|(k, _)| *k == "EVENT_SUBJECT")
        .map(|(_, v)| v.clone())
        .expect("subject");
    let committed = pg_orders::seed(&store, &subject, MESSAGES, KEYS).await;
    let stored = || async { stream.get_info().await.expect("stream info").state.messages };
    let kills = pg_orders::kill_relays(|| spawn_relay(&env), KILLS, stored).await;
    let before_clean = stored().await;
    assert!(
        before_clean < MESSAGES as u64,
        "the kills came before the backlog drained"
    );

    // A clean relay finishes the job (after the killed relays' leases expire).
    let mut clean = spawn_relay(&env);
    pg_orders::wait_for_empty_backlog(&store).await;
    clean.kill().expect("stop the clean relay");
    clean.wait().expect("reap");

    let received = read_back(&stream).await;
    let report = check_history(&committed, &received);
    pg_orders::assert_survived("NATS", kills, before_clean, &report);
    // Tidy up only after a pass, so a failure leaves the evidence behind.
    let name = stream.cached_info().config.name.clone();
    let _ = jetstream.delete_stream(&name).await;
    pg_orders::drop_schema(&store).await;
}
