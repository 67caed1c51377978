//! An outbox [`Message`] as an AMQP message: route, properties and headers.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use outbox_core::{CONTENT_TYPE_HEADER, Message, PublishError};

use crate::config::{MAX_NAME_BYTES, Route};

/// The AMQP header carrying the message's ordering key, when it has one.
///
/// The message id travels in the `message_id` property, the message's own headers as AMQP
/// headers (string values), and a `content-type` header also in the `content_type`
/// property.
pub const KEY_HEADER: &str = "outbox-key";

/// AMQP delivery mode 2: the broker writes the message to disk in durable queues.
const PERSISTENT: u8 = 2;

/// A message ready for `basic.publish`.
#[derive(Debug, Clone)]
pub(crate) struct Prepared<'m> {
    pub(crate) exchange: ShortString,
    pub(crate) routing_key: ShortString,
    pub(crate) properties: BasicProperties,
    pub(crate) payload: &'m [u8],
}

/// The route, properties and headers of `message`; a permanent error for what AMQP cannot
/// carry (names over 255 bytes, a header named like [`KEY_HEADER`]).
pub(crate) fn prepare(message: &Message, route: Route) -> Result<Prepared<'_>, PublishError> {
    let exchange = short_string(route.exchange, |len| {
        format!("the exchange name is {len} bytes, over AMQP's {MAX_NAME_BYTES}")
    })?;
    let routing_key = short_string(route.routing_key, |len| {
        format!(
            "the routing key (topic {:?}) is {len} bytes, over AMQP's {MAX_NAME_BYTES}",
            message.topic
        )
    })?;
    Ok(Prepared {
        exchange,
        routing_key,
        properties: properties(message)?,
        payload: &message.payload,
    })
}

fn properties(message: &Message) -> Result<BasicProperties, PublishError> {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(message.message_id.to_string().into());
    let headers = headers(message)?;
    if !headers.inner().is_empty() {
        properties = properties.with_headers(headers);
    }
    if let Ok(seconds) = u64::try_from(message.created_at.timestamp()) {
        properties = properties.with_timestamp(seconds);
    }
    let content_type = message
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(CONTENT_TYPE_HEADER));
    if let Some((_, value)) = content_type {
        let value = short_string(value.clone(), |len| {
            format!("the content-type header is {len} bytes, over AMQP's {MAX_NAME_BYTES}")
        })?;
        properties = properties.with_content_type(value);
    }
    Ok(properties)
}

/// The message's own headers, plus the key.
fn headers(message: &Message) -> Result<FieldTable, PublishError> {
    let mut table = FieldTable::default();
    for (name, value) in &message.headers {
        if name.eq_ignore_ascii_case(KEY_HEADER) {
            return Err(PublishError::permanent(format!(
                "header {name:?} is reserved: this publisher sends the message key in it; rename the header"
            )));
        }
        let name = short_string(name.clone(), |len| {
            format!("a header name is {len} bytes, over AMQP's {MAX_NAME_BYTES}")
        })?;
        table.insert(name, long_string(value));
    }
    if let Some(key) = &message.key {
        table.insert(KEY_HEADER.into(), long_string(key));
    }
    Ok(table)
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes()))
}

fn short_string(
    value: String,
    too_long: impl FnOnce(usize) -> String,
) -> Result<ShortString, PublishError> {
    let len = value.len();
    ShortString::try_new(value)
        .map_err(|err| PublishError::permanent(too_long(len)).with_source(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            id: 1,
            message_id: outbox_core::MessageId::new(),
            topic: "orders.placed".into(),
            key: Some("order-42".into()),
            payload: b"{}".to_vec(),
            headers: [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-trace".to_owned(), "abc".to_owned()),
            ]
            .into(),
            attempts: 0,
            created_at: chrono::Utc::now(),
        }
    }

    fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a [u8]> {
        properties
            .headers()
            .as_ref()?
            .inner()
            .get(name)?
            .as_long_string()
            .map(LongString::as_bytes)
    }

    #[test]
    fn properties_carry_id_persistence_content_type_key_and_headers() {
        let m = message();
        let prepared = prepare(&m, Route::new("orders", "placed")).expect("prepared");
        assert_eq!(prepared.exchange.as_str(), "orders");
        assert_eq!(prepared.routing_key.as_str(), "placed");
        let p = &prepared.properties;
        assert_eq!(
            p.message_id().as_ref().map(ShortString::as_str),
            Some(m.message_id.to_string().as_str())
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        assert!(p.timestamp().is_some());
        assert_eq!(header(p, KEY_HEADER), Some(&b"order-42"[..]));
        assert_eq!(header(p, "x-trace"), Some(&b"abc"[..]));
        assert_eq!(header(p, "content-type"), Some(&b"application/json"[..]));
    }

    #[test]
    fn no_key_no_key_header_and_no_content_type_without_the_header() {
        let mut m = message();
        m.key = None;
        m.headers.clear();
        let prepared = prepare(&m, Route::new("", "q")).expect("prepared");
        assert_eq!(*prepared.properties.headers(), None);
        assert_eq!(*prepared.properties.content_type(), None);
    }

    #[test]
    fn what_amqp_cannot_carry_is_a_permanent_error() {
        let mut reserved = message();
        reserved.headers.insert("Outbox-Key".into(), "k".into());
        let err = prepare(&reserved, Route::new("", "q")).expect_err("reserved header");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("reserved"), "{err}");

        let long = "x".repeat(256);
        let err = prepare(&message(), Route::new(long.clone(), "q")).expect_err("long exchange");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("exchange"), "{err}");
        let err = prepare(&message(), Route::new("", long.clone())).expect_err("long key");
        assert!(err.to_string().contains("routing key"), "{err}");

        let mut long_header = message();
        long_header.headers.insert(long, "v".into());
        let err = prepare(&long_header, Route::new("", "q")).expect_err("long header");
        assert!(err.to_string().contains("header name"), "{err}");
    }
}
