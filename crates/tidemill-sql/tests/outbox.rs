//! Publishing inside the caller's transaction: rollback publishes nothing, commit makes the
//! messages visible together with the business row.

mod common;

use common::{next, nothing, unique, Db};
use tidemill::{Message, Subscriber};
use tidemill_sql::{Backend, SubscriberOverrides};

per_backend!(rollback_publishes_nothing_and_commit_publishes_all);

async fn rollback_publishes_nothing_and_commit_publishes_all(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("outbox");
    let table = "tmsql_outbox_orders";
    let order_rolled = unique("o");
    let order_kept = unique("o");
    on_pool!(ps.pool(), |pool| {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id VARCHAR(64) NOT NULL)"
        ))
        .execute(pool)
        .await
        .unwrap();
    });
    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(unique("g")))
        .unwrap();
    let mut events = sub.subscribe(&topic).await.unwrap();
    let outbox = ps.outbox();

    on_pool!(ps.pool(), |pool| {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&format!(
            "INSERT INTO {table} (id) VALUES ('{order_rolled}')"
        ))
        .execute(&mut *tx)
        .await
        .unwrap();
        outbox
            .publish_in_tx(
                &mut tx,
                &topic,
                vec![Message::with_id(order_rolled.clone(), "placed")],
            )
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    });
    nothing(&mut events, 500).await;

    on_pool!(ps.pool(), |pool| {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(&format!("INSERT INTO {table} (id) VALUES ('{order_kept}')"))
            .execute(&mut *tx)
            .await
            .unwrap();
        outbox
            .publish_in_tx(
                &mut tx,
                &topic,
                vec![
                    Message::with_id(order_kept.clone(), "placed"),
                    Message::with_id(format!("{order_kept}-2"), "paid"),
                ],
            )
            .await
            .unwrap();
        // Not visible before commit.
        nothing(&mut events, 300).await;
        tx.commit().await.unwrap();
    });
    let d = next(&mut events, 10).await;
    assert_eq!(d.message().id(), order_kept);
    d.ack();
    let d = next(&mut events, 10).await;
    assert_eq!(d.message().id(), format!("{order_kept}-2"));
    d.ack();
    nothing(&mut events, 300).await;

    let rows: Vec<(String,)> = on_pool!(ps.pool(), |pool| {
        sqlx::query_as(&format!(
            "SELECT id FROM {table} WHERE id IN ('{order_rolled}', '{order_kept}')"
        ))
        .fetch_all(pool)
        .await
        .unwrap()
    });
    assert_eq!(rows, vec![(order_kept.clone(),)]);
    sub.close().await.unwrap();
}
