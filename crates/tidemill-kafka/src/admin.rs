//! Topic creation through the admin API, for brokers that do not create topics on first use.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tidemill::Error;

use crate::config::KafkaConfig;
use crate::error::KafkaAdapterError;

/// Creates topics once per process and remembers which exist.
pub(crate) struct Topics {
    admin: Arc<AdminClient<DefaultClientContext>>,
    known: Mutex<HashSet<String>>,
    config: KafkaConfig,
}

impl Topics {
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self, Error> {
        let admin = config
            .client()
            .create()
            .map_err(|e| config.connect_error(KafkaAdapterError::from(e)))?;
        Ok(Self {
            admin: Arc::new(admin),
            known: Mutex::new(HashSet::new()),
            config: config.clone(),
        })
    }

    /// Makes sure `topic` exists (when topic creation is on).
    pub(crate) async fn ensure(&self, topic: &str) -> Result<(), Error> {
        if !self.config.create_topics || self.known.lock().contains(topic) {
            return Ok(());
        }
        let new = NewTopic::new(
            topic,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication),
        );
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| {
                Error::subscribe(
                    topic,
                    KafkaAdapterError::Broker(format!("creating the topic failed: {e}")),
                )
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Error::subscribe(
                        topic,
                        format!("creating the topic failed: {code}"),
                    ))
                }
            }
        }
        self.wait_for_partitions(topic).await?;
        self.known.lock().insert(topic.to_owned());
        Ok(())
    }

    /// Waits until the brokers' metadata shows the topic with its partitions: a consumer that
    /// subscribes before that would not see the partitions until its next metadata refresh.
    async fn wait_for_partitions(&self, topic: &str) -> Result<(), Error> {
        let admin = self.admin.clone();
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let ready = admin
                    .inner()
                    .fetch_metadata(Some(&name), Duration::from_secs(2))
                    .map(|m| {
                        m.topics().iter().any(|t| {
                            t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                        })
                    })
                    .unwrap_or(false);
                if ready {
                    return Ok(());
                }
                if std::time::Instant::now() > deadline {
                    return Err(Error::subscribe(
                        &name,
                        "the new topic did not appear in the brokers' metadata",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .map_err(|e| Error::subscribe(topic, e))?
    }
}
