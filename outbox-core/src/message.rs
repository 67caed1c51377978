//! Messages: what an application enqueues ([`NewMessage`]) and what a relay claims ([`Message`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Header names and values, carried to the broker as the broker's own headers.
pub type Headers = BTreeMap<String, String>;

/// The header that [`NewMessage::json`] sets.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// A message's stable, unique id, the same on every delivery attempt.
///
/// Brokers that de-duplicate (NATS `Nats-Msg-Id`, Kafka idempotence) and consumers use it to
/// drop the duplicates that at-least-once delivery can produce. New ids are UUIDv7, so they
/// sort by creation time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new time-ordered (v7) id.
    pub fn new() -> Self {
        MessageId(Uuid::now_v7())
    }

    /// Wraps an id the caller chose (for example to make an event's id match a business id).
    pub fn from_uuid(uuid: Uuid) -> Self {
        MessageId(uuid)
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Uuid::parse_str(s).map(MessageId)
    }
}

/// Why a [`NewMessage`] was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The topic is empty.
    #[error("the topic is empty; give every message a topic (the broker destination)")]
    EmptyTopic,
    /// The topic has control characters or white space, or is too long.
    #[error("the topic {topic:?} is not usable: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The payload is larger than the configured limit.
    #[error(
        "the payload is {size} bytes, over the limit of {limit} bytes; send a reference to large data instead, or raise MessageLimits::max_payload_bytes"
    )]
    PayloadTooLarge {
        /// The payload size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A header name is empty or has characters outside the HTTP token set.
    #[error("the header name {name:?} is invalid: use letters, digits and !#$%&'*+-.^_`|~ only")]
    InvalidHeaderName {
        /// The header name as given.
        name: String,
    },
    /// The key is longer than the configured limit.
    #[error(
        "the key is {size} bytes, over the limit of {limit} bytes; use a shorter key (an id, not a document)"
    )]
    KeyTooLong {
        /// The key's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The headers together are larger than the configured limit.
    #[error(
        "the headers total {size} bytes, over the limit of {limit} bytes; move data to the payload"
    )]
    HeadersTooLarge {
        /// Total bytes of names and values.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A header value holds a line break or NUL, which brokers cannot carry.
    #[error("the value of header {name:?} holds a line break or NUL character")]
    InvalidHeaderValue {
        /// The header's name.
        name: String,
    },
}

/// Size limits checked at enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageLimits {
    /// Largest payload accepted, in bytes (default 1 MiB, the default limit of most brokers).
    pub max_payload_bytes: usize,
    /// Longest topic accepted, in bytes (default 255).
    pub max_topic_bytes: usize,
    /// Longest key accepted, in bytes (default 1 KiB).
    pub max_key_bytes: usize,
    /// Largest total of header names and values, in bytes (default 64 KiB).
    pub max_headers_bytes: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_payload_bytes: 1024 * 1024,
            max_topic_bytes: 255,
            max_key_bytes: 1024,
            max_headers_bytes: 64 * 1024,
        }
    }
}

impl MessageLimits {
    /// Default limits with another payload limit.
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }
}

/// A message to enqueue in the same transaction as the business data it describes.
///
/// ```
/// use outbox_core::NewMessage;
///
/// let msg = NewMessage::new("orders.placed", br#"{"order":42}"#.to_vec())
///     .with_key("order-42")
///     .with_header("content-type", "application/json");
/// assert_eq!(msg.topic(), "orders.placed");
/// assert_eq!(msg.key(), Some("order-42"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    message_id: MessageId,
    topic: String,
    key: Option<String>,
    payload: Vec<u8>,
    headers: Headers,
    not_before: Option<DateTime<Utc>>,
}

impl NewMessage {
    /// A message for `topic` with a raw payload and a fresh [`MessageId`].
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        NewMessage {
            message_id: MessageId::new(),
            topic: topic.into(),
            key: None,
            payload: payload.into(),
            headers: Headers::new(),
            not_before: None,
        }
    }

    /// A message whose payload is `value` as JSON, with `content-type: application/json`.
    ///
    /// ```
    /// # fn main() -> outbox_core::Result<()> {
    /// let msg = outbox_core::NewMessage::json("orders.placed", &serde_json::json!({"order": 42}))?;
    /// assert_eq!(msg.headers()["content-type"], "application/json");
    /// # Ok(()) }
    /// ```
    pub fn json<T: Serialize + ?Sized>(topic: impl Into<String>, value: &T) -> Result<Self> {
        let payload = serde_json::to_vec(value).map_err(|source| Error::Serialize { source })?;
        Ok(Self::new(topic, payload).with_header(CONTENT_TYPE_HEADER, "application/json"))
    }

    /// Sets the ordering key: messages with the same key are published in enqueue order.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds or replaces a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Holds the message back until `at` (it is not published earlier).
    pub fn with_not_before(mut self, at: DateTime<Utc>) -> Self {
        self.not_before = Some(at);
        self
    }

    /// Replaces the generated id with one the caller chose.
    pub fn with_message_id(mut self, id: MessageId) -> Self {
        self.message_id = id;
        self
    }

    /// The message's stable id.
    pub fn message_id(&self) -> MessageId {
        self.message_id
    }

    /// The destination topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The ordering key, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The earliest publish time, if one was set.
    pub fn not_before(&self) -> Option<DateTime<Utc>> {
        self.not_before
    }

    /// Checks the message against `limits`; stores call this before writing anything.
    ///
    /// ```
    /// use outbox_core::{MessageLimits, NewMessage, ValidationError};
    ///
    /// let err = NewMessage::new("", vec![]).validate(&MessageLimits::default()).unwrap_err();
    /// assert_eq!(err, ValidationError::EmptyTopic);
    /// ```
    pub fn validate(&self, limits: &MessageLimits) -> Result<(), ValidationError> {
        validate_topic(&self.topic, limits)?;
        if self.payload.len() > limits.max_payload_bytes {
            return Err(ValidationError::PayloadTooLarge {
                size: self.payload.len(),
                limit: limits.max_payload_bytes,
            });
        }
        if let Some(key) = &self.key
            && key.len() > limits.max_key_bytes
        {
            return Err(ValidationError::KeyTooLong {
                size: key.len(),
                limit: limits.max_key_bytes,
            });
        }
        let headers_size: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        if headers_size > limits.max_headers_bytes {
            return Err(ValidationError::HeadersTooLarge {
                size: headers_size,
                limit: limits.max_headers_bytes,
            });
        }
        for (name, value) in &self.headers {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(ValidationError::InvalidHeaderName { name: name.clone() });
            }
            if value.contains(['\r', '\n', '\0']) {
                return Err(ValidationError::InvalidHeaderValue { name: name.clone() });
            }
        }
        Ok(())
    }
}

fn validate_topic(topic: &str, limits: &MessageLimits) -> Result<(), ValidationError> {
    let invalid = |reason| ValidationError::InvalidTopic {
        topic: topic.to_owned(),
        reason,
    };
    if topic.is_empty() {
        return Err(ValidationError::EmptyTopic);
    }
    if topic.len() > limits.max_topic_bytes {
        return Err(invalid("longer than MessageLimits::max_topic_bytes"));
    }
    if topic.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("it holds white space or control characters"));
    }
    Ok(())
}

/// RFC 9110 `tchar`: the characters every broker accepts in a header name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A committed message as a relay claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The store's row id; increases with enqueue order.
    pub id: i64,
    /// The stable message id, sent to the broker for de-duplication.
    pub message_id: MessageId,
    /// The destination topic.
    pub topic: String,
    /// The ordering key, if any.
    pub key: Option<String>,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The headers.
    pub headers: Headers,
    /// Failed publish attempts so far.
    pub attempts: u32,
    /// When the message was enqueued.
    pub created_at: DateTime<Utc>,
}
