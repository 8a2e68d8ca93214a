//! `/pubsub` across instances, sans-IO: the Redis channels and keys, and the publications on
//! them.
//!
//! Layout (every name under `--redis-prefix`):
//! - `ps:r:{room}`: a channel per room. Each publish to the room, and each `user_joined` /
//!   `user_left`, is one `PUBLISH` of the frame the origin encoded; instances with a member in
//!   the room are subscribed (first local member in, last out).
//! - `ps:u:{user}`: a channel per user, for direct messages and disconnects; instances serving
//!   a connection of the user are subscribed.
//! - `ps:p:{room}:{instance}`: a hash per room and instance, connection id → member JSON, the
//!   instance's share of the room's presence. Its TTL is refreshed while the instance lives, so
//!   a dead instance's members disappear; presence reads the hashes of the live instances.
//!
//! So a publish or direct costs one Redis command whatever the number of members, a join or
//! leave three (`HSET`/`HDEL`, `PEXPIRE`, `PUBLISH`), a presence query one `HGETALL` per live
//! instance.

use std::sync::Arc;

use crate::rooms::RoomId;

/// What a presence query answers with: the member objects (JSON) of every live instance.
pub type PresenceReply = Box<dyn FnOnce(Vec<String>) + Send>;

/// Where a shard's `/pubsub` meets the other instances: the seed's adapter. [`Memory`] is the
/// one instance alone; the Redis adapter is the bus's handle ([`super::BusHandle`]). Every method
/// only queues work: a shard never waits on an adapter.
pub trait Adapter: Send + Sync {
    /// Whether other instances share the rooms and users (the shards then emit casts and
    /// presence changes at all).
    fn is_shared(&self) -> bool;
    /// Hands `cast` to the instances of its room or user.
    fn cast(&self, cast: &Cast);
    /// Start hearing what other instances send `topic`.
    fn subscribe(&self, topic: Topic);
    /// Stop hearing it.
    fn unsubscribe(&self, topic: Topic);
    /// Connection `conn` of this instance is in `room`, shown as `member` (JSON).
    fn presence_set(&self, room: RoomId, conn: Arc<str>, member: String);
    /// It left.
    fn presence_remove(&self, room: RoomId, conn: Arc<str>);
    /// `room`'s members on every instance, to `reply`; when the adapter cannot ask, `reply`
    /// comes back for the caller to answer with this instance's members.
    fn presence(&self, room: RoomId, reply: PresenceReply) -> Result<(), PresenceReply>;
    /// Hands `frame` to `/pubsub` connection `key` (serial `serial`) of shard `shard` of this
    /// instance, from the adapter's own thread (a presence reply); false if it cannot.
    fn deliver(&self, shard: usize, key: usize, serial: u64, frame: bytes::Bytes) -> bool;
}

/// One instance alone: nothing to share.
#[derive(Debug, Default)]
pub struct Memory;

impl Adapter for Memory {
    fn is_shared(&self) -> bool {
        false
    }
    fn cast(&self, _: &Cast) {}
    fn subscribe(&self, _: Topic) {}
    fn unsubscribe(&self, _: Topic) {}
    fn presence_set(&self, _: RoomId, _: Arc<str>, _: String) {}
    fn presence_remove(&self, _: RoomId, _: Arc<str>) {}
    fn presence(&self, _: RoomId, reply: PresenceReply) -> Result<(), PresenceReply> {
        Err(reply)
    }
    fn deliver(&self, _: usize, _: usize, _: u64, _: bytes::Bytes) -> bool {
        false
    }
}

/// What a channel carries to a room's or a user's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cast {
    /// An encoded WebSocket frame for every member of a room.
    Room {
        /// The room.
        room: RoomId,
        /// The frame, as the origin encoded it.
        frame: Vec<u8>,
    },
    /// An encoded WebSocket frame for every connection of a user.
    User {
        /// The user.
        user: Arc<str>,
        /// The frame.
        frame: Vec<u8>,
    },
    /// Close every connection of a user with `code`.
    Disconnect {
        /// The user.
        user: Arc<str>,
        /// The close code.
        code: u16,
    },
    /// An operator kicked `user` from `room` (and, with `ban`, keeps it out).
    Kick {
        /// The room.
        room: RoomId,
        /// The user.
        user: Arc<str>,
        /// Keep it out.
        ban: bool,
    },
}

/// A subscription an instance needs while it serves a room's member or a user's connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// A room's publications.
    Room(RoomId),
    /// A user's directs and disconnects.
    User(Arc<str>),
}

const TAG_FRAME: u8 = 0;
const TAG_DISCONNECT: u8 = 1;
const TAG_KICK: u8 = 2;

/// The channel of `topic`.
pub fn channel(prefix: &str, topic: &Topic) -> String {
    match topic {
        Topic::Room(room) => format!("{prefix}ps:r:{}", room.as_str()),
        Topic::User(user) => format!("{prefix}ps:u:{user}"),
    }
}

/// The topic a channel name is for (`None` for other channels).
pub fn topic_of(prefix: &str, channel: &str) -> Option<Topic> {
    let rest = channel.strip_prefix(prefix)?;
    if let Some(room) = rest.strip_prefix("ps:r:") {
        return RoomId::parse(room).map(Topic::Room);
    }
    rest.strip_prefix("ps:u:").filter(|u| !u.is_empty()).map(|user| Topic::User(user.into()))
}

/// The presence hash of `room` on `instance`.
pub fn presence_key(prefix: &str, room: &RoomId, instance: &str) -> String {
    format!("{prefix}ps:p:{}:{instance}", room.as_str())
}

/// `cast` as `(channel, payload)`, from `instance`.
pub fn encode(prefix: &str, instance: &str, cast: &Cast) -> (String, Vec<u8>) {
    let kick: Vec<u8>;
    let (topic, tag, body): (Topic, u8, &[u8]) = match cast {
        Cast::Room { room, frame } => (Topic::Room(room.clone()), TAG_FRAME, frame),
        Cast::User { user, frame } => (Topic::User(user.clone()), TAG_FRAME, frame),
        Cast::Disconnect { user, code } => (Topic::User(user.clone()), TAG_DISCONNECT, &code.to_be_bytes()),
        Cast::Kick { room, user, ban } => {
            kick = [&[u8::from(*ban)][..], user.as_bytes()].concat();
            (Topic::Room(room.clone()), TAG_KICK, &kick)
        }
    };
    // Instance ids are at most 128 bytes (checked at start-up), so the length fits a byte.
    let id = instance.as_bytes().get(..instance.len().min(255)).unwrap_or_default();
    let mut payload = Vec::with_capacity(2 + id.len() + body.len());
    payload.push(id.len() as u8);
    payload.extend_from_slice(id);
    payload.push(tag);
    payload.extend_from_slice(body);
    (channel(prefix, &topic), payload)
}

/// A publication: the instance that sent it and what it carries (`None` when malformed).
pub fn decode(prefix: &str, channel: &str, payload: &[u8]) -> Option<(String, Cast)> {
    let topic = topic_of(prefix, channel)?;
    let (&len, rest) = payload.split_first()?;
    let (id, rest) = rest.split_at_checked(usize::from(len))?;
    let (&tag, body) = rest.split_first()?;
    let from = std::str::from_utf8(id).ok()?.to_string();
    let cast = match (topic, tag) {
        (Topic::Room(room), TAG_FRAME) => Cast::Room { room, frame: body.to_vec() },
        (Topic::User(user), TAG_FRAME) => Cast::User { user, frame: body.to_vec() },
        (Topic::User(user), TAG_DISCONNECT) => Cast::Disconnect { user, code: u16::from_be_bytes(body.try_into().ok()?) },
        (Topic::Room(room), TAG_KICK) => {
            let (&ban, user) = body.split_first()?;
            Cast::Kick { room, user: std::str::from_utf8(user).ok().filter(|u| !u.is_empty())?.into(), ban: ban == 1 }
        }
        _ => return None,
    };
    Some((from, cast))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_round_trip_through_their_channels() {
        let room = RoomId::parse("lobby").unwrap();
        let casts = [
            Cast::Room { room: room.clone(), frame: b"\x81\x02hi".to_vec() },
            Cast::User { user: "ann:1".into(), frame: vec![] },
            Cast::Disconnect { user: "bob".into(), code: 4001 },
            Cast::Kick { room: room.clone(), user: "eve".into(), ban: true },
        ];
        for cast in casts {
            let (channel, payload) = encode("pf:", "host-1:8080", &cast);
            assert_eq!(decode("pf:", &channel, &payload), Some(("host-1:8080".to_string(), cast)));
        }
        assert_eq!(channel("pf:", &Topic::Room(room.clone())), "pf:ps:r:lobby");
        assert_eq!(topic_of("pf:", "pf:ps:u:ann:1"), Some(Topic::User("ann:1".into())));
        assert_eq!(topic_of("pf:", "pf:relay:lobby"), None);
        assert_eq!(presence_key("pf:", &room, "i1"), "pf:ps:p:lobby:i1");
    }

    #[test]
    fn malformed_publications_are_ignored() {
        let (channel, payload) = encode("pf:", "i", &Cast::Disconnect { user: "u".into(), code: 4001 });
        assert_eq!(decode("pf:", &channel, &payload[..payload.len() - 1]), None);
        assert_eq!(decode("pf:", &channel, &[]), None);
        assert_eq!(decode("pf:", &channel, &[9, b'i']), None);
        assert_eq!(decode("pf:", "pf:ps:r:lobby", &payload), None, "a disconnect on a room channel");
        assert_eq!(decode("pf:", "other", &payload), None);
    }
}
