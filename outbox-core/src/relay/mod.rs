//! The relay: claims due messages, publishes them, settles them.

mod batch;
mod config;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

pub use config::RelayConfig;

use self::batch::{BatchContext, BatchStats, later, process_batch};
use crate::clock::{FullJitter, Jitter};
use crate::error::Result;
use crate::metrics as m;
use crate::notify::Notifier;
use crate::publisher::Publisher;
use crate::store::{ClaimOptions, Store};

/// Totals of one [`Relay::run`] or [`Relay::drain`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Messages acknowledged by the broker and settled.
    pub published: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Messages settled as dead.
    pub dead: u64,
    /// Messages handed back unattempted (behind a failed message of their key, or at shutdown).
    pub released: u64,
    /// Settlements lost because the lease was taken over or the store was unreachable;
    /// those messages are published again by their next claimer.
    pub lost: u64,
    /// Non-empty claims.
    pub batches: u64,
}

impl RelayStats {
    fn absorb(&mut self, batch: BatchStats) {
        self.published += batch.published;
        self.retried += batch.retried;
        self.dead += batch.dead;
        self.released += batch.released;
        self.lost += batch.lost;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    UntilCancelled,
    UntilIdle,
}

/// Moves committed messages from a [`Store`] to a [`Publisher`].
///
/// Run several relays (in one process or many) on one store for throughput and
/// availability: the store's leases keep them apart and its claim keeps per-key order.
///
/// ```
/// # use outbox_core::{Relay, RelayConfig, Store, Publisher, Notifier};
/// # async fn start<S: Store, P: Publisher>(store: S, publisher: P) -> outbox_core::Result<()> {
/// let notifier = Notifier::new(); // call notifier.notify() after each commit
/// let relay = Relay::new(store, publisher, RelayConfig::default())?.with_notifier(notifier.clone());
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// // e.g. cancel `shutdown` on SIGTERM
/// let stats = relay.run(shutdown).await?;
/// println!("published {}", stats.published);
/// # Ok(()) }
/// ```
pub struct Relay<S, P> {
    store: Arc<S>,
    publisher: Arc<P>,
    config: RelayConfig,
    notifier: Option<Notifier>,
    jitter: Arc<dyn Jitter>,
}

impl<S, P> std::fmt::Debug for Relay<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store, P: Publisher> Relay<S, P> {
    /// A relay over `store` and `publisher`; fails if `config` is inconsistent, or if its
    /// lease is not longer than the publisher may take
    /// ([`RelayConfig::check_publisher`]).
    pub fn new(store: S, publisher: P, config: RelayConfig) -> Result<Self> {
        config.validate()?;
        config.check_publisher(&publisher.capabilities())?;
        Ok(Relay {
            store: Arc::new(store),
            publisher: Arc::new(publisher),
            config,
            notifier: None,
            jitter: Arc::new(FullJitter),
        })
    }

    /// Wakes the relay whenever `notifier` is notified, instead of waiting for the next poll.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Replaces the retry jitter (e.g. with [`crate::NoJitter`] in tests).
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Runs until `shutdown` is cancelled, then stops claiming, lets in-flight batches
    /// finish until [`RelayConfig::shutdown_deadline`], releases what is left and returns.
    ///
    /// Store and broker outages are logged and retried with backoff; they never end the run.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<RelayStats> {
        self.run_loop(shutdown, Mode::UntilCancelled)
            .instrument(info_span!("outbox.relay"))
            .await
    }

    /// Runs until no message is due and nothing is in flight, then returns. Messages that
    /// wait for a retry or a not-before time later than now are left for a later run.
    ///
    /// Transient store errors are retried; a permanent one (a missing table, say) ends the
    /// drain with that error.
    pub async fn drain(&self) -> Result<RelayStats> {
        self.run_loop(CancellationToken::new(), Mode::UntilIdle)
            .instrument(info_span!("outbox.relay.drain"))
            .await
    }

    async fn run_loop(&self, shutdown: CancellationToken, mode: Mode) -> Result<RelayStats> {
        let config = &self.config;
        let ctx = Arc::new(BatchContext {
            lease_duration: config.lease_duration,
            retry: config.retry.clone(),
            jitter: self.jitter.clone(),
            hard_stop: CancellationToken::new(),
        });
        let options = ClaimOptions::new(config.batch_size, config.lease_duration);
        let mut wake = self.notifier.as_ref().map(Notifier::subscribe);
        let mut batches: JoinSet<BatchStats> = JoinSet::new();
        let mut stats = RelayStats::default();
        let mut idle = config.poll_interval_min;
        let mut next_backlog = Instant::now();
        info!(
            batch_size = config.batch_size,
            in_flight = config.max_in_flight_batches,
            "relay started"
        );

        while !shutdown.is_cancelled() {
            while let Some(done) = batches.try_join_next() {
                absorb(&mut stats, done);
            }
            if mode == Mode::UntilCancelled && Instant::now() >= next_backlog {
                self.record_backlog().await;
                next_backlog = later(config.backlog_interval);
            }
            if batches.len() < config.max_in_flight_batches {
                let started = std::time::Instant::now();
                let mut claim = std::pin::pin!(
                    self.store
                        .claim(&options)
                        .instrument(tracing::debug_span!("outbox.claim"))
                );
                let claimed = tokio::select! {
                    // Once cancelled, a finished claim is released, not published.
                    biased;
                    () = shutdown.cancelled() => {
                        // Shutdown during a claim: let it finish within the deadline and hand
                        // its messages straight back, so they are due at once, not only when
                        // the lease runs out. A claim stuck longer (a locked database) is
                        // dropped; its leases, if any, expire by themselves.
                        if let Ok(Ok(late)) = tokio::time::timeout(config.shutdown_deadline, claim).await {
                            stats.released += self.release(&late).await;
                        }
                        break;
                    }
                    claimed = &mut claim => claimed,
                };
                metrics::histogram!(m::CLAIM_SECONDS).record(started.elapsed().as_secs_f64());
                match claimed {
                    Ok(claim) if claim.messages.is_empty() => {
                        if mode == Mode::UntilIdle && batches.is_empty() {
                            break;
                        }
                        idle = (idle * 2).min(config.poll_interval_max);
                    }
                    Ok(claim) => {
                        let full = claim.messages.len() >= config.batch_size;
                        metrics::histogram!(m::BATCH_SIZE).record(claim.messages.len() as f64);
                        debug!(size = claim.messages.len(), "claimed");
                        stats.batches += 1;
                        batches.spawn(process_batch(
                            self.store.clone(),
                            self.publisher.clone(),
                            claim,
                            ctx.clone(),
                        ));
                        idle = config.poll_interval_min;
                        if full && batches.len() < config.max_in_flight_batches {
                            continue;
                        }
                    }
                    Err(err) => {
                        metrics::counter!(m::STORE_ERRORS).increment(1);
                        if mode == Mode::UntilIdle && !err.is_transient() {
                            self.finish_in_flight(batches, &ctx, &mut stats).await;
                            return Err(err);
                        }
                        warn!(error = %err.report(), retry_in = ?idle, "claim failed");
                        idle = (idle * 2).min(config.poll_interval_max);
                    }
                }
            }
            let at_capacity = batches.len() >= config.max_in_flight_batches;
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(done) = batches.join_next(), if !batches.is_empty() => {
                    absorb(&mut stats, done);
                    // A finished batch may have released a key's run: look again soon.
                    idle = config.poll_interval_min;
                }
                () = woken(&mut wake), if !at_capacity => idle = config.poll_interval_min,
                () = sleep(idle), if !at_capacity => {}
            }
        }

        self.finish_in_flight(batches, &ctx, &mut stats).await;
        info!(?stats, "relay stopped");
        Ok(stats)
    }

    /// Graceful shutdown: wait for in-flight batches until the deadline, then make them
    /// release what they have not published; abandon them after a second deadline (their
    /// leases then expire by themselves).
    async fn finish_in_flight(
        &self,
        mut batches: JoinSet<BatchStats>,
        ctx: &BatchContext,
        stats: &mut RelayStats,
    ) {
        let deadline = later(self.config.shutdown_deadline);
        let give_up = deadline
            .checked_add(self.config.shutdown_deadline)
            .unwrap_or(deadline);
        let mut hard_stopped = false;
        while !batches.is_empty() {
            tokio::select! {
                Some(done) = batches.join_next() => absorb(stats, done),
                () = tokio::time::sleep_until(deadline), if !hard_stopped => {
                    warn!(in_flight = batches.len(), "shutdown deadline reached; releasing unpublished messages");
                    ctx.hard_stop.cancel();
                    hard_stopped = true;
                }
                () = tokio::time::sleep_until(give_up), if hard_stopped => {
                    error!(in_flight = batches.len(), "batches did not settle in time; their leases will expire");
                    batches.abort_all();
                    hard_stopped = false;
                }
            }
        }
    }

    /// Hands a claim back unpublished; returns how many messages were released.
    async fn release(&self, claim: &crate::store::Claim) -> u64 {
        if claim.messages.is_empty() {
            return 0;
        }
        let releases: Vec<crate::store::Settlement> = claim
            .messages
            .iter()
            .map(|m| crate::store::Settlement {
                id: m.id,
                action: crate::store::SettleAction::Release,
            })
            .collect();
        match self.store.settle(&claim.lease, &releases).await {
            Ok(report) => report.applied as u64,
            Err(err) => {
                warn!(error = %err.report(), "could not release a claim at shutdown; its lease will expire");
                0
            }
        }
    }

    async fn record_backlog(&self) {
        match self.store.backlog().await {
            Ok(backlog) => {
                metrics::gauge!(m::BACKLOG).set(backlog.pending as f64);
                metrics::gauge!(m::DEAD_LETTERS).set(backlog.dead as f64);
                let age = backlog
                    .oldest_pending_at
                    .map(|at| (chrono::Utc::now() - at).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(Duration::ZERO);
                metrics::gauge!(m::OLDEST_PENDING_SECONDS).set(age.as_secs_f64());
            }
            Err(err) => warn!(error = %err.report(), "could not read the backlog"),
        }
    }
}

fn absorb(stats: &mut RelayStats, done: std::result::Result<BatchStats, tokio::task::JoinError>) {
    match done {
        Ok(batch) => stats.absorb(batch),
        Err(err) if err.is_cancelled() => {}
        Err(err) => {
            error!(error = %err, "a batch task panicked; its leases will expire and its messages be retried")
        }
    }
}

/// Resolves when the notifier fires; never, without a notifier.
async fn woken(wake: &mut Option<watch::Receiver<u64>>) {
    match wake {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
