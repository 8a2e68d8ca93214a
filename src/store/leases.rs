//! The room leases' own Redis connection, on a thread of its own: taking and renewing leases,
//! and the lookups that decide where a room lives (lease holder, instance heartbeat).
//!
//! Separate from the snapshot writer on purpose: a renewal must never wait behind a full
//! queue of snapshots or a stalled write batch, or an instance would give up its rooms exactly
//! when it is busiest. Each command is answered on its own channel.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

use tracing::warn;

use super::answer::{Reply, StoreError};

/// Takes a room's lease (or confirms it); returns the holder after the call.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return holder";

/// Renews each lease still held (or taken again if Redis lost it): 1, or 0 if another holds it.
const RENEW: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]); out[i] = 1
  elseif not holder then redis.call('SET', key, ARGV[1], 'PX', ARGV[2]); out[i] = 1
  else out[i] = 0 end
end
return out";

/// Lease commands waiting for the thread (acquisitions are one per request being placed,
/// renewals one batch per shard in flight).
pub(super) const QUEUE: usize = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) enum LeaseCommand {
    /// `GET key` (a lease holder, an instance heartbeat).
    Get {
        key: String,
        reply: Reply<Option<String>>,
    },
    Acquire {
        key: String,
        reply: Reply<Option<String>>,
    },
    Renew {
        keys: Vec<String>,
        reply: Reply<Vec<bool>>,
    },
}

/// Starts the thread; its commands act for instance `instance` with leases of `ttl`.
pub(super) fn start(client: redis::Client, instance: String, ttl: Duration) -> std::io::Result<SyncSender<LeaseCommand>> {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let thread = LeaseThread { client, instance, ttl_ms, conn: None };
    std::thread::Builder::new().name("redis-lease".into()).spawn(move || thread.run(rx))?;
    Ok(tx)
}

struct LeaseThread {
    client: redis::Client,
    instance: String,
    ttl_ms: u64,
    /// The connection and the SHA1s of the two scripts loaded on it.
    conn: Option<(redis::Connection, String, String)>,
}

impl LeaseThread {
    fn run(mut self, rx: Receiver<LeaseCommand>) {
        while let Ok(command) = rx.recv() {
            match command {
                LeaseCommand::Get { key, reply } => {
                    let _ = reply.send(self.query(|_, _| redis::cmd("GET").arg(&key).clone()));
                }
                LeaseCommand::Acquire { key, reply } => {
                    let (instance, ttl) = (self.instance.clone(), self.ttl_ms);
                    let _ = reply.send(self.query(|acquire, _| evalsha(acquire, &[key]).arg(&instance).arg(ttl).clone()));
                }
                LeaseCommand::Renew { keys, reply } => {
                    let (instance, ttl) = (self.instance.clone(), self.ttl_ms);
                    let held = self.query::<Vec<i64>>(|_, renew| evalsha(renew, &keys).arg(&instance).arg(ttl).clone());
                    let _ = reply.send(held.map(|held| held.into_iter().map(|h| h == 1).collect()));
                }
            }
        }
    }

    /// Runs the command `make` builds (from the scripts' SHA1s), connecting first if needed;
    /// a failure drops the connection (the next command reconnects).
    fn query<T: redis::FromRedisValue>(&mut self, make: impl FnOnce(&str, &str) -> redis::Cmd) -> Result<T, StoreError> {
        if self.conn.is_none() {
            self.conn = self.connect().map_err(|e| StoreError::Unavailable(e.to_string())).map(Some)?;
        }
        let Some((conn, acquire, renew)) = self.conn.as_mut() else { return Err(StoreError::Unavailable("not connected".into())) };
        let result = make(acquire, renew).query::<T>(conn);
        result.map_err(|e| {
            warn!(error = %e, "lease command failed; reconnecting");
            self.conn = None;
            StoreError::Unavailable(e.to_string())
        })
    }

    fn connect(&self) -> redis::RedisResult<(redis::Connection, String, String)> {
        let mut conn = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let acquire = super::redis::load_script(&mut conn, ACQUIRE)?;
        let renew = super::redis::load_script(&mut conn, RENEW)?;
        Ok((conn, acquire, renew))
    }
}

/// `EVALSHA` of a loaded script with `keys`; the caller adds the arguments.
pub(super) fn evalsha(sha: &str, keys: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(keys.len()).arg(keys);
    cmd
}
