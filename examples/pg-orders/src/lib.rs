//! The orders service that the PostgreSQL examples (`postgres-nats`, `postgres-kafka`)
//! share: an `orders` table whose every row commits with its `order.placed` event, the
//! relay's settings from the environment, the demo's summary line, and the driver of their
//! SIGKILL crash tests. Each example adds only its broker.

use std::future::Future;
use std::process::Child;
use std::time::{Duration, Instant};

use outbox::postgres::{PostgresConfig, PostgresStore, sqlx};
use outbox::testkit::Committed;
use outbox::{CancellationToken, NewMessage, RelayConfig};
use serde::{Deserialize, Serialize};

/// The examples' result type.
pub type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The environment variable `name`, or `default` when it is unset or empty.
///
/// ```
/// assert_eq!(pg_orders::setting("PG_ORDERS_UNSET_VARIABLE", "shop"), "shop");
/// ```
pub fn setting(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The `ORDERS` argument of `demo` and `place` (default 200).
///
/// ```
/// assert_eq!(pg_orders::orders_arg(Some("50".into())).unwrap(), 50);
/// assert_eq!(pg_orders::orders_arg(None).unwrap(), 200);
/// assert!(pg_orders::orders_arg(Some("many".into())).is_err());
/// ```
pub fn orders_arg(arg: Option<String>) -> BoxResult<usize> {
    Ok(arg
        .map(|a| a.parse())
        .transpose()
        .map_err(|_| "ORDERS must be a whole number")?
        .unwrap_or(200))
}

/// The event each order commits with.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order's row id.
    pub order_id: i64,
    /// The customer, also the message key: a customer's events stay in order.
    pub customer: String,
    /// The order's total.
    pub total_cents: i64,
}

/// The outbox store in `schema`, migrated, and the service's own `orders` table there.
///
/// ```no_run
/// # async fn demo() -> pg_orders::BoxResult {
/// let store = pg_orders::open_store("postgres://postgres@127.0.0.1:5432/test", "shop").await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
pub async fn open_store(database_url: &str, schema: &str) -> BoxResult<PostgresStore> {
    let mut config = PostgresConfig::default();
    config.schema = schema.to_owned();
    let store = PostgresStore::connect(database_url, config).await?;
    store.migrate().await?;
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.orders (
           id BIGSERIAL PRIMARY KEY, customer TEXT NOT NULL, total_cents BIGINT NOT NULL)"
    ))
    .execute(store.pool())
    .await?;
    Ok(store)
}

/// One order: the row and its event (to `topic`) commit together, or neither does.
async fn place_order(
    store: &PostgresStore,
    topic: &str,
    customer: &str,
    total_cents: i64,
) -> BoxResult<NewMessage> {
    let mut tx = store.pool().begin().await?;
    let order_id: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO {}.orders (customer, total_cents) VALUES ($1, $2) RETURNING id",
        store.config().schema
    ))
    .bind(customer)
    .bind(total_cents)
    .fetch_one(&mut *tx)
    .await?;
    let event = OrderPlaced {
        order_id,
        customer: customer.to_owned(),
        total_cents,
    };
    // The customer is the key: each customer's events stay in order.
    let message = NewMessage::json(topic, &event)?.with_key(customer);
    store.enqueue(&mut *tx, &message).await?;
    tx.commit().await?;
    Ok(message)
}

/// Places `orders` orders over 20 customers, each in its own transaction with its event.
///
/// ```no_run
/// # async fn demo(store: outbox::postgres::PostgresStore) -> pg_orders::BoxResult {
/// let placed = pg_orders::place(&store, "shop.order.placed", 50).await?;
/// assert_eq!(placed.len(), 50);
/// # Ok(()) }
/// ```
pub async fn place(
    store: &PostgresStore,
    topic: &str,
    orders: usize,
) -> BoxResult<Vec<NewMessage>> {
    let mut placed = Vec::with_capacity(orders);
    for n in 0..orders {
        let customer = format!("customer-{}", n % 20);
        let total = 1_000 + i64::try_from(n)? % 9_000;
        placed.push(place_order(store, topic, &customer, total).await?);
    }
    println!("placed {orders} orders");
    Ok(placed)
}

/// The relay's settings: `RELAY_BATCH` (default 100) and `RELAY_LEASE_MS` (default 30000).
///
/// ```
/// let config = pg_orders::relay_config().unwrap();
/// assert!(config.shutdown_deadline < config.lease_duration);
/// ```
pub fn relay_config() -> BoxResult<RelayConfig> {
    let mut config = RelayConfig::default();
    config.batch_size = setting("RELAY_BATCH", "100").parse()?;
    config.lease_duration = Duration::from_millis(setting("RELAY_LEASE_MS", "30000").parse()?);
    config.shutdown_deadline = config.shutdown_deadline.min(config.lease_duration / 2);
    Ok(config)
}

/// A token cancelled on Ctrl-C or SIGTERM, for the `relay` command.
///
/// ```no_run
/// # async fn demo() {
/// let shutdown = pg_orders::cancel_on_signal();
/// shutdown.cancelled().await;
/// # }
/// ```
pub fn cancel_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => {}
        }
        on_signal.cancel();
    });
    shutdown
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `warn`).
///
/// ```no_run
/// pg_orders::init_tracing();
/// ```
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(setting("RUST_LOG", "warn"))
        .with_writer(std::io::stderr)
        .init();
}

/// The `demo` command once the orders are `placed`: runs `relay` (given the token that
/// stops it) until the outbox is empty, stops it, reads the events back with `consume`
/// (their message ids) and prints the [`summary`].
///
/// ```no_run
/// # async fn demo(store: outbox::postgres::PostgresStore) -> pg_orders::BoxResult {
/// let placed = pg_orders::place(&store, "shop.order.placed", 10).await?;
/// pg_orders::demo(
///     &store,
///     &placed,
///     |shutdown| async move { shutdown.cancelled().await; Ok::<(), String>(()) },
///     async { Ok(Vec::new()) },
/// )
/// .await?;
/// # Ok(()) }
/// ```
pub async fn demo<R, F, C>(
    store: &PostgresStore,
    placed: &[NewMessage],
    relay: R,
    consume: C,
) -> BoxResult
where
    R: FnOnce(CancellationToken) -> F,
    F: Future<Output = Result<(), String>> + Send + 'static,
    C: Future<Output = BoxResult<Vec<String>>>,
{
    use outbox::Store;
    let shutdown = CancellationToken::new();
    let relay_task = tokio::spawn(relay(shutdown.clone()));
    while store.backlog().await?.pending > 0 && !relay_task.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    relay_task.await??;
    summary(placed, &consume.await?)
}

/// Prints the demo's last line, `summary: placed=N published=N lost=0`, from the events
/// placed and the message ids the consumer read back; an error if any is missing.
///
/// ```
/// let placed = vec![outbox::NewMessage::new("t", vec![])];
/// let read_back = vec![placed[0].message_id().to_string()];
/// pg_orders::summary(&placed, &read_back).unwrap();
/// assert!(pg_orders::summary(&placed, &[]).is_err());
/// ```
pub fn summary(placed: &[NewMessage], read_back: &[String]) -> BoxResult {
    let read_back: std::collections::HashSet<&str> = read_back.iter().map(String::as_str).collect();
    let arrived = placed
        .iter()
        .filter(|m| read_back.contains(m.message_id().to_string().as_str()))
        .count();
    println!(
        "summary: placed={} published={} lost={}",
        placed.len(),
        arrived,
        placed.len() - arrived
    );
    if arrived != placed.len() {
        return Err("some events did not arrive".into());
    }
    Ok(())
}

/// A fresh outbox for a crash test, in a schema of its own (`crash_<uuid>`) on the database
/// at `OUTBOX_TEST_POSTGRES_URL` (default the local one), with that URL; `None` (after a
/// `skipped:` line, or a panic when services are required) when PostgreSQL cannot be
/// reached.
///
/// ```no_run
/// # async fn demo() {
/// let Some((store, database_url)) = pg_orders::crash_store().await else { return };
/// # let _ = (store, database_url);
/// # }
/// ```
///
/// # Panics
/// If the migrations fail (this is for tests).
pub async fn crash_store() -> Option<(PostgresStore, String)> {
    let url = outbox::testkit::services::url_from_env(
        "OUTBOX_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let mut config = PostgresConfig::default();
    config.schema = format!("crash_{}", uuid::Uuid::new_v4().simple());
    let store = match PostgresStore::connect(&url, config).await {
        Ok(store) => store,
        Err(err) => {
            outbox::testkit::services::unavailable("PostgreSQL", &url, &err.report());
            return None;
        }
    };
    store.migrate().await.expect("migrate");
    Some((store, url))
}

/// The crash tests' backlog: `messages` messages to `topic` over `keys` keys, enqueued in
/// transactions of 1,000.
///
/// ```no_run
/// # async fn demo(store: outbox::postgres::PostgresStore) {
/// let committed = pg_orders::seed(&store, "crash.events", 10_000, 100).await;
/// assert_eq!(committed.len(), 10_000);
/// # }
/// ```
///
/// # Panics
/// If the database refuses the writes (this is for tests).
pub async fn seed(
    store: &PostgresStore,
    topic: &str,
    messages: usize,
    keys: usize,
) -> Vec<Committed> {
    let mut committed = Vec::with_capacity(messages);
    for start in (0..messages).step_by(1_000) {
        let batch: Vec<NewMessage> = (start..(start + 1_000).min(messages))
            .map(|n| {
                NewMessage::new(topic, format!("{n}").into_bytes())
                    .with_key(format!("key-{}", n % keys))
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
    }
    committed
}

/// The crash tests' driver: starts relay processes with `spawn` and SIGKILLs them, `kills`
/// times in all (two relays at once for the middle third), each time once the broker holds
/// more than before (`stored` counts what it holds) and then after a random 0 to 120 ms, so
/// that the kills land anywhere in the relay's work. Returns how many were killed.
///
/// ```no_run
/// # async fn demo() {
/// let spawn = || std::process::Command::new("my-relay").spawn().expect("start");
/// let kills = pg_orders::kill_relays(spawn, 20, || async { 0 }).await;
/// # let _ = kills;
/// # }
/// ```
///
/// # Panics
/// If no relay publishes anything for 30 s, or a process cannot be started or killed.
pub async fn kill_relays<F, S>(spawn: impl Fn() -> Child, kills: usize, mut stored: S) -> usize
where
    S: FnMut() -> F,
    F: Future<Output = u64>,
{
    let mut killed = 0;
    while killed < kills {
        let pair = (kills / 3..2 * kills / 3).contains(&killed);
        let before = stored().await;
        let mut relays = vec![spawn()];
        if pair {
            relays.push(spawn());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while stored().await == before {
            assert!(
                Instant::now() < deadline,
                "no relay published anything in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The kill lands at a random moment of the relay's work.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..120))).await;
        for relay in &mut relays {
            relay.kill().expect("SIGKILL");
            relay.wait().expect("reap");
            killed += 1;
        }
    }
    killed
}

/// Starts the example's `relay` command (the binary at `program`) with the settings `env`.
///
/// ```no_run
/// let relay = pg_orders::spawn_relay("target/debug/postgres-kafka", &[("RELAY_BATCH", "100".into())]);
/// # let _ = relay;
/// ```
///
/// # Panics
/// If the process cannot be started.
pub fn spawn_relay(program: &str, env: &[(&'static str, String)]) -> Child {
    std::process::Command::new(program)
        .arg("relay")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .spawn()
        .expect("start a relay process")
}

/// Prints the crash test's line (`crash test PG -> <broker>: N SIGKILLs, ...` with the
/// history report) and asserts that nothing was lost, unexpected or out of order per key.
/// Duplicates are allowed: a relay killed between the broker's acknowledgement and the
/// settle publishes again.
///
/// ```
/// let report = outbox::testkit::check_history(&[], &[]);
/// pg_orders::assert_survived("Kafka", 10, 0, &report);
/// ```
///
/// # Panics
/// If a message was lost, unexpected or out of order.
pub fn assert_survived(
    broker: &str,
    kills: usize,
    before_clean: u64,
    report: &outbox::testkit::HistoryReport,
) {
    println!(
        "crash test PG -> {broker}: {kills} SIGKILLs, {before_clean} stored before the clean run, {report}"
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
    assert!(
        report.unexpected.is_empty(),
        "unexpected: {:?}",
        report.unexpected
    );
}

/// Waits until the outbox has nothing pending, for at most two minutes.
///
/// ```no_run
/// # async fn demo(store: outbox::postgres::PostgresStore) {
/// pg_orders::wait_for_empty_backlog(&store).await;
/// # }
/// ```
///
/// # Panics
/// If the backlog is not empty after two minutes.
pub async fn wait_for_empty_backlog(store: &PostgresStore) {
    use outbox::Store;
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.backlog().await.expect("backlog").pending > 0 {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drops the crash test's schema (after a pass, so a failure leaves the evidence behind).
///
/// ```no_run
/// # async fn demo(store: outbox::postgres::PostgresStore) {
/// pg_orders::drop_schema(&store).await;
/// # }
/// ```
pub async fn drop_schema(store: &PostgresStore) {
    let schema = &store.config().schema;
    let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(store.pool())
        .await;
}
