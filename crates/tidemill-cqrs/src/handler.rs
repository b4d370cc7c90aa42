//! [`TypedHandler`]: the async functions processors accept as handlers.

use std::future::Future;

use futures::future::BoxFuture;
use tidemill::HandlerResult;

use crate::context::Context;

/// An async function handling a value of type `T`, taking either the value alone or the value
/// and its [`Context`], and returning `HandlerResult<R>` (`R` is `()` for events and commands
/// without results).
///
/// `Args` only tells the two forms apart; it is inferred.
///
/// ```
/// use tidemill::HandlerResult;
/// use tidemill_cqrs::Context;
///
/// async fn plain(amount: u64) -> HandlerResult<()> {
///     println!("{amount}");
///     Ok(())
/// }
///
/// async fn with_context(amount: u64, ctx: Context) -> HandlerResult<String> {
///     Ok(format!("{amount} via {}", ctx.handler_name()))
/// }
///
/// fn accepts<Args, R>(_: impl tidemill_cqrs::TypedHandler<u64, Args, tidemill_cqrs::JsonMarshaler, R>) {}
/// accepts(plain);
/// accepts(with_context);
/// accepts(|amount: u64| async move { HandlerResult::Ok(amount * 2) });
/// ```
pub trait TypedHandler<T, Args, M, R>: Clone + Send + Sync + 'static {
    /// Handles `value`.
    fn call(&self, value: T, ctx: Context<M>) -> BoxFuture<'static, HandlerResult<R>>;
}

impl<F, Fut, T, M, R> TypedHandler<T, (T,), M, R> for F
where
    F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult<R>> + Send + 'static,
{
    fn call(&self, value: T, _ctx: Context<M>) -> BoxFuture<'static, HandlerResult<R>> {
        Box::pin(self(value))
    }
}

impl<F, Fut, T, M, R> TypedHandler<T, (T, Context<M>), M, R> for F
where
    F: Fn(T, Context<M>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult<R>> + Send + 'static,
{
    fn call(&self, value: T, ctx: Context<M>) -> BoxFuture<'static, HandlerResult<R>> {
        Box::pin(self(value, ctx))
    }
}
