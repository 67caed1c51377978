//! The `Publisher` conformance suite.

use std::collections::HashSet;
use std::future::Future;

use outbox_core::{Message, MessageId, Publisher};

use crate::fixtures::{assert_acked, claimed};
use crate::received::ReceivedMessage;

/// What a publisher's test needs: the publisher, a destination the broker accepts, and a
/// way to read back what the broker holds.
///
/// Each call of the macro's constructor must give a fresh destination (its own queue,
/// stream, topic), so that the tests run in parallel.
pub trait PublisherHarness: Send + Sync {
    /// The publisher under test.
    type Publisher: Publisher;

    /// The publisher.
    fn publisher(&self) -> &Self::Publisher;

    /// A topic (as the relay would give in [`Message::topic`]) that reaches this test's
    /// destination.
    fn topic(&self) -> String;

    /// What the broker holds for this test's destination, in broker order, once at least
    /// `at_least` messages are there or a timeout of a few seconds has passed.
    fn received(&self, at_least: usize) -> impl Future<Output = Vec<ReceivedMessage>> + Send;
}

fn message<H: PublisherHarness>(h: &H, id: i64, key: Option<&str>, payload: Vec<u8>) -> Message {
    Message {
        id,
        ..claimed(&h.topic(), key, payload)
    }
}

/// Payload bytes, key, headers and the message id reach the broker intact.
pub async fn payload_key_and_headers_arrive_intact<H: PublisherHarness>(h: &H) {
    let payload: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let mut m = message(h, 1, Some("order-ü-42"), payload.clone());
    m.headers
        .insert("content-type".into(), "application/octet-stream".into());
    m.headers.insert("x-trace".into(), "abc=1; d=\"2\"".into());
    let outcomes = h.publisher().publish(std::slice::from_ref(&m)).await;
    assert_eq!(outcomes.len(), 1);
    assert_acked(&outcomes);

    let got = h.received(1).await;
    assert_eq!(got.len(), 1, "exactly one message reached the broker");
    let r = &got[0];
    assert_eq!(r.message_id, m.message_id);
    assert_eq!(r.payload, payload);
    assert_eq!(r.key.as_deref(), Some("order-ü-42"));
    for (name, value) in &m.headers {
        assert_eq!(r.headers.get(name), Some(value), "header {name}");
    }
}

/// One outcome per message, and every acknowledged message is at the broker when
/// `publish` returns (the ack comes after the broker has it), each with its own id.
pub async fn ack_means_the_broker_has_it<H: PublisherHarness>(h: &H) {
    let batch: Vec<Message> = (0..25)
        .map(|n| message(h, n, None, format!("m{n}").into_bytes()))
        .collect();
    let outcomes = h.publisher().publish(&batch).await;
    assert_eq!(outcomes.len(), batch.len());
    assert_acked(&outcomes);
    let got = h.received(batch.len()).await;
    let got_ids: HashSet<MessageId> = got.iter().map(|r| r.message_id).collect();
    let missing = batch
        .iter()
        .filter(|m| !got_ids.contains(&m.message_id))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged messages are not at the broker",
        batch.len()
    );
    let sent_ids: HashSet<MessageId> = batch.iter().map(|m| m.message_id).collect();
    let strangers = got_ids.difference(&sent_ids).count();
    assert_eq!(
        strangers, 0,
        "the broker holds {strangers} messages that were not sent"
    );
    assert_eq!(got.len(), batch.len(), "no message arrived twice");
}

/// Publishing an empty batch returns no outcome and sends nothing.
pub async fn empty_batch_is_a_no_op<H: PublisherHarness>(h: &H) {
    assert!(h.publisher().publish(&[]).await.is_empty());
    let sentinel = message(h, 1, None, b"sentinel".to_vec());
    assert_acked(&h.publisher().publish(std::slice::from_ref(&sentinel)).await);
    let got = h.received(1).await;
    assert_eq!(
        got.iter().map(|r| r.message_id).collect::<Vec<_>>(),
        vec![sentinel.message_id]
    );
}

/// Messages of one key published one after another arrive in that order.
pub async fn sequential_publishes_keep_key_order<H: PublisherHarness>(h: &H) {
    let sent: Vec<Message> = (0..10)
        .map(|n| message(h, n, Some("k"), format!("{n}").into_bytes()))
        .collect();
    for m in &sent {
        assert_acked(&h.publisher().publish(std::slice::from_ref(m)).await);
    }
    let got = h.received(sent.len()).await;
    assert_eq!(
        got.len(),
        sent.len(),
        "every acknowledged message is at the broker, once"
    );
    let order: Vec<MessageId> = got.iter().map(|r| r.message_id).collect();
    assert_eq!(
        order,
        sent.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        "key order"
    );
}
