//! What one subscription declares and consumes, and opening its channel and consumer.

use std::sync::Arc;

use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tidemill::{Error, Result};

use crate::connection::{connect, connect_error};
use crate::declare::{bind, declare_exchange, declare_queue, QueueSpec};
use crate::error::AmqpError;

use super::Inner;

/// What one subscription declares and consumes.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) topic: Arc<str>,
    pub(super) exchange: String,
    pub(super) binding_key: String,
    pub(super) queue: QueueSpec,
    pub(super) dead_letter: Option<QueueSpec>,
}

impl Inner {
    pub(super) async fn connection(&self) -> lapin::Result<Arc<Connection>> {
        let mut current = self.conn.lock().await;
        if let Some(conn) = current.as_ref() {
            if conn.status().connected() {
                return Ok(conn.clone());
            }
        }
        let conn = Arc::new(connect(&self.config, "subscriber").await?);
        *current = Some(conn.clone());
        Ok(conn)
    }

    pub(super) fn plan(&self, topic: &str) -> Plan {
        let topology = &self.config.topology;
        let queue = if topology.shared_queue() {
            QueueSpec::shared(
                topology,
                &topology.queue_for(topic, self.config.group.as_deref().unwrap_or("")),
            )
        } else if let Some(group) = &self.config.group {
            QueueSpec::shared(topology, &topology.queue_for(topic, group))
        } else {
            // Named by us rather than the broker, so that it can be declared again under the
            // same name after a reconnect.
            let mut prefix: String = topic.chars().take(180).collect();
            prefix.retain(|c| c != '*' && c != '#');
            QueueSpec {
                name: format!("tidemill.{}.{}", uuid::Uuid::new_v4().simple(), prefix),
                durable: false,
                exclusive: true,
                auto_delete: true,
            }
        };
        let dead_letter = self.config.max_deliveries.map(|_| QueueSpec {
            name: self.config.dead_letter_queue_for(&queue.name),
            durable: queue.durable,
            exclusive: false,
            auto_delete: false,
        });
        Plan {
            topic: topic.into(),
            exchange: topology.exchange_for(topic),
            binding_key: topology.binding_key_for(topic),
            queue,
            dead_letter,
        }
    }

    pub(super) async fn declare(&self, channel: &Channel, plan: &Plan) -> lapin::Result<()> {
        let topology = &self.config.topology;
        if !plan.exchange.is_empty() {
            declare_exchange(channel, &plan.exchange, topology).await?;
        }
        declare_queue(channel, &plan.queue, topology).await?;
        if !plan.exchange.is_empty() {
            bind(channel, &plan.queue.name, &plan.exchange, &plan.binding_key).await?;
        }
        if let Some(dlq) = &plan.dead_letter {
            declare_queue(channel, dlq, topology).await?;
        }
        Ok(())
    }

    /// Opens a channel, declares the plan and starts consuming.
    pub(super) async fn open(&self, plan: &Plan) -> Result<(Channel, Consumer)> {
        let conn = self
            .connection()
            .await
            .map_err(|e| connect_error(&self.config, e))?;
        let failed = |e: lapin::Error| Error::subscribe(&*plan.topic, AmqpError::Client(e));
        let channel = conn.create_channel().await.map_err(failed)?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(failed)?;
        // Confirms let nacks that move a message (to a delay or dead-letter queue) ack the
        // original only once the copy is safe.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed)?;
        self.declare(&channel, plan).await.map_err(failed)?;
        let consumer = channel
            .basic_consume(
                plan.queue.name.as_str().into(),
                format!("tidemill-{}", uuid::Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed)?;
        Ok((channel, consumer))
    }
}
