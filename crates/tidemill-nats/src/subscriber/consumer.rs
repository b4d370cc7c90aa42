//! The pull consumer of a subscription: found or created, durable per group.

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::ErrorCode;
use tidemill::Result;

use super::Inner;
use crate::error::NatsError;
use crate::topology::{consumer_config, encode_name};

impl Inner {
    /// The pull consumer for `topic`, found or created.
    pub(super) async fn consumer(
        &self,
        topic: &str,
        resume_from: Option<u64>,
    ) -> Result<(String, Consumer<pull::Config>), NatsError> {
        let stream = self.streams.stream_for(topic).await?;
        let group = self.config.group.as_deref();
        let deliver = self.config.effective_deliver_from();
        let Some(group) = group else {
            let mut config = consumer_config(&self.config, topic, None, deliver);
            if let Some(sequence) = resume_from {
                // The ephemeral consumer was lost (server restart): continue where it was.
                config.deliver_policy =
                    async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: sequence,
                    };
            }
            let consumer = self
                .js
                .create_consumer_on_stream(config, stream.as_str())
                .await
                .map_err(|err| self.consumer_error(topic, err))?;
            self.ephemeral
                .lock()
                .push((stream.clone(), consumer.cached_info().name.clone()));
            return Ok((stream, consumer));
        };
        let durable = encode_name(group);
        match self
            .js
            .get_consumer_from_stream::<pull::Config, _, _>(&durable, stream.as_str())
            .await
        {
            Ok(consumer) => {
                // Server 2.9 would silently accept a "create" that changes an existing durable,
                // so its configuration is checked here instead.
                let found = &consumer.cached_info().config.filter_subject;
                if found != topic {
                    return Err(NatsError::ConsumerMismatch {
                        stream,
                        consumer: durable,
                        expected: topic.into(),
                        found: found.clone(),
                    });
                }
                Ok((stream, consumer))
            }
            Err(err) if is_not_found(&err) => {
                let config = consumer_config(&self.config, topic, Some(&durable), deliver);
                let consumer = self
                    .js
                    .create_consumer_on_stream(config, stream.as_str())
                    .await
                    .map_err(|err| self.consumer_error(topic, err))?;
                tracing::debug!(stream = %stream, consumer = %durable, "created durable consumer");
                Ok((stream, consumer))
            }
            Err(err) => Err(self.consumer_error(topic, err)),
        }
    }

    pub(super) fn consumer_error(&self, topic: &str, err: impl std::fmt::Display) -> NatsError {
        let text = err.to_string();
        if text.contains("stream not found") {
            self.streams.forget(topic);
        }
        NatsError::Client(text)
    }
}

fn is_not_found(err: &async_nats::jetstream::stream::ConsumerError) -> bool {
    matches!(err.kind(), ConsumerErrorKind::JetStream(e) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}
