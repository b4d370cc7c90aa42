//! Plugins: code that runs when the router starts, such as [`SignalsPlugin`].

use super::Router;
use crate::error::BoxError;

/// Runs when the router starts, before its handlers subscribe. A plugin that wants to act later
/// (on a signal, a timer, a health check) spawns a task holding a clone of the router.
///
/// ```
/// use tidemill::router::{Plugin, Router};
///
/// struct Announce;
/// impl Plugin for Announce {
///     fn name(&self) -> &str {
///         "announce"
///     }
///     fn on_start(&self, router: &Router) -> Result<(), tidemill::BoxError> {
///         println!("starting {} handlers", router.handler_names().len());
///         Ok(())
///     }
/// }
/// Router::new().add_plugin(Announce);
/// ```
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name, for errors and logs.
    fn name(&self) -> &str;

    /// Called when the router starts; an error stops the router from running.
    fn on_start(&self, router: &Router) -> Result<(), BoxError>;
}

/// Closes the router on SIGINT (Ctrl-C) or SIGTERM.
///
/// ```
/// let router = tidemill::Router::new();
/// router.add_plugin(tidemill::router::SignalsPlugin);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SignalsPlugin;

impl Plugin for SignalsPlugin {
    fn name(&self) -> &str {
        "signals"
    }

    fn on_start(&self, router: &Router) -> Result<(), BoxError> {
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let router = router.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let signal = tokio::select! {
                r = tokio::signal::ctrl_c() => r.map(|_| "SIGINT"),
                _ = term.recv() => Ok("SIGTERM"),
                _ = router.inner.shutdown.cancelled() => return,
            };
            #[cfg(not(unix))]
            let signal = tokio::select! {
                r = tokio::signal::ctrl_c() => r.map(|_| "Ctrl-C"),
                _ = router.inner.shutdown.cancelled() => return,
            };
            match signal {
                Ok(signal) => tracing::info!(signal, "closing the router"),
                Err(error) => tracing::error!(%error, "cannot listen for signals; closing"),
            }
            if let Err(error) = router.close().await {
                tracing::error!(%error, "closing the router failed");
            }
        });
        Ok(())
    }
}
