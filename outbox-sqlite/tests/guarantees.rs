//! Bad input, graceful shutdown and configuration checks on a real SQLite file.

use std::sync::Arc;
use std::time::Duration;

use outbox_core::{
    CancellationToken, Error, MessageLimits, NewMessage, Relay, RelayConfig, Store, ValidationError,
};
use outbox_sqlite::{SqliteConfig, SqliteStore};
use outbox_testkit::ScriptedPublisher;

async fn open(dir: &tempfile::TempDir, config: SqliteConfig) -> SqliteStore {
    SqliteStore::open_with(dir.path().join("app.db"), config)
        .await
        .expect("open store")
}

/// Guarantee 8: each invalid message gets its own clear error, and a failed enqueue leaves
/// the caller's transaction usable: its other work and valid messages commit.
#[tokio::test]
async fn bad_input_is_refused_without_aborting_the_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SqliteConfig::default();
    config.limits = MessageLimits::default().with_max_payload_bytes(1024);
    let store = open(&dir, config).await;
    let mut conn = rusqlite::Connection::open(store.path()).expect("connection");
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        .expect("orders");

    let tx = conn.transaction().expect("begin");
    tx.execute("INSERT INTO orders (id) VALUES (1)", [])
        .expect("order");
    let good = NewMessage::new("orders.placed", b"ok".to_vec());
    let bad = [
        (NewMessage::new("", b"x".to_vec()), "EmptyTopic"),
        (
            NewMessage::new("orders placed", b"x".to_vec()),
            "InvalidTopic",
        ),
        (NewMessage::new("t", vec![0u8; 1025]), "PayloadTooLarge"),
        (
            NewMessage::new("t", b"x".to_vec()).with_header("bad name", "v"),
            "InvalidHeaderName",
        ),
        (
            NewMessage::new("t", b"x".to_vec()).with_header("x-ok", "a\r\nb"),
            "InvalidHeaderValue",
        ),
    ];
    for (message, expected) in &bad {
        let err = store.enqueue(&tx, message).expect_err("invalid message");
        let Error::InvalidMessage(validation) = &err else {
            panic!("expected InvalidMessage, got {err:?}");
        };
        assert!(
            format!("{validation:?}").starts_with(expected),
            "{validation:?}"
        );
        assert!(!err.is_transient());
    }
    let too_large = store.enqueue(&tx, &bad[2].0).expect_err("too large");
    assert!(
        too_large
            .to_string()
            .contains("1025 bytes, over the limit of 1024"),
        "{too_large}"
    );
    // A batch with one bad message writes none of it.
    let err = store
        .enqueue_batch(
            &tx,
            &[NewMessage::new("t", b"1".to_vec()), bad[0].0.clone()],
        )
        .expect_err("bad batch");
    assert!(matches!(
        err,
        Error::InvalidMessage(ValidationError::EmptyTopic)
    ));
    // A duplicate id fails in SQL, after a first insert of the batch: undone, tx still fine.
    let dup = NewMessage::new("t", b"d".to_vec());
    store.enqueue(&tx, &dup).expect("first copy");
    let err = store
        .enqueue_batch(&tx, &[NewMessage::new("t", b"2".to_vec()), dup.clone()])
        .expect_err("duplicate id");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert!(
        err.report()
            .to_string()
            .contains("is already in the outbox"),
        "{}",
        err.report()
    );
    store.enqueue(&tx, &good).expect("valid message");
    tx.commit().expect("commit after refused enqueues");

    let orders: i64 = conn
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .expect("count");
    assert_eq!(orders, 1);
    let claim = store
        .claim(&outbox_core::ClaimOptions::default())
        .await
        .expect("claim");
    let got: Vec<_> = claim.messages.iter().map(|m| m.message_id).collect();
    assert_eq!(got, vec![dup.message_id(), good.message_id()]);
}

/// Guarantee 9: a table name that is not a plain identifier is refused before any SQL.
#[tokio::test]
async fn table_name_must_be_an_identifier() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SqliteConfig::default();
    config.table = "outbox; DROP TABLE orders".into();
    let err = SqliteStore::open_with(dir.path().join("x.db"), config)
        .await
        .expect_err("bad table name");
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    assert!(!dir.path().join("x.db").exists(), "nothing was created");
}

/// Two stores with their own tables live side by side in one file, and reopening a store
/// does not re-run its migrations.
#[tokio::test]
async fn migrations_are_tracked_per_table_and_idempotent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.db");
    let mut other = SqliteConfig::default();
    other.table = "audit_outbox".into();
    let a = SqliteStore::open(&path).await.expect("default table");
    let b = SqliteStore::open_with(&path, other)
        .await
        .expect("second table");
    let again = SqliteStore::open(&path).await.expect("reopen");
    let conn = rusqlite::Connection::open(&path).expect("connection");
    let versions: i64 = conn
        .query_row("SELECT count(*) FROM outbox_messages_migrations", [], |r| {
            r.get(0)
        })
        .expect("migrations table");
    assert_eq!(versions, 1);
    drop((a, b, again));
}

/// Guarantee 7: on cancel with a batch stuck at a slow broker, the relay returns within the
/// shutdown deadline, nothing stays leased, and every message is published or due again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_in_flight_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, SqliteConfig::default()).await;
    let mut conn = rusqlite::Connection::open(store.path()).expect("connection");
    let tx = conn.transaction().expect("begin");
    let messages: Vec<NewMessage> = (0..50)
        .map(|n| NewMessage::new("t", vec![b'x'; 10]).with_key(format!("k{}", n % 5)))
        .collect();
    store.enqueue_batch(&tx, &messages).expect("enqueue");
    tx.commit().expect("commit");

    let (publisher, script) = ScriptedPublisher::new();
    script.set_delay(Duration::from_secs(30));
    let mut config = RelayConfig::default();
    config.batch_size = 20;
    config.shutdown_deadline = Duration::from_millis(300);
    let relay = Arc::new(Relay::new(store.clone(), publisher, config).expect("config"));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (relay, shutdown) = (relay.clone(), shutdown.clone());
        async move { relay.run(shutdown).await }
    });
    script.wait_for_calls(1).await;
    let cancelled_at = std::time::Instant::now();
    shutdown.cancel();
    let stats = running.await.expect("join").expect("run");
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(stats.published, 0);
    assert!(stats.released > 0, "{stats:?}");

    let backlog = store.backlog().await.expect("backlog");
    assert_eq!(backlog.leased, 0, "nothing left leased");
    assert_eq!(backlog.pending, 50, "nothing lost");
    let claim = store
        .claim(&outbox_core::ClaimOptions::new(
            100,
            Duration::from_secs(30),
        ))
        .await
        .expect("claim");
    assert_eq!(claim.messages.len(), 50, "all due again at once");
    assert!(claim.messages.iter().all(|m| m.attempts == 0));
}

/// Guarantee 2 with a store on a lossy broker: lost acknowledgements and transient
/// failures cause duplicates, never losses, and keys stay in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_and_failures_cause_duplicates_not_losses() {
    use outbox_testkit::{Committed, check_history};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, SqliteConfig::default()).await;
    let mut conn = rusqlite::Connection::open(store.path()).expect("connection");
    let tx = conn.transaction().expect("begin");
    let messages: Vec<NewMessage> = (0..300)
        .map(|n| NewMessage::new("t", format!("{n}").into_bytes()).with_key(format!("k{}", n % 7)))
        .collect();
    store.enqueue_batch(&tx, &messages).expect("enqueue");
    tx.commit().expect("commit");

    let (publisher, script) = ScriptedPublisher::new();
    script.lose_acks_next(20);
    script.fail_next(30);
    let mut config = RelayConfig::default();
    config.batch_size = 50;
    config.retry.initial_backoff = Duration::from_millis(1);
    config.retry.max_backoff = Duration::from_millis(5);
    let relay = Relay::new(store.clone(), publisher, config).expect("config");
    while store.backlog().await.expect("backlog").pending > 0 {
        relay.drain().await.expect("drain");
    }
    let committed: Vec<Committed> = messages
        .iter()
        .map(|m| Committed {
            message_id: m.message_id(),
            key: m.key().map(str::to_owned),
        })
        .collect();
    let report = check_history(&committed, &script.received());
    println!("{report}");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.duplicate_count(), 20, "one duplicate per lost ack");
}

/// Guarantee 1 when SQLite rolls the caller's transaction back by itself (here: the
/// database is full): the enqueue reports the real cause, and a retry on the same
/// transaction is refused instead of committing a message on its own.
#[tokio::test]
async fn enqueue_after_sqlite_rolled_back_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, SqliteConfig::default()).await;
    let mut conn = rusqlite::Connection::open(store.path()).expect("connection");
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, note BLOB)")
        .expect("orders");
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("page count");
    conn.pragma_update(None, "max_page_count", pages + 2)
        .expect("cap the file");
    let tx = conn.transaction().expect("begin");
    tx.execute("INSERT INTO orders (id) VALUES (1)", [])
        .expect("order");
    let big = NewMessage::new("t", vec![7u8; 512 * 1024]);
    let full = store.enqueue(&tx, &big).expect_err("database full");
    assert!(
        full.report().to_string().contains("full"),
        "{}",
        full.report()
    );
    let retry = store
        .enqueue(&tx, &NewMessage::new("t", b"small".to_vec()))
        .expect_err("no transaction any more");
    assert!(
        retry.report().to_string().contains("no longer open"),
        "{}",
        retry.report()
    );
    assert!(tx.commit().is_err(), "SQLite already ended the transaction");
    let check = rusqlite::Connection::open(store.path()).expect("connection");
    let outbox: i64 = check
        .query_row("SELECT count(*) FROM outbox_messages", [], |r| r.get(0))
        .expect("count");
    let orders: i64 = check
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .expect("count");
    assert_eq!(
        (orders, outbox),
        (0, 0),
        "neither the order nor an orphan event"
    );
}

/// A row that cannot be read back (edited by hand) is made dead with the reason; the
/// other messages, of every key, still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_row_is_dead_lettered_and_the_rest_flows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, SqliteConfig::default()).await;
    let mut conn = rusqlite::Connection::open(store.path()).expect("connection");
    let tx = conn.transaction().expect("begin");
    let messages: Vec<NewMessage> = (0..50)
        .map(|n| NewMessage::new("t", format!("{n}").into_bytes()).with_key(format!("k{}", n % 5)))
        .collect();
    store.enqueue_batch(&tx, &messages).expect("enqueue");
    tx.commit().expect("commit");
    conn.execute(
        "UPDATE outbox_messages SET headers = '{' WHERE message_id = ?1",
        [messages[0].message_id().to_string()],
    )
    .expect("corrupt one row");

    let (publisher, script) = ScriptedPublisher::new();
    let relay = Relay::new(store.clone(), publisher, RelayConfig::default()).expect("config");
    relay.drain().await.expect("drain");
    assert_eq!(script.received().len(), 49, "all other messages published");
    let dead = store.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("unreadable"), "{}", dead[0].reason);
    let backlog = store.backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.dead), (0, 1));
}
