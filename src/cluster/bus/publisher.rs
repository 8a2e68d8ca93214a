//! The publisher thread: batches of `PUBLISH`es, the instance heartbeat and list, `/pubsub`
//! presence keys.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use tracing::{info, warn};

use super::*;

pub(super) struct Publisher {
    pub(super) client: redis::Client,
    pub(super) config: BusConfig,
    pub(super) stats: Arc<Stats>,
    /// This instance's `/pubsub` presence: room → connection id → member JSON. Written to Redis
    /// as it changes, rewritten whole after a reconnection (changes made while Redis was
    /// unreachable are not lost), and this instance's part of every presence answer.
    pub(super) presence: AHashMap<RoomId, AHashMap<Arc<str>, String>>,
}

/// Commands and queries of one batch.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) publishes: Vec<(String, Vec<u8>)>,
    pub(super) presence_changed: Vec<(RoomId, Arc<str>, bool)>,
    pub(super) queries: Vec<(RoomId, PresenceReply)>,
}

impl Publisher {
    /// Counts a batch that was published (`sent`) or lost: relay messages, game-room messages
    /// for other instances and `/pubsub` messages each in their own counters.
    pub(super) fn count(&self, batch: &[(String, Vec<u8>)], sent: bool) {
        let inbox_prefix = inbox(&self.config.prefix, "");
        let pubsub_prefix = format!("{}ps:", self.config.prefix);
        let forwards = batch.iter().filter(|(channel, _)| channel.starts_with(&inbox_prefix)).count() as u64;
        let pubsubs = batch.iter().filter(|(channel, _)| channel.starts_with(&pubsub_prefix)).count() as u64;
        let relays = (batch.len() as u64).saturating_sub(forwards).saturating_sub(pubsubs);
        let s = &self.stats;
        let (relay, forward, pubsub) =
            if sent { (&s.published, &s.forwarded, &s.pubsub_published) } else { (&s.publish_dropped, &s.forward_dropped, &s.pubsub_publish_dropped) };
        relay.fetch_add(relays, Relaxed);
        forward.fetch_add(forwards, Relaxed);
        pubsub.fetch_add(pubsubs, Relaxed);
    }

    /// Takes `message` into the batch; presence changes update the local copy at once.
    pub(super) fn take(&mut self, batch: &mut Batch, message: Outbound) {
        match message {
            Outbound::Publish(channel, payload) => batch.publishes.push((channel, payload)),
            Outbound::PresenceSet { room, conn, member } => {
                self.presence.entry(room.clone()).or_default().insert(conn.clone(), member);
                batch.presence_changed.push((room, conn, true));
            }
            Outbound::PresenceRemove { room, conn } => {
                if let Some(members) = self.presence.get_mut(&room) {
                    members.remove(&conn);
                    if members.is_empty() {
                        self.presence.remove(&room);
                    }
                }
                batch.presence_changed.push((room, conn, false));
            }
            Outbound::PresenceQuery { room, reply } => batch.queries.push((room, reply)),
        }
    }

    /// The local members of `room`.
    pub(super) fn local_members(&self, room: &RoomId) -> Vec<String> {
        self.presence.get(room).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    pub(super) fn run(mut self, rx: Receiver<Outbound>) {
        let mut conn: Option<redis::Connection> = None;
        let mut backoff = MIN_BACKOFF;
        let mut next_attempt = Instant::now();
        let mut next_heartbeat = Instant::now();
        let mut next_list = Instant::now();
        let mut next_presence_refresh = Instant::now() + PRESENCE_REFRESH;
        let mut resync_presence = false;
        let mut batch = Batch::default();
        loop {
            let wait = next_heartbeat.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            match rx.recv_timeout(wait) {
                Ok(message) => self.take(&mut batch, message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.publishes.len() < 4096 {
                match rx.try_recv() {
                    Ok(message) => self.take(&mut batch, message),
                    Err(_) => break,
                }
            }
            if conn.is_none() && Instant::now() >= next_attempt {
                match connect(&self.client) {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = MIN_BACKOFF;
                        resync_presence = true;
                        if !self.stats.publisher_up.swap(true, Relaxed) {
                            info!("relay publisher connected to redis");
                        }
                    }
                    Err(e) => {
                        if self.stats.publisher_up.swap(false, Relaxed) {
                            warn!(error = %e, "relay publisher cannot reach redis; cross-instance messages are dropped until it can");
                        }
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            let Some(c) = conn.as_mut() else {
                self.count(&batch.publishes, false);
                // Without Redis, a presence query sees this instance only.
                for (room, reply) in batch.queries.drain(..) {
                    reply(self.local_members(&room));
                }
                batch = Batch::default();
                continue;
            };
            let now = Instant::now();
            let mut pipe = redis::pipe();
            for (channel, message) in &batch.publishes {
                pipe.cmd("PUBLISH").arg(channel).arg(message.as_slice()).ignore();
            }
            let prefix = &self.config.prefix;
            let me = &self.config.instance_id;
            if resync_presence || now >= next_presence_refresh {
                next_presence_refresh = now + PRESENCE_REFRESH;
                for (room, members) in &self.presence {
                    let key = ps::presence_key(prefix, room, me);
                    if resync_presence {
                        pipe.cmd("DEL").arg(&key).ignore();
                        pipe.cmd("HSET").arg(&key).arg(members.iter().map(|(c, m)| (&**c, m.as_str())).collect::<Vec<_>>()).ignore();
                    }
                    pipe.cmd("PEXPIRE").arg(&key).arg(PRESENCE_TTL_MS).ignore();
                }
            } else {
                for (room, conn, joined) in &batch.presence_changed {
                    let key = ps::presence_key(prefix, room, me);
                    match self.presence.get(room).and_then(|m| m.get(conn)).filter(|_| *joined) {
                        Some(member) => pipe.cmd("HSET").arg(&key).arg(&**conn).arg(member).ignore().cmd("PEXPIRE").arg(&key).arg(PRESENCE_TTL_MS).ignore(),
                        None => pipe.cmd("HDEL").arg(&key).arg(&**conn).ignore(),
                    };
                }
            }
            if now >= next_heartbeat {
                next_heartbeat = now + HEARTBEAT_EVERY;
                let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                pipe.cmd("SET").arg(instance_key(prefix, me)).arg(unix_ms).arg("PX").arg(HEARTBEAT_TTL_MS).ignore();
            }
            // A batch of presence queries alone has nothing to pipeline.
            let piped = if pipe.is_empty() { Ok(()) } else { pipe.query::<()>(c) };
            let result = piped.and_then(|()| {
                if now >= next_list {
                    next_list = now + LIST_EVERY;
                    let pattern = instance_key(prefix, "*");
                    let keys: Vec<String> =
                        redis::cmd("SCAN").cursor_arg(0).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).clone().iter(c)?.collect::<Result<_, _>>()?;
                    let mut ids: Vec<String> = keys.into_iter().filter_map(|k| k.strip_prefix(&pattern[..pattern.len() - 1]).map(str::to_string)).collect();
                    ids.sort();
                    if let Ok(mut list) = self.stats.instances.lock() {
                        *list = ids;
                    }
                }
                Ok(())
            });
            let result = result.and_then(|()| self.answer_queries(c, &mut batch.queries));
            if result.is_ok() {
                resync_presence = false;
            }
            self.count(&batch.publishes, result.is_ok());
            for (room, reply) in batch.queries.drain(..) {
                reply(self.local_members(&room));
            }
            batch = Batch::default();
            match result {
                Ok(()) => {}
                Err(e) => {
                    warn!(error = %e, "relay publish failed; reconnecting");
                    self.stats.publisher_up.store(false, Relaxed);
                    conn = None;
                    next_attempt = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Answers presence queries with this instance's members and the other live instances'
    /// (one `HGETALL` each, pipelined); what it cannot answer stays in `queries`.
    pub(super) fn answer_queries(&self, c: &mut redis::Connection, queries: &mut Vec<(RoomId, PresenceReply)>) -> redis::RedisResult<()> {
        if queries.is_empty() {
            return Ok(());
        }
        let others: Vec<String> =
            self.stats.instances.lock().map(|l| l.iter().filter(|i| **i != self.config.instance_id).cloned().collect()).unwrap_or_default();
        let mut pipe = redis::pipe();
        for (room, _) in queries.iter() {
            for instance in &others {
                pipe.cmd("HVALS").arg(ps::presence_key(&self.config.prefix, room, instance));
            }
        }
        let mut remote: std::vec::IntoIter<Vec<String>> = pipe.query::<Vec<Vec<String>>>(c)?.into_iter();
        for (room, reply) in queries.drain(..) {
            let mut members = self.local_members(&room);
            for _ in &others {
                members.extend(remote.next().unwrap_or_default());
            }
            reply(members);
        }
        Ok(())
    }
}
