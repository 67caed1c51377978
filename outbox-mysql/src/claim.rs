//! Choosing what a claim takes: due heads and unkeyed messages, each keyed head with the
//! run of messages waiting behind it; and which due rows to promote or make wait.
//!
//! Keys are told apart by their 64-bit hash (see [`crate::enqueue::key_hash`]): two keys
//! with the same hash would share one order, which is stricter than needed and harmless.

use std::collections::{HashMap, HashSet};

/// At most this many heads of a claim bring runs, so that reading the runs stays one
/// short statement; with more keys than that, heads alone fill most of the batch.
pub(crate) const MAX_LEADERS: usize = 16;

/// A due row as the claim's locking read found it: a key's head, an unkeyed message, or a
/// waiting message whose time to be looked at again has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) id: i64,
    /// The hash of its key; `None` when unkeyed.
    pub(crate) key: Option<i64>,
    pub(crate) attempts: i64,
    /// It is known to be its key's oldest unsettled message (it was promoted to head).
    /// Otherwise it is a tentative head, or a waiting message due to be looked at again,
    /// and the claim checks.
    pub(crate) verified: bool,
}

impl Head {
    /// Whether it may bring a run: a keyed head that never failed. A head that failed
    /// before goes alone, so that a failing key does not drag its run through every retry.
    pub(crate) fn leads(&self) -> bool {
        self.key.is_some() && self.attempts == 0
    }
}

/// One of the unsettled rows behind a head, in id order, read without locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyRow {
    pub(crate) id: i64,
    /// It waits behind its key: a follower, not another head.
    pub(crate) waits: bool,
    /// Its not-before time has come.
    pub(crate) ripe: bool,
    /// It is under an unexpired lease.
    pub(crate) held: bool,
}

/// What one round of a claim does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Rows to lease, at most the limit.
    pub(crate) take: Vec<i64>,
    /// Unverified heads and waiting rows that turned out to be their key's oldest
    /// unsettled message: verified heads from now on.
    pub(crate) promote: Vec<i64>,
    /// Due rows that are not their key's oldest unsettled message (the first message of
    /// its key in an enqueue call while the key had unsettled messages, or one behind a
    /// message that committed late with a lower id or was requeued): they wait behind it.
    /// Each as `(row, the key's oldest unsettled row it waits behind)`.
    pub(crate) demote: Vec<(i64, i64)>,
    /// Taken heads that may bring a run, oldest first, at most [`MAX_LEADERS`].
    pub(crate) leaders: Vec<i64>,
}

/// Decides which heads a claim takes, at most `limit`.
///
/// `heads` are the due rows in due order; `oldest` maps the key of each unverified head
/// to the key's oldest unsettled row; `held` holds the keys with a row under an unexpired
/// lease. A keyed head is taken only if it is its key's oldest unsettled message and
/// nothing of its key is in flight (then it committed after a later message of its key was
/// claimed, and waits for it). A verified head is its key's oldest but for a message that
/// committed late with a lower id: that one is an unverified head due before it (it was
/// enqueued before the verified one was promoted), so the claim meets it first and takes
/// at most one head per key.
pub(crate) fn choose_heads(
    heads: &[Head],
    oldest: &HashMap<i64, i64>,
    held: &HashSet<i64>,
    limit: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut keys_taken = HashSet::new();
    for head in heads {
        let Some(key) = head.key else {
            if plan.take.len() < limit {
                plan.take.push(head.id);
            }
            continue;
        };
        if !head.verified {
            let Some(&oldest) = oldest.get(&key) else {
                continue;
            };
            if oldest != head.id {
                plan.demote.push((head.id, oldest));
                continue;
            }
            plan.promote.push(head.id);
        }
        if held.contains(&key) || plan.take.len() >= limit || !keys_taken.insert(key) {
            continue;
        }
        plan.take.push(head.id);
        if head.leads() && plan.leaders.len() < MAX_LEADERS {
            plan.leaders.push(head.id);
        }
    }
    plan
}

/// How many followers each leader may bring so that the claim fills `limit`.
pub(crate) fn per_leader(plan: &Plan, limit: usize) -> usize {
    limit
        .saturating_sub(plan.take.len())
        .div_ceil(plan.leaders.len().max(1))
}

/// Adds the leaders' runs to `plan.take`, breadth-first (every run's first follower, then
/// every run's second, ...), so that many keys go out in few waves. `runs` maps each
/// leader to the rows behind it in id order; a run ends before the first row that is
/// another head, not due yet, or held.
pub(crate) fn add_runs(plan: &mut Plan, runs: &HashMap<i64, Vec<KeyRow>>, limit: usize) {
    let per_leader = per_leader(plan, limit);
    let runs: Vec<Vec<i64>> = plan
        .leaders
        .iter()
        .filter_map(|leader| runs.get(leader))
        .map(|rows| {
            rows.iter()
                .take_while(|row| row.waits && row.ripe && !row.held)
                .take(per_leader)
                .map(|row| row.id)
                .collect()
        })
        .collect();
    let longest = runs.iter().map(Vec::len).max().unwrap_or(0);
    'share: for depth in 0..longest {
        for run in &runs {
            if plan.take.len() >= limit {
                break 'share;
            }
            if let Some(id) = run.get(depth) {
                plan.take.push(*id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(id: i64, key: Option<i64>, attempts: i64) -> Head {
        Head {
            id,
            key,
            attempts,
            verified: true,
        }
    }

    fn unverified(id: i64, key: i64) -> Head {
        Head {
            verified: false,
            ..head(id, Some(key), 0)
        }
    }

    fn waiting(id: i64) -> KeyRow {
        KeyRow {
            id,
            waits: true,
            ripe: true,
            held: false,
        }
    }

    fn oldest(pairs: &[(i64, i64)]) -> HashMap<i64, i64> {
        pairs.iter().copied().collect()
    }

    fn plan_with_runs(
        heads: &[Head],
        oldest: &HashMap<i64, i64>,
        runs: &[(i64, Vec<KeyRow>)],
        limit: usize,
    ) -> Plan {
        let mut plan = choose_heads(heads, oldest, &HashSet::new(), limit);
        add_runs(&mut plan, &runs.iter().cloned().collect(), limit);
        plan
    }

    #[test]
    fn unkeyed_messages_are_taken_up_to_the_limit() {
        let heads = [head(1, None, 0), head(2, None, 0), head(3, None, 0)];
        let plan = choose_heads(&heads, &HashMap::new(), &HashSet::new(), 2);
        assert_eq!(plan.take, vec![1, 2]);
    }

    #[test]
    fn runs_are_shared_breadth_first() {
        let heads = [head(1, Some(10), 0), head(2, Some(20), 0)];
        let runs = [
            (1, vec![waiting(3), waiting(5), waiting(7)]),
            (2, vec![waiting(4), waiting(6)]),
        ];
        let keys = oldest(&[(10, 1), (20, 2)]);
        assert_eq!(
            plan_with_runs(&heads, &keys, &runs, 5).take,
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(
            plan_with_runs(&heads, &keys, &runs, 10).take,
            vec![1, 2, 3, 4, 5, 6, 7]
        );
    }

    #[test]
    fn a_head_that_failed_before_goes_alone() {
        let plan = choose_heads(
            &[head(1, Some(10), 2)],
            &oldest(&[(10, 1)]),
            &HashSet::new(),
            10,
        );
        assert_eq!(plan.take, vec![1]);
        assert!(plan.leaders.is_empty());
    }

    #[test]
    fn a_run_stops_before_a_message_that_is_not_due_or_another_head() {
        let heads = [head(1, Some(10), 0), head(20, Some(30), 0)];
        let not_ripe = KeyRow {
            ripe: false,
            ..waiting(3)
        };
        let another_head = KeyRow {
            waits: false,
            ..waiting(21)
        };
        let runs = [
            (1, vec![waiting(2), not_ripe, waiting(4)]),
            (20, vec![another_head, waiting(22)]),
        ];
        let plan = plan_with_runs(&heads, &oldest(&[(10, 1), (30, 20)]), &runs, 10);
        assert_eq!(plan.take, vec![1, 20, 2]);
    }

    #[test]
    fn only_the_oldest_unsettled_message_of_a_key_is_taken() {
        // Row 1 of key 10 committed late and is leased elsewhere; row 2 is also a head.
        let heads = [unverified(2, 10), head(3, None, 0)];
        let held = HashSet::from([10]);
        let plan = choose_heads(&heads, &oldest(&[(10, 1)]), &held, 10);
        assert_eq!(plan.take, vec![3]);
        assert_eq!(
            plan.demote,
            vec![(2, 1)],
            "row 2 waits behind row 1 from now on"
        );
    }

    #[test]
    fn a_late_head_waits_for_the_message_of_its_key_in_flight() {
        // Row 1 committed after row 2 was claimed: row 1 waits until row 2 is settled.
        let held = HashSet::from([10]);
        let plan = choose_heads(&[unverified(1, 10)], &oldest(&[(10, 1)]), &held, 10);
        assert_eq!(plan.take, Vec::<i64>::new());
        assert_eq!(plan.promote, vec![1], "it is the key's oldest all the same");
    }

    #[test]
    fn a_later_head_of_a_busy_key_waits() {
        // Row 50 was the first message of key 10 in its enqueue call.
        let heads = [head(1, Some(10), 0), unverified(50, 10)];
        let plan = choose_heads(&heads, &oldest(&[(10, 1)]), &HashSet::new(), 10);
        assert_eq!(plan.take, vec![1]);
        assert_eq!(plan.demote, vec![(50, 1)]);
    }

    #[test]
    fn a_waiting_message_whose_head_is_gone_becomes_the_head() {
        let orphan = unverified(5, 10);
        let plan = choose_heads(&[orphan], &oldest(&[(10, 5)]), &HashSet::new(), 10);
        assert_eq!(plan.promote, vec![5]);
        assert_eq!(plan.take, vec![5]);
        assert_eq!(plan.leaders, vec![5]);
    }

    #[test]
    fn a_waiting_message_behind_its_head_waits_longer() {
        let waiting_row = unverified(6, 10);
        let plan = choose_heads(&[waiting_row], &oldest(&[(10, 5)]), &HashSet::new(), 10);
        assert_eq!(plan.demote, vec![(6, 5)]);
        assert!(plan.take.is_empty() && plan.promote.is_empty());
    }

    #[test]
    fn a_verified_head_behind_an_unverified_older_one_waits_its_turn() {
        // Row 3 committed late with a lower id than the verified head 7.
        let heads = [unverified(3, 10), head(7, Some(10), 0)];
        let plan = choose_heads(&heads, &oldest(&[(10, 3)]), &HashSet::new(), 10);
        assert_eq!(plan.take, vec![3]);
    }

    #[test]
    fn at_most_sixteen_heads_bring_runs() {
        let heads: Vec<Head> = (0..40).map(|i| head(i, Some(i + 100), 0)).collect();
        let keys: HashMap<i64, i64> = (0..40).map(|i| (i + 100, i)).collect();
        let plan = choose_heads(&heads, &keys, &HashSet::new(), 500);
        assert_eq!(plan.take.len(), 40);
        assert_eq!(plan.leaders, (0..16).collect::<Vec<_>>());
        assert_eq!(per_leader(&plan, 500), 29);
    }
}
