//! MySQL-specific guarantees: bad input, identifiers, migrations, transient errors, per-key
//! order with concurrent writers, waiting messages that commit late, secrets.

mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use outbox_core::{
    ClaimOptions, Error, MessageId, MessageLimits, NewMessage, SettleAction, Settlement, Store,
};
use outbox_mysql::sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError};
use outbox_mysql::{MySqlConfig, MySqlStore, sqlx};

const LEASE: Duration = Duration::from_secs(60);

async fn claim(store: &MySqlStore, batch: usize) -> outbox_core::Claim {
    store
        .claim(&ClaimOptions::new(batch, LEASE))
        .await
        .expect("claim")
}

fn ids(claim: &outbox_core::Claim) -> Vec<MessageId> {
    claim.messages.iter().map(|m| m.message_id).collect()
}

async fn publish_all(store: &MySqlStore, claim: &outbox_core::Claim) {
    let settlements: Vec<Settlement> = claim
        .messages
        .iter()
        .map(|m| Settlement {
            id: m.id,
            action: SettleAction::Published,
        })
        .collect();
    let report = store
        .settle(&claim.lease, &settlements)
        .await
        .expect("settle");
    assert_eq!(report.applied, settlements.len());
}

/// Guarantee 8: invalid messages and a duplicate id are refused with clear errors, and the
/// caller's transaction stays usable: its business row and its valid message commit.
#[tokio::test]
async fn bad_input_keeps_the_transaction_usable() {
    let Some((store, cleanup)) =
        common::fresh_store(|c| c.limits = MessageLimits::default().with_max_payload_bytes(100))
            .await
    else {
        return;
    };
    let orders = format!("{}_orders", store.config().table);
    let _cleanup = cleanup.and(orders.clone());
    sqlx::raw_sql(&format!("CREATE TABLE {orders} (id BIGINT PRIMARY KEY)"))
        .execute(store.pool())
        .await
        .expect("orders table");
    let existing = NewMessage::new("t", b"first".to_vec());
    store
        .enqueue(store.pool(), &existing)
        .await
        .expect("first enqueue");

    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query(&format!("INSERT INTO {orders} (id) VALUES (1)"))
        .execute(&mut *tx)
        .await
        .expect("order");
    for bad in [
        NewMessage::new("", b"x".to_vec()),
        NewMessage::new("t", vec![0; 101]),
        NewMessage::new("t", b"x".to_vec()).with_header("no spaces", "v"),
    ] {
        let err = store.enqueue(&mut *tx, &bad).await.expect_err("invalid");
        assert!(matches!(err, Error::InvalidMessage(_)), "{err:?}");
    }
    // A duplicate id reaches the server, which refuses the whole statement, and only it.
    let again = NewMessage::new("t", b"again".to_vec()).with_message_id(existing.message_id());
    let fresh = NewMessage::new("t", b"fresh".to_vec()).with_key("k");
    let err = store
        .enqueue_batch(&mut *tx, &[fresh.clone(), again.clone()])
        .await
        .expect_err("duplicate id");
    assert!(!err.is_transient(), "{err:?}");
    assert!(
        format!("{}", err.report()).contains("already in the outbox"),
        "{}",
        err.report()
    );
    // More than one statement's worth: refused before anything is inserted.
    let mut large: Vec<NewMessage> = (0..1_500)
        .map(|n| NewMessage::new("t", vec![u8::try_from(n % 200).unwrap_or(0)]))
        .collect();
    large.push(again);
    let err = store
        .enqueue_batch(&mut *tx, &large)
        .await
        .expect_err("duplicate id in a large batch");
    assert!(
        format!("{}", err.report()).contains("already in the outbox"),
        "{}",
        err.report()
    );
    let good = NewMessage::new("t", b"good".to_vec());
    store
        .enqueue(&mut *tx, &good)
        .await
        .expect("the transaction is still usable");
    tx.commit().await.expect("commit");

    let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {orders}"))
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(count, 1);
    let claimed = claim(&store, 100).await;
    assert_eq!(
        ids(&claimed),
        vec![existing.message_id(), good.message_id()],
        "the refused batches wrote nothing"
    );
}

/// Guarantee 9: table names must be plain identifiers, short enough for the tables the
/// store derives from them.
#[tokio::test]
async fn configured_names_must_be_identifiers() {
    let Some(pool) = common::pool().await else {
        return;
    };
    for table in [
        "x; DROP TABLE y",
        "bad-name",
        "",
        "`quoted`",
        &"t".repeat(54),
    ] {
        let mut config = MySqlConfig::default();
        config.table = table.into();
        let err = MySqlStore::new(pool.clone(), config).expect_err("bad name");
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    }
    let mut config = MySqlConfig::default();
    config.table = "t".repeat(53);
    MySqlStore::new(pool, config).expect("53 characters are fine");
}

/// Several processes migrating at once: all succeed and each version is applied once; an
/// application's own `sqlx::migrate!` history, in the same database, is untouched.
#[tokio::test]
async fn migrations_are_concurrent_safe_and_separate_from_the_application() {
    let Some(admin) = common::pool().await else {
        return;
    };
    let database = format!("outbox_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .expect("create a database for the test");
    let options = MySqlConnectOptions::from_str(&common::url())
        .expect("URL")
        .database(&database);
    let pool = common::pool_options()
        .connect_with(options)
        .await
        .expect("connect to the test database");

    let racers: Vec<MySqlStore> = (0..4)
        .map(|_| MySqlStore::new(pool.clone(), MySqlConfig::default()).expect("config"))
        .collect();
    let results = futures::future::join_all(racers.iter().map(MySqlStore::migrate)).await;
    for result in results {
        result.expect("concurrent migrate");
    }
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox_messages_migrations")
        .fetch_one(&pool)
        .await
        .expect("versions");
    assert_eq!(versions, 1);

    // The application's migrations, run by sqlx's own migrator in the same database.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("1_orders.sql"),
        "CREATE TABLE orders (id BIGINT PRIMARY KEY);",
    )
    .expect("migration file");
    let migrator = sqlx::migrate::Migrator::new(dir.path())
        .await
        .expect("migrator");
    migrator.run(&pool).await.expect("application migrations");
    racers[0].migrate().await.expect("ours again");
    let app_versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(&pool)
        .await
        .expect("application history");
    assert_eq!(
        app_versions,
        vec![1],
        "only the application's migration is in _sqlx_migrations"
    );
    pool.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE {database}"))
        .execute(&admin)
        .await
        .expect("drop the test database");
}

/// The futures of `migrate`, `enqueue` and `claim` can be spawned (they are `Send` and own
/// what they need), with the store and a pool moved in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_can_be_spawned() {
    let Some(pool) = common::pool().await else {
        return;
    };
    let mut config = MySqlConfig::default();
    config.table = common::unique_table();
    let _cleanup = common::DropTables::outbox(&config.table);
    let store = MySqlStore::new(pool.clone(), config).expect("config");
    let migrating = store.clone();
    tokio::spawn(async move { migrating.migrate().await })
        .await
        .expect("join")
        .expect("migrate");
    let enqueuing = store.clone();
    tokio::spawn(async move {
        let mut tx = pool.begin().await.expect("begin");
        enqueuing
            .enqueue(&mut *tx, &NewMessage::new("t", b"x".to_vec()).with_key("k"))
            .await?;
        enqueuing
            .enqueue(&mut tx, &NewMessage::new("t", b"y".to_vec()))
            .await?;
        tx.commit().await.expect("commit");
        enqueuing
            .enqueue(&pool, &NewMessage::new("t", b"z".to_vec()))
            .await
    })
    .await
    .expect("join")
    .expect("enqueue");
    let claiming = store.clone();
    let claimed = tokio::spawn(async move { claiming.claim(&ClaimOptions::default()).await })
        .await
        .expect("join")
        .expect("claim");
    assert_eq!(claimed.messages.len(), 3);
}

fn error_number(err: &Error) -> Option<u16> {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(sqlx::Error::Database(db)) = s.downcast_ref::<sqlx::Error>() {
            return db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(MySqlDatabaseError::number);
        }
        source = s.source();
    }
    None
}

/// Deadlocks (1213) and lock wait timeouts (1205) are transient errors; after a lock wait
/// timeout the caller's transaction is still usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlocks_and_lock_wait_timeouts_are_transient() {
    let Some((store, _cleanup)) = common::fresh_store(|_| {}).await else {
        return;
    };
    // Two transactions each insert a message, then each the other's id: each waits for
    // the other's uncommitted row, and InnoDB rolls one back.
    let (m1, m2) = (
        NewMessage::new("t", b"1".to_vec()),
        NewMessage::new("t", b"2".to_vec()),
    );
    let mut a = store.pool().begin().await.expect("begin a");
    let mut b = store.pool().begin().await.expect("begin b");
    store.enqueue(&mut *a, &m1).await.expect("a: m1");
    store.enqueue(&mut *b, &m2).await.expect("b: m2");
    let crossing = {
        let store = store.clone();
        let copy = NewMessage::new("t", b"2'".to_vec()).with_message_id(m2.message_id());
        tokio::spawn(async move {
            let result = store.enqueue(&mut *a, &copy).await;
            (result, a)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copy = NewMessage::new("t", b"1'".to_vec()).with_message_id(m1.message_id());
    let b_result = store.enqueue(&mut *b, &copy).await;
    drop(b);
    let (a_result, a) = crossing.await.expect("join");
    drop(a);
    let errors: Vec<&Error> = [&a_result, &b_result]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(
        !errors.is_empty(),
        "one transaction is the deadlock's victim"
    );
    let victim = errors[0];
    assert_eq!(error_number(victim), Some(1213), "{victim:?}");
    assert!(victim.is_transient(), "a deadlock is transient: {victim:?}");

    // A lock wait timeout: b waits for a's uncommitted message id for a second.
    let m3 = NewMessage::new("t", b"3".to_vec());
    let mut a = store.pool().begin().await.expect("begin a");
    store.enqueue(&mut *a, &m3).await.expect("a: m3");
    let mut conn = store.pool().acquire().await.expect("connection");
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
        .execute(&mut *conn)
        .await
        .expect("short lock wait");
    let mut b = sqlx::Connection::begin(&mut *conn).await.expect("begin b");
    let copy = NewMessage::new("t", b"3'".to_vec()).with_message_id(m3.message_id());
    let err = store
        .enqueue(&mut *b, &copy)
        .await
        .expect_err("lock wait timeout");
    assert_eq!(error_number(&err), Some(1205), "{err:?}");
    assert!(
        err.is_transient(),
        "a lock wait timeout is transient: {err:?}"
    );
    let fresh = NewMessage::new("t", b"4".to_vec());
    store
        .enqueue(&mut *b, &fresh)
        .await
        .expect("b is still usable");
    b.commit().await.expect("commit b");
    a.commit().await.expect("commit a");
    sqlx::query("SET SESSION innodb_lock_wait_timeout = DEFAULT")
        .execute(&mut *conn)
        .await
        .expect("reset");
}

/// Guarantee 3 with two transactions writing one key without a lock of the application's
/// (documented in the crate docs): a message that commits after a later-id message of its
/// key was claimed waits until that one is settled, then goes.
#[tokio::test]
async fn a_late_commit_waits_for_its_keys_message_in_flight() {
    let Some((store, _cleanup)) = common::fresh_store(|_| {}).await else {
        return;
    };
    let (late, early) = (
        NewMessage::new("t", b"late".to_vec()).with_key("k"),
        NewMessage::new("t", b"early".to_vec()).with_key("k"),
    );
    let mut held = store.pool().begin().await.expect("begin");
    store.enqueue(&mut *held, &late).await.expect("late");
    store.enqueue(store.pool(), &early).await.expect("early");
    let first = claim(&store, 10).await;
    assert_eq!(ids(&first), vec![early.message_id()]);

    held.commit().await.expect("commit the late transaction");
    assert!(
        claim(&store, 10).await.messages.is_empty(),
        "the late message waits while the early one is in flight"
    );
    publish_all(&store, &first).await;
    assert_eq!(ids(&claim(&store, 10).await), vec![late.message_id()]);
}

/// ... and among the messages of a key that are committed when a claim runs, the lower id
/// goes first: here the late transaction committed before any claim, so its message goes
/// before the one that committed earlier, and that one waits for it.
#[tokio::test]
async fn committed_messages_of_a_key_go_in_id_order() {
    let Some((store, _cleanup)) = common::fresh_store(|_| {}).await else {
        return;
    };
    let (late, early, after) = (
        NewMessage::new("t", b"late".to_vec()).with_key("k"),
        NewMessage::new("t", b"early".to_vec()).with_key("k"),
        NewMessage::new("t", b"after".to_vec()).with_key("k"),
    );
    let mut held = store.pool().begin().await.expect("begin");
    store.enqueue(&mut *held, &late).await.expect("late");
    store.enqueue(store.pool(), &early).await.expect("early");
    held.commit().await.expect("commit the late transaction");
    store.enqueue(store.pool(), &after).await.expect("after");

    let first = claim(&store, 10).await;
    assert_eq!(ids(&first), vec![late.message_id()]);
    assert!(claim(&store, 10).await.messages.is_empty());
    publish_all(&store, &first).await;
    let rest = claim(&store, 10).await;
    assert_eq!(ids(&rest), vec![early.message_id(), after.message_id()]);
}

/// A producer never locks the relay out, nor waits for it: while a transaction that
/// enqueued a message of a key stays open (REPEATABLE READ, the default), the key's
/// earlier message is claimed and settled at once; when the transaction commits after
/// that one is gone, its message is due at once.
#[tokio::test]
async fn an_open_producer_transaction_holds_up_no_relay() {
    let Some((store, _cleanup)) = common::fresh_store(|_| {}).await else {
        return;
    };
    let head = NewMessage::new("t", b"head".to_vec()).with_key("k");
    store.enqueue(store.pool(), &head).await.expect("head");
    let mut producer = store.pool().begin().await.expect("begin");
    let behind = NewMessage::new("t", b"behind".to_vec()).with_key("k");
    store
        .enqueue(&mut *producer, &behind)
        .await
        .expect("enqueue behind the head");

    let started = Instant::now();
    let first = claim(&store, 10).await;
    assert_eq!(ids(&first), vec![head.message_id()]);
    publish_all(&store, &first).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "claim and settle did not wait for the open producer: {:?}",
        started.elapsed()
    );
    producer.commit().await.expect("commit");
    assert_eq!(ids(&claim(&store, 10).await), vec![behind.message_id()]);
}

/// A message that committed while its key's earlier message was in flight waits for it,
/// and is made due the moment that one is settled.
#[tokio::test]
async fn a_message_behind_one_in_flight_goes_once_that_is_settled() {
    let Some((store, _cleanup)) = common::fresh_store(|_| {}).await else {
        return;
    };
    let (first_msg, second_msg) = (
        NewMessage::new("t", b"1".to_vec()).with_key("k"),
        NewMessage::new("t", b"2".to_vec()).with_key("k"),
    );
    store.enqueue(store.pool(), &first_msg).await.expect("1");
    let first = claim(&store, 10).await;
    assert_eq!(ids(&first), vec![first_msg.message_id()]);
    store.enqueue(store.pool(), &second_msg).await.expect("2");
    assert!(claim(&store, 10).await.messages.is_empty(), "2 waits for 1");
    publish_all(&store, &first).await;
    assert_eq!(ids(&claim(&store, 10).await), vec![second_msg.message_id()]);
}

/// The safety net: a message left waiting although nothing older of its key is unsettled
/// (here made so by hand) is made due at its recheck time.
#[tokio::test]
async fn a_stranded_waiting_message_is_made_due_by_the_recheck() {
    let recheck = Duration::from_millis(300);
    let Some((store, _cleanup)) = common::fresh_store(|c| c.recheck_waiting = recheck).await else {
        return;
    };
    let stranded = NewMessage::new("t", b"stranded".to_vec()).with_key("k");
    store
        .enqueue(store.pool(), &stranded)
        .await
        .expect("enqueue");
    let table = &store.config().table;
    sqlx::query(&format!(
        "UPDATE {table} SET waits = 1, available_at = UTC_TIMESTAMP(6) + INTERVAL 300000 MICROSECOND"
    ))
    .execute(store.pool())
    .await
    .expect("strand it");
    assert!(claim(&store, 10).await.messages.is_empty());
    tokio::time::sleep(recheck + Duration::from_millis(200)).await;
    assert_eq!(ids(&claim(&store, 10).await), vec![stranded.message_id()]);
}

/// A row that cannot be read back (here: headers that are not a map) is made dead with
/// the reason instead of stalling its key; the key's next message goes on.
#[tokio::test]
async fn unreadable_rows_are_dead_lettered() {
    let Some((store, _cleanup)) = common::fresh_store(|_| {}).await else {
        return;
    };
    let (bad, next) = (
        NewMessage::new("t", b"bad".to_vec()).with_key("k"),
        NewMessage::new("t", b"next".to_vec()).with_key("k"),
    );
    store
        .enqueue_batch(store.pool(), &[bad.clone(), next.clone()])
        .await
        .expect("enqueue");
    let table = &store.config().table;
    sqlx::query(&format!(
        "UPDATE {table} SET headers = '[1, 2]' WHERE message_id = ?"
    ))
    .bind(bad.message_id().as_uuid())
    .execute(store.pool())
    .await
    .expect("spoil the headers");

    let mut published = Vec::new();
    for _ in 0..3 {
        let claimed = claim(&store, 10).await;
        published.extend(ids(&claimed));
        publish_all(&store, &claimed).await;
    }
    assert_eq!(published, vec![next.message_id()]);
    let dead = store.dead_letters(10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.message_id, bad.message_id());
    assert!(dead[0].reason.contains("unreadable"), "{}", dead[0].reason);
}

/// Guarantee 9: the password of the connection string shows in no `Debug` output and no
/// error.
#[tokio::test]
async fn passwords_stay_out_of_debug_and_errors() {
    let Some(admin) = common::pool().await else {
        return;
    };
    let url = common::url();
    let user = format!("outbox_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let created = sqlx::raw_sql(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'hunter2'; GRANT ALL ON *.* TO '{user}'@'%'"
    ))
    .execute(&admin)
    .await;
    let authority = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(_, host)| host.to_owned())
        .expect("the test URL has user@host");
    if created.is_ok() {
        let with_password = format!("mysql://{user}:hunter2@{authority}");
        let store = MySqlStore::connect(&with_password, MySqlConfig::default())
            .await
            .expect("connect with a password");
        assert!(!format!("{store:?}").contains("hunter2"));
        store.pool().close().await;
    } else {
        println!("cannot create a user with a password here; checking errors only");
    }
    for (wrong, transient) in [
        (format!("mysql://{user}:hunter3@{authority}"), false),
        ("mysql://app:hunter3@127.0.0.1:1/none".to_owned(), true),
    ] {
        let err = MySqlStore::connect(&wrong, MySqlConfig::default())
            .await
            .expect_err("refused");
        let text = format!("{} {err:?}", err.report());
        assert!(!text.contains("hunter3"), "{text}");
        if transient {
            assert!(
                err.is_transient(),
                "a refused connection may work later: {err:?}"
            );
        }
    }
    if created.is_ok() {
        sqlx::raw_sql(&format!("DROP USER '{user}'@'%'"))
            .execute(&admin)
            .await
            .expect("drop the test user");
    }
}
