//! A small HTTP endpoint serving a Prometheus registry at `/metrics`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The content type of the exposition: OpenMetrics text, which Prometheus scrapes natively.
///
/// ```
/// assert!(tidemill_otel::endpoint::CONTENT_TYPE_OPENMETRICS.starts_with("application/openmetrics-text"));
/// ```
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry in the text exposition format.
///
/// ```
/// let registry = prometheus_client::registry::Registry::default();
/// assert_eq!(tidemill_otel::endpoint::encode(&registry), "# EOF\n");
/// ```
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// An axum router answering `GET /metrics` with `registry`, to merge into an application's own
/// router or serve alone.
///
/// ```
/// use std::sync::Arc;
/// let metrics = tidemill_otel::Metrics::new();
/// let app = tidemill_otel::endpoint::router(metrics.registry().unwrap().clone());
/// # drop(app);
/// ```
pub fn router(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)],
                    encode(&registry),
                )
            }
        }),
    )
}

/// A running `/metrics` server; see [`MetricsServer::bind`].
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and serves `registry` at `/metrics` on a task of its own.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let metrics = tidemill_otel::Metrics::new();
    /// let server = tidemill_otel::endpoint::MetricsServer::bind(
    ///     "127.0.0.1:0",
    ///     metrics.registry().unwrap().clone(),
    /// )
    /// .await?;
    /// println!("scrape http://{}/metrics", server.local_addr());
    /// server.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn bind(addr: impl ToSocketAddrs, registry: Arc<Registry>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(registry);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let registry = std::sync::Arc::new(prometheus_client::registry::Registry::default());
    /// let server = tidemill_otel::endpoint::MetricsServer::bind("127.0.0.1:0", registry).await?;
    /// assert!(server.local_addr().ip().is_loopback());
    /// # server.shutdown().await }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and waits for the requests being answered.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let registry = std::sync::Arc::new(prometheus_client::registry::Registry::default());
    /// let server = tidemill_otel::endpoint::MetricsServer::bind("127.0.0.1:0", registry).await?;
    /// server.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(io::Error::other(join)),
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
