//! Keeping secrets out of logs and `Debug` output.

/// `url` with any password replaced by `***`, for logs, errors and `Debug` output.
///
/// ```
/// assert_eq!(
///     outbox_core::redact_url("postgres://app:s3cret@db:5432/shop"),
///     "postgres://app:***@db:5432/shop"
/// );
/// assert_eq!(outbox_core::redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let masked = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        "***".to_owned()
    };
    format!(
        "{}{}{}",
        &url[..scheme_end],
        masked,
        &url[scheme_end + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive() {
        for (raw, clean) in [
            ("postgres://u:p@h/db", "postgres://u:***@h/db"),
            (
                "mysql://root:@127.0.0.1:3306/test",
                "mysql://root:***@127.0.0.1:3306/test",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            ("nats://token@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
            (
                "postgres://u:p%40ss@h/db?sslmode=require",
                "postgres://u:***@h/db?sslmode=require",
            ),
            ("postgres://h/db?user=u", "postgres://h/db?user=u"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(raw), clean);
        }
    }
}
