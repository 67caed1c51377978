//! Checks a delivery history: lost messages, duplicates, per-key order.

use std::collections::HashMap;
use std::fmt;

use outbox_core::MessageId;

use crate::received::ReceivedMessage;

/// A committed message, in commit (enqueue) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Its id.
    pub message_id: MessageId,
    /// Its key.
    pub key: Option<String>,
}

/// What [`check_history`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryReport {
    /// Committed messages.
    pub committed: usize,
    /// Deliveries seen, duplicates included.
    pub delivered: usize,
    /// Committed but never delivered.
    pub lost: Vec<MessageId>,
    /// Delivered more than once: `(id, extra deliveries)`.
    pub duplicates: Vec<(MessageId, usize)>,
    /// Delivered but never committed (e.g. from a rolled-back transaction).
    pub unexpected: Vec<MessageId>,
    /// First deliveries that came before an earlier message of the same key:
    /// `(key, message delivered too early)`.
    pub order_violations: Vec<(String, MessageId)>,
}

impl HistoryReport {
    /// Nothing lost, nothing unexpected, every key in order. Duplicates are allowed
    /// (at-least-once); check [`duplicate_count`](Self::duplicate_count) for them.
    pub fn is_ok(&self) -> bool {
        self.lost.is_empty() && self.unexpected.is_empty() && self.order_violations.is_empty()
    }

    /// Total extra deliveries.
    pub fn duplicate_count(&self) -> usize {
        self.duplicates.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "committed={} delivered={} lost={} duplicates={} unexpected={} order_violations={}",
            self.committed,
            self.delivered,
            self.lost.len(),
            self.duplicate_count(),
            self.unexpected.len(),
            self.order_violations.len()
        )
    }
}

/// Compares what was committed with what the broker received.
///
/// Order is judged on first deliveries: per key, the first delivery of each message must
/// follow the commit order. A redelivery of an older message after a newer one (a relay
/// killed between publish and settle) is a duplicate, not an order violation, because a
/// consumer that drops seen ids sees the keys in order.
///
/// ```
/// use outbox_core::MessageId;
/// use outbox_testkit::{check_history, Committed, ReceivedMessage};
///
/// let a = Committed { message_id: MessageId::new(), key: Some("k".into()) };
/// let received = |c: &Committed| ReceivedMessage {
///     message_id: c.message_id, topic: "t".into(), key: c.key.clone(),
///     payload: vec![], headers: Default::default(),
/// };
/// let report = check_history(&[a.clone()], &[received(&a), received(&a)]);
/// assert!(report.is_ok());
/// assert_eq!(report.duplicate_count(), 1);
/// ```
pub fn check_history(committed: &[Committed], received: &[ReceivedMessage]) -> HistoryReport {
    let mut report = HistoryReport {
        committed: committed.len(),
        delivered: received.len(),
        ..HistoryReport::default()
    };
    let key_of: HashMap<MessageId, Option<&str>> = committed
        .iter()
        .map(|c| (c.message_id, c.key.as_deref()))
        .collect();
    let mut per_key: HashMap<&str, Vec<MessageId>> = HashMap::new();
    for c in committed {
        if let Some(key) = &c.key {
            per_key.entry(key).or_default().push(c.message_id);
        }
    }
    let mut next_in_key: HashMap<&str, usize> = HashMap::new();
    let mut seen: HashMap<MessageId, usize> = HashMap::new();
    for r in received {
        let count = seen.entry(r.message_id).or_insert(0);
        *count += 1;
        if *count > 1 {
            continue;
        }
        let Some(key) = key_of.get(&r.message_id) else {
            report.unexpected.push(r.message_id);
            continue;
        };
        let Some(key) = *key else {
            continue;
        };
        let order = &per_key[key];
        let next = next_in_key.entry(key).or_insert(0);
        if order.get(*next) == Some(&r.message_id) {
            *next += 1;
            // Skip ids already delivered out of order, so one violation is reported once.
            while order.get(*next).is_some_and(|id| seen.contains_key(id)) {
                *next += 1;
            }
        } else {
            report.order_violations.push((key.to_owned(), r.message_id));
        }
    }
    report.lost = committed
        .iter()
        .map(|c| c.message_id)
        .filter(|id| !seen.contains_key(id))
        .collect();
    report.duplicates = committed
        .iter()
        .filter_map(|c| {
            seen.get(&c.message_id)
                .filter(|n| **n > 1)
                .map(|n| (c.message_id, n - 1))
        })
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(key: &str) -> Committed {
        Committed {
            message_id: MessageId::new(),
            key: Some(key.to_owned()),
        }
    }

    fn got(c: &Committed) -> ReceivedMessage {
        ReceivedMessage {
            message_id: c.message_id,
            topic: "t".into(),
            key: c.key.clone(),
            payload: vec![],
            headers: Default::default(),
        }
    }

    #[test]
    fn reports_lost_duplicates_unexpected_and_order() {
        let (a1, a2, b1, lost) = (
            committed("a"),
            committed("a"),
            committed("b"),
            committed("c"),
        );
        let stray = committed("a");
        let all = [a1.clone(), a2.clone(), b1.clone(), lost.clone()];
        let report = check_history(&all, &[got(&a2), got(&b1), got(&a1), got(&b1), got(&stray)]);
        assert_eq!(report.lost, vec![lost.message_id]);
        assert_eq!(report.duplicates, vec![(b1.message_id, 1)]);
        assert_eq!(report.unexpected, vec![stray.message_id]);
        assert_eq!(
            report.order_violations,
            vec![("a".to_owned(), a2.message_id)]
        );
        assert!(!report.is_ok());
    }

    #[test]
    fn redelivery_of_an_older_message_is_only_a_duplicate() {
        let (a1, a2) = (committed("a"), committed("a"));
        let report = check_history(
            &[a1.clone(), a2.clone()],
            &[got(&a1), got(&a2), got(&a1), got(&a2)],
        );
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.duplicate_count(), 2);
    }
}
