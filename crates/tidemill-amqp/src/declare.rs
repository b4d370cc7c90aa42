//! Declaring exchanges, queues and bindings, the same way on first use and after a reconnect.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;

use crate::topology::Topology;

/// One queue to declare.
#[derive(Clone, Debug)]
pub(crate) struct QueueSpec {
    pub(crate) name: String,
    pub(crate) durable: bool,
    pub(crate) exclusive: bool,
    pub(crate) auto_delete: bool,
}

impl QueueSpec {
    /// The queue of a work-queue topology, or of a consumer group.
    pub(crate) fn shared(topology: &Topology, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            durable: topology.is_durable(),
            exclusive: false,
            auto_delete: !topology.is_durable(),
        }
    }
}

pub(crate) async fn declare_exchange(
    channel: &Channel,
    exchange: &str,
    topology: &Topology,
) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            topology.exchange_kind_value(),
            ExchangeDeclareOptions {
                durable: topology.is_durable(),
                ..ExchangeDeclareOptions::default()
            },
            topology.exchange_arguments().clone(),
        )
        .await
}

pub(crate) async fn declare_queue(
    channel: &Channel,
    spec: &QueueSpec,
    topology: &Topology,
) -> lapin::Result<()> {
    declare_queue_with(channel, spec, topology.queue_arguments().clone()).await
}

pub(crate) async fn declare_queue_with(
    channel: &Channel,
    spec: &QueueSpec,
    arguments: FieldTable,
) -> lapin::Result<()> {
    channel
        .queue_declare(
            spec.name.as_str().into(),
            QueueDeclareOptions {
                passive: false,
                durable: spec.durable,
                exclusive: spec.exclusive,
                auto_delete: spec.auto_delete,
                nowait: false,
            },
            arguments,
        )
        .await
        .map(drop)
}

pub(crate) async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    binding_key: &str,
) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            binding_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// The queue that holds messages nacked with `delay` and, when it has passed, dead-letters them
/// back into `queue` through the default exchange. One queue per delay keeps expiry in order
/// (RabbitMQ only expires messages at the head of a queue).
pub(crate) async fn declare_delay_queue(
    channel: &Channel,
    queue: &str,
    durable: bool,
    delay_ms: u64,
) -> lapin::Result<String> {
    let name = format!("{queue}.delay.{delay_ms}");
    let mut args = FieldTable::default();
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(delay_ms as i64),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(queue)),
    );
    // Deleted once unused for a minute past its TTL; it is declared again before every use, so
    // a message in it always expires first.
    args.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(delay_ms as i64 + 60_000),
    );
    let spec = QueueSpec {
        name: name.clone(),
        durable,
        exclusive: false,
        auto_delete: false,
    };
    declare_queue_with(channel, &spec, args).await?;
    Ok(name)
}
