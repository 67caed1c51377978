//! A [`Store`] in memory, with transactions, for users' unit tests and the core's own.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::state::{Delivery, DeliveryEvent, DeliveryState, transition};
use outbox_core::{
    Backlog, Claim, ClaimOptions, Clock, DeadLetter, Error, Lease, LeaseToken, Message, MessageId,
    MessageLimits, NewMessage, Result, SettleReport, Settlement, Store, StoreCapabilities,
    SystemClock, add_duration,
};

#[derive(Debug)]
struct Row {
    message: Message,
    delivery: Delivery,
}

#[derive(Debug, Default)]
struct Table {
    next_id: i64,
    rows: BTreeMap<i64, Row>,
    message_ids: HashSet<MessageId>,
}

/// A [`Store`] that keeps the outbox table in memory and applies the core's
/// [state machine](outbox_core::state) directly.
///
/// Ids are handed out at enqueue, before commit, as a database sequence does, so a
/// transaction can commit a lower id after a higher one was published: the store handles
/// that like PostgreSQL would. Clones share the table.
///
/// ```
/// # outbox_testkit::block_on(async {
/// use outbox_core::{ClaimOptions, NewMessage, Store};
/// use outbox_testkit::InMemoryStore;
///
/// let store = InMemoryStore::new();
/// let mut tx = store.begin();
/// tx.enqueue(NewMessage::new("orders.placed", b"{}".to_vec()))?;
/// tx.commit();
/// let claim = store.claim(&ClaimOptions::default()).await?;
/// assert_eq!(claim.messages.len(), 1);
/// # Ok::<(), outbox_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct InMemoryStore {
    table: Arc<Mutex<Table>>,
    clock: Arc<dyn Clock>,
    limits: MessageLimits,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A transaction on an [`InMemoryStore`]: its messages appear at [`commit`](Self::commit)
/// and vanish if it is dropped uncommitted (a rollback).
#[derive(Debug)]
pub struct InMemoryTransaction {
    store: InMemoryStore,
    rows: Vec<Row>,
}

impl InMemoryTransaction {
    /// Adds a message to the transaction; validates it first and writes nothing if invalid.
    pub fn enqueue(&mut self, message: NewMessage) -> Result<MessageId> {
        message.validate(&self.store.limits)?;
        let now = self.store.clock.now();
        let id = {
            let mut table = self.store.table();
            if table.message_ids.contains(&message.message_id())
                || self
                    .rows
                    .iter()
                    .any(|r| r.message.message_id == message.message_id())
            {
                return Err(Error::store(
                    "enqueue",
                    false,
                    format!(
                        "message id {} is already in the outbox",
                        message.message_id()
                    ),
                ));
            }
            table.next_id += 1;
            table.next_id
        };
        let available_at = message.not_before().unwrap_or(now).max(now);
        let message_id = message.message_id();
        self.rows.push(Row {
            message: Message {
                id,
                message_id,
                topic: message.topic().to_owned(),
                key: message.key().map(str::to_owned),
                payload: message.payload().to_vec(),
                headers: message.headers().clone(),
                attempts: 0,
                created_at: now,
            },
            delivery: Delivery::new(available_at),
        });
        Ok(message_id)
    }

    /// Makes the transaction's messages visible to claims.
    pub fn commit(self) {
        let mut table = self.store.table();
        for row in self.rows {
            table.message_ids.insert(row.message.message_id);
            table.rows.insert(row.message.id, row);
        }
    }
}

impl InMemoryStore {
    /// A store on the system clock with default [`MessageLimits`].
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A store on the given clock (e.g. a [`ManualClock`](crate::ManualClock)).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        InMemoryStore {
            table: Arc::default(),
            clock,
            limits: MessageLimits::default(),
        }
    }

    /// Replaces the enqueue limits.
    pub fn with_limits(mut self, limits: MessageLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Starts a transaction.
    pub fn begin(&self) -> InMemoryTransaction {
        InMemoryTransaction {
            store: self.clone(),
            rows: Vec::new(),
        }
    }

    /// Enqueues `messages` in one transaction and commits it; returns what was committed,
    /// in order, for [`check_history`](crate::check_history).
    ///
    /// ```
    /// use outbox_core::NewMessage;
    ///
    /// let store = outbox_testkit::InMemoryStore::new();
    /// let committed = store
    ///     .commit_all((0..3).map(|n| NewMessage::new("t", vec![n]).with_key("k")))
    ///     .expect("valid messages");
    /// assert_eq!(committed.len(), 3);
    /// assert_eq!(committed[0].key.as_deref(), Some("k"));
    /// ```
    pub fn commit_all(
        &self,
        messages: impl IntoIterator<Item = NewMessage>,
    ) -> Result<Vec<crate::Committed>> {
        let mut tx = self.begin();
        let mut committed = Vec::new();
        for message in messages {
            let key = message.key().map(str::to_owned);
            let message_id = tx.enqueue(message)?;
            committed.push(crate::Committed { message_id, key });
        }
        tx.commit();
        Ok(committed)
    }

    /// Rows of the table (settled ones included), for assertions.
    pub fn len(&self) -> usize {
        self.table().rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim_now(&self, options: &ClaimOptions) -> Claim {
        let now = self.clock.now();
        let lease = Lease {
            token: LeaseToken::new(),
            expires_at: add_duration(now, options.lease_duration),
        };
        let event = DeliveryEvent::Claim {
            token: lease.token,
            expires_at: lease.expires_at,
        };
        let mut table = self.table();
        let mut blocked_keys: HashSet<String> = HashSet::new();
        let mut messages = Vec::new();
        for row in table.rows.values_mut() {
            if messages.len() >= options.batch_size {
                break;
            }
            if !row.delivery.is_unsettled() {
                continue;
            }
            let key = row.message.key.as_ref();
            let blocked = key.is_some_and(|k| blocked_keys.contains(k));
            match transition(&row.delivery, &event, now) {
                Ok(next) if !blocked => {
                    row.delivery = next;
                    let mut message = row.message.clone();
                    message.attempts = row.delivery.attempts;
                    messages.push(message);
                }
                _ => {
                    if let Some(k) = key {
                        blocked_keys.insert(k.clone());
                    }
                }
            }
        }
        Claim { lease, messages }
    }
}

impl Store for InMemoryStore {
    fn capabilities(&self) -> StoreCapabilities {
        let mut capabilities = StoreCapabilities::default();
        capabilities.concurrent_writers = true;
        capabilities.skips_busy_keys = true;
        capabilities
    }

    async fn claim(&self, options: &ClaimOptions) -> Result<Claim> {
        Ok(self.claim_now(options))
    }

    async fn settle(&self, lease: &Lease, settlements: &[Settlement]) -> Result<SettleReport> {
        let now = self.clock.now();
        let mut table = self.table();
        let mut report = SettleReport::default();
        for settlement in settlements {
            let event = DeliveryEvent::Settle {
                token: lease.token,
                action: settlement.action.clone(),
            };
            let next = table
                .rows
                .get(&settlement.id)
                .and_then(|row| transition(&row.delivery, &event, now).ok());
            match (next, table.rows.get_mut(&settlement.id)) {
                (Some(next), Some(row)) => {
                    row.delivery = next;
                    report.applied += 1;
                }
                _ => report.lost += 1,
            }
        }
        Ok(report)
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> Result<Lease> {
        let expires_at = add_duration(self.clock.now(), duration);
        let event = DeliveryEvent::Renew {
            token: lease.token,
            expires_at,
        };
        let now = self.clock.now();
        let mut renewed = 0;
        for row in self.table().rows.values_mut() {
            if let Ok(next) = transition(&row.delivery, &event, now) {
                row.delivery = next;
                renewed += 1;
            }
        }
        if renewed == 0 {
            return Err(Error::LeaseLost { token: lease.token });
        }
        Ok(Lease {
            token: lease.token,
            expires_at,
        })
    }

    async fn backlog(&self) -> Result<Backlog> {
        let now = self.clock.now();
        let table = self.table();
        let mut backlog = Backlog::default();
        for row in table.rows.values() {
            match &row.delivery.state {
                DeliveryState::Dead { .. } => backlog.dead += 1,
                DeliveryState::Published { .. } => {}
                state => {
                    backlog.pending += 1;
                    if matches!(state, DeliveryState::Leased { expires_at, .. } if *expires_at > now)
                    {
                        backlog.leased += 1;
                    }
                    let created: DateTime<Utc> = row.message.created_at;
                    backlog.oldest_pending_at = Some(
                        backlog
                            .oldest_pending_at
                            .map_or(created, |o| o.min(created)),
                    );
                }
            }
        }
        Ok(backlog)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let table = self.table();
        Ok(table
            .rows
            .values()
            .filter_map(|row| match &row.delivery.state {
                DeliveryState::Dead { reason } => {
                    let mut message = row.message.clone();
                    message.attempts = row.delivery.attempts;
                    Some(DeadLetter {
                        message,
                        reason: reason.clone(),
                    })
                }
                _ => None,
            })
            .take(limit)
            .collect())
    }

    async fn requeue_dead(&self, ids: &[i64]) -> Result<u64> {
        let now = self.clock.now();
        let mut table = self.table();
        let mut requeued = 0;
        for id in ids {
            if let Some(row) = table.rows.get_mut(id)
                && let Ok(next) = transition(&row.delivery, &DeliveryEvent::Requeue, now)
            {
                row.delivery = next;
                requeued += 1;
            }
        }
        Ok(requeued)
    }

    async fn purge_published(&self, older_than: Duration) -> Result<u64> {
        let now = self.clock.now();
        let mut table = self.table();
        let before = table.rows.len();
        table.rows.retain(|_, row| match row.delivery.state {
            DeliveryState::Published { at } => add_duration(at, older_than) > now,
            _ => true,
        });
        Ok((before - table.rows.len()) as u64)
    }
}
