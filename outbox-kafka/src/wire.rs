//! An outbox [`Message`] as a Kafka record's headers.

use outbox_core::{Message, PublishError};
use rdkafka::message::{Header, OwnedHeaders};

/// The record header carrying the outbox message id (the UUID as text), the same on every
/// delivery attempt, so that consumers can drop the duplicates that at-least-once delivery
/// can produce (a relay killed between the delivery report and the settle).
pub const MESSAGE_ID_HEADER: &str = "outbox-message-id";

/// The message's own headers, then the message id.
pub(crate) fn headers(message: &Message) -> Result<OwnedHeaders, PublishError> {
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
    for (name, value) in &message.headers {
        if name.eq_ignore_ascii_case(MESSAGE_ID_HEADER) {
            return Err(PublishError::permanent(format!(
                "header {name:?} is reserved: the publisher sets `{MESSAGE_ID_HEADER}` to the message id itself; rename the header"
            )));
        }
        headers = headers.insert(Header {
            key: name.as_str(),
            value: Some(value.as_str()),
        });
    }
    let id = message.message_id.to_string();
    Ok(headers.insert(Header {
        key: MESSAGE_ID_HEADER,
        value: Some(id.as_str()),
    }))
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    /// A claimed message with one header of its own.
    fn with_content_type() -> Message {
        Message {
            headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
            ..outbox_testkit::claimed("orders", Some("order-42"), "{}")
        }
    }

    #[test]
    fn headers_carry_the_message_id_after_the_own_headers() {
        let m = with_content_type();
        let headers = headers(&m).expect("headers");
        let pairs: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("content-type".to_owned(), b"application/json".to_vec()),
                (
                    MESSAGE_ID_HEADER.to_owned(),
                    m.message_id.to_string().into_bytes()
                ),
            ]
        );
    }

    #[test]
    fn a_header_named_like_the_id_header_is_refused() {
        let mut m = with_content_type();
        m.headers
            .insert("Outbox-Message-Id".into(), "forged".into());
        let err = headers(&m).expect_err("reserved");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
