//! Settings of a [`KafkaPublisher`](crate::KafkaPublisher).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use outbox_core::{Error, Message, Result};
use rdkafka::ClientConfig;

/// Chooses the Kafka topic a message is published to; see [`KafkaConfig::with_topic`].
pub type TopicMapper = Arc<dyn Fn(&Message) -> String + Send + Sync>;

/// librdkafka settings that the publisher sets itself, because its guarantees rest on them.
/// Each maps to the [`KafkaConfig`] field to use instead, if there is one.
const OWNED_PROPERTIES: [(&str, &str); 17] = [
    ("bootstrap.servers", "the `brokers` argument"),
    ("metadata.broker.list", "the `brokers` argument"),
    ("enable.idempotence", "nothing: it is always on"),
    ("acks", "nothing: it is always `all`"),
    ("request.required.acks", "nothing: it is always `all`"),
    ("message.timeout.ms", "KafkaConfig::message_timeout"),
    ("delivery.timeout.ms", "KafkaConfig::message_timeout"),
    ("request.timeout.ms", "KafkaConfig::request_timeout"),
    (
        "queue.buffering.max.messages",
        "KafkaConfig::max_queued_messages",
    ),
    (
        "queue.buffering.max.kbytes",
        "KafkaConfig::max_queued_bytes",
    ),
    ("message.max.bytes", "KafkaConfig::max_message_bytes"),
    ("linger.ms", "KafkaConfig::linger"),
    ("queue.buffering.max.ms", "KafkaConfig::linger"),
    (
        "enable.gapless.guarantee",
        "nothing: the relay retries, so gaps are refilled",
    ),
    (
        "transactional.id",
        "nothing: this publisher is not transactional",
    ),
    (
        "retries",
        "KafkaConfig::message_timeout, which bounds librdkafka's retries",
    ),
    (
        "topic.metadata.propagation.max.ms",
        "KafkaConfig::message_timeout (it is half of it)",
    ),
];

/// Substrings of setting names whose values are secrets, masked in `Debug` output.
const SECRET_NAME_PARTS: [&str; 6] = [
    "password",
    "secret",
    "pem",
    "jaas",
    "token",
    "oauthbearer.config",
];

/// How a [`KafkaPublisher`](crate::KafkaPublisher) produces to Kafka.
///
/// The producer is always idempotent with `acks=all`, so librdkafka's own retries neither
/// duplicate nor reorder a partition's messages; these settings bound how long and how much
/// it may hold.
///
/// ```
/// use std::time::Duration;
///
/// let mut config = outbox_kafka::KafkaConfig::default()
///     .with_topic(|message| format!("shop.{}", message.topic))
///     .with_property("security.protocol", "ssl");
/// config.message_timeout = Duration::from_secs(15);
/// config.validate()?;
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// How long librdkafka may try to deliver a message, retries included
    /// (`message.timeout.ms`, default 10 s). A message without a delivery report by then
    /// fails transiently and the relay retries it later. A topic that the broker still
    /// does not know after half of it is reported missing.
    pub message_timeout: Duration,
    /// How long one produce request may wait for the broker's answer (`request.timeout.ms`,
    /// default 5 s). A request sent just before [`message_timeout`](Self::message_timeout)
    /// runs out is still awaited, so a publish call takes at most their sum
    /// ([`max_publish_duration`](Self::max_publish_duration)).
    pub request_timeout: Duration,
    /// Messages librdkafka may hold at once, queued or awaiting their delivery report
    /// (`queue.buffering.max.messages`, default 10,000). Beyond it a message fails
    /// transiently at once ("queue full") instead of growing memory while the broker is
    /// down. Keep it above the relay's `batch_size * max_in_flight_batches`.
    pub max_queued_messages: usize,
    /// Bytes librdkafka may hold at once (`queue.buffering.max.kbytes`, default 64 MiB).
    pub max_queued_bytes: usize,
    /// Largest produce request, which bounds the largest message (`message.max.bytes`,
    /// default 1,000,000, the broker's default limit). The relay makes a larger payload
    /// dead without sending it.
    pub max_message_bytes: usize,
    /// How long librdkafka waits to fill a batch before sending it (`linger.ms`, default
    /// 0). The relay hands over a whole wave of messages at once, so they batch without
    /// waiting, and a key's next message waits for the previous one's delivery report: any
    /// linger delays every wave of a keyed backlog (5 ms, librdkafka's default, halved the
    /// throughput of a 10-key backlog in `outbox-bench kafka-burndown`).
    pub linger: Duration,
    /// Whether "this topic does not exist" is retried (default `false`: the message becomes
    /// dead at once, with an error saying which topic to create). Set it when topics are
    /// created by another process that may start after the relay.
    pub missing_topic_is_transient: bool,
    /// The topic of each message (default: its topic, unchanged). Set it with
    /// [`with_topic`](Self::with_topic).
    pub topic: Option<TopicMapper>,
    properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            message_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_message_bytes: 1_000_000,
            linger: Duration::ZERO,
            missing_topic_is_transient: false,
            topic: None,
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(name, value)| {
                let shown = if is_secret(name) {
                    "***"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("message_timeout", &self.message_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_queued_messages", &self.max_queued_messages)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("linger", &self.linger)
            .field(
                "missing_topic_is_transient",
                &self.missing_topic_is_transient,
            )
            .field("topic", &self.topic.as_ref().map(|_| "<fn>"))
            .field("properties", &properties)
            .finish()
    }
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

impl KafkaConfig {
    /// Publishes each message to the topic `topic(message)` instead of its own topic, for
    /// example to add a prefix per environment.
    ///
    /// ```
    /// let config = outbox_kafka::KafkaConfig::default()
    ///     .with_topic(|message| format!("prod.{}", message.topic));
    /// # let _ = config;
    /// ```
    pub fn with_topic(
        mut self,
        topic: impl Fn(&Message) -> String + Send + Sync + 'static,
    ) -> Self {
        self.topic = Some(Arc::new(topic));
        self
    }

    /// Sets a librdkafka property (see librdkafka's CONFIGURATION.md): TLS, SASL,
    /// compression, client id, and so on. Values of secret-looking names (passwords, keys,
    /// tokens) never appear in `Debug` output. Properties the publisher owns (idempotence,
    /// acks, timeouts, queue bounds) are refused by [`validate`](Self::validate).
    ///
    /// ```
    /// let config = outbox_kafka::KafkaConfig::default()
    ///     .with_property("security.protocol", "sasl_ssl")
    ///     .with_property("sasl.mechanism", "SCRAM-SHA-512")
    ///     .with_property("sasl.username", "relay")
    ///     .with_property("sasl.password", "s3cret")
    ///     .with_property("compression.type", "lz4");
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// ```
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// The longest one [`publish`](outbox_core::Publisher::publish) call can take to
    /// report a message: [`message_timeout`](Self::message_timeout) plus
    /// [`request_timeout`](Self::request_timeout). The relay refuses a lease that is not
    /// longer, since another relay could otherwise claim the message while it is in flight.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = outbox_kafka::KafkaConfig::default();
    /// assert_eq!(config.max_publish_duration(), Duration::from_secs(15));
    /// ```
    pub fn max_publish_duration(&self) -> Duration {
        self.message_timeout.saturating_add(self.request_timeout)
    }

    /// Checks that the settings can work.
    ///
    /// ```
    /// let mut config = outbox_kafka::KafkaConfig::default();
    /// config.max_queued_messages = 0;
    /// assert!(config.validate().is_err());
    ///
    /// let config = outbox_kafka::KafkaConfig::default().with_property("acks", "1");
    /// assert!(config.validate().unwrap_err().to_string().contains("acks"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        millis("message_timeout", self.message_timeout, 1)?;
        millis("request_timeout", self.request_timeout, 1)?;
        millis("linger", self.linger, 0)?;
        if self.max_queued_messages == 0 || self.max_queued_messages > 2_147_483_647 {
            return Err(Error::invalid_config(format!(
                "max_queued_messages is {}; use 1 to 2147483647, above the relay's batch_size * max_in_flight_batches",
                self.max_queued_messages
            )));
        }
        if self.max_queued_bytes < 1024 || self.max_queued_bytes / 1024 > 2_147_483_647 {
            return Err(Error::invalid_config(format!(
                "max_queued_bytes is {}; use 1 KiB to 2 TiB",
                self.max_queued_bytes
            )));
        }
        if !(1_000..=1_000_000_000).contains(&self.max_message_bytes) {
            return Err(Error::invalid_config(format!(
                "max_message_bytes is {}; librdkafka takes 1000 to 1000000000",
                self.max_message_bytes
            )));
        }
        for name in self.properties.keys() {
            let lower = name.to_ascii_lowercase();
            if let Some((_, instead)) = OWNED_PROPERTIES.iter().find(|(owned, _)| *owned == lower) {
                return Err(Error::invalid_config(format!(
                    "the librdkafka property {name:?} is set by the publisher itself; use {instead}"
                )));
            }
        }
        Ok(())
    }

    /// The topic `message` is published to.
    pub(crate) fn topic_for<'m>(&self, message: &'m Message) -> Cow<'m, str> {
        match &self.topic {
            Some(topic) => Cow::Owned(topic(message)),
            None => Cow::Borrowed(&message.topic),
        }
    }

    /// The librdkafka configuration of the producer: the caller's properties, then the
    /// settings the guarantees rest on.
    pub(crate) fn client_config(&self, brokers: &str) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("client.id", "outbox-kafka");
        // The Java client's partitioner, so that keys land on the same partitions as
        // records produced by JVM services.
        client.set("partitioner", "murmur2_random");
        for (name, value) in &self.properties {
            client.set(name, value);
        }
        client
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", as_millis(self.message_timeout))
            .set("request.timeout.ms", as_millis(self.request_timeout))
            .set(
                "queue.buffering.max.messages",
                self.max_queued_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                (self.max_queued_bytes / 1024).to_string(),
            )
            .set("message.max.bytes", self.max_message_bytes.to_string())
            .set("linger.ms", as_millis(self.linger))
            // librdkafka waits this long (30 s by default) before it calls a topic missing;
            // half the message timeout lets a missing topic be reported as such, not as a
            // timeout, while a topic just created elsewhere still has time to appear.
            .set(
                "topic.metadata.propagation.max.ms",
                as_millis(self.message_timeout / 2),
            );
        client
    }
}

fn as_millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// librdkafka takes these durations as whole milliseconds up to 2^31 - 1 (about 24 days).
fn millis(name: &str, duration: Duration, min: u128) -> Result<()> {
    let ms = duration.as_millis();
    if ms < min || ms > 2_147_483_647 {
        return Err(Error::invalid_config(format!(
            "{name} is {duration:?}; librdkafka takes {min} ms to 24 days, in whole milliseconds"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_properties_are_refused_with_the_field_to_use() {
        for (name, field) in [
            ("enable.idempotence", "always on"),
            ("message.timeout.ms", "message_timeout"),
            ("ACKS", "all"),
        ] {
            let err = KafkaConfig::default()
                .with_property(name, "x")
                .validate()
                .expect_err(name);
            let text = err.to_string();
            assert!(text.contains(field), "{text}");
        }
        KafkaConfig::default()
            .with_property("compression.type", "lz4")
            .validate()
            .expect("a property the publisher does not own");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = KafkaConfig::default()
            .with_property("sasl.password", "hunter2")
            .with_property("ssl.key.pem", "-----BEGIN hunter3")
            .with_property("sasl.oauthbearer.client.secret", "hunter4")
            .with_property("sasl.username", "relay");
        let debug = format!("{config:?}");
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("relay"), "{debug}");
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let zero_timeout = KafkaConfig {
            message_timeout: Duration::ZERO,
            ..KafkaConfig::default()
        };
        assert!(zero_timeout.validate().is_err());
        let tiny_messages = KafkaConfig {
            max_message_bytes: 10,
            ..KafkaConfig::default()
        };
        assert!(tiny_messages.validate().is_err());
        let no_queue = KafkaConfig {
            max_queued_bytes: 0,
            ..KafkaConfig::default()
        };
        assert!(no_queue.validate().is_err());
        KafkaConfig::default().validate().expect("defaults");
    }

    #[test]
    fn the_client_config_carries_the_guarantees_whatever_the_properties() {
        let client = KafkaConfig::default()
            .with_property("client.id", "orders-relay")
            .client_config("127.0.0.1:9092");
        assert_eq!(client.get("enable.idempotence"), Some("true"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("message.timeout.ms"), Some("10000"));
        assert_eq!(client.get("queue.buffering.max.messages"), Some("10000"));
        assert_eq!(client.get("client.id"), Some("orders-relay"));
    }
}
