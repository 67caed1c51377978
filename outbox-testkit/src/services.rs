//! Tests that need a server: where to find it, and what to do when it is not there.
//!
//! A test reads its server's URL from an environment variable with the local address as
//! the default. When the server cannot be reached, [`unavailable`] fails the test if
//! `OUTBOX_REQUIRE_SERVICES=1` (as CI sets) and otherwise prints one `skipped:` line.

use std::fmt::Display;

/// The environment variable that turns an unreachable service into a failure.
pub const REQUIRE_SERVICES: &str = "OUTBOX_REQUIRE_SERVICES";

/// The value of `var`, or `default` when it is unset or empty.
pub fn url_from_env(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Whether unreachable services fail tests (`OUTBOX_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES).is_ok_and(|v| v == "1")
}

/// Reports that `service` at `url` cannot be reached: panics when services are required,
/// else prints `skipped: no <service> at <url> (<error>)` and returns, so the caller can
/// return `None` from its harness constructor.
///
/// # Panics
/// When `OUTBOX_REQUIRE_SERVICES=1`.
pub fn unavailable(service: &str, url: &str, error: &dyn Display) {
    let url = outbox_core::redact_url(url);
    if services_required() {
        panic!(
            "no {service} at {url}: {error} (OUTBOX_REQUIRE_SERVICES=1, so this fails; start the service or point the URL variable at one)"
        );
    }
    println!(
        "skipped: no {service} at {url} ({error}); set {REQUIRE_SERVICES}=1 to make this a failure"
    );
}
