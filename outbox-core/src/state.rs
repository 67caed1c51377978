//! The dispatch state machine: pure functions, no I/O, time and jitter passed in.
//!
//! ```text
//! Pending(available_at) --claim--> Leased(token, expires_at) --acked--> Published
//!        ^                            |  |  \--failed, attempts left--> Retrying(next_at, error) --claim--> Leased ...
//!        |--------release / expiry----|  \--failed, permanent or last attempt--> Dead(reason) --requeue--> Pending
//! ```
//!
//! The relay computes settlements with [`failure_action`]; the in-memory store applies
//! [`transition`]; SQL stores encode the same rules in their queries, and the conformance
//! suite checks that they agree.

use chrono::{DateTime, Utc};

use crate::clock::{Jitter, add_duration};
use crate::retry::RetryPolicy;
use crate::store::{LeaseToken, SettleAction};

/// Where a message is in its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting to be claimed from `available_at` on.
    Pending {
        /// Not claimable before this time.
        available_at: DateTime<Utc>,
    },
    /// Claimed by the holder of `token` until `expires_at`.
    Leased {
        /// The claim's token.
        token: LeaseToken,
        /// When the lease runs out and the message is due again.
        expires_at: DateTime<Utc>,
    },
    /// Acknowledged by the broker.
    Published {
        /// When it was settled as published.
        at: DateTime<Utc>,
    },
    /// Failed; due again at `next_at`.
    Retrying {
        /// When the next attempt may start.
        next_at: DateTime<Utc>,
        /// The last attempt's error.
        last_error: String,
    },
    /// Given up; kept for inspection and requeue.
    Dead {
        /// The last error.
        reason: String,
    },
}

/// A message's state and its count of failed attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The state.
    pub state: DeliveryState,
    /// Failed publish attempts so far.
    pub attempts: u32,
}

/// Something that happens to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// A relay claims it.
    Claim {
        /// The new lease's token.
        token: LeaseToken,
        /// The new lease's expiry.
        expires_at: DateTime<Utc>,
    },
    /// The holder extends its lease.
    Renew {
        /// The holder's token.
        token: LeaseToken,
        /// The new expiry.
        expires_at: DateTime<Utc>,
    },
    /// The holder settles it.
    Settle {
        /// The holder's token.
        token: LeaseToken,
        /// How.
        action: SettleAction,
    },
    /// An operator requeues a dead message.
    Requeue,
}

/// Why an event does not apply to a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// Claim of a message that is not due (not yet available, leased, or settled).
    #[error("the message is not due")]
    NotDue,
    /// Renew or settle by someone who does not hold the lease.
    #[error("the lease is not held by this token")]
    LeaseNotHeld,
    /// Requeue of a message that is not dead.
    #[error("only dead messages can be requeued")]
    NotDead,
}

impl Delivery {
    /// A freshly enqueued message, available from `available_at`.
    pub fn new(available_at: DateTime<Utc>) -> Self {
        Delivery {
            state: DeliveryState::Pending { available_at },
            attempts: 0,
        }
    }

    /// Neither published nor dead.
    pub fn is_unsettled(&self) -> bool {
        !matches!(
            self.state,
            DeliveryState::Published { .. } | DeliveryState::Dead { .. }
        )
    }

    /// Claimable at `now`: available, retry time passed, or lease expired.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        match &self.state {
            DeliveryState::Pending { available_at } => *available_at <= now,
            DeliveryState::Retrying { next_at, .. } => *next_at <= now,
            DeliveryState::Leased { expires_at, .. } => *expires_at <= now,
            DeliveryState::Published { .. } | DeliveryState::Dead { .. } => false,
        }
    }
}

/// The settlement for a failed publish: retry after a backoff while attempts remain and the
/// error is transient, otherwise dead with the error as the reason.
///
/// `attempts_before` is the count of failures before this one.
pub fn failure_action(
    attempts_before: u32,
    transient: bool,
    error: String,
    policy: &RetryPolicy,
    jitter: &dyn Jitter,
) -> SettleAction {
    let attempts = attempts_before.saturating_add(1);
    if !transient || attempts >= policy.max_attempts {
        SettleAction::Dead { reason: error }
    } else {
        SettleAction::Retry {
            delay: policy.backoff(attempts, jitter),
            error,
        }
    }
}

/// Applies `event` to `delivery` at `now`.
pub fn transition(
    delivery: &Delivery,
    event: &DeliveryEvent,
    now: DateTime<Utc>,
) -> Result<Delivery, TransitionError> {
    let held_by = |token: &LeaseToken| match &delivery.state {
        DeliveryState::Leased { token: held, .. } if held == token => Ok(()),
        _ => Err(TransitionError::LeaseNotHeld),
    };
    let next = |state| Delivery {
        state,
        attempts: delivery.attempts,
    };
    match event {
        DeliveryEvent::Claim { token, expires_at } => {
            if !delivery.is_due(now) {
                return Err(TransitionError::NotDue);
            }
            Ok(next(DeliveryState::Leased {
                token: *token,
                expires_at: *expires_at,
            }))
        }
        DeliveryEvent::Renew { token, expires_at } => {
            held_by(token)?;
            Ok(next(DeliveryState::Leased {
                token: *token,
                expires_at: *expires_at,
            }))
        }
        DeliveryEvent::Settle { token, action } => {
            held_by(token)?;
            Ok(settle(delivery, action, now))
        }
        DeliveryEvent::Requeue => match delivery.state {
            DeliveryState::Dead { .. } => Ok(Delivery::new(now)),
            _ => Err(TransitionError::NotDead),
        },
    }
}

fn settle(delivery: &Delivery, action: &SettleAction, now: DateTime<Utc>) -> Delivery {
    let failed = delivery.attempts.saturating_add(1);
    match action {
        SettleAction::Published => Delivery {
            state: DeliveryState::Published { at: now },
            attempts: delivery.attempts,
        },
        SettleAction::Release => Delivery {
            state: DeliveryState::Pending { available_at: now },
            attempts: delivery.attempts,
        },
        SettleAction::Retry { delay, error } => Delivery {
            state: DeliveryState::Retrying {
                next_at: add_duration(now, *delay),
                last_error: error.clone(),
            },
            attempts: failed,
        },
        SettleAction::Dead { reason } => Delivery {
            state: DeliveryState::Dead {
                reason: reason.clone(),
            },
            attempts: failed,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::NoJitter;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid timestamp")
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }

    /// One representative of every state, at attempt 1.
    fn all_states(token: LeaseToken) -> Vec<Delivery> {
        [
            DeliveryState::Pending { available_at: t(0) },
            DeliveryState::Pending {
                available_at: t(100),
            },
            DeliveryState::Leased {
                token,
                expires_at: t(100),
            },
            DeliveryState::Leased {
                token,
                expires_at: t(0),
            },
            DeliveryState::Leased {
                token: LeaseToken::new(),
                expires_at: t(100),
            },
            DeliveryState::Published { at: t(0) },
            DeliveryState::Retrying {
                next_at: t(0),
                last_error: "e".into(),
            },
            DeliveryState::Retrying {
                next_at: t(100),
                last_error: "e".into(),
            },
            DeliveryState::Dead { reason: "r".into() },
        ]
        .into_iter()
        .map(|state| Delivery { state, attempts: 1 })
        .collect()
    }

    fn all_events(token: LeaseToken) -> Vec<DeliveryEvent> {
        let mut events = vec![
            DeliveryEvent::Claim {
                token: LeaseToken::new(),
                expires_at: t(50),
            },
            DeliveryEvent::Renew {
                token,
                expires_at: t(50),
            },
            DeliveryEvent::Requeue,
        ];
        for action in [
            SettleAction::Published,
            SettleAction::Release,
            SettleAction::Retry {
                delay: Duration::from_secs(5),
                error: "x".into(),
            },
            SettleAction::Dead { reason: "y".into() },
        ] {
            events.push(DeliveryEvent::Settle {
                token,
                action: action.clone(),
            });
            events.push(DeliveryEvent::Settle {
                token: LeaseToken::new(),
                action,
            });
        }
        events
    }

    /// Every (state, event) pair: the result is what the rules of the diagram say.
    #[test]
    fn exhaustive_transition_table() {
        let token = LeaseToken::new();
        let now = t(10);
        let mut checked = 0;
        for delivery in all_states(token) {
            for event in all_events(token) {
                checked += 1;
                let result = transition(&delivery, &event, now);
                let held = matches!(&delivery.state, DeliveryState::Leased { token: h, .. } if *h == token);
                match &event {
                    DeliveryEvent::Claim {
                        token: new,
                        expires_at,
                    } => {
                        if delivery.is_due(now) {
                            assert_eq!(
                                result.as_ref().map(|d| &d.state),
                                Ok(&DeliveryState::Leased {
                                    token: *new,
                                    expires_at: *expires_at
                                })
                            );
                            assert_eq!(result.as_ref().map(|d| d.attempts), Ok(1));
                        } else {
                            assert_eq!(result, Err(TransitionError::NotDue), "{delivery:?}");
                        }
                    }
                    DeliveryEvent::Renew { expires_at, .. } => {
                        if held {
                            assert_eq!(
                                result.map(|d| d.state),
                                Ok(DeliveryState::Leased {
                                    token,
                                    expires_at: *expires_at
                                })
                            );
                        } else {
                            assert_eq!(result, Err(TransitionError::LeaseNotHeld));
                        }
                    }
                    DeliveryEvent::Settle { token: by, action } => {
                        if !held || *by != token {
                            assert_eq!(result, Err(TransitionError::LeaseNotHeld));
                            continue;
                        }
                        let d = result.expect("holder may settle");
                        match action {
                            SettleAction::Published => {
                                assert_eq!(
                                    d,
                                    Delivery {
                                        state: DeliveryState::Published { at: now },
                                        attempts: 1
                                    }
                                )
                            }
                            SettleAction::Release => {
                                assert_eq!(
                                    d,
                                    Delivery {
                                        state: DeliveryState::Pending { available_at: now },
                                        attempts: 1
                                    }
                                )
                            }
                            SettleAction::Retry { .. } => assert_eq!(
                                d,
                                Delivery {
                                    state: DeliveryState::Retrying {
                                        next_at: t(15),
                                        last_error: "x".into()
                                    },
                                    attempts: 2
                                }
                            ),
                            SettleAction::Dead { .. } => assert_eq!(
                                d,
                                Delivery {
                                    state: DeliveryState::Dead { reason: "y".into() },
                                    attempts: 2
                                }
                            ),
                        }
                    }
                    DeliveryEvent::Requeue => {
                        if matches!(delivery.state, DeliveryState::Dead { .. }) {
                            assert_eq!(result, Ok(Delivery::new(now)));
                        } else {
                            assert_eq!(result, Err(TransitionError::NotDead));
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 9 * 11);
    }

    #[test]
    fn due_rules() {
        let token = LeaseToken::new();
        let due: Vec<bool> = all_states(token).iter().map(|d| d.is_due(t(10))).collect();
        assert_eq!(
            due,
            [true, false, false, true, false, false, true, false, false]
        );
    }

    #[test]
    fn failures_retry_with_growing_backoff_then_die() {
        let p = policy();
        let first = failure_action(0, true, "boom".into(), &p, &NoJitter);
        assert_eq!(
            first,
            SettleAction::Retry {
                delay: Duration::from_secs(1),
                error: "boom".into()
            }
        );
        let second = failure_action(1, true, "boom".into(), &p, &NoJitter);
        assert_eq!(
            second,
            SettleAction::Retry {
                delay: Duration::from_secs(2),
                error: "boom".into()
            }
        );
        let third = failure_action(2, true, "boom".into(), &p, &NoJitter);
        assert_eq!(
            third,
            SettleAction::Dead {
                reason: "boom".into()
            }
        );
    }

    #[test]
    fn permanent_failure_is_dead_at_once() {
        let action = failure_action(0, false, "no such topic".into(), &policy(), &NoJitter);
        assert_eq!(
            action,
            SettleAction::Dead {
                reason: "no such topic".into()
            }
        );
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling() {
        let p = RetryPolicy {
            max_attempts: 50,
            ..policy()
        };
        for attempt in 1..40 {
            let ceiling = p.backoff(attempt, &NoJitter);
            assert!(ceiling <= p.max_backoff);
            for _ in 0..20 {
                assert!(p.backoff(attempt, &crate::clock::FullJitter) <= ceiling);
            }
        }
    }

    #[test]
    fn a_whole_life_through_the_machine() {
        let token = LeaseToken::new();
        let p = policy();
        let mut d = Delivery::new(t(0));
        let mut now = t(0);
        for _ in 0..p.max_attempts {
            d = transition(
                &d,
                &DeliveryEvent::Claim {
                    token,
                    expires_at: t(1_000),
                },
                now,
            )
            .expect("due");
            let action = failure_action(d.attempts, true, "down".into(), &p, &NoJitter);
            d = transition(&d, &DeliveryEvent::Settle { token, action }, now).expect("held");
            now = add_duration(now, Duration::from_secs(100));
        }
        assert_eq!(
            d.state,
            DeliveryState::Dead {
                reason: "down".into()
            }
        );
        assert_eq!(d.attempts, 3);
        d = transition(&d, &DeliveryEvent::Requeue, now).expect("dead");
        assert_eq!(d, Delivery::new(now));
    }
}
