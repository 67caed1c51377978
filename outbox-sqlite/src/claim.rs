//! Claiming: due heads and unkeyed messages, each head with the run waiting behind it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use outbox_core::{ClaimOptions, Lease, Message, Result};
use rusqlite::{Connection, Transaction};

use crate::error::store_error;
use crate::row::{read_raw, to_millis};
use crate::store::{Inner, promote};

/// A due head (or unkeyed message).
struct Head {
    id: i64,
    key: Option<String>,
    attempts: i64,
}

/// Claims inside the caller's `BEGIN IMMEDIATE` transaction and returns the messages in id
/// order. A keyed head brings the run of its key's waiting messages, shared out
/// breadth-first so that many keys go out in few waves; a head that failed before goes
/// alone, so that a failing key does not drag its run through every retry. Rows that
/// cannot be read back are made dead, with the reason, instead of stalling the outbox.
pub(crate) fn claim_in(
    tx: &Transaction<'_>,
    inner: &Inner,
    options: &ClaimOptions,
    now: DateTime<Utc>,
    lease: &Lease,
) -> Result<Vec<Message>> {
    let err = |e| store_error("claim", e);
    let limit = options.batch_size.max(1);
    let heads: Vec<Head> = {
        let mut stmt = tx.prepare_cached(&inner.sql.heads).map_err(err)?;
        let rows = stmt
            .query_map(
                rusqlite::named_params! {
                    ":now": to_millis(now),
                    ":limit": i64::try_from(limit).unwrap_or(i64::MAX),
                },
                |row| {
                    Ok(Head {
                        id: row.get(0)?,
                        key: row.get(1)?,
                        attempts: row.get(2)?,
                    })
                },
            )
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)?
    };
    let mut ids: Vec<i64> = heads.iter().map(|h| h.id).collect();
    let runs = runs_behind(tx, inner, &heads, limit.saturating_sub(heads.len()), now)?;
    // Breadth-first: every run's first follower, then every run's second, ...
    let budget = limit.saturating_sub(heads.len());
    let longest = runs.iter().map(Vec::len).max().unwrap_or(0);
    'share: for depth in 0..longest {
        for run in &runs {
            if ids.len() - heads.len() >= budget {
                break 'share;
            }
            if let Some(id) = run.get(depth) {
                ids.push(*id);
            }
        }
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let raws = {
        let ids_json = serde_json::to_string(&ids)
            .map_err(|source| outbox_core::Error::Serialize { source })?;
        let mut stmt = tx.prepare_cached(&inner.sql.lease).map_err(err)?;
        let rows = stmt
            .query_map(
                rusqlite::named_params! {
                    ":token": lease.token.to_string(),
                    ":until": to_millis(lease.expires_at),
                    ":ids": ids_json,
                },
                read_raw,
            )
            .map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)?
    };
    let mut messages = Vec::with_capacity(raws.len());
    for raw in raws {
        let (id, key) = (raw.id(), raw.key().map(str::to_owned));
        match raw.decode("claim") {
            Ok(message) => messages.push(message),
            Err(unreadable) => {
                tracing::error!(id, error = %unreadable.report(), "unreadable outbox row made dead");
                tx.prepare_cached(&inner.sql.mark_unreadable)
                    .and_then(|mut stmt| {
                        stmt.execute(rusqlite::named_params! {
                            ":id": id,
                            ":error": unreadable.report().to_string(),
                            ":now": to_millis(now),
                        })
                    })
                    .map_err(err)?;
                if let Some(key) = key {
                    promote(tx, inner, &key, now)?;
                }
            }
        }
    }
    messages.sort_by_key(|m| m.id);
    Ok(messages)
}

/// For each keyed head that has not failed before: the ids of its run, up to the first
/// message whose not-before time has not come, at most about `budget / heads` long.
fn runs_behind(
    conn: &Connection,
    inner: &Inner,
    heads: &[Head],
    budget: usize,
    now: DateTime<Utc>,
) -> Result<Vec<Vec<i64>>> {
    let leaders: Vec<&Head> = heads
        .iter()
        .filter(|h| h.key.is_some() && h.attempts == 0)
        .collect();
    if leaders.is_empty() || budget == 0 {
        return Ok(Vec::new());
    }
    let per_head = budget.div_ceil(leaders.len());
    let mut stmt = conn
        .prepare_cached(&inner.sql.followers)
        .map_err(|e| store_error("claim", e))?;
    let mut seen: HashMap<&str, ()> = HashMap::new();
    let mut runs = Vec::with_capacity(leaders.len());
    for head in leaders {
        let Some(key) = head.key.as_deref() else {
            continue;
        };
        if seen.insert(key, ()).is_some() {
            continue;
        }
        let rows = stmt
            .query_map(
                rusqlite::named_params! {
                    ":key": key,
                    ":head": head.id,
                    ":limit": i64::try_from(per_head).unwrap_or(i64::MAX),
                },
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )
            .map_err(|e| store_error("claim", e))?;
        let mut run = Vec::new();
        for row in rows {
            let (id, not_before) = row.map_err(|e| store_error("claim", e))?;
            if not_before > to_millis(now) {
                break;
            }
            run.push(id);
        }
        runs.push(run);
    }
    Ok(runs)
}
