//! Topic functions: which topic a command or event of a given name goes to.
//!
//! A bus and the processors that read what it sends must use the same function. The defaults
//! are [`prefixed("events.")`](prefixed) for events and [`prefixed("commands.")`](prefixed)
//! for commands; [`single`] puts every name on one topic, which keeps events of different types
//! in order for an [`EventGroupProcessor`](crate::EventGroupProcessor).

use std::sync::Arc;

/// Maps a name to a topic.
///
/// ```
/// use std::sync::Arc;
/// use tidemill_cqrs::topic::TopicFn;
///
/// let by_name: TopicFn = Arc::new(|name: &str| format!("app.{}", name.to_lowercase()));
/// assert_eq!(by_name("OrderPlaced"), "app.orderplaced");
/// ```
pub type TopicFn = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The name with `prefix` in front: `prefixed("commands.")` sends `SendEmail` to
/// `commands.SendEmail`.
///
/// ```
/// let topic = tidemill_cqrs::topic::prefixed("commands.");
/// assert_eq!(topic("SendEmail"), "commands.SendEmail");
/// ```
pub fn prefixed(prefix: impl Into<String>) -> TopicFn {
    let prefix = prefix.into();
    Arc::new(move |name| format!("{prefix}{name}"))
}

/// One topic for every name.
///
/// ```
/// let topic = tidemill_cqrs::topic::single("events");
/// assert_eq!(topic("EmployeeLeft"), "events");
/// assert_eq!(topic("EmployeeTransferred"), "events");
/// ```
pub fn single(topic: impl Into<String>) -> TopicFn {
    let topic = topic.into();
    Arc::new(move |_| topic.clone())
}

/// The name itself is the topic.
///
/// ```
/// let topic = tidemill_cqrs::topic::by_name();
/// assert_eq!(topic("EmployeeLeft"), "EmployeeLeft");
/// ```
pub fn by_name() -> TopicFn {
    Arc::new(str::to_owned)
}
