//! The subscriber thread: the rooms with a local member and this instance's inbox, each
//! message handed to its shard.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use tracing::{info, warn};

use super::*;

pub(super) struct Subscriber {
    pub(super) client: redis::Client,
    pub(super) config: BusConfig,
    pub(super) stats: Arc<Stats>,
    pub(super) to_shards: Arc<Vec<flume::Sender<Incoming>>>,
}

impl Subscriber {
    pub(super) fn run(self, control: Receiver<SubscriptionChange>) {
        let mut wanted: BTreeSet<String> = BTreeSet::from([inbox(&self.config.prefix, &self.config.instance_id)]);
        let mut backoff = MIN_BACKOFF;
        loop {
            // Changes made while disconnected only update what is wanted.
            if !self.apply_changes(&control, &mut wanted, None) {
                return;
            }
            let mut conn = match connect(&self.client) {
                Ok(conn) => conn,
                Err(e) => {
                    if self.stats.subscriber_up.swap(false, Relaxed) {
                        warn!(error = %e, "relay subscriber cannot reach redis; retrying");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = MIN_BACKOFF;
            if let Err(e) = self.session(&mut conn, &control, &mut wanted) {
                self.stats.subscriber_up.store(false, Relaxed);
                match e {
                    SessionEnd::Closed => return,
                    SessionEnd::Redis(e) => warn!(error = %e, "relay subscription lost; resubscribing"),
                }
            }
        }
    }

    /// One connection's life: subscribe to what is wanted, then relay messages until an error.
    pub(super) fn session(
        &self,
        conn: &mut redis::Connection,
        control: &Receiver<SubscriptionChange>,
        wanted: &mut BTreeSet<String>,
    ) -> Result<(), SessionEnd> {
        let mut pubsub = conn.as_pubsub();
        pubsub.set_read_timeout(Some(SUBSCRIBER_POLL)).map_err(SessionEnd::Redis)?;
        for channel in wanted.iter() {
            pubsub.subscribe(channel).map_err(SessionEnd::Redis)?;
        }
        if !self.stats.subscriber_up.swap(true, Relaxed) {
            info!(rooms = wanted.len() - 1, "relay subscriber connected to redis");
        }
        let my_inbox = inbox(&self.config.prefix, &self.config.instance_id);
        loop {
            if !self.apply_changes(control, wanted, Some(&mut pubsub)) {
                return Err(SessionEnd::Closed);
            }
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(SessionEnd::Redis(e)),
            };
            let channel = message.get_channel_name();
            if channel == my_inbox {
                let Some(envelope) = forward::decode(message.get_payload_bytes()) else { continue };
                self.stats.forward_received.fetch_add(1, Relaxed);
                // The owner's shard for the room; on the edge, the shard that made the id.
                let shard = envelope.message.room().map_or(forward::shard_of(envelope.message.id()), |room| room.owner_shard(self.to_shards.len()));
                let incoming = Incoming::Forward { from: envelope.from, message: envelope.message };
                if self.to_shards.get(shard).is_none_or(|tx| tx.try_send(incoming).is_err()) {
                    self.stats.forward_dropped.fetch_add(1, Relaxed);
                }
                continue;
            }
            if let Some(topic) = ps::topic_of(&self.config.prefix, channel) {
                self.pubsub_message(topic, channel, message.get_payload_bytes());
                continue;
            }
            let Some(room) = channel.strip_prefix(&format!("{}relay:", self.config.prefix)).and_then(RoomId::parse) else { continue };
            let Some(publication) = envelope::decode(message.get_payload_bytes()) else { continue };
            if publication.instance == self.config.instance_id {
                continue;
            }
            self.stats.received.fetch_add(1, Relaxed);
            let shard = room.owner_shard(self.to_shards.len());
            let incoming = Incoming::Relay { room, kind: publication.kind, payload: publication.payload.to_vec() };
            if self.to_shards.get(shard).is_none_or(|tx| tx.try_send(incoming).is_err()) {
                self.stats.received_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Hands another instance's `/pubsub` publication to the owner shard of its room or user.
    pub(super) fn pubsub_message(&self, topic: Topic, channel: &str, payload: &[u8]) {
        let Some((from, cast)) = ps::decode(&self.config.prefix, channel, payload) else { return };
        if from == self.config.instance_id {
            return;
        }
        self.stats.pubsub_received.fetch_add(1, Relaxed);
        let shard = match &topic {
            Topic::Room(room) => room.owner_shard(self.to_shards.len()),
            Topic::User(user) => crate::rooms::owner_shard_of(user, self.to_shards.len()),
        };
        if self.to_shards.get(shard).is_none_or(|tx| tx.try_send(Incoming::PubSub(cast)).is_err()) {
            self.stats.pubsub_received_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Applies pending subscription changes to `wanted` (and to the live subscription). False
    /// once every shard has gone.
    pub(super) fn apply_changes(
        &self,
        control: &Receiver<SubscriptionChange>,
        wanted: &mut BTreeSet<String>,
        mut pubsub: Option<&mut redis::PubSub<'_>>,
    ) -> bool {
        loop {
            let change = match control.try_recv() {
                Ok(change) => change,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            };
            let result = match change {
                SubscriptionChange::Subscribe(room) => {
                    let ch = channel(&self.config.prefix, room.as_str());
                    let r = pubsub.as_mut().map_or(Ok(()), |p| p.subscribe(&ch));
                    wanted.insert(ch);
                    r
                }
                SubscriptionChange::Unsubscribe(room) => {
                    let ch = channel(&self.config.prefix, room.as_str());
                    let r = pubsub.as_mut().map_or(Ok(()), |p| p.unsubscribe(&ch));
                    wanted.remove(&ch);
                    r
                }
                SubscriptionChange::SubscribePubSub(topic) => {
                    let ch = ps::channel(&self.config.prefix, &topic);
                    let r = pubsub.as_mut().map_or(Ok(()), |p| p.subscribe(&ch));
                    wanted.insert(ch);
                    r
                }
                SubscriptionChange::UnsubscribePubSub(topic) => {
                    let ch = ps::channel(&self.config.prefix, &topic);
                    let r = pubsub.as_mut().map_or(Ok(()), |p| p.unsubscribe(&ch));
                    wanted.remove(&ch);
                    r
                }
            };
            if result.is_err() {
                // The session notices the broken connection on its next read and resubscribes.
                return true;
            }
        }
    }
}

pub(super) enum SessionEnd {
    Closed,
    Redis(redis::RedisError),
}
