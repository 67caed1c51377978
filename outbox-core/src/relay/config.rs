//! Relay settings.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::publisher::PublisherCapabilities;
use crate::retry::RetryPolicy;

/// How a [`Relay`](crate::Relay) claims, publishes and retries.
///
/// Memory is bounded by `batch_size * max_in_flight_batches` messages, whatever the backlog.
///
/// ```
/// let mut config = outbox_core::RelayConfig::default();
/// config.batch_size = 500;
/// config.validate()?;
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Messages per claim (default 100).
    pub batch_size: usize,
    /// Claimed batches being published at once (default 2).
    pub max_in_flight_batches: usize,
    /// Lease per claim (default 30 s); renewed every third of it while a batch is slow.
    pub lease_duration: Duration,
    /// Retries and dead letters.
    pub retry: RetryPolicy,
    /// Wait after a claim that found work (default 5 ms): the shortest poll interval.
    pub poll_interval_min: Duration,
    /// Longest wait between claims while idle (default 1 s); each empty claim doubles the
    /// wait up to this. A [`Notifier`](crate::Notifier) wakes the relay earlier.
    pub poll_interval_max: Duration,
    /// On shutdown, time given to in-flight batches before the rest is released (default 10 s).
    pub shutdown_deadline: Duration,
    /// How often backlog gauges are read from the store (default 15 s).
    pub backlog_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 100,
            max_in_flight_batches: 2,
            lease_duration: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            poll_interval_min: Duration::from_millis(5),
            poll_interval_max: Duration::from_secs(1),
            shutdown_deadline: Duration::from_secs(10),
            backlog_interval: Duration::from_secs(15),
        }
    }
}

impl RelayConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::invalid_config("batch_size is 0; use 100 to 1000"));
        }
        if self.max_in_flight_batches == 0 {
            return Err(Error::invalid_config(
                "max_in_flight_batches is 0; use 1 or more",
            ));
        }
        if self.lease_duration < Duration::from_millis(100) {
            return Err(Error::invalid_config(format!(
                "lease_duration {:?} is too short to publish anything; use seconds",
                self.lease_duration
            )));
        }
        if self.poll_interval_min.is_zero() || self.poll_interval_max < self.poll_interval_min {
            return Err(Error::invalid_config(
                "poll intervals must satisfy 0 < poll_interval_min <= poll_interval_max",
            ));
        }
        if self.shutdown_deadline >= self.lease_duration {
            return Err(Error::invalid_config(format!(
                "shutdown_deadline {:?} must be shorter than lease_duration {:?}, so that \
                 released messages are not also claimed by another relay meanwhile",
                self.shutdown_deadline, self.lease_duration
            )));
        }
        self.retry.validate()
    }

    /// Checks the settings against what a publisher says of itself:
    /// [`lease_duration`](Self::lease_duration) must be longer than
    /// [`PublisherCapabilities::max_publish_duration`], so that a lease never runs out
    /// while its messages are still with the broker client. [`Relay::new`](crate::Relay::new)
    /// calls it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use outbox_core::{PublisherCapabilities, RelayConfig};
    ///
    /// let mut publisher = PublisherCapabilities::default();
    /// publisher.max_publish_duration = Some(Duration::from_secs(60));
    /// let config = RelayConfig::default(); // a 30 s lease
    /// let err = config.check_publisher(&publisher).unwrap_err();
    /// assert!(err.to_string().contains("lease_duration"));
    /// ```
    pub fn check_publisher(&self, publisher: &PublisherCapabilities) -> Result<()> {
        match publisher.max_publish_duration {
            Some(publish) if publish >= self.lease_duration => Err(Error::invalid_config(format!(
                "the publisher may take up to {publish:?} to report a message (its delivery \
                 timeout), but lease_duration is {:?}: the lease could run out while the message \
                 is in flight and another relay would publish it too; make lease_duration longer \
                 than {publish:?} or lower the publisher's timeout",
                self.lease_duration
            ))),
            _ => Ok(()),
        }
    }
}
