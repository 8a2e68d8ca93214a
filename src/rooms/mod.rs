//! Rooms: ids, which shard owns a room, and shard-local membership.
//!
//! A room lives on exactly one shard, chosen by a keyed hash of its id that every shard computes
//! the same way, so no shard ever needs another's room table.

use ahash::{AHashMap, RandomState};

mod game_room;

pub use game_room::{
    GameRoom, KickRefused, ReconnectWindows, RoomCount, RoomOutput, RoomPolicy, CLOSE_REPLACED, CLOSE_UPGRADE_REQUIRED, MAX_GAME_MESSAGE_BYTES, SEQUENCE_GAP,
};

/// Fixed hash keys: every shard (and every process, for sticky routing) must agree on owners.
const OWNER_HASH: RandomState = RandomState::with_seeds(0x7061_7274_7966_6c6f, 0x7772_6f6f_6d73_6861, 0x7264_6f77_6e65_7273, 0x6869_7021_2121_2121);

/// A room id: 1-64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 64;

    /// Validates `id`; `None` if it is empty, too long or has other characters.
    pub fn parse(id: &str) -> Option<RoomId> {
        let valid = (1..=Self::MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        valid.then(|| RoomId(id.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Index of the shard that owns this room among `shards` shards.
    pub fn owner_shard(&self, shards: usize) -> usize {
        owner_shard_of(&self.0, shards)
    }
}

/// Index of the shard that owns `key` (a room id, a `/pubsub` user) among `shards` shards.
pub fn owner_shard_of(key: &str, shards: usize) -> usize {
    (OWNER_HASH.hash_one(key.as_bytes()) % shards.max(1) as u64) as usize
}

/// Which members are in which room, on one shard. `M` is the runtime's member handle.
#[derive(Debug)]
pub struct Rooms<M> {
    rooms: AHashMap<RoomId, Vec<M>>,
}

impl<M> Default for Rooms<M> {
    fn default() -> Self {
        Rooms { rooms: AHashMap::new() }
    }
}

impl<M: Copy + PartialEq> Rooms<M> {
    /// Every room with its member count.
    pub fn iter(&self) -> impl Iterator<Item = (&RoomId, usize)> {
        self.rooms.iter().map(|(id, members)| (id, members.len()))
    }

    /// Adds `member` to `room`, creating the room on first join.
    pub fn join(&mut self, room: &RoomId, member: M) {
        self.rooms.entry(room.clone()).or_default().push(member);
    }

    /// Removes `member` from `room`; the room disappears with its last member.
    pub fn leave(&mut self, room: &RoomId, member: M) {
        if let Some(members) = self.rooms.get_mut(room) {
            if let Some(pos) = members.iter().position(|m| *m == member) {
                members.swap_remove(pos);
            }
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// The members of `room` (empty if it does not exist).
    pub fn members(&self, room: &RoomId) -> &[M] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// Number of rooms with at least one member.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether there are no rooms.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(RoomId::parse("a").is_some());
        assert!(RoomId::parse(&"Z".repeat(64)).is_some());
        assert!(RoomId::parse("").is_none());
        assert!(RoomId::parse(&"Z".repeat(65)).is_none());
        assert!(RoomId::parse("a/b").is_none());
        assert!(RoomId::parse("é").is_none());
    }

    #[test]
    fn owners_are_stable_and_spread() {
        let id = RoomId::parse("room-42").unwrap();
        assert_eq!(id.owner_shard(4), id.owner_shard(4));
        let mut seen = [0usize; 4];
        for i in 0..400 {
            seen[RoomId::parse(&format!("r{i}")).unwrap().owner_shard(4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(id.owner_shard(1), 0);
    }

    #[test]
    fn membership() {
        let mut rooms = Rooms::default();
        let a = RoomId::parse("a").unwrap();
        rooms.join(&a, 1u32);
        rooms.join(&a, 2);
        assert_eq!(rooms.members(&a), &[1, 2]);
        rooms.leave(&a, 1);
        assert_eq!(rooms.members(&a), &[2]);
        rooms.leave(&a, 2);
        assert!(rooms.is_empty());
        assert!(rooms.members(&a).is_empty());
    }
}
