//! A test's own queue on the local RabbitMQ, reading it back, and driving the broker with
//! `rabbitmqctl`.
//!
//! Every test holds a lock on [`LOCK_FILE`]: shared for ordinary tests, exclusive for the
//! outage test, which stops the broker; so the outage test never runs while another
//! RabbitMQ test of this crate does, in this process or another.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs::File;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use outbox_core::{Message, MessageId, PublishError, PublishOutcome, Publisher};
use outbox_rabbitmq::{KEY_HEADER, RabbitMqConfig, RabbitMqPublisher};
use outbox_testkit::services::{unavailable, url_from_env};
use outbox_testkit::{PublisherHarness, ReceivedMessage};
use tokio::time::Instant;

/// The exchange the tests publish to (direct, durable); each test binds its own queue.
pub const EXCHANGE: &str = "outbox-test";

/// Coordinates the test binaries of this crate (see the module docs).
pub const LOCK_FILE: &str = "outbox-rabbitmq-tests.lock";

/// The broker under test.
pub fn rabbit_url() -> String {
    url_from_env(
        "OUTBOX_TEST_RABBITMQ_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )
}

/// How a test shares the broker with the other tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Any number of ordinary tests at once.
    Shared,
    /// Alone: the test stops and starts the broker.
    Exclusive,
}

/// A held lock on [`LOCK_FILE`]; released when dropped.
pub struct TestLock(#[allow(dead_code)] File);

impl TestLock {
    /// Waits for the lock.
    pub async fn acquire(sharing: Sharing) -> TestLock {
        tokio::task::spawn_blocking(move || {
            let path = std::env::temp_dir().join(LOCK_FILE);
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|err| panic!("opening {}: {err}", path.display()));
            let operation = match sharing {
                Sharing::Shared => rustix::fs::FlockOperation::LockShared,
                Sharing::Exclusive => rustix::fs::FlockOperation::LockExclusive,
            };
            rustix::fs::flock(&file, operation)
                .unwrap_or_else(|err| panic!("locking {}: {err}", path.display()));
            TestLock(file)
        })
        .await
        .expect("the lock task")
    }
}

/// A connection for the test's own use (declaring, reading back); `None` (after a
/// `skipped:` line, or a panic when services are required) when the broker is unreachable.
pub async fn admin() -> Option<(Connection, Channel)> {
    let url = rabbit_url();
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        Ok::<_, lapin::Error>((connection, channel))
    })
    .await;
    match connected {
        Ok(Ok(pair)) => Some(pair),
        Ok(Err(err)) => {
            unavailable("RabbitMQ", &url, &err);
            None
        }
        Err(_) => {
            unavailable("RabbitMQ", &url, &"no answer within 5 s");
            None
        }
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A publisher and its own durable queue, bound to [`EXCHANGE`] with the queue's name as
/// routing key; the queue is deleted on drop.
pub struct RabbitHarness {
    pub publisher: RabbitMqPublisher,
    /// The queue, and the topic (routing key) that reaches it.
    pub queue: String,
    /// The publisher's connection name, for `rabbitmqctl close_connection`.
    pub connection_name: String,
    reader: tokio::sync::Mutex<Option<(Connection, Channel)>>,
    received: Mutex<Vec<ReceivedMessage>>,
    _lock: TestLock,
}

impl RabbitHarness {
    /// A harness with the default publisher settings (plus the test exchange).
    pub async fn connect() -> Option<Self> {
        Self::connect_with(Sharing::Shared, |config| config).await
    }

    /// A harness whose publisher settings are adjusted by `adjust`.
    pub async fn connect_with(
        sharing: Sharing,
        adjust: impl FnOnce(RabbitMqConfig) -> RabbitMqConfig,
    ) -> Option<Self> {
        let lock = TestLock::acquire(sharing).await;
        let (connection, channel) = admin().await?;
        let queue = unique("outbox-test");
        declare_queue(&channel, &queue, FieldTable::default()).await;
        let connection_name = unique("outbox-test-publisher");
        let mut config = RabbitMqConfig::with_exchange(EXCHANGE);
        config.declare_exchange = Some(ExchangeKind::Direct);
        config.connection_name = Some(connection_name.clone());
        let publisher = RabbitMqPublisher::connect(&rabbit_url(), adjust(config))
            .await
            .expect("connecting the publisher");
        Some(RabbitHarness {
            publisher,
            queue,
            connection_name,
            reader: tokio::sync::Mutex::new(Some((connection, channel))),
            received: Mutex::new(Vec::new()),
            _lock: lock,
        })
    }

    /// A message for this test's queue.
    pub fn message(&self, key: Option<&str>, payload: impl Into<Vec<u8>>) -> Message {
        message(&self.queue, key, payload)
    }

    /// Everything read from the queue so far, once at least `at_least` messages were read
    /// or `wait` has passed. Reads take the messages off the queue; they are kept here.
    pub async fn read(&self, at_least: usize, wait: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + wait;
        loop {
            let fetched = self.fetch_all(deadline).await;
            {
                let mut received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
                received.extend(fetched);
                if received.len() >= at_least || Instant::now() >= deadline {
                    return received.clone();
                }
            }
            // Confirmed messages are in the queue already; this waits only when a test
            // expects more than was confirmed.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Gets messages until the queue is empty, reconnecting the reader if the broker
    /// closed its connection (until `deadline`).
    async fn fetch_all(&self, deadline: Instant) -> Vec<ReceivedMessage> {
        let mut reader = self.reader.lock().await;
        let mut fetched = Vec::new();
        loop {
            if reader.as_ref().is_none_or(|(connection, channel)| {
                !connection.status().connected() || !channel.status().connected()
            }) {
                *reader = admin().await;
                if reader.is_none() {
                    assert!(Instant::now() < deadline, "no connection to read the queue");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let Some((_, channel)) = reader.as_ref() else {
                continue;
            };
            match channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
            {
                Ok(Some(got)) => fetched.push(to_received(
                    got.delivery.routing_key.as_str(),
                    &got.delivery.properties,
                    &got.delivery.data,
                )),
                Ok(None) => return fetched,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("reading {} failed ({err}); reconnecting", self.queue);
                    *reader = None;
                }
                Err(err) => panic!("reading {}: {err}", self.queue),
            }
        }
    }
}

/// A message for `topic`.
pub fn message(topic: &str, key: Option<&str>, payload: impl Into<Vec<u8>>) -> Message {
    Message {
        id: 1,
        message_id: MessageId::new(),
        topic: topic.to_owned(),
        key: key.map(str::to_owned),
        payload: payload.into(),
        headers: Default::default(),
        attempts: 0,
        created_at: chrono::Utc::now(),
    }
}

/// Declares a durable queue bound to [`EXCHANGE`] under its own name; it expires after
/// ten unused minutes should a test be killed before deleting it.
pub async fn declare_queue(channel: &Channel, queue: &str, mut arguments: FieldTable) {
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declaring the test exchange");
    arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declaring the test queue");
    channel
        .queue_bind(
            queue.into(),
            EXCHANGE.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("binding the test queue");
}

/// A message as read from the queue: id from `message_id`, key from [`KEY_HEADER`], the
/// other headers as strings.
fn to_received(routing_key: &str, properties: &BasicProperties, data: &[u8]) -> ReceivedMessage {
    let mut headers: BTreeMap<String, String> = properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter_map(|(name, value)| {
                    let value = value.as_long_string()?;
                    Some((
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let message_id = properties
        .message_id()
        .as_ref()
        .expect("every message carries a message_id")
        .as_str()
        .parse()
        .expect("message_id holds a message id");
    let key = headers.remove(KEY_HEADER);
    ReceivedMessage {
        message_id,
        topic: routing_key.to_owned(),
        key,
        payload: data.to_vec(),
        headers,
    }
}

impl PublisherHarness for RabbitHarness {
    type Publisher = RabbitMqPublisher;

    fn publisher(&self) -> &RabbitMqPublisher {
        &self.publisher
    }

    fn topic(&self) -> String {
        self.queue.clone()
    }

    async fn received(&self, at_least: usize) -> Vec<ReceivedMessage> {
        self.read(at_least, Duration::from_secs(5)).await
    }
}

impl Drop for RabbitHarness {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be busy right here: delete the
        // queue from a thread of its own, on a connection of its own.
        let queue = self.queue.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let url = rabbit_url();
                let Ok(connection) =
                    Connection::connect(&url, ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                let _ = connection.close(200, "OK".into()).await;
            });
        })
        .join();
    }
}

/// The single outcome of publishing `message`, which must be a failure.
pub async fn failure(publisher: &RabbitMqPublisher, message: Message) -> PublishError {
    let mut outcomes = publisher.publish(&[message]).await;
    assert_eq!(outcomes.len(), 1);
    match outcomes.remove(0) {
        PublishOutcome::Failed(err) => err,
        PublishOutcome::Acked => panic!("expected a failure, got Acked"),
    }
}

/// Panics unless every outcome is Acked.
pub fn assert_acked(outcomes: &[PublishOutcome]) {
    for outcome in outcomes {
        if let PublishOutcome::Failed(err) = outcome {
            panic!("expected Acked, got {}", err.describe());
        }
    }
}

/// Runs `rabbitmqctl` with `args`; its standard output, or an error with its output.
pub async fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || rabbitmqctl_blocking(&args))
        .await
        .expect("the rabbitmqctl task")
}

/// [`rabbitmqctl`], for guards that run in `Drop`.
pub fn rabbitmqctl_blocking(args: &[String]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|err| format!("running rabbitmqctl {args:?}: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The Erlang pid of the connection the client named `name`, once the broker lists it.
pub async fn connection_pid(name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listing = rabbitmqctl(&[
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .await
        .expect("listing connections");
        // One connection per line: `<pid>\t[..., {"connection_name","<name>"}, ...]`.
        let quoted = format!("\"{name}\"");
        if let Some(pid) = listing
            .lines()
            .find(|line| line.contains(&quoted))
            .and_then(|line| line.split_whitespace().next())
        {
            return pid.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no connection named {name} in:\n{listing}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes the broker close the connection the client named `name`, as an operator would;
/// returns the pid of the closed connection.
pub async fn close_connection(name: &str) -> String {
    let pid = connection_pid(name).await;
    rabbitmqctl(&["close_connection", &pid, "closed by an outbox test"])
        .await
        .expect("closing the connection");
    pid
}
