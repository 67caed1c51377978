//! librdkafka errors mapped onto outbox errors: what is retried, what makes a message dead.

use outbox_core::PublishError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;

/// Why a [`KafkaPublisher`](crate::KafkaPublisher) could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The [`KafkaConfig`] is unusable.
    #[error(transparent)]
    Config(#[from] outbox_core::Error),
    /// librdkafka refused a property (an unknown name, a value out of range). The value is
    /// left out, since it may be a password.
    #[error("librdkafka refused the property {name:?}: {reason}")]
    Property {
        /// The property's name.
        name: String,
        /// librdkafka's explanation.
        reason: String,
    },
    /// librdkafka could not create the producer.
    #[error("could not create a Kafka producer for {brokers}")]
    Client {
        /// The bootstrap servers, credentials removed.
        brokers: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// [`KafkaPublisher::ensure_topic`](crate::KafkaPublisher::ensure_topic) could not
    /// create the topic (not authorised, bad partition count, no broker answered).
    #[error("could not create the Kafka topic {topic:?}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// No broker answered within the time given to [`KafkaPublisher::connect`](crate::KafkaPublisher::connect).
    #[error("no Kafka broker at {brokers} answered; check the address and that the broker runs")]
    Unreachable {
        /// The bootstrap servers, credentials removed.
        brokers: String,
        /// librdkafka's error.
        source: KafkaError,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed: no broker answered, as opposed to a bad
    /// setting.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use outbox_kafka::{KafkaConfig, KafkaPublisher};
    ///
    /// match KafkaPublisher::connect("127.0.0.1:9092", KafkaConfig::default()).await {
    ///     Ok(publisher) => { /* run the relay */ }
    ///     Err(err) if err.is_transient() => { /* wait, then connect again */ }
    ///     Err(err) => panic!("fix the configuration: {err}"),
    /// }
    /// # }
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Unreachable { .. })
    }

    /// Maps an error of creating the producer, keeping property values out of the text.
    pub(crate) fn creating(brokers: &str, err: KafkaError) -> Self {
        match err {
            KafkaError::ClientConfig(_, reason, name, _value) => {
                ConnectError::Property { name, reason }
            }
            source => ConnectError::Client {
                brokers: brokers.to_owned(),
                source,
            },
        }
    }
}

/// Whether `err` says the producer hit a fatal error and must be rebuilt.
pub(crate) fn is_fatal(err: &KafkaError) -> bool {
    matches!(err.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal))
}

/// Maps a failed produce (refused by librdkafka at once, or failed in its delivery report).
pub(crate) fn publish_failed(
    err: KafkaError,
    topic: &str,
    mapped_from: &str,
    config: &KafkaConfig,
) -> PublishError {
    let Some(code) = err.rdkafka_error_code() else {
        return PublishError::transient(format!("producing to topic {topic:?} failed"))
            .with_source(err);
    };
    classify(code, topic, mapped_from, config).with_source(err)
}

/// What an error code means for the message: the text says what happened and what to do.
fn classify(
    code: RDKafkaErrorCode,
    topic: &str,
    mapped_from: &str,
    config: &KafkaConfig,
) -> PublishError {
    use RDKafkaErrorCode as C;
    let origin = if topic == mapped_from {
        String::new()
    } else {
        format!(" (mapped from topic {mapped_from:?})")
    };
    let permanent = |why: String| {
        PublishError::permanent(format!(
            "Kafka refused the message for topic {topic:?}{origin}: {why}"
        ))
    };
    let transient = |why: String| {
        PublishError::transient(format!(
            "the message for topic {topic:?}{origin} was not delivered: {why}"
        ))
    };
    match code {
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::UnknownTopicId => {
            let text = format!(
                "Kafka has no topic {topic:?}{origin}: create it first (brokers that do not create \
                 topics on first use need `kafka-topics.sh --create --topic {topic}`, or \
                 `tansu topic create {topic}`), or map the message to an existing topic"
            );
            if config.missing_topic_is_transient {
                PublishError::transient(text)
            } else {
                PublishError::permanent(text)
            }
        }
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => permanent(format!(
            "it is larger than the broker or the producer takes (max_message_bytes is {}); \
             send a reference to large data instead, or raise the topic's max.message.bytes and max_message_bytes",
            config.max_message_bytes
        )),
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed | C::TransactionalIdAuthorizationFailed => permanent(
            "the producer's principal may not write to this topic; grant it WRITE (and IDEMPOTENT_WRITE on the cluster for older brokers)".to_owned(),
        ),
        C::InvalidTopic => permanent("the name is not a valid Kafka topic name".to_owned()),
        C::InvalidMessage | C::InvalidRecord | C::PolicyViolation | C::InvalidTimestamp | C::UnsupportedForMessageFormat => {
            permanent("the broker rejects the record as it stands".to_owned())
        }
        C::QueueFull => transient(format!(
            "the producer already holds max_queued_messages ({}) or max_queued_bytes ({}) (is the broker down?); retried later",
            config.max_queued_messages, config.max_queued_bytes
        )),
        C::MessageTimedOut => transient(format!(
            "no delivery report within message_timeout ({:?}); the broker may or may not hold it, so it is retried",
            config.message_timeout
        )),
        C::Fatal => transient(
            "the idempotent producer hit a fatal error and is being rebuilt; retried on the new producer".to_owned(),
        ),
        C::PurgeQueue | C::PurgeInflight => transient("the producer was closed before delivery".to_owned()),
        C::AllBrokersDown | C::BrokerTransportFailure | C::BrokerNotAvailable | C::LeaderNotAvailable | C::NotLeaderForPartition
        | C::NetworkException | C::RequestTimedOut | C::NotEnoughReplicas | C::NotEnoughReplicasAfterAppend | C::Resolve => {
            transient("no broker took it (broker unavailable, leader moving or too few replicas)".to_owned())
        }
        // Authentication failures concern the whole client, not this message: making every
        // message dead over a rotated password would lose the backlog's order.
        C::Authentication | C::SaslAuthenticationFailed => transient(
            "the client could not authenticate; check the SASL/TLS settings".to_owned(),
        ),
        other => transient(format!("librdkafka reported {other:?}")),
    }
}

/// A Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub(crate) fn check_topic(topic: &str, mapped_from: &str) -> Result<(), PublishError> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        return Ok(());
    }
    let origin = if topic == mapped_from {
        String::new()
    } else {
        format!(" (mapped from topic {mapped_from:?})")
    };
    Err(PublishError::permanent(format!(
        "{topic:?}{origin} is not a Kafka topic name: use 1 to 249 letters, digits, '.', '_' or '-' \
         (map the topic with KafkaConfig::with_topic)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_decide_retry_or_dead_letter() {
        let config = KafkaConfig::default();
        let cases = [
            (
                RDKafkaErrorCode::UnknownTopicOrPartition,
                false,
                "create it first",
            ),
            (RDKafkaErrorCode::UnknownTopic, false, "create it first"),
            (
                RDKafkaErrorCode::MessageSizeTooLarge,
                false,
                "max_message_bytes",
            ),
            (RDKafkaErrorCode::TopicAuthorizationFailed, false, "WRITE"),
            (RDKafkaErrorCode::InvalidRecord, false, "rejects"),
            (RDKafkaErrorCode::QueueFull, true, "max_queued_messages"),
            (RDKafkaErrorCode::MessageTimedOut, true, "may or may not"),
            (RDKafkaErrorCode::AllBrokersDown, true, "broker unavailable"),
            (RDKafkaErrorCode::NotLeaderForPartition, true, "leader"),
            (RDKafkaErrorCode::Fatal, true, "rebuilt"),
            (
                RDKafkaErrorCode::OutOfOrderSequenceNumber,
                true,
                "OutOfOrderSequenceNumber",
            ),
        ];
        for (code, transient, text) in cases {
            let err = classify(code, "orders", "orders", &config);
            assert_eq!(err.is_transient(), transient, "{code:?}: {err}");
            assert!(err.to_string().contains(text), "{code:?}: {err}");
        }
    }

    #[test]
    fn a_missing_topic_can_be_made_transient() {
        let mut config = KafkaConfig::default();
        config.missing_topic_is_transient = true;
        let err = classify(RDKafkaErrorCode::UnknownTopicOrPartition, "t", "t", &config);
        assert!(err.is_transient());
    }

    #[test]
    fn topic_names_are_checked() {
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
            let err = check_topic(bad, bad).expect_err(bad);
            assert!(!err.is_transient());
        }
        for good in ["orders", "orders.placed", "a_b-c.1", &"x".repeat(249)] {
            check_topic(good, good).expect(good);
        }
        let err = check_topic("a b", "t").expect_err("mapped");
        assert!(err.to_string().contains("mapped from topic \"t\""), "{err}");
    }

    #[test]
    fn refused_properties_do_not_show_their_value() {
        let err = ConnectError::creating(
            "b:9092",
            KafkaError::ClientConfig(
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                "Invalid value".into(),
                "sasl.password".into(),
                "hunter2".into(),
            ),
        );
        let text = format!("{err} {err:?}");
        assert!(text.contains("sasl.password"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
