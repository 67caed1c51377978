//! Retry policy: exponential backoff with full jitter, a cap, and a maximum attempt count.

use std::time::Duration;

use crate::clock::Jitter;
use crate::error::{Error, Result};

/// How failed publishes are retried before a message is declared dead.
///
/// The delay before retry `n` (1-based) is a random value in
/// `[0, min(max_backoff, initial_backoff * 2^(n-1))]` ("full jitter"), so that messages that
/// failed together spread out instead of hammering a recovering broker together.
///
/// The default (25 attempts, 1 s doubling to 5 min) keeps retrying a message for about an
/// hour and a half at the most (about half of that on average, with jitter). A broker
/// outage longer than the retry budget makes messages dead: size `max_attempts` and
/// `max_backoff` to the longest outage you want to ride out; dead letters can be requeued.
///
/// ```
/// use std::time::Duration;
/// use outbox_core::{NoJitter, RetryPolicy};
///
/// let policy = RetryPolicy {
///     max_attempts: 5,
///     initial_backoff: Duration::from_millis(100),
///     max_backoff: Duration::from_secs(1),
/// };
/// assert_eq!(policy.backoff(1, &NoJitter), Duration::from_millis(100));
/// assert_eq!(policy.backoff(3, &NoJitter), Duration::from_millis(400));
/// assert_eq!(policy.backoff(9, &NoJitter), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Publish attempts before a message is dead; `1` means no retry.
    pub max_attempts: u32,
    /// Upper bound of the first retry's delay.
    pub initial_backoff: Duration,
    /// Upper bound of any retry's delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 25,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `failed_attempts` (the count of failures so far, >= 1).
    pub fn backoff(&self, failed_attempts: u32, jitter: &dyn Jitter) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(31);
        let ceiling = self
            .initial_backoff
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff);
        jitter.sample(ceiling)
    }

    /// Checks that the policy can work: at least one attempt, and a cap not below the start.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid_config(
                "retry.max_attempts is 0; set it to 1 or more (1 means no retry)",
            ));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(Error::invalid_config(format!(
                "retry.max_backoff ({:?}) is below retry.initial_backoff ({:?}); raise max_backoff",
                self.max_backoff, self.initial_backoff
            )));
        }
        Ok(())
    }
}
