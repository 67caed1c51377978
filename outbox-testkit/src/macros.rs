//! Macros that expand the conformance suites into one named test per behaviour.

/// Runs the [`Store`](outbox_core::Store) conformance suite: one `#[test]` per behaviour.
///
/// The argument is an expression giving a future of a fresh
/// [`StoreHarness`](crate::StoreHarness); it is evaluated once per test. For a store on a
/// server, write `optional` before an expression giving a future of `Option<harness>`,
/// where `None` means the server is unreachable and the test was skipped (see
/// [`services::unavailable`](crate::services::unavailable)).
///
/// ```text
/// outbox_testkit::store_conformance!(MyHarness::new());
/// outbox_testkit::store_conformance!(optional MyServerHarness::connect());
/// ```
#[macro_export]
macro_rules! store_conformance {
    (optional $make:expr) => {
        $crate::store_conformance!(@names { $make.await });
    };
    ($make:expr) => {
        $crate::store_conformance!(@names { Some($make.await) });
    };
    (@names $make:block) => {
        $crate::store_conformance!(@tests $make;
            atomic_enqueue,
            message_round_trip,
            duplicate_message_id_is_refused,
            claim_honours_batch_size,
            claim_respects_lease,
            concurrent_claims_are_disjoint,
            expired_lease_is_reclaimable,
            stale_lease_is_refused,
            renew_extends_the_lease,
            release_makes_due_without_an_attempt,
            claim_returns_key_runs_in_order,
            head_of_key_blocks_its_key,
            other_keys_flow_while_one_retries,
            busy_key_does_not_hold_back_other_keys,
            small_claims_keep_key_order_after_retry_and_requeue,
            backoff_schedule_is_honoured,
            dead_letters_are_listed_and_requeued,
            poison_message_dies_after_max_attempts,
            purge_keeps_unsettled_and_dead,
            late_commit_is_published,
        );
    };
    (@tests $make:block; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::block_on(async {
                    let harness: Option<_> = $make;
                    let Some(harness) = harness else {
                        return;
                    };
                    $crate::conformance::store::$name(&harness).await;
                });
            }
        )*
    };
}

/// Runs the [`Publisher`](outbox_core::Publisher) conformance suite: one `#[test]` per
/// behaviour.
///
/// The argument is an expression giving a future of a fresh
/// [`PublisherHarness`](crate::PublisherHarness); it is evaluated once per test. For a
/// broker, write `optional` before an expression giving a future of `Option<harness>`,
/// where `None` means the broker is unreachable and the test was skipped (see
/// [`services::unavailable`](crate::services::unavailable)).
///
/// ```text
/// outbox_testkit::publisher_conformance!(MyHarness::new());
/// ```
#[macro_export]
macro_rules! publisher_conformance {
    (optional $make:expr) => {
        $crate::publisher_conformance!(@names { $make.await });
    };
    ($make:expr) => {
        $crate::publisher_conformance!(@names { Some($make.await) });
    };
    (@names $make:block) => {
        $crate::publisher_conformance!(@tests $make;
            payload_key_and_headers_arrive_intact,
            ack_means_the_broker_has_it,
            empty_batch_is_a_no_op,
            sequential_publishes_keep_key_order,
        );
    };
    (@tests $make:block; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::block_on(async {
                    let harness: Option<_> = $make;
                    let Some(harness) = harness else {
                        return;
                    };
                    $crate::conformance::publisher::$name(&harness).await;
                });
            }
        )*
    };
}
