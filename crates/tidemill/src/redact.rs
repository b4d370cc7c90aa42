//! [`redact_url`]: a connection URL fit for errors and logs.

/// `url` with any password replaced by `***` and any query parameter that may hold a secret
/// (`password`, `token`, `secret`, `key`, `jwt`, `nkey`, `creds` in its name) masked, for errors,
/// logs and output. Every adapter uses it, so a secret shows nowhere.
///
/// ```
/// use tidemill::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
/// assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
/// assert_eq!(redact_url("nats://127.0.0.1:4222?token=abc&x=1"), "nats://127.0.0.1:4222?token=***&x=1");
/// assert_eq!(redact_url("nats://s3cret-token@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
/// assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
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
                    let user = userinfo.split(':').next().unwrap_or_default();
                    let scheme = &head[..scheme_end];
                    let redacted = if userinfo.contains(':') {
                        format!("{user}:***")
                    } else if matches!(scheme, "nats" | "tls") {
                        // NATS takes a user without a password as a token.
                        "***".to_owned()
                    } else {
                        user.to_owned()
                    };
                    format!("{}://{}{}", &head[..scheme_end], redacted, &rest[at..])
                }
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret(name) => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password", "pass", "token", "secret", "key", "jwt", "nkey", "creds",
    ]
    .iter()
    .any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn user_without_password_is_kept() {
        assert_eq!(redact_url("redis://app@h:6379"), "redis://app@h:6379");
    }

    #[test]
    fn at_in_path_is_not_userinfo() {
        assert_eq!(redact_url("sqlite:///tmp/a@b.db"), "sqlite:///tmp/a@b.db");
    }

    #[test]
    fn every_secret_parameter_is_masked() {
        assert_eq!(
            redact_url("kafka://h:9092?sasl_password=x&group=g&api_key=y"),
            "kafka://h:9092?sasl_password=***&group=g&api_key=***"
        );
    }
}
