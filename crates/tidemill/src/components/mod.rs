//! Components: the patterns built from publishers, subscribers and handlers.
//!
//! - [`forwarder`]: publish through one topic (an outbox), deliver to the destination later.
//! - [`fan`]: fan-in (many topics into one) and fan-out (one subscription to many local ones).
//! - [`delay`]: deliver a message no sooner than a duration or a time.
//! - [`requeuer`]: move messages from a poison topic back to where they came from, later.

pub mod delay;
pub mod fan;
pub mod forwarder;
pub mod requeuer;
