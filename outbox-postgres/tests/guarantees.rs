//! PostgreSQL-specific guarantees: bad input, identifiers, migrations, wake-ups, secrets.

mod common;

use std::time::Duration;

use outbox_core::{
    CancellationToken, Error, MessageLimits, NewMessage, Notifier, Relay, RelayConfig, Store,
};
use outbox_postgres::{PostgresConfig, PostgresStore, spawn_listener, sqlx};
use outbox_testkit::ScriptedPublisher;

/// Guarantee 8: invalid messages and a duplicate id are refused with clear errors, and the
/// caller's transaction stays usable: its business row and its valid message commit.
#[tokio::test]
async fn bad_input_keeps_the_transaction_usable() {
    let Some(store) =
        common::fresh_store(|c| c.limits = MessageLimits::default().with_max_payload_bytes(100))
            .await
    else {
        return;
    };
    let schema = store.config().schema.clone();
    sqlx::raw_sql(&format!(
        "CREATE TABLE {schema}.orders (id BIGINT PRIMARY KEY)"
    ))
    .execute(store.pool())
    .await
    .expect("orders table");
    let existing = NewMessage::new("t", b"first".to_vec());
    store
        .enqueue(store.pool(), &existing)
        .await
        .expect("first enqueue");

    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query(&format!("INSERT INTO {schema}.orders (id) VALUES (1)"))
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
    let again = NewMessage::new("t", b"again".to_vec()).with_message_id(existing.message_id());
    let fresh = NewMessage::new("t", b"fresh".to_vec());
    let err = store
        .enqueue_batch(&mut *tx, &[fresh.clone(), again])
        .await
        .expect_err("duplicate id");
    assert!(err.to_string().contains("enqueue"), "{err}");
    assert!(
        format!("{:?}", err).contains("already in the outbox"),
        "{err:?}"
    );
    let good = NewMessage::new("t", b"good".to_vec());
    store
        .enqueue(&mut *tx, &good)
        .await
        .expect("the transaction is still usable");
    tx.commit().await.expect("commit");

    let orders: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.orders"))
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(orders, 1);
    let claim = store
        .claim(&outbox_core::ClaimOptions::default())
        .await
        .expect("claim");
    let ids: Vec<_> = claim.messages.iter().map(|m| m.message_id).collect();
    assert_eq!(
        ids,
        vec![existing.message_id(), good.message_id()],
        "the refused batch wrote nothing"
    );
}

/// Guarantee 9: schema and table names must be plain identifiers.
#[tokio::test]
async fn configured_names_must_be_identifiers() {
    let Some(pool) = common::pool().await else {
        return;
    };
    for (schema, table) in [
        ("public", "x; DROP TABLE y"),
        ("bad-schema", "outbox"),
        ("", "outbox"),
    ] {
        let mut config = PostgresConfig::default();
        config.schema = schema.into();
        config.table = table.into();
        let err = PostgresStore::new(pool.clone(), config).expect_err("bad name");
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    }
}

/// Several processes migrating at once: all succeed, each version is applied once, and an
/// application's own `sqlx::migrate!` history is untouched beside ours.
#[tokio::test]
async fn migrations_are_concurrent_safe_and_separate_from_the_application() {
    let Some(store) = common::fresh_store(|_| {}).await else {
        return;
    };
    let schema = store.config().schema.clone();
    let mut config = store.config().clone();
    config.table = "second_outbox".into();
    let racers: Vec<PostgresStore> = (0..4)
        .map(|_| PostgresStore::new(store.pool().clone(), config.clone()).expect("config"))
        .collect();
    let results = futures::future::join_all(racers.iter().map(PostgresStore::migrate)).await;
    for result in results {
        result.expect("concurrent migrate");
    }
    // Each version once, none missing.
    let (rows, distinct, latest): (i64, i64, i32) = sqlx::query_as(&format!(
        "SELECT count(*), count(DISTINCT version), max(version) FROM {schema}.second_outbox_migrations"
    ))
    .fetch_one(store.pool())
    .await
    .expect("versions");
    assert!(latest >= 1, "no migration recorded");
    assert_eq!((rows, distinct), (i64::from(latest), i64::from(latest)));

    // The application's migrations, run by sqlx's own migrator in the same schema.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("1_orders.sql"),
        format!("CREATE TABLE {schema}.orders (id BIGINT PRIMARY KEY);"),
    )
    .expect("migration file");
    let mut conn = store.pool().acquire().await.expect("connection");
    sqlx::query(&format!("SET search_path TO {schema}"))
        .execute(&mut *conn)
        .await
        .expect("search_path");
    let migrator = sqlx::migrate::Migrator::new(dir.path())
        .await
        .expect("migrator");
    migrator
        .run(&mut *conn)
        .await
        .expect("application migrations");
    store.migrate().await.expect("ours again");
    let app_versions: Vec<i64> =
        sqlx::query_scalar(&format!("SELECT version FROM {schema}._sqlx_migrations"))
            .fetch_all(store.pool())
            .await
            .expect("application history");
    assert_eq!(
        app_versions,
        vec![1],
        "only the application's migration is in _sqlx_migrations"
    );
}

/// With NOTIFY on, a relay that polls only every 30 s publishes a message committed by
/// another connection at once, also after its LISTEN connection was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_wakes_the_relay_and_survives_a_lost_connection() {
    let Some(store) = common::fresh_store(|c| c.notify_on_enqueue = true).await else {
        return;
    };
    store
        .enqueue(store.pool(), &NewMessage::new("t", b"0".to_vec()))
        .await
        .expect("enqueue");
    let notifier = Notifier::new();
    let listener = spawn_listener(&store, notifier.clone());
    let (publisher, script) = ScriptedPublisher::new();
    let mut config = RelayConfig::default();
    config.poll_interval_min = Duration::from_secs(30);
    config.poll_interval_max = Duration::from_secs(30);
    let relay = Relay::new(store.clone(), publisher, config)
        .expect("config")
        .with_notifier(notifier);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });
    let within = Duration::from_secs(10);
    tokio::time::timeout(within, script.wait_for_calls(1))
        .await
        .expect("first message at start");

    store
        .enqueue(store.pool(), &NewMessage::new("t", b"1".to_vec()))
        .await
        .expect("enqueue");
    tokio::time::timeout(within, script.wait_for_calls(2))
        .await
        .expect("woken by NOTIFY, not by the 30 s poll");

    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query ILIKE 'LISTEN %' AND pid <> pg_backend_pid()",
    )
    .fetch_one(store.pool())
    .await
    .expect("kill the LISTEN connection");
    assert!(killed >= 1, "a LISTEN connection was there to kill");
    store
        .enqueue(store.pool(), &NewMessage::new("t", b"2".to_vec()))
        .await
        .expect("enqueue");
    tokio::time::timeout(within, script.wait_for_calls(3))
        .await
        .expect("woken after reconnecting");

    shutdown.cancel();
    running.await.expect("join").expect("run");
    listener.abort();
    assert_eq!(script.received().len(), 3);
}

/// Guarantee 9: the password of the connection string shows in no `Debug` output and no error.
#[tokio::test]
async fn passwords_stay_out_of_debug_and_errors() {
    let Some(_) = common::pool().await else {
        return;
    };
    let with_password =
        common::url().replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1);
    let store = PostgresStore::connect(&with_password, PostgresConfig::default())
        .await
        .expect("connect");
    assert!(!format!("{store:?}").contains("hunter2"));
    let err = PostgresStore::connect(
        "postgres://app:hunter2@127.0.0.1:1/none",
        PostgresConfig::default(),
    )
    .await
    .expect_err("nothing listens on port 1");
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        err.is_transient(),
        "a refused connection may work later: {err:?}"
    );
}

/// With `keep_published`, published rows stay (marked) until purged by age; purge leaves
/// younger rows, unsettled and dead ones alone.
#[tokio::test]
async fn kept_published_rows_are_purged_by_age() {
    let Some(store) = common::fresh_store(|c| c.keep_published = true).await else {
        return;
    };
    store
        .enqueue_batch(
            store.pool(),
            &[
                NewMessage::new("t", b"a".to_vec()),
                NewMessage::new("t", b"b".to_vec()),
            ],
        )
        .await
        .expect("enqueue");
    let claim = store
        .claim(&outbox_core::ClaimOptions::new(1, Duration::from_secs(30)))
        .await
        .expect("claim");
    let published = outbox_core::Settlement {
        id: claim.messages[0].id,
        action: outbox_core::SettleAction::Published,
    };
    store
        .settle(&claim.lease, &[published])
        .await
        .expect("settle");
    let table = format!("{}.outbox_messages", store.config().schema);
    let count = |sql: String| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    assert_eq!(
        count(format!("SELECT count(*) FROM {table} WHERE status = 1")).await,
        1,
        "kept"
    );
    assert_eq!(
        store
            .purge_published(Duration::from_secs(3600))
            .await
            .expect("purge"),
        0,
        "too young"
    );
    assert_eq!(
        store.purge_published(Duration::ZERO).await.expect("purge"),
        1
    );
    assert_eq!(
        count(format!("SELECT count(*) FROM {table}")).await,
        1,
        "the unsettled one stays"
    );
}
