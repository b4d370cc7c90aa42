//! Where a subscription starts: its consumer group, or the newest entry.

use redis::aio::ConnectionManager;
use redis::{RedisError, Value};
use tidemill::Result;

use crate::codec::{self};
use crate::config::StartFrom;

/// `XGROUP CREATE key group <start> MKSTREAM`; an existing group is left as it is.
pub(super) async fn ensure_group(
    conn: &mut (impl redis::aio::ConnectionLike + Send),
    key: &str,
    group: &str,
    start: StartFrom,
) -> Result<(), RedisError> {
    let start = match start {
        StartFrom::Beginning => "0",
        StartFrom::Latest => "$",
    };
    let created: Result<Value, RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// The id of the newest entry, where a subscription from now starts (`$` would be resolved
/// only at the first read and miss what is published in between).
pub(super) async fn last_id(conn: &mut ConnectionManager, key: &str) -> Result<String, RedisError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    let (mut entries, mut deleted) = (Vec::new(), Vec::new());
    codec::read_reply(Value::Array(vec![reply]), &mut entries, &mut deleted)
        .map_err(|e| RedisError::from((redis::ErrorKind::Parse, "XREVRANGE", e.to_string())))?;
    Ok(entries
        .first()
        .map(|e| e.id.to_string())
        .unwrap_or_else(|| "0-0".to_owned()))
}
