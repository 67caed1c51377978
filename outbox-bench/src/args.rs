//! Command-line options shared by the benchmarks, and their small helpers.

use std::collections::HashMap;

use outbox::NewMessage;

/// `--flag value` pairs after the benchmark's name.
pub(crate) struct Args {
    values: HashMap<String, String>,
}

impl Args {
    pub(crate) fn parse(raw: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut raw = raw.peekable();
        while let Some(flag) = raw.next() {
            if !flag.starts_with("--") {
                return Err(format!("expected an option like --messages, got {flag:?}"));
            }
            let value = raw.next().ok_or_else(|| format!("{flag} needs a value"))?;
            values.insert(flag, value);
        }
        Ok(Args { values })
    }

    /// A whole number option.
    pub(crate) fn one(&mut self, flag: &str, default: usize) -> Result<usize, String> {
        Ok(self.list(flag, &[default])?[0])
    }

    /// A comma-separated list of whole numbers.
    pub(crate) fn list(&mut self, flag: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        let Some(value) = self.values.remove(flag) else {
            return Ok(default.to_vec());
        };
        let list: Vec<usize> = value
            .split(',')
            .map(|v| {
                v.trim().parse().map_err(|_| {
                    format!("{flag} takes whole numbers separated by commas, got {value:?}")
                })
            })
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(format!("{flag} needs at least one value"));
        }
        Ok(list)
    }

    /// A text option.
    pub(crate) fn text(&mut self, flag: &str, default: &str) -> String {
        self.values
            .remove(flag)
            .unwrap_or_else(|| default.to_owned())
    }

    /// Fails on options nobody read (typos).
    pub(crate) fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            Some(flag) => Err(format!(
                "unknown option {flag}; see outbox-bench/src/main.rs"
            )),
            None => Ok(()),
        }
    }
}

/// Message number `n` of a benchmark: keyed over `keys` keys, unkeyed when `keys` is 0.
pub(crate) fn message(topic: &str, body: &[u8], n: usize, keys: usize) -> NewMessage {
    let message = NewMessage::new(topic, body.to_vec());
    if keys == 0 {
        message
    } else {
        message.with_key(format!("key-{}", n % keys))
    }
}

pub(crate) fn keys_label(keys: usize) -> String {
    if keys == 0 {
        "none".to_owned()
    } else {
        keys.to_string()
    }
}

/// Peak resident memory of this process (Linux), in MiB.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The `q`-quantile of sorted `values`.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: the smallest value with at least q of the values at or below it.
    let rank = sorted.len();
    let position = (0..rank)
        .find(|i| (*i + 1) as f64 >= q * rank as f64)
        .unwrap_or(rank - 1);
    sorted[position]
}
