//! Publishing one claimed batch: per-key lanes sent in waves, lease renewal, settlement.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, error, warn};

use crate::clock::Jitter;
use crate::error::Error;
use crate::message::Message;
use crate::metrics as m;
use crate::publisher::{PublishOutcome, Publisher};
use crate::retry::RetryPolicy;
use crate::state::failure_action;
use crate::store::{Claim, Lease, SettleAction, Settlement, Store};

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchStats {
    pub(crate) published: u64,
    pub(crate) retried: u64,
    pub(crate) dead: u64,
    pub(crate) released: u64,
    pub(crate) lost: u64,
}

/// What a batch needs besides its claim.
pub(crate) struct BatchContext {
    pub(crate) lease_duration: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) jitter: Arc<dyn Jitter>,
    /// Fires at the shutdown deadline: stop waiting for the broker, release the rest.
    pub(crate) hard_stop: CancellationToken,
}

/// `now + after`, or far in the future when that overflows (e.g. `Duration::MAX`).
pub(crate) fn later(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// One lane per key (its run of messages, in id order) and one per unkeyed message.
fn into_lanes(messages: Vec<Message>) -> Vec<VecDeque<Message>> {
    let mut lanes: Vec<VecDeque<Message>> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for message in messages {
        match message.key.clone() {
            Some(key) => {
                let lane = *by_key.entry(key).or_insert_with(|| {
                    lanes.push(VecDeque::new());
                    lanes.len() - 1
                });
                lanes[lane].push_back(message);
            }
            None => lanes.push(VecDeque::from([message])),
        }
    }
    lanes
}

struct Batch<'a, S, P> {
    store: &'a S,
    publisher: &'a P,
    ctx: &'a BatchContext,
    lease: Lease,
    lease_lost: bool,
    renew_at: Instant,
    settlements: Vec<Settlement>,
    stats: BatchStats,
}

/// Publishes a claim and settles it. A key's messages go out one wave at a time, so a
/// message is sent only after the previous one of its key was acknowledged; after a failure
/// the key's remaining messages are released, in order, for a later claim.
pub(crate) async fn process_batch<S: Store, P: Publisher>(
    store: Arc<S>,
    publisher: Arc<P>,
    claim: Claim,
    ctx: Arc<BatchContext>,
) -> BatchStats {
    let span = debug_span!("outbox.batch", lease = %claim.lease.token, size = claim.messages.len());
    async move {
        let mut batch = Batch {
            store: &*store,
            publisher: &*publisher,
            ctx: &ctx,
            lease: claim.lease,
            lease_lost: false,
            renew_at: later(ctx.lease_duration / 3),
            settlements: Vec::with_capacity(claim.messages.len()),
            stats: BatchStats::default(),
        };
        let lanes = batch.drop_oversized(into_lanes(claim.messages));
        batch.publish_lanes(lanes).await;
        batch.settle().await;
        batch.stats
    }
    .instrument(span)
    .await
}

impl<S: Store, P: Publisher> Batch<'_, S, P> {
    /// Messages larger than the broker takes are dead without being sent.
    fn drop_oversized(&mut self, lanes: Vec<VecDeque<Message>>) -> Vec<VecDeque<Message>> {
        let Some(limit) = self.publisher.capabilities().max_message_bytes else {
            return lanes;
        };
        lanes
            .into_iter()
            .map(|lane| {
                lane.into_iter()
                    .filter(|message| {
                        let too_large = message.payload.len() > limit;
                        if too_large {
                            let reason = format!(
                                "payload of {} bytes exceeds the broker's limit of {limit} bytes",
                                message.payload.len()
                            );
                            self.record(message, SettleAction::Dead { reason });
                        }
                        !too_large
                    })
                    .collect()
            })
            .collect()
    }

    async fn publish_lanes(&mut self, mut lanes: Vec<VecDeque<Message>>) {
        loop {
            let mut wave = Vec::new();
            let mut wave_lanes = Vec::new();
            for (index, lane) in lanes.iter_mut().enumerate() {
                if let Some(message) = lane.pop_front() {
                    wave.push(message);
                    wave_lanes.push(index);
                }
            }
            if wave.is_empty() {
                return;
            }
            // At the shutdown deadline, or once another relay took the lease over (it
            // publishes these messages now), stop and hand back what is left.
            let outcomes = if self.ctx.hard_stop.is_cancelled() || self.lease_lost {
                None
            } else {
                self.publish_wave(&wave).await
            };
            let Some(outcomes) = outcomes else {
                for message in wave.iter().chain(lanes.iter().flatten()) {
                    self.record(message, SettleAction::Release);
                }
                return;
            };
            let mut outcomes = outcomes.into_iter();
            for (message, lane) in wave.iter().zip(wave_lanes) {
                let outcome = outcomes.next().unwrap_or_else(|| {
                    error!("publisher returned fewer outcomes than messages; treating the rest as failed");
                    PublishOutcome::Failed(crate::PublishError::transient(
                        "publisher returned no outcome for this message",
                    ))
                });
                let action = match outcome {
                    PublishOutcome::Acked => SettleAction::Published,
                    PublishOutcome::Failed(err) => failure_action(
                        message.attempts,
                        err.is_transient(),
                        err.describe(),
                        &self.ctx.retry,
                        &*self.ctx.jitter,
                    ),
                };
                if action != SettleAction::Published {
                    for later in lanes[lane].drain(..) {
                        self.record(&later, SettleAction::Release);
                    }
                }
                self.record(message, action);
            }
        }
    }

    /// Publishes one wave while keeping the lease alive; `None` at the shutdown deadline.
    async fn publish_wave(&mut self, wave: &[Message]) -> Option<Vec<crate::PublishOutcome>> {
        let started = std::time::Instant::now();
        // A panicking publisher must not kill the batch: its messages count as failed.
        let mut publish = pin!(AssertUnwindSafe(self.publisher.publish(wave)).catch_unwind());
        let outcomes = loop {
            tokio::select! {
                outcomes = &mut publish => break Some(outcomes.unwrap_or_else(|_| {
                    error!("the publisher panicked; counting the wave as a failed attempt");
                    wave.iter()
                        .map(|_| PublishOutcome::Failed(crate::PublishError::transient("the publisher panicked")))
                        .collect()
                })),
                () = sleep_until(self.renew_at) => self.renew().await,
                () = self.ctx.hard_stop.cancelled() => break None,
            }
        };
        metrics::histogram!(m::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
        outcomes
    }

    async fn renew(&mut self) {
        self.renew_at = later(self.ctx.lease_duration / 3);
        if self.lease_lost {
            return;
        }
        match self.store.renew(&self.lease, self.ctx.lease_duration).await {
            Ok(lease) => self.lease = lease,
            Err(Error::LeaseLost { .. }) => {
                warn!("lease lost while publishing; another relay may publish these messages too");
                self.lease_lost = true;
            }
            Err(err) => warn!(error = %err.report(), "could not renew the lease; will try again"),
        }
    }

    fn record(&mut self, message: &Message, action: SettleAction) {
        let _span = debug_span!(
            "outbox.message",
            message_id = %message.message_id,
            topic = %message.topic,
            key = message.key.as_deref(),
            attempts = message.attempts,
        )
        .entered();
        match &action {
            SettleAction::Published => {
                self.stats.published += 1;
                debug!("published");
            }
            SettleAction::Retry { delay, error } => {
                self.stats.retried += 1;
                warn!(?delay, error = %error, "publish failed; will retry");
            }
            SettleAction::Dead { reason } => {
                self.stats.dead += 1;
                error!(reason = %reason, "message is dead");
            }
            SettleAction::Release => self.stats.released += 1,
        }
        self.settlements.push(Settlement {
            id: message.id,
            action,
        });
    }

    /// Settles everything, retrying transient store errors while the lease lasts. If it
    /// cannot, the lease expires and the messages are published again (at-least-once).
    async fn settle(&mut self) {
        if self.settlements.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(50);
        loop {
            match self.store.settle(&self.lease, &self.settlements).await {
                Ok(report) => {
                    self.stats.lost += report.lost as u64;
                    if report.lost > 0 {
                        warn!(
                            lost = report.lost,
                            "settlements refused: lease was taken over"
                        );
                        metrics::counter!(m::LEASES_LOST).increment(report.lost as u64);
                    }
                    metrics::counter!(m::PUBLISHED).increment(self.stats.published);
                    metrics::counter!(m::RETRIED).increment(self.stats.retried);
                    metrics::counter!(m::DEAD).increment(self.stats.dead);
                    return;
                }
                Err(err) => {
                    metrics::counter!(m::STORE_ERRORS).increment(1);
                    let time_left = self.lease.expires_at - chrono::Utc::now();
                    let retry = err.is_transient()
                        && time_left > chrono::Duration::from_std(delay).unwrap_or_default();
                    if !retry {
                        error!(error = %err.report(), "could not settle the batch; its messages will be published again after the lease expires");
                        self.stats = BatchStats {
                            lost: self.settlements.len() as u64,
                            ..BatchStats::default()
                        };
                        return;
                    }
                    warn!(error = %err.report(), "settle failed; retrying");
                    sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
