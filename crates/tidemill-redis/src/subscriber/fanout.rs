//! Reading without a consumer group: every subscription gets every entry.

use redis::RedisError;
use tidemill::Result;

use crate::codec::{self};

use super::reader::{parse_error, Reader};

impl Reader {
    pub(super) async fn fanout_round(&mut self) -> Result<(), RedisError> {
        let subscriber = self.subscriber.clone();
        let config = &subscriber.config;
        let (mut conn, client_id) = self.connection().await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(config.batch_size)
            .arg("BLOCK")
            .arg(config.block_time.as_millis() as u64)
            .arg("STREAMS")
            .arg(&*self.key)
            .arg(&self.position);
        let reply = self.blocking(&cmd, &mut conn, client_id).await?;
        let (mut entries, mut deleted) = (Vec::new(), Vec::new());
        codec::read_reply(reply, &mut entries, &mut deleted).map_err(parse_error)?;
        if let Some(last) = entries.last() {
            self.position = last.id.to_string();
        }
        self.state.push(entries);
        Ok(())
    }
}
