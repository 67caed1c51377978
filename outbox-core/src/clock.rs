//! Time and randomness, injected so the state machine and the stores are deterministic
//! under test.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of the current time.
///
/// Stores that keep time themselves (SQLite, the in-memory store) take one; a server
/// database uses its own clock instead, so that relays on different hosts agree.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Spreads retry delays so that messages failing together do not retry together.
pub trait Jitter: Send + Sync + fmt::Debug + 'static {
    /// A delay between zero and `upper`, both included.
    fn sample(&self, upper: Duration) -> Duration;
}

/// "Full jitter": a uniformly random delay in `[0, upper]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FullJitter;

impl Jitter for FullJitter {
    fn sample(&self, upper: Duration) -> Duration {
        let nanos = u64::try_from(upper.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// No jitter: always the upper bound. For tests that check an exact schedule.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn sample(&self, upper: Duration) -> Duration {
        upper
    }
}

/// `at + duration`, saturating instead of overflowing on absurd durations.
pub fn add_duration(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
