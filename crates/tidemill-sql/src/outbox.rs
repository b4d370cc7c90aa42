//! The transactional outbox: publishing inside the caller's own transaction.
//!
//! The messages are rows of the caller's transaction: they become visible to subscribers if and
//! only if it commits. A [`SqlSubscriber`](crate::SqlSubscriber) of the same tables then reads
//! them; to move them to another broker, run the core's forwarder (or a router handler) from
//! that subscriber to the broker's publisher, acking only after the broker took each message.

use tidemill::components::forwarder::{Envelope, ForwarderConfig};
use tidemill::{Error, Message, Result};

use crate::pool::private::ConnRef;
use crate::pool::SqlConn;
use crate::row::{encode, now_ms};
use crate::schema::{validate_topic, Tables};

/// Publishes inside transactions the caller owns.
///
/// The tables must exist beforehand ([`SqlPubSub::initialize`](crate::SqlPubSub::initialize) or
/// migrations from [`schema_sql`](crate::schema_sql)). On MariaDB/MySQL pass a transaction, not a
/// bare connection in autocommit mode: the topic's sequence row stays locked until commit, which
/// is what keeps readers from skipping rows (concurrent transactions publishing to one topic
/// wait for each other from their first publish to their commit).
///
/// ```
/// use tidemill::Message;
/// use tidemill_sql::{SqlConfig, SqlPool, SqlPubSub};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = SqlPubSub::connect(SqlConfig::from_url("sqlite::memory:")?).await?;
/// pubsub.initialize().await?;
/// let SqlPool::Sqlite(pool) = pubsub.pool() else { unreachable!() };
///
/// let mut tx = pool.begin().await?;
/// sqlx::query("CREATE TABLE orders (id TEXT)").execute(&mut *tx).await?;
/// sqlx::query("INSERT INTO orders VALUES ('o-1')").execute(&mut *tx).await?;
/// pubsub.outbox().publish_in_tx(&mut tx, "orders.placed", vec![Message::new("o-1")]).await?;
/// tx.commit().await?; // the order and its event, together
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    tables: Tables,
    forwarder: Option<ForwarderConfig>,
}

impl Outbox {
    /// An outbox writing to the default tables (`tidemill_messages`, ...).
    pub fn new() -> Self {
        Self::default()
    }

    /// An outbox writing to `tables`.
    pub fn with_tables(tables: Tables) -> Self {
        Self {
            tables,
            forwarder: None,
        }
    }

    /// Wraps every message in the core forwarder's [`Envelope`] for its destination topic and
    /// writes it to the forwarder topic of `config`, so that one
    /// [`Forwarder`](tidemill::components::forwarder::Forwarder) reading that topic delivers
    /// every destination.
    ///
    /// ```
    /// use tidemill::components::forwarder::ForwarderConfig;
    /// let outbox = tidemill_sql::Outbox::new().forwarding(ForwarderConfig::new("outbox"));
    /// # drop(outbox);
    /// ```
    pub fn forwarding(mut self, config: ForwarderConfig) -> Self {
        self.forwarder = Some(config);
        self
    }

    /// Inserts `messages` for `topic` through `conn`, typically `&mut tx` of an open
    /// `sqlx::Transaction`. Nothing is visible until that transaction commits; a rollback
    /// publishes nothing.
    ///
    /// On MariaDB/MySQL, transactions that publish to a topic never used before can deadlock
    /// while they create its sequence row (error 1213, which MariaDB asks to retry): create the
    /// topic first with [`SubscribeInitializer::initialize_topic`](tidemill::SubscribeInitializer). With [`forwarding`](Self::forwarding), `topic` is the destination and
    /// the rows go to the forwarder topic.
    pub async fn publish_in_tx(
        &self,
        conn: &mut impl SqlConn,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<()> {
        validate_topic(topic)?;
        if messages.is_empty() {
            return Ok(());
        }
        let (topic, messages) = match &self.forwarder {
            None => (topic, messages),
            Some(config) => {
                let wrapped = messages
                    .into_iter()
                    .map(|m| Envelope::new(topic, m).into_message())
                    .collect();
                let forwarder_topic = config.forwarder_topic();
                validate_topic(forwarder_topic)?;
                (forwarder_topic, wrapped)
            }
        };
        let first_id = messages[0].shared_id();
        let now = now_ms();
        let rows = encode(topic, messages, now)?;
        let res = match conn.conn_ref() {
            #[cfg(feature = "postgres")]
            ConnRef::Postgres(c) => {
                crate::pg::insert(c, &self.tables, topic, &rows, now, true).await
            }
            #[cfg(feature = "mysql")]
            ConnRef::MySql(c) => crate::mysql::insert(c, &self.tables, topic, &rows, now).await,
            #[cfg(feature = "sqlite")]
            ConnRef::Sqlite(c) => crate::sqlite::insert(c, &self.tables, topic, &rows, now).await,
            ConnRef::Never(_) => unreachable!(),
        };
        res.map_err(|e| Error::publish(topic, &*first_id, crate::SqlError::from(e)))
    }
}
