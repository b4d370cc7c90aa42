//! Where subscriptions start: every `StartPosition` without a group and for a new group, an
//! existing group resuming whatever its start position says, and the settings refused because
//! they could not take effect, on every database.

mod common;

use std::time::{Duration, SystemTime};

use common::{next, nothing, unique, Db, PREFIX};
use tidemill::{Error, Message, Publisher, StartPosition, Subscriber, Subscription};
use tidemill_sql::{Backend, ConsumeMode, SqlConfig, SqlPubSub, SubscriberOverrides};

per_backend!(
    without_a_group_the_default_is_the_end,
    without_a_group_end_sees_only_new_rows,
    without_a_group_beginning_replays_the_rows_in_the_table,
    without_a_group_offset_starts_at_the_row,
    without_a_group_time_starts_at_the_first_row_that_recent,
    time_past_every_row_starts_at_the_end,
    a_new_group_starts_at_the_beginning_by_default,
    a_new_group_starts_at_the_end,
    a_new_group_starts_at_an_offset,
    a_new_group_starts_at_a_time,
    an_existing_group_resumes_whatever_the_start_position,
    queue_mode_refuses_a_group_and_start_positions_it_cannot_honour,
    an_offset_past_the_largest_position_is_refused,
    the_config_group_and_start_position_are_used_by_subscriber,
);

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

async fn publish(ps: &SqlPubSub, topic: &str, ids: &[String]) {
    let msgs = ids
        .iter()
        .map(|id| Message::with_id(id.as_str(), "x"))
        .collect();
    ps.publisher().publish(topic, msgs).await.unwrap();
}

/// Receives exactly `expected`, in order, acking each, and then nothing more.
async fn expect(s: &mut Subscription, expected: &[String]) {
    for id in expected {
        let d = next(s, 10).await;
        assert_eq!(d.message().id(), id.as_str());
        d.ack();
    }
    nothing(s, 300).await;
}

/// The row position of message `id` of `topic`.
async fn position_of(ps: &SqlPubSub, backend: Backend, topic: &str, id: &str) -> u64 {
    let sql = match backend {
        Backend::Postgres => {
            format!("SELECT position FROM {PREFIX}messages WHERE topic = $1 AND message_id = $2")
        }
        _ => format!("SELECT position FROM {PREFIX}messages WHERE topic = ? AND message_id = ?"),
    };
    let (pos,): (i64,) = on_pool!(ps.pool(), |p| sqlx::query_as(&sql)
        .bind(topic)
        .bind(id)
        .fetch_one(p)
        .await
        .unwrap());
    pos as u64
}

fn from(start: StartPosition) -> SubscriberOverrides {
    SubscriberOverrides::new().start_position(start)
}

fn group_from(group: &str, start: StartPosition) -> SubscriberOverrides {
    SubscriberOverrides::new()
        .group(group)
        .start_position(start)
}

async fn without_a_group_the_default_is_the_end(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-default");
    publish(&ps, &topic, &ids("old", 0..3)).await;
    let sub = ps.subscriber().unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    publish(&ps, &topic, &ids("new", 0..2)).await;
    expect(&mut s, &ids("new", 0..2)).await;
    sub.close().await.unwrap();
}

async fn without_a_group_end_sees_only_new_rows(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-end");
    publish(&ps, &topic, &ids("old", 0..3)).await;
    let sub = ps.subscriber_with(from(StartPosition::End)).unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    publish(&ps, &topic, &ids("new", 0..2)).await;
    expect(&mut s, &ids("new", 0..2)).await;
    sub.close().await.unwrap();
}

async fn without_a_group_beginning_replays_the_rows_in_the_table(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-begin");
    publish(&ps, &topic, &ids("old", 0..3)).await;
    let sub = ps.subscriber_with(from(StartPosition::Beginning)).unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    expect(&mut s, &ids("old", 0..3)).await;
    publish(&ps, &topic, &ids("new", 0..1)).await;
    expect(&mut s, &ids("new", 0..1)).await;
    sub.close().await.unwrap();
}

async fn without_a_group_offset_starts_at_the_row(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-offset");
    let old = ids("m", 0..5);
    publish(&ps, &topic, &old).await;
    let at = position_of(&ps, backend, &topic, "m2").await;
    let sub = ps.subscriber_with(from(StartPosition::Offset(at))).unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    expect(&mut s, &old[2..]).await;
    sub.close().await.unwrap();
}

/// Publishes `old`, then `new` strictly later (by the millisecond clock of `created_at`), and
/// returns a time between the two.
async fn publish_around_a_time(
    ps: &SqlPubSub,
    topic: &str,
    old: &[String],
    new: &[String],
) -> SystemTime {
    publish(ps, topic, old).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(ps, topic, new).await;
    t
}

async fn without_a_group_time_starts_at_the_first_row_that_recent(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-time");
    let (old, new) = (ids("old", 0..3), ids("new", 0..2));
    let t = publish_around_a_time(&ps, &topic, &old, &new).await;
    let sub = ps.subscriber_with(from(StartPosition::Time(t))).unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    expect(&mut s, &new).await;
    sub.close().await.unwrap();
}

async fn time_past_every_row_starts_at_the_end(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-late");
    publish(&ps, &topic, &ids("old", 0..3)).await;
    let later = SystemTime::now() + Duration::from_secs(3600);
    let sub = ps
        .subscriber_with(from(StartPosition::Time(later)))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    publish(&ps, &topic, &ids("new", 0..1)).await;
    expect(&mut s, &ids("new", 0..1)).await;
    sub.close().await.unwrap();
}

async fn a_new_group_starts_at_the_beginning_by_default(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-g-default");
    publish(&ps, &topic, &ids("old", 0..3)).await;
    for overrides in [
        SubscriberOverrides::new().group(unique("g")),
        group_from(&unique("g"), StartPosition::Beginning),
    ] {
        let sub = ps.subscriber_with(overrides).unwrap();
        let mut s = sub.subscribe(&topic).await.unwrap();
        expect(&mut s, &ids("old", 0..3)).await;
        sub.close().await.unwrap();
    }
}

async fn a_new_group_starts_at_the_end(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-g-end");
    publish(&ps, &topic, &ids("old", 0..3)).await;
    let group = unique("g");
    let sub = ps
        .subscriber_with(group_from(&group, StartPosition::End))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    publish(&ps, &topic, &ids("new", 0..2)).await;
    expect(&mut s, &ids("new", 0..2)).await;
    sub.close().await.unwrap();
    // The group's offset was written where it started: a later member does not replay.
    let again = ps
        .subscriber_with(SubscriberOverrides::new().group(&group))
        .unwrap();
    let mut s = again.subscribe(&topic).await.unwrap();
    nothing(&mut s, 300).await;
    again.close().await.unwrap();
}

async fn a_new_group_starts_at_an_offset(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-g-offset");
    let old = ids("m", 0..5);
    publish(&ps, &topic, &old).await;
    let at = position_of(&ps, backend, &topic, "m3").await;
    let sub = ps
        .subscriber_with(group_from(&unique("g"), StartPosition::Offset(at)))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    expect(&mut s, &old[3..]).await;
    sub.close().await.unwrap();
}

async fn a_new_group_starts_at_a_time(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-g-time");
    let (old, new) = (ids("old", 0..3), ids("new", 0..2));
    let t = publish_around_a_time(&ps, &topic, &old, &new).await;
    let sub = ps
        .subscriber_with(group_from(&unique("g"), StartPosition::Time(t)))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    expect(&mut s, &new).await;
    sub.close().await.unwrap();
}

async fn an_existing_group_resumes_whatever_the_start_position(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("st-resume");
    let group = unique("g");
    let all = ids("m", 0..6);
    publish(&ps, &topic, &all[..2]).await;
    let first = ps
        .subscriber_with(SubscriberOverrides::new().group(&group))
        .unwrap();
    let mut s = first.subscribe(&topic).await.unwrap();
    expect(&mut s, &all[..2]).await;
    first.close().await.unwrap();

    let first_position = position_of(&ps, backend, &topic, "m0").await;
    let later = SystemTime::now() + Duration::from_secs(3600);
    // Each start position would deliver something else (End: nothing, the others: m0 on, or
    // the end); the group resumes after what it acked.
    for (i, start) in [
        StartPosition::End,
        StartPosition::Beginning,
        StartPosition::Offset(first_position),
        StartPosition::Time(later),
    ]
    .into_iter()
    .enumerate()
    {
        publish(&ps, &topic, &all[2 + i..3 + i]).await;
        let sub = ps.subscriber_with(group_from(&group, start)).unwrap();
        let mut s = sub.subscribe(&topic).await.unwrap();
        expect(&mut s, &all[2 + i..3 + i]).await;
        sub.close().await.unwrap();
    }
}

async fn queue_mode_refuses_a_group_and_start_positions_it_cannot_honour(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub_with(|c| c.consume_mode(ConsumeMode::Queue)).await;
    let refused = |o: SubscriberOverrides| match ps.subscriber_with(o) {
        Err(Error::Config(reason)) => reason,
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("expected a configuration error"),
    };
    assert!(refused(SubscriberOverrides::new().group("g")).contains("queue mode"));
    for start in [
        StartPosition::End,
        StartPosition::Offset(1),
        StartPosition::Time(SystemTime::now()),
    ] {
        assert!(refused(from(start)).contains(start.kind()), "{start:?}");
    }
    // The group in the configuration is refused the same way.
    let grouped = db
        .pubsub_with(|c| c.consume_mode(ConsumeMode::Queue).group("g"))
        .await;
    assert!(matches!(grouped.subscriber(), Err(Error::Config(_))));
    // What queue mode does is start at the beginning: every row still in the table.
    let topic = unique("st-queue");
    publish(&ps, &topic, &ids("old", 0..2)).await;
    let sub = ps.subscriber_with(from(StartPosition::Beginning)).unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    expect(&mut s, &ids("old", 0..2)).await;
    sub.close().await.unwrap();
}

async fn an_offset_past_the_largest_position_is_refused(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    for o in [
        from(StartPosition::Offset(u64::MAX)),
        group_from("g", StartPosition::Offset(u64::MAX)),
    ] {
        assert!(matches!(ps.subscriber_with(o), Err(Error::Config(_))));
    }
}

async fn the_config_group_and_start_position_are_used_by_subscriber(backend: Backend) {
    let db = Db::new(backend);
    let topic = unique("st-config");
    let group = unique("g");
    let ps = db
        .pubsub_with(|c| c.group(&group).start_position(StartPosition::End))
        .await;
    publish(&ps, &topic, &ids("old", 0..2)).await;
    let sub = ps.subscriber().unwrap();
    assert_eq!(Subscriber::group(&sub), Some(group.as_str()));
    let mut s = sub.subscribe(&topic).await.unwrap();
    publish(&ps, &topic, &ids("new", 0..1)).await;
    expect(&mut s, &ids("new", 0..1)).await;
    sub.close().await.unwrap();
    // Overridden to no group: the configured start position still applies.
    let solo = ps
        .subscriber_with(SubscriberOverrides::new().no_group())
        .unwrap();
    assert_eq!(Subscriber::group(&solo), None);
}

/// The URL's options, read by `from_url` and kept from the database client, on a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_options_reach_the_subscriber_and_not_the_database() {
    let group = unique("g");
    for base in [common::pg_url(), common::mysql_url()] {
        let config = SqlConfig::from_url(format!(
            "{base}?group={group}&start_position=end&max_in_flight=4&nack_delay=250&close_timeout=5000"
        ))
        .unwrap()
        .table_prefix(PREFIX)
        .unwrap();
        assert_eq!(config.url(), Some(base.as_str()));
        assert_eq!(config.group_name(), Some(group.as_str()));
        assert_eq!(config.start(), Some(StartPosition::End));
        let ps = SqlPubSub::connect(config).await.unwrap();
        ps.initialize().await.unwrap();
        let sub = ps.subscriber().unwrap();
        assert_eq!(sub.max_in_flight(), Some(4));
        sub.close().await.unwrap();
        ps.pool().close().await;
    }
    // `new` hands the URL over as it is: options only `from_url` reads are refused on connect.
    let err = SqlPubSub::connect(SqlConfig::new(format!("{}?group=g", common::pg_url())))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}
