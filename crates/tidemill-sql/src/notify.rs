//! Wake-ups: subscribers wait on a [`Notify`] per topic, woken by publishers of the same process
//! at once and, on PostgreSQL, by `LISTEN`/`NOTIFY` from any process. Polling with backoff is
//! the fallback, so a lost wake-up only costs latency.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

type Registry = Mutex<HashMap<String, Vec<Weak<Notify>>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn key(prefix: &str, topic: &str) -> String {
    format!("{prefix}\0{topic}")
}

/// A wake-up for one subscription of `topic` in the tables of `prefix`.
pub(crate) fn register(prefix: &str, topic: &str) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let mut reg = registry().lock();
    let list = reg.entry(key(prefix, topic)).or_default();
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(&notify));
    notify
}

/// Wakes every subscription of `topic`. Spurious wake-ups (another database with the same
/// prefix) only cost one read.
pub(crate) fn wake(prefix: &str, topic: &str) {
    let reg = registry().lock();
    if let Some(list) = reg.get(&key(prefix, topic)) {
        for n in list.iter().filter_map(Weak::upgrade) {
            // notify_one keeps a permit when the task is busy, so no wake-up is lost.
            n.notify_one();
        }
    }
}

/// Wakes every subscription in the tables of `prefix`, after notifications may have been missed.
#[cfg(feature = "postgres")]
pub(crate) fn wake_all(prefix: &str) {
    let start = format!("{prefix}\0");
    let reg = registry().lock();
    for (k, list) in reg.iter() {
        if k.starts_with(&start) {
            for n in list.iter().filter_map(Weak::upgrade) {
                n.notify_one();
            }
        }
    }
}

/// Listens on the tables' channel and turns notifications into wake-ups until `stop`.
#[cfg(feature = "postgres")]
pub(crate) async fn pg_listen(
    pool: sqlx::PgPool,
    tables: crate::schema::Tables,
    stop: tokio_util::sync::CancellationToken,
) {
    use std::time::Duration;
    let prefix = tables.prefix().to_owned();
    let channel = tables.notify_channel();
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            l = connected => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("LISTEN failed, polling meanwhile: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        };
        backoff = Duration::from_millis(100);
        wake_all(&prefix);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => wake(&prefix, n.payload()),
                    // The connection dropped; the next call reconnects. Notifications may
                    // have been lost meanwhile.
                    Ok(None) => wake_all(&prefix),
                    Err(e) => {
                        tracing::debug!("LISTEN connection lost: {e}");
                        wake_all(&prefix);
                        break;
                    }
                }
            }
        }
    }
}

/// One `LISTEN` connection shared by the subscribers of a [`SqlPubSub`](crate::SqlPubSub),
/// running while at least one of them has subscribed and is not closed.
#[derive(Debug, Default)]
pub(crate) struct SharedListener {
    state: Mutex<ListenerState>,
}

#[derive(Debug, Default)]
struct ListenerState {
    users: usize,
    stop: Option<tokio_util::sync::CancellationToken>,
}

impl SharedListener {
    /// Keeps the listener running (starting it if needed) until the guard is dropped.
    pub(crate) fn guard(
        self: &Arc<Self>,
        pool: &crate::SqlPool,
        tables: &crate::Tables,
    ) -> ListenerGuard {
        let mut st = self.state.lock();
        st.users += 1;
        if st.stop.is_none() {
            // Irrefutable when PostgreSQL is the only backend compiled in.
            #[cfg(feature = "postgres")]
            #[allow(irrefutable_let_patterns)]
            if let crate::SqlPool::Postgres(pool) = pool {
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(pg_listen(pool.clone(), tables.clone(), stop.clone()));
                st.stop = Some(stop);
            }
            let _ = (pool, tables);
        }
        ListenerGuard(self.clone())
    }
}

/// One subscription's claim on the [`SharedListener`].
pub(crate) struct ListenerGuard(Arc<SharedListener>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.users = st.users.saturating_sub(1);
        if st.users == 0 {
            if let Some(stop) = st.stop.take() {
                stop.cancel();
            }
        }
    }
}
