//! Masking secrets in URLs before they reach an error, a log line or the terminal.

/// `url` with the password of its user info (a NATS token user too) and the values of secret
/// query parameters (`password`, `token`, ...) replaced by `***`: the core's
/// [`tidemill::redact_url`], which every adapter uses.
///
/// ```
/// use tidemill_any::redact;
/// assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
/// assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
/// assert_eq!(redact("nats://h:4222?token=abc&group=g"), "nats://h:4222?token=***&group=g");
/// assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
/// ```
pub fn redact(url: &str) -> String {
    tidemill::redact_url(url)
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
