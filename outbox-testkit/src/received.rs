//! What a broker (or a stand-in for one) received.

use outbox_core::{Headers, Message, MessageId};
use serde::{Deserialize, Serialize};

/// One message as the broker holds it: what consumers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedMessage {
    /// The message id the publisher sent along.
    pub message_id: MessageId,
    /// The destination topic (subject, routing key...).
    pub topic: String,
    /// The key, if the broker carries one.
    pub key: Option<String>,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The headers the broker carried (adapters may add their own, e.g. the message id).
    pub headers: Headers,
}

impl From<&Message> for ReceivedMessage {
    fn from(message: &Message) -> Self {
        ReceivedMessage {
            message_id: message.message_id,
            topic: message.topic.clone(),
            key: message.key.clone(),
            payload: message.payload.clone(),
            headers: message.headers.clone(),
        }
    }
}
