//! An outbox [`Message`] as a NATS message: its subject and headers.

use std::str::FromStr;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue, NATS_MESSAGE_ID};
use outbox_core::{Message, PublishError};

/// The header carrying the outbox message id. JetStream drops a message whose id it has
/// already stored within the stream's duplicate window; consumers can drop redeliveries by
/// it too.
pub const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// The header carrying the message's ordering key, when it has one.
pub const KEY_HEADER: &str = "Outbox-Key";

/// Subjects under these prefixes are NATS's own APIs (publishing to `$JS.API.…` would
/// manage streams, not store a message).
const RESERVED_SUBJECT_PREFIXES: [&str; 2] = ["$JS.", "$SYS."];

/// Refuses subjects that cannot hold a published message.
pub(crate) fn check_subject(subject: &str, topic: &str) -> Result<(), PublishError> {
    let refuse = |why: &str| {
        let origin = if subject == topic {
            String::new()
        } else {
            format!(" (mapped from topic {topic:?})")
        };
        Err(PublishError::permanent(format!(
            "subject {subject:?}{origin} cannot be published to: {why}"
        )))
    };
    if subject.is_empty() {
        return refuse("it is empty");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("it holds white space or control characters");
    }
    if subject.split('.').any(str::is_empty) {
        return refuse("it has an empty token (a leading, trailing or doubled '.')");
    }
    if subject.split('.').any(|token| token == "*" || token == ">") {
        return refuse("it holds a wildcard token ('*' or '>')");
    }
    if RESERVED_SUBJECT_PREFIXES
        .iter()
        .any(|prefix| subject.starts_with(prefix))
    {
        return refuse("subjects under $JS. and $SYS. are NATS's own APIs");
    }
    Ok(())
}

/// The message's own headers, plus the message id and the key.
pub(crate) fn headers(message: &Message) -> Result<HeaderMap, PublishError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &message.headers {
        if is_reserved_header(name) {
            return Err(PublishError::permanent(format!(
                "header {name:?} is reserved: JetStream acts on `Nats-` headers and this publisher sets `{KEY_HEADER}` itself; rename the header"
            )));
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(PublishError::permanent(format!(
                "header name {name:?} cannot be a NATS header name (printable ASCII without ':')"
            )));
        }
        let header_name = HeaderName::from_str(name).map_err(|err| {
            PublishError::permanent(format!("header name {name:?} is refused by NATS"))
                .with_source(err)
        })?;
        headers.insert(
            header_name,
            header_value(value, || format!("header {name:?}"))?,
        );
    }
    headers.insert(NATS_MESSAGE_ID, message.message_id.to_string());
    if let Some(key) = &message.key {
        headers.insert(
            KEY_HEADER,
            header_value(key, || format!("the key (sent as {KEY_HEADER})"))?,
        );
    }
    Ok(headers)
}

/// The bytes `headers` take on the wire; NATS counts them in its payload limit.
pub(crate) fn encoded_len(headers: &HeaderMap) -> usize {
    const VERSION_LINE: usize = "NATS/1.0\r\n".len();
    const END: usize = "\r\n".len();
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(|value| name.len() + ": ".len() + value.as_str().len() + "\r\n".len())
                .sum::<usize>()
        })
        .sum();
    VERSION_LINE + lines + END
}

fn is_reserved_header(name: &str) -> bool {
    name.as_bytes()
        .get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"nats-"))
        || name.eq_ignore_ascii_case(KEY_HEADER)
}

fn header_value(value: &str, what: impl Fn() -> String) -> Result<HeaderValue, PublishError> {
    if value.contains('\0') {
        return Err(PublishError::permanent(format!(
            "{} holds a NUL character, which a NATS header cannot carry",
            what()
        )));
    }
    HeaderValue::from_str(value).map_err(|err| {
        PublishError::permanent(format!(
            "{} holds a line break, which a NATS header cannot carry",
            what()
        ))
        .with_source(err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        let mut message = outbox_testkit::claimed("orders", Some("order-42"), "{}");
        message
            .headers
            .insert("content-type".to_owned(), "application/json".to_owned());
        message
    }

    #[test]
    fn headers_carry_id_key_and_own_headers() {
        let m = message();
        let headers = headers(&m).expect("headers");
        assert_eq!(
            headers.get(NATS_MESSAGE_ID).map(HeaderValue::as_str),
            Some(m.message_id.to_string().as_str())
        );
        assert_eq!(
            headers.get(KEY_HEADER).map(HeaderValue::as_str),
            Some("order-42")
        );
        assert_eq!(
            headers.get("content-type").map(HeaderValue::as_str),
            Some("application/json")
        );
    }

    #[test]
    fn reserved_and_unusable_headers_are_permanent_errors() {
        for (name, value) in [
            ("Nats-Rollup", "all"),
            ("nats-expected-stream", "X"),
            ("outbox-key", "k"),
            ("bad name", "v"),
            ("bad:name", "v"),
            ("ok", "line\r\nbreak"),
            ("ok", "nul\0"),
        ] {
            let mut m = message();
            m.headers.insert(name.into(), value.into());
            let err = headers(&m).expect_err(name);
            assert!(!err.is_transient(), "{name}: {err}");
        }
        let mut m = message();
        m.key = Some("two\nlines".into());
        let err = headers(&m).expect_err("key with a line break");
        assert!(err.to_string().contains(KEY_HEADER), "{err}");
    }

    #[test]
    fn unusable_subjects_are_permanent_errors() {
        for subject in [
            "",
            "a b",
            "a..b",
            ".a",
            "a.",
            "a.*",
            "a.>",
            "$JS.API.STREAM.DELETE.X",
        ] {
            let err = check_subject(subject, subject).expect_err(subject);
            assert!(!err.is_transient());
        }
        for subject in ["orders", "orders.placed", "a.b*.c", "$KV.bucket.key"] {
            check_subject(subject, subject).expect(subject);
        }
        let err = check_subject("x..y", "y").expect_err("mapped");
        assert!(err.to_string().contains("mapped from topic \"y\""), "{err}");
    }

    #[test]
    fn message_id_header_is_the_one_jetstream_deduplicates_by() {
        let name: &str = NATS_MESSAGE_ID.as_ref();
        assert_eq!(name, MESSAGE_ID_HEADER);
    }

    #[test]
    fn encoded_len_counts_every_header_line() {
        let mut headers = HeaderMap::new();
        assert_eq!(encoded_len(&headers), "NATS/1.0\r\n\r\n".len());
        headers.insert("a", "bc");
        assert_eq!(encoded_len(&headers), "NATS/1.0\r\na: bc\r\n\r\n".len());
    }
}
