//! Masking secrets in URLs before they reach an error, a log line or the terminal.

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &["password", "pass", "token", "secret", "sasl.password"];

/// `url` with the password of its user info and the values of secret query parameters
/// (`password`, `token`, ...) replaced by `***`.
///
/// ```
/// use tidemill_any::redact;
/// assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
/// assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
/// assert_eq!(redact("nats://h:4222?token=abc&group=g"), "nats://h:4222?token=***&group=g");
/// assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
/// ```
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.find("://") {
        Some(scheme_end) => {
            let rest = &head[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    let scheme = &head[..scheme_end];
                    let masked = match userinfo.split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        // NATS takes a user without a password as a token.
                        None if matches!(scheme, "nats" | "tls") => "***".to_owned(),
                        None => userinfo.to_owned(),
                    };
                    format!("{}://{masked}{}", &head[..scheme_end], &rest[at..])
                }
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn masks_passwords_with_at_signs_and_leaves_plain_urls() {
        assert_eq!(
            redact("postgres://app:p@ss@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact("kafka://a:9092,b:9092"), "kafka://a:9092,b:9092");
        assert_eq!(redact("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("memory://"), "memory://");
    }
}
