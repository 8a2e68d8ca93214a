//! What the owner shard of a `/pubsub` room or user keeps: the room's members with their
//! presence and the shards they sit on, and which connections a user has.
//!
//! A room lives on the shard its id hashes to, whichever shards its members are on. The owner
//! applies joins, leaves and publishes in the order each member's shard sent them, encodes
//! nothing per member, and hands a frame once to every shard with members there.

use std::sync::Arc;

use ahash::AHashMap;
use serde_json::value::RawValue;

use super::message::member_data;
use crate::rooms::RoomId;

/// A connection anywhere in this process: its shard, its key there, and a serial that tells a
/// reused key from the connection that held it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// The shard serving it.
    pub shard: usize,
    /// Its key in that shard's connection table.
    pub key: usize,
    /// Unique on its shard for the process's life.
    pub serial: u64,
}

/// A member of a room as presence shows it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Where it is connected.
    pub conn: ConnRef,
    /// Its connection id as clients see it.
    pub label: Arc<str>,
    /// Its user.
    pub user: Arc<str>,
    /// Its connection metadata, a JSON object.
    pub meta: Option<Arc<RawValue>>,
}

impl Member {
    /// `{"user":U,"conn":C}`.
    pub fn data(&self) -> String {
        member_data(&self.user, &self.label)
    }

    /// `{"user":U,"conn":C,"meta":M?}`: the member as presence lists it.
    pub fn presence_json(&self) -> String {
        let data = self.data();
        match &self.meta {
            // `{"user":…,"conn":…` + `,"meta":{…}}`.
            Some(meta) => format!("{},\"meta\":{}}}", data.strip_suffix('}').unwrap_or(&data), meta.get()),
            None => data,
        }
    }
}

/// One room on its owner shard.
#[derive(Debug, Default)]
pub struct Room {
    members: Vec<Member>,
    /// Members per shard, indexed by shard.
    per_shard: Vec<u32>,
}

impl Room {
    /// Adds `member`; `false` if that connection is in already.
    pub fn join(&mut self, member: Member) -> bool {
        if self.members.iter().any(|m| m.conn == member.conn) {
            return false;
        }
        let shard = member.conn.shard;
        if self.per_shard.len() <= shard {
            self.per_shard.resize(shard.saturating_add(1), 0);
        }
        if let Some(n) = self.per_shard.get_mut(shard) {
            *n = n.saturating_add(1);
        }
        self.members.push(member);
        true
    }

    /// Removes `conn`; the member it was, if it was one.
    pub fn leave(&mut self, conn: ConnRef) -> Option<Member> {
        let pos = self.members.iter().position(|m| m.conn == conn)?;
        let member = self.members.remove(pos);
        if let Some(n) = self.per_shard.get_mut(conn.shard) {
            *n = n.saturating_sub(1);
        }
        Some(member)
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nobody is in.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The shards with members here, each once.
    pub fn shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_shard.iter().enumerate().filter(|(_, n)| **n > 0).map(|(shard, _)| shard)
    }

    /// The members, in the order they joined.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// `{"members":[{"user","conn","meta"?},…]}`.
    pub fn presence_data(&self) -> String {
        presence_data(self.members.iter())
    }
}

/// `{"members":[{"user","conn","meta"?},…]}` for `members`.
pub fn presence_data<'a>(members: impl Iterator<Item = &'a Member>) -> String {
    members_data(members.map(Member::presence_json))
}

/// `{"members":[…]}` around member objects already in JSON.
pub fn members_data(members: impl Iterator<Item = String>) -> String {
    let mut out = String::from("{\"members\":[");
    for (i, m) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&m);
    }
    out.push_str("]}");
    out
}

/// The rooms one shard owns.
#[derive(Debug, Default)]
pub struct OwnedRooms {
    rooms: AHashMap<RoomId, Room>,
}

impl OwnedRooms {
    /// Every room with members.
    pub fn iter(&self) -> impl Iterator<Item = (&RoomId, &Room)> {
        self.rooms.iter()
    }

    /// The room, if it has members.
    pub fn get(&self, room: &RoomId) -> Option<&Room> {
        self.rooms.get(room)
    }

    /// Adds `member` to `room` (created on its first member); whether it was added, and the
    /// count after.
    pub fn join(&mut self, room: &RoomId, member: Member) -> (bool, usize) {
        let entry = self.rooms.entry(room.clone()).or_default();
        let added = entry.join(member);
        (added, entry.len())
    }

    /// Removes `conn` from `room` (the room goes with its last member).
    pub fn leave(&mut self, room: &RoomId, conn: ConnRef) -> Option<Member> {
        let entry = self.rooms.get_mut(room)?;
        let member = entry.leave(conn);
        if entry.is_empty() {
            self.rooms.remove(room);
        }
        member
    }

    /// Rooms with members.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room has members.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

/// The connections of the users one shard owns (by the hash of the user id).
#[derive(Debug, Default)]
pub struct Users {
    users: AHashMap<Arc<str>, Vec<ConnRef>>,
}

impl Users {
    /// `user` connected through `conn`; whether it is the user's first connection here.
    pub fn online(&mut self, user: Arc<str>, conn: ConnRef) -> bool {
        let conns = self.users.entry(user).or_default();
        if !conns.contains(&conn) {
            conns.push(conn);
        }
        conns.len() == 1
    }

    /// `conn` of `user` is gone; whether it was the user's last connection here.
    pub fn offline(&mut self, user: &str, conn: ConnRef) -> bool {
        let Some(conns) = self.users.get_mut(user) else { return false };
        conns.retain(|c| *c != conn);
        if !conns.is_empty() {
            return false;
        }
        self.users.remove(user);
        true
    }

    /// Every connection of `user` (none when offline).
    pub fn conns(&self, user: &str) -> &[ConnRef] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(shard: usize, key: usize, user: &str) -> Member {
        Member { conn: ConnRef { shard, key, serial: key as u64 }, label: format!("c{shard}.{key}").into(), user: user.into(), meta: None }
    }

    #[test]
    fn members_shards_and_presence() {
        let room = RoomId::parse("r").unwrap();
        let mut rooms = OwnedRooms::default();
        assert_eq!(rooms.join(&room, member(0, 1, "ann")), (true, 1));
        assert_eq!(rooms.join(&room, member(2, 1, "bob")), (true, 2));
        assert_eq!(rooms.join(&room, member(2, 1, "bob")), (false, 2));
        let mut with_meta = member(2, 7, "cid");
        with_meta.meta = Some(Arc::from(RawValue::from_string(r#"{"n":1}"#.into()).unwrap()));
        rooms.join(&room, with_meta);
        let r = rooms.get(&room).unwrap();
        assert_eq!(r.shards().collect::<Vec<_>>(), vec![0, 2]);
        let presence: serde_json::Value = serde_json::from_str(&r.presence_data()).unwrap();
        assert_eq!(
            presence,
            serde_json::json!({"members": [{"user": "ann", "conn": "c0.1"}, {"user": "bob", "conn": "c2.1"}, {"user": "cid", "conn": "c2.7", "meta": {"n": 1}}]})
        );
        assert_eq!(rooms.leave(&room, member(0, 1, "ann").conn).map(|m| m.user), Some("ann".into()));
        assert_eq!(rooms.get(&room).unwrap().shards().collect::<Vec<_>>(), vec![2]);
        rooms.leave(&room, member(2, 1, "bob").conn);
        rooms.leave(&room, member(2, 7, "cid").conn);
        assert!(rooms.is_empty());
    }

    #[test]
    fn a_users_connections() {
        let mut users = Users::default();
        let (a, b) = (member(0, 1, "u").conn, member(1, 4, "u").conn);
        assert!(users.online("u".into(), a));
        assert!(!users.online("u".into(), b));
        assert_eq!(users.conns("u"), &[a, b]);
        assert!(!users.offline("u", a));
        assert!(users.offline("u", b));
        assert!(!users.offline("u", b), "an unknown connection changes nothing");
        assert!(users.conns("u").is_empty());
    }
}
