//! Helpers the layers share.

use std::sync::{Arc, OnceLock};

use tidemill::router::HandlerContext;
use tidemill::Message;

/// The handler and topic of a message being handled, `"unknown"` outside a router.
pub(crate) fn handler_and_topic(msg: &Message) -> (&str, &str) {
    match HandlerContext::of(msg) {
        Some(ctx) => (ctx.handler(), ctx.topic()),
        None => ("unknown", "unknown"),
    }
}

/// What a layer derives from its handler's name and topic, computed once per handler: the router
/// builds one service per handler, so the first message's handler is almost always the only one.
pub(crate) struct PerHandler<T> {
    cell: Arc<OnceLock<Entry<T>>>,
}

/// A handler's name, its topic, and the value derived from them.
type Entry<T> = (Box<str>, Box<str>, Arc<T>);

impl<T> Clone for PerHandler<T> {
    fn clone(&self) -> Self {
        Self {
            cell: self.cell.clone(),
        }
    }
}

impl<T> PerHandler<T> {
    pub(crate) fn new() -> Self {
        Self {
            cell: Arc::new(OnceLock::new()),
        }
    }

    /// The value for `handler` and `topic`, made by `make` the first time (and whenever the
    /// service is used for another handler than the first).
    pub(crate) fn get(
        &self,
        handler: &str,
        topic: &str,
        make: impl FnOnce(&str, &str) -> T,
    ) -> Arc<T> {
        if let Some((h, t, v)) = self.cell.get() {
            if &**h == handler && &**t == topic {
                return v.clone();
            }
            return Arc::new(make(handler, topic));
        }
        let v = Arc::new(make(handler, topic));
        let _ = self.cell.set((handler.into(), topic.into(), v.clone()));
        v
    }
}

/// The `messaging.system` value for a pub/sub type, from the crate it comes from.
pub(crate) fn system_of(type_name: &str) -> Option<&'static str> {
    const KNOWN: &[(&str, &str)] = &[
        ("tidemill_kafka", "kafka"),
        ("tidemill_amqp", "rabbitmq"),
        ("tidemill_nats", "nats"),
        ("tidemill_redis", "redis"),
        ("tidemill_sql", "sql"),
        ("tidemill_mqtt", "mqtt"),
        ("tidemill_http", "http"),
        ("tidemill::in_process", "in_process"),
    ];
    KNOWN
        .iter()
        .find(|(prefix, _)| type_name.contains(prefix))
        .map(|(_, system)| *system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_from_type_names() {
        assert_eq!(
            system_of("tidemill::in_process::InProcessPubSub"),
            Some("in_process")
        );
        assert_eq!(system_of("tidemill_redis::RedisSubscriber"), Some("redis"));
        assert_eq!(
            system_of("alloc::sync::Arc<dyn tidemill::pubsub::Subscriber>"),
            None
        );
    }

    #[test]
    fn per_handler_caches_the_first() {
        let cache = PerHandler::new();
        let a = cache.get("h", "t", |h, t| format!("{h}/{t}"));
        let b = cache.get("h", "t", |_, _| unreachable!());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*cache.get("g", "t", |h, t| format!("{h}/{t}")), "g/t");
    }
}
