//! The outbox end to end: a service writes a business row and publishes an event in one
//! transaction (wrapped for the core's forwarder); the core's `Forwarder` reads the SQL
//! forwarder topic and republishes to another pub/sub (the in-process one), acking each
//! envelope only after the destination took it. Killing the forwarder between its publish and
//! its ack and starting it again delivers the event again: at least once, nothing lost.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{next, nothing, unique, Db};
use tidemill::components::forwarder::{Forwarder, ForwarderConfig};
use tidemill::{InProcessPubSub, Message, Publisher, Subscriber};
use tidemill_sql::{Backend, SqlPubSub, SubscriberOverrides};
use tokio::sync::Notify;

per_backend!(business_row_and_event_commit_together_and_survive_a_forwarder_kill);

/// The destination, able to freeze forever right after a publish went through, the way a
/// process killed before its ack would leave things.
#[derive(Clone)]
struct Destination {
    inner: InProcessPubSub,
    freeze: Arc<AtomicBool>,
    published: Arc<Notify>,
}

#[async_trait]
impl Publisher for Destination {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> tidemill::Result<()> {
        self.inner.publish(topic, messages).await?;
        if self.freeze.load(Ordering::SeqCst) {
            self.published.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn close(&self) -> tidemill::Result<()> {
        Ok(())
    }
}

fn start(
    ps: &SqlPubSub,
    group: &str,
    dest: &Destination,
    config: &ForwarderConfig,
) -> (Forwarder, tokio::task::JoinHandle<()>) {
    let forwarder = Forwarder::new(
        ps.subscriber_with(SubscriberOverrides::new().group(group))
            .unwrap(),
        dest.clone(),
        config.clone(),
    );
    let task = tokio::spawn({
        let forwarder = forwarder.clone();
        async move {
            forwarder.run().await.unwrap();
        }
    });
    (forwarder, task)
}

async fn business_row_and_event_commit_together_and_survive_a_forwarder_kill(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let config = ForwarderConfig::new(unique("outbox"));
    let outbox = ps.outbox().forwarding(config.clone());
    let group = unique("forwarder");
    let table = "tmsql_e2e_orders";
    on_pool!(ps.pool(), |pool| {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id VARCHAR(64) NOT NULL)"
        ))
        .execute(pool)
        .await
        .unwrap();
    });
    let dest = Destination {
        inner: InProcessPubSub::new(),
        freeze: Arc::new(AtomicBool::new(false)),
        published: Arc::new(Notify::new()),
    };
    let mut orders = dest.inner.subscribe("orders").await.unwrap();
    let place = |id: String, commit: bool| {
        let (ps, outbox) = (ps.clone(), outbox.clone());
        async move {
            on_pool!(ps.pool(), |pool| {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(&format!("INSERT INTO {table} (id) VALUES ('{id}')"))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                outbox
                    .publish_in_tx(
                        &mut tx,
                        "orders",
                        vec![Message::with_id(id.clone(), "placed")],
                    )
                    .await
                    .unwrap();
                if commit {
                    tx.commit().await.unwrap();
                } else {
                    tx.rollback().await.unwrap();
                }
            })
        }
    };

    let (forwarder, task) = start(&ps, &group, &dest, &config);
    forwarder.running().await;

    // Rollback: neither the order nor its event.
    let rolled = unique("o");
    place(rolled.clone(), false).await;
    // Commit: the event reaches the destination through the forwarder.
    let kept = unique("o");
    place(kept.clone(), true).await;
    let d = next(&mut orders, 10).await;
    assert_eq!(
        d.message().id(),
        kept,
        "only the committed event is forwarded"
    );
    assert_eq!(d.message().payload().as_ref(), b"placed");
    d.ack();
    nothing(&mut orders, 300).await;

    // Kill the forwarder after its publish, before its ack.
    dest.freeze.store(true, Ordering::SeqCst);
    let crashed = unique("o");
    place(crashed.clone(), true).await;
    tokio::time::timeout(Duration::from_secs(10), dest.published.notified())
        .await
        .expect("the forwarder did not publish");
    task.abort();
    let _ = task.await;
    drop(forwarder);
    let d = next(&mut orders, 10).await;
    assert_eq!(d.message().id(), crashed);
    d.ack();

    // Restarted, it delivers the event again: at least once, nothing lost.
    dest.freeze.store(false, Ordering::SeqCst);
    let (forwarder, task) = start(&ps, &group, &dest, &config);
    let d = next(&mut orders, 15).await;
    assert_eq!(d.message().id(), crashed);
    d.ack();
    nothing(&mut orders, 300).await;
    forwarder.close().await;
    task.await.unwrap();

    let rows: Vec<(String,)> = on_pool!(ps.pool(), |pool| {
        sqlx::query_as(&format!(
            "SELECT id FROM {table} WHERE id IN ('{rolled}', '{kept}', '{crashed}') ORDER BY id"
        ))
        .fetch_all(pool)
        .await
        .unwrap()
    });
    let mut want = vec![(kept,), (crashed,)];
    want.sort();
    assert_eq!(rows, want);
}
