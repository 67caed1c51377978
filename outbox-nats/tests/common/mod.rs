//! A test's own JetStream stream on the local NATS server, and reading it back.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, message::StreamMessage, stream};
use outbox_nats::{KEY_HEADER, MESSAGE_ID_HEADER, NatsConfig, NatsPublisher};
use outbox_testkit::services::{unavailable, url_from_env};
use outbox_testkit::{PublisherHarness, ReceivedMessage, run_detached};
use tokio::time::Instant;

/// The NATS server under test.
pub fn nats_url() -> String {
    url_from_env("OUTBOX_TEST_NATS_URL", "nats://127.0.0.1:4222")
}

/// A client of the server under test; `None` (after a `skipped:` line, or a panic when
/// services are required) when it cannot be reached.
pub async fn client() -> Option<async_nats::Client> {
    let url = nats_url();
    match async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(url.as_str())
        .await
    {
        Ok(client) => Some(client),
        Err(err) => {
            unavailable("NATS", &url, &err);
            None
        }
    }
}

/// A subject no stream captures, unique to the calling test.
pub fn unique_subject(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// A publisher and its own stream, capturing `<root>` and `<root>.>` for a unique root;
/// the stream is deleted on drop.
pub struct NatsHarness {
    pub publisher: NatsPublisher,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub stream_name: String,
    /// The subject the stream captures (with everything below it).
    pub root: String,
}

impl NatsHarness {
    /// A harness with the default publisher settings.
    pub async fn connect() -> Option<Self> {
        Self::connect_with(|_| NatsConfig::default(), |_| {}).await
    }

    /// A harness whose publisher settings come from `config(root)` and whose stream
    /// settings are adjusted by `adjust_stream`.
    pub async fn connect_with(
        config: impl FnOnce(&str) -> NatsConfig,
        adjust_stream: impl FnOnce(&mut stream::Config),
    ) -> Option<Self> {
        let client = client().await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let stream_name = format!("OUTBOX_TEST_{id}");
        let root = format!("outbox-test.{id}");
        let jetstream = jetstream::new(client.clone());
        let mut stream_config = stream::Config {
            name: stream_name.clone(),
            subjects: vec![root.clone(), format!("{root}.>")],
            storage: stream::StorageType::Memory,
            // A backstop should a test be killed before it deletes its stream.
            max_age: Duration::from_secs(3600),
            ..Default::default()
        };
        adjust_stream(&mut stream_config);
        jetstream
            .create_stream(stream_config)
            .await
            .expect("creating the test's stream");
        let publisher =
            NatsPublisher::new(client.clone(), config(&root)).expect("publisher settings");
        Some(NatsHarness {
            publisher,
            client,
            jetstream,
            stream_name,
            root,
        })
    }

    /// Everything the stream holds, in stream order, once it holds at least `at_least`
    /// messages or five seconds have passed.
    pub async fn stored(&self, at_least: usize) -> Vec<ReceivedMessage> {
        let at_least = u64::try_from(at_least).expect("count fits u64");
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = self
            .jetstream
            .get_stream(&self.stream_name)
            .await
            .expect("the test's stream");
        let state = loop {
            let info = stream.get_info().await.expect("stream info");
            if info.state.messages >= at_least || Instant::now() >= deadline {
                break info.state;
            }
            // PubAcks mean stored, so this only waits when a test expects too much.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if state.messages == 0 {
            return Vec::new();
        }
        let mut received = Vec::new();
        for sequence in state.first_sequence..=state.last_sequence {
            let message = stream
                .get_raw_message(sequence)
                .await
                .expect("reading a stored message");
            received.push(to_received(message));
        }
        received
    }
}

/// A stored NATS message as the testkit compares it: the id and key from their headers,
/// and the message's own headers.
fn to_received(message: StreamMessage) -> ReceivedMessage {
    let mut headers: BTreeMap<String, String> = message
        .headers
        .iter()
        .filter_map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .last()
                .map(|value| (name.to_owned(), value.as_str().to_owned()))
        })
        .collect();
    let message_id = headers
        .remove(MESSAGE_ID_HEADER)
        .expect("every message carries Nats-Msg-Id")
        .parse()
        .expect("Nats-Msg-Id holds a message id");
    let key = headers.remove(KEY_HEADER);
    ReceivedMessage {
        message_id,
        topic: message.subject.to_string(),
        key,
        payload: message.payload.to_vec(),
        headers,
    }
}

impl PublisherHarness for NatsHarness {
    type Publisher = NatsPublisher;

    fn publisher(&self) -> &NatsPublisher {
        &self.publisher
    }

    fn topic(&self) -> String {
        self.root.clone()
    }

    async fn received(&self, at_least: usize) -> Vec<ReceivedMessage> {
        self.stored(at_least).await
    }
}

impl Drop for NatsHarness {
    fn drop(&mut self) {
        let url = nats_url();
        let name = self.stream_name.clone();
        run_detached(async move {
            if let Ok(client) = async_nats::connect(url).await {
                let _ = jetstream::new(client).delete_stream(&name).await;
            }
        });
    }
}
