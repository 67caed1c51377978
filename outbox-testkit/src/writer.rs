//! A publisher that writes each message as one JSON line.

use std::io::{BufRead, Write};
use std::sync::{Mutex, PoisonError};

use outbox_core::{CONTENT_TYPE_HEADER, Message, PublishError, PublishOutcome, Publisher};
use serde_json::{Value, json};

use crate::received::ReceivedMessage;

/// A [`Publisher`] that writes one JSON object per message and line to any [`Write`]
/// (stdout, a file, a socket), flushing before it acknowledges. For quickstarts, for
/// debugging a pipeline, and as an append-only "broker" in crash tests.
///
/// Each line has `message_id`, `topic`, `key`, `headers`, and the payload as `payload`
/// (JSON when the content type says so, otherwise a string if it is UTF-8) or as
/// `payload_bytes` (an array of numbers) when it is neither.
///
/// ```
/// use outbox_testkit::WriterPublisher;
///
/// let to_stdout = WriterPublisher::new(std::io::stdout());
/// ```
#[derive(Debug)]
pub struct WriterPublisher<W> {
    writer: Mutex<W>,
}

impl<W: Write + Send + 'static> WriterPublisher<W> {
    /// Writes to `writer`.
    pub fn new(writer: W) -> Self {
        WriterPublisher {
            writer: Mutex::new(writer),
        }
    }

    fn write_batch(&self, batch: &[Message]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(batch.len() * 256);
        for message in batch {
            serde_json::to_writer(&mut out, &to_line(message))?;
            out.push(b'\n');
        }
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer.write_all(&out)?;
        writer.flush()
    }
}

fn to_line(message: &Message) -> Value {
    let is_json = message
        .headers
        .get(CONTENT_TYPE_HEADER)
        .is_some_and(|ct| ct.starts_with("application/json"));
    let mut line = json!({
        "message_id": message.message_id,
        "topic": message.topic,
        "key": message.key,
        "headers": message.headers,
    });
    let parsed = is_json
        .then(|| serde_json::from_slice::<Value>(&message.payload).ok())
        .flatten();
    match (parsed, std::str::from_utf8(&message.payload)) {
        (Some(value), _) => line["payload"] = value,
        (None, Ok(text)) => line["payload"] = Value::String(text.to_owned()),
        (None, Err(_)) => line["payload_bytes"] = json!(message.payload),
    }
    line
}

impl<W: Write + Send + 'static> Publisher for WriterPublisher<W> {
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        match self.write_batch(batch) {
            Ok(()) => batch.iter().map(|_| PublishOutcome::Acked).collect(),
            Err(err) => batch
                .iter()
                .map(|_| {
                    PublishOutcome::Failed(
                        PublishError::transient("writing the JSON line failed")
                            .with_source(std::io::Error::new(err.kind(), err.to_string())),
                    )
                })
                .collect(),
        }
    }
}

/// Reads back what a [`WriterPublisher`] wrote. A torn last line (the writer was killed
/// mid-write, and so never acknowledged it) is skipped; any other bad line is an error.
pub fn read_json_lines(reader: impl BufRead) -> std::io::Result<Vec<ReceivedMessage>> {
    let lines: Vec<String> = reader.lines().collect::<std::io::Result<_>>()?;
    let last = lines.len().saturating_sub(1);
    let mut received = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        match parse_line(line) {
            Ok(message) => received.push(message),
            Err(_) if index == last => {}
            Err(err) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("line {}: {err}", index + 1),
                ));
            }
        }
    }
    Ok(received)
}

fn parse_line(line: &str) -> Result<ReceivedMessage, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let field = |name: &str| value.get(name).cloned().unwrap_or(Value::Null);
    let payload = match (value.get("payload"), value.get("payload_bytes")) {
        (Some(Value::String(text)), _) => text.clone().into_bytes(),
        (Some(other), _) => serde_json::to_vec(other).map_err(|e| e.to_string())?,
        (None, Some(bytes)) => serde_json::from_value(bytes.clone()).map_err(|e| e.to_string())?,
        (None, None) => return Err("no payload".into()),
    };
    Ok(ReceivedMessage {
        message_id: serde_json::from_value(field("message_id")).map_err(|e| e.to_string())?,
        topic: serde_json::from_value(field("topic")).map_err(|e| e.to_string())?,
        key: serde_json::from_value(field("key")).map_err(|e| e.to_string())?,
        headers: serde_json::from_value(field("headers")).map_err(|e| e.to_string())?,
        payload,
    })
}
