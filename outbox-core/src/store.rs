//! The [`Store`] trait: the relay side of an outbox table.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::error::Result;
use crate::message::Message;

/// Identifies one claim; settling or renewing needs the token of the claim that holds the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseToken(Uuid);

impl LeaseToken {
    /// A new random token.
    pub fn new() -> Self {
        LeaseToken(Uuid::new_v4())
    }

    /// Wraps a token read back from a database.
    pub fn from_uuid(uuid: Uuid) -> Self {
        LeaseToken(uuid)
    }

    /// The token as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for LeaseToken {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A time-limited right to publish and settle the messages of one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The claim's token.
    pub token: LeaseToken,
    /// When the messages become due again if they are neither settled nor renewed.
    pub expires_at: DateTime<Utc>,
}

/// What [`Store::claim`] returns: a lease and the messages it covers, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The lease over `messages`.
    pub lease: Lease,
    /// The claimed messages, ascending by [`Message::id`]; may be empty.
    pub messages: Vec<Message>,
}

/// Options of one claim. New settings get defaults, so adding one breaks no adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimOptions {
    /// At most this many messages.
    pub batch_size: usize,
    /// How long the claimed messages stay leased.
    pub lease_duration: Duration,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        ClaimOptions {
            batch_size: 100,
            lease_duration: Duration::from_secs(30),
        }
    }
}

impl ClaimOptions {
    /// Options with the given batch size and lease duration.
    pub fn new(batch_size: usize, lease_duration: Duration) -> Self {
        ClaimOptions {
            batch_size,
            lease_duration,
        }
    }
}

/// What to do with one claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleAction {
    /// The broker acknowledged it: delete it, or keep it marked published.
    Published,
    /// Publishing failed: count the attempt and make it due again after `delay`.
    Retry {
        /// Delay from the store's clock.
        delay: Duration,
        /// The error of this attempt, kept for operators.
        error: String,
    },
    /// Give up: keep it as a dead letter with `reason` (and count the attempt).
    Dead {
        /// Why it is dead (the last error).
        reason: String,
    },
    /// Not attempted: make it due again now, without counting an attempt.
    Release,
}

/// A [`SettleAction`] for the message with store id `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// [`Message::id`] of the claimed message.
    pub id: i64,
    /// What to do with it.
    pub action: SettleAction,
}

/// What [`Store::settle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Settlements applied.
    pub applied: usize,
    /// Settlements refused because the lease no longer held the message.
    pub lost: usize,
}

/// Backlog figures for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Messages not yet published nor dead (due, leased or waiting for a retry).
    pub pending: u64,
    /// Of those, messages under an unexpired lease.
    pub leased: u64,
    /// Dead letters.
    pub dead: u64,
    /// Enqueue time of the oldest pending message.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// A message that exhausted its attempts or failed permanently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message as it was last claimed.
    pub message: Message,
    /// The error that killed it.
    pub reason: String,
}

/// What a store can do beyond the contract; the relay and the conformance suite read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCapabilities {
    /// Two transactions can enqueue at once, so a lower id may commit after a higher one
    /// (true for PostgreSQL and MySQL, false for SQLite's single writer).
    pub concurrent_writers: bool,
    /// The store can wake relays when a message is enqueued (e.g. PostgreSQL NOTIFY).
    pub notify_on_enqueue: bool,
    /// A claim finds due messages of other keys however many messages of a busy key (one
    /// whose head is leased) are queued before them. Stores without it read a bounded
    /// window of due messages, so a busy key with more queued messages than the window can
    /// delay later messages of other keys until its lease ends.
    pub skips_busy_keys: bool,
}

/// The relay side of an outbox table.
///
/// Enqueueing is not part of this trait: it takes each database's own transaction type, so
/// each store crate offers it as its own method.
///
/// # Contract
///
/// A message is *unsettled* while it is neither published nor dead, and *due* when it is
/// unsettled, its not-before/retry time has passed and it is under no unexpired lease.
///
/// - **Leases.** A message under an unexpired lease is never returned by another claim.
///   When a lease expires, its unsettled messages are due again.
/// - **Per-key order.** A claim returns a keyed message only if every unsettled message with
///   the same key and a lower id is returned by the same claim. So a key's messages are
///   claimed as a run of consecutive messages from the key's oldest unsettled one, and a
///   message waiting for a retry or leased elsewhere blocks the later messages of its key
///   (and only of its key). Dead messages do not block their key.
/// - **No skipped rows.** Every committed due message is eventually returned, whatever ids
///   were committed or published before it; no "last id" watermark.
/// - **Settling** applies only to messages still held under the given lease token; others
///   are counted in [`SettleReport::lost`] and left as they are.
/// - Times (lease expiry, retry delays) come from the store's clock, not the caller's.
pub trait Store: Send + Sync + 'static {
    /// What this store can do.
    fn capabilities(&self) -> StoreCapabilities;

    /// Claims up to `options.batch_size` due messages under a new lease.
    ///
    /// # Behavior
    /// Returns messages ascending by id, honouring the per-key rule of the contract. Safe to
    /// call from several relays (threads or processes) at once: no message is in two
    /// unexpired leases. An empty claim is not an error.
    fn claim(&self, options: &ClaimOptions) -> impl Future<Output = Result<Claim>> + Send;

    /// Settles claimed messages.
    ///
    /// # Behavior
    /// Applies each settlement whose message is still held under `lease.token` (even if the
    /// lease's time has passed but nobody claimed the message again), atomically per call;
    /// the others are counted as lost and not changed.
    fn settle(
        &self,
        lease: &Lease,
        settlements: &[Settlement],
    ) -> impl Future<Output = Result<SettleReport>> + Send;

    /// Extends a lease to `duration` from now.
    ///
    /// # Behavior
    /// Extends every message still held under the token and returns the new lease;
    /// [`crate::Error::LeaseLost`] when it holds none.
    fn renew(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> impl Future<Output = Result<Lease>> + Send;

    /// Backlog figures.
    fn backlog(&self) -> impl Future<Output = Result<Backlog>> + Send;

    /// Lists up to `limit` dead letters, oldest first.
    fn dead_letters(&self, limit: usize) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// Makes the given dead letters due again with a fresh attempt count; returns how many.
    ///
    /// # Behavior
    /// Ids that are not dead are ignored. A requeued message keeps its id, so it again
    /// blocks the later unsettled messages of its key until it is settled.
    fn requeue_dead(&self, ids: &[i64]) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes published messages kept for longer than `older_than`; returns how many.
    ///
    /// # Behavior
    /// Never deletes unsettled or dead messages. A store that deletes on publish returns 0.
    fn purge_published(&self, older_than: Duration) -> impl Future<Output = Result<u64>> + Send;
}

/// The object-safe twin of [`Store`], for a store chosen at run time. Every [`Store`] is one;
/// `Box<dyn DynStore>` and `Arc<dyn DynStore>` are [`Store`]s again.
#[allow(missing_docs)]
pub trait DynStore: Send + Sync + 'static {
    fn capabilities(&self) -> StoreCapabilities;
    fn claim<'a>(&'a self, options: &'a ClaimOptions) -> BoxFuture<'a, Result<Claim>>;
    fn settle<'a>(
        &'a self,
        lease: &'a Lease,
        settlements: &'a [Settlement],
    ) -> BoxFuture<'a, Result<SettleReport>>;
    fn renew<'a>(&'a self, lease: &'a Lease, duration: Duration) -> BoxFuture<'a, Result<Lease>>;
    fn backlog(&self) -> BoxFuture<'_, Result<Backlog>>;
    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>>;
    fn requeue_dead<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<u64>>;
    fn purge_published(&self, older_than: Duration) -> BoxFuture<'_, Result<u64>>;
}

impl<S: Store> DynStore for S {
    fn capabilities(&self) -> StoreCapabilities {
        Store::capabilities(self)
    }
    fn claim<'a>(&'a self, options: &'a ClaimOptions) -> BoxFuture<'a, Result<Claim>> {
        Box::pin(Store::claim(self, options))
    }
    fn settle<'a>(
        &'a self,
        lease: &'a Lease,
        settlements: &'a [Settlement],
    ) -> BoxFuture<'a, Result<SettleReport>> {
        Box::pin(Store::settle(self, lease, settlements))
    }
    fn renew<'a>(&'a self, lease: &'a Lease, duration: Duration) -> BoxFuture<'a, Result<Lease>> {
        Box::pin(Store::renew(self, lease, duration))
    }
    fn backlog(&self) -> BoxFuture<'_, Result<Backlog>> {
        Box::pin(Store::backlog(self))
    }
    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(Store::dead_letters(self, limit))
    }
    fn requeue_dead<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(Store::requeue_dead(self, ids))
    }
    fn purge_published(&self, older_than: Duration) -> BoxFuture<'_, Result<u64>> {
        Box::pin(Store::purge_published(self, older_than))
    }
}

macro_rules! forward_store {
    ($ty:ty, $via:ident) => {
        impl Store for $ty {
            fn capabilities(&self) -> StoreCapabilities {
                $via::capabilities(&**self)
            }
            fn claim(&self, options: &ClaimOptions) -> impl Future<Output = Result<Claim>> + Send {
                async move { $via::claim(&**self, options).await }
            }
            fn settle(
                &self,
                lease: &Lease,
                settlements: &[Settlement],
            ) -> impl Future<Output = Result<SettleReport>> + Send {
                async move { $via::settle(&**self, lease, settlements).await }
            }
            fn renew(
                &self,
                lease: &Lease,
                duration: Duration,
            ) -> impl Future<Output = Result<Lease>> + Send {
                async move { $via::renew(&**self, lease, duration).await }
            }
            fn backlog(&self) -> impl Future<Output = Result<Backlog>> + Send {
                $via::backlog(&**self)
            }
            fn dead_letters(
                &self,
                limit: usize,
            ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send {
                $via::dead_letters(&**self, limit)
            }
            fn requeue_dead(&self, ids: &[i64]) -> impl Future<Output = Result<u64>> + Send {
                async move { $via::requeue_dead(&**self, ids).await }
            }
            fn purge_published(
                &self,
                older_than: Duration,
            ) -> impl Future<Output = Result<u64>> + Send {
                $via::purge_published(&**self, older_than)
            }
        }
    };
}

forward_store!(Box<dyn DynStore>, DynStore);
forward_store!(Arc<dyn DynStore>, DynStore);

impl<S: Store> Store for Arc<S> {
    fn capabilities(&self) -> StoreCapabilities {
        S::capabilities(self)
    }
    fn claim(&self, options: &ClaimOptions) -> impl Future<Output = Result<Claim>> + Send {
        S::claim(self, options)
    }
    fn settle(
        &self,
        lease: &Lease,
        settlements: &[Settlement],
    ) -> impl Future<Output = Result<SettleReport>> + Send {
        S::settle(self, lease, settlements)
    }
    fn renew(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> impl Future<Output = Result<Lease>> + Send {
        S::renew(self, lease, duration)
    }
    fn backlog(&self) -> impl Future<Output = Result<Backlog>> + Send {
        S::backlog(self)
    }
    fn dead_letters(&self, limit: usize) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send {
        S::dead_letters(self, limit)
    }
    fn requeue_dead(&self, ids: &[i64]) -> impl Future<Output = Result<u64>> + Send {
        S::requeue_dead(self, ids)
    }
    fn purge_published(&self, older_than: Duration) -> impl Future<Output = Result<u64>> + Send {
        S::purge_published(self, older_than)
    }
}
