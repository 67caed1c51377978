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
    // Server lists ("nats://a:p@h1,nats://b:q@h2") are redacted entry by entry.
    url.split(',')
        .map(redact_one)
        .map(|part| redact_query(&part))
        .collect::<Vec<_>>()
        .join(",")
}

/// Masks `password=`/`pass=`/`token=` parameters in a query string or a `key=value` list.
fn redact_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = ["password=", "pass=", "token=", "secret="]
        .iter()
        .filter_map(|k| rest.to_ascii_lowercase().find(k).map(|i| (i, k.len())))
        .min()
    {
        let (start, len) = found;
        let value_start = start + len;
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let value_end = rest[value_start..]
            .find(['&', ' ', ';'])
            .map_or(rest.len(), |i| value_start + i);
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    // The password may hold '/', '?' or '#' unencoded: the authority ends at the last '@'
    // before the path, if there is one at all.
    let authority_end = match url[scheme_end..].rfind('@') {
        Some(at) => url[scheme_end + at..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| scheme_end + at + i),
        None => url[scheme_end..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| scheme_end + i),
    };
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
            (
                "postgres://h/db?user=u&password=hunter2&x=1",
                "postgres://h/db?user=u&password=***&x=1",
            ),
            (
                "nats://a:p1@h1:4222,nats://b:p2@h2:4222",
                "nats://a:***@h1:4222,nats://b:***@h2:4222",
            ),
            ("postgres://u:pa/ss#w@h/db", "postgres://u:***@h/db"),
            (
                "host=db user=u password=hunter2 dbname=x",
                "host=db user=u password=*** dbname=x",
            ),
        ] {
            assert_eq!(redact_url(raw), clean);
        }
    }
}
