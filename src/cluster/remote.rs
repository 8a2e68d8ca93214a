//! The remote members of one shard's game rooms: clients connected to another instance (their
//! *edge*) and served here, the owner. Sans-IO: this keeps who they are, gathers a broadcast's
//! frames into one message per edge shard, and tells which edges are gone; the shard sends the
//! messages and acts on the answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use slab::Slab;

use super::forward::shard_of;
use super::Forward;
use crate::rooms::RoomId;

/// Close code telling a client to reconnect: its room moved or its instance is going
/// (RFC 6455 registry: 1012 Service Restart).
pub const CLOSE_RECONNECT: u16 = 1012;

/// How often the instances of forwarded clients are checked.
const INSTANCE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// An instance heard from this recently is alive, listed or not (the heartbeat key's TTL).
const HEARD_RECENTLY: Duration = Duration::from_secs(5);

/// A client of one of this shard's game rooms, connected to another instance.
#[derive(Debug)]
struct RemoteMember {
    edge: Arc<str>,
    link: u64,
    room: RoomId,
}

/// One frame for some remote members on one edge shard.
struct Group {
    edge: Arc<str>,
    shard: usize,
    frame: Bytes,
    links: Vec<u64>,
    keys: Vec<usize>,
}

/// Frames for remote members gathered while a room's outputs are drained: one message per frame
/// and edge shard, in the order they were first gathered, so every member's frames keep their
/// order.
#[derive(Default)]
pub struct Outgoing {
    groups: Vec<Group>,
}

impl Outgoing {
    /// The messages gathered, each with the edge to send it to and the members it carries.
    pub fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, Forward, Vec<usize>)> + '_ {
        self.groups.drain(..).map(|g| (g.edge, Forward::ToClients { links: g.links, frame: g.frame.to_vec() }, g.keys))
    }
}

/// The remote members of one shard's game rooms, and when each other instance was last heard.
#[derive(Debug, Default)]
pub struct RemoteMembers {
    members: Slab<RemoteMember>,
    /// By edge instance, then link id.
    by_edge: AHashMap<Arc<str>, AHashMap<u64, usize>>,
    last_check: Option<Instant>,
    /// When each other instance last sent this shard a game-room message.
    last_heard: AHashMap<String, Instant>,
}

impl RemoteMembers {
    /// A member of `room` connected to `edge` as `link`; returns its key.
    pub fn add(&mut self, edge: &str, link: u64, room: RoomId) -> usize {
        let edge: Arc<str> = self.by_edge.get_key_value(edge).map_or_else(|| edge.into(), |(k, _)| k.clone());
        let key = self.members.insert(RemoteMember { edge: edge.clone(), link, room });
        self.by_edge.entry(edge).or_default().insert(link, key);
        key
    }

    /// The member `edge` knows as `link`.
    pub fn find(&self, edge: &str, link: u64) -> Option<usize> {
        self.by_edge.get(edge)?.get(&link).copied()
    }

    /// Forgets a member (gone, closed, or its edge unreachable).
    pub fn remove(&mut self, key: usize) {
        let Some(member) = self.members.try_remove(key) else { return };
        if let Some(links) = self.by_edge.get_mut(&member.edge) {
            links.remove(&member.link);
            if links.is_empty() {
                self.by_edge.remove(&member.edge);
            }
        }
    }

    /// Whether no remote member is left.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The room of member `key`.
    pub fn room_of(&self, key: usize) -> Option<&RoomId> {
        self.members.get(key).map(|m| &m.room)
    }

    /// The members of `room`.
    pub fn of_room(&self, room: &RoomId) -> Vec<usize> {
        self.members.iter().filter(|(_, r)| &r.room == room).map(|(key, _)| key).collect()
    }

    /// `frame` for member `key` alone, and the edge to send it to.
    pub fn addressed(&self, key: usize, frame: &Bytes) -> Option<(Arc<str>, Forward)> {
        let member = self.members.get(key)?;
        Some((member.edge.clone(), Forward::ToClients { links: vec![member.link], frame: frame.to_vec() }))
    }

    /// Adds a frame for member `key` to `outgoing`, beside the other recipients of the same
    /// frame on the same edge shard.
    pub fn gather(&self, outgoing: &mut Outgoing, key: usize, frame: Bytes) {
        let Some(member) = self.members.get(key) else { return };
        let shard = shard_of(member.link);
        // Only among the groups of this very frame at the end (a broadcast's sends come one
        // after another): joining an earlier group could reorder a member's frames.
        let same_frame = |g: &&mut Group| g.frame.as_ptr() == frame.as_ptr() && g.frame.len() == frame.len();
        match outgoing.groups.iter_mut().rev().take_while(same_frame).find(|g| Arc::ptr_eq(&g.edge, &member.edge) && g.shard == shard) {
            Some(group) => {
                group.links.push(member.link);
                group.keys.push(key);
            }
            None => outgoing.groups.push(Group { edge: member.edge.clone(), shard, frame, links: vec![member.link], keys: vec![key] }),
        }
    }

    /// Forgets member `key`; returns the message telling its edge to close it.
    pub fn close(&mut self, key: usize, code: u16, reason: String) -> Option<(Arc<str>, Forward)> {
        let message = self.members.get(key).map(|m| (m.edge.clone(), Forward::Close { link: m.link, code, reason }));
        self.remove(key);
        message
    }

    /// Instance `from` sent this shard a game-room message at `now`: it is alive.
    pub fn heard_from(&mut self, from: &str, now: Instant) {
        match self.last_heard.get_mut(from) {
            Some(at) => *at = now,
            None => {
                self.last_heard.insert(from.to_string(), now);
            }
        }
    }

    /// Whether the instances should be checked at `now` (once a second), recording the check.
    pub fn check_due(&mut self, now: Instant) -> bool {
        if self.last_check.is_some_and(|t| now < t + INSTANCE_CHECK_EVERY) {
            return false;
        }
        self.last_check = Some(now);
        self.last_heard.retain(|_, at| now < *at + HEARD_RECENTLY);
        true
    }

    /// Whether `instance` is alive: heard from lately, or `listed` (its heartbeat key is there).
    pub fn is_live(&self, instance: &str, listed: impl Fn(&str) -> bool) -> bool {
        self.last_heard.contains_key(instance) || listed(instance)
    }

    /// The members whose edge is gone (see [`is_live`](Self::is_live)).
    pub fn gone(&self, listed: impl Fn(&str) -> bool) -> Vec<usize> {
        self.members.iter().filter(|(_, r)| !self.is_live(&r.edge, &listed)).map(|(key, _)| key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::forward::IdSource;

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).unwrap()
    }

    #[test]
    fn a_broadcast_is_one_message_per_edge_shard_and_keeps_each_members_order() {
        let mut remotes = RemoteMembers::default();
        let mut ids = IdSource::new(0);
        let (l1, l2) = (ids.next_id(), ids.next_id());
        let a = remotes.add("edge-a", l1, room("r1"));
        let b = remotes.add("edge-a", l2, room("r1"));
        let c = remotes.add("edge-b", ids.next_id(), room("r1"));
        let (first, second) = (Bytes::from_static(b"first"), Bytes::from_static(b"second"));
        let mut out = Outgoing::default();
        for key in [a, b, c] {
            remotes.gather(&mut out, key, first.clone());
        }
        remotes.gather(&mut out, a, second.clone());
        let sent: Vec<_> = out.drain().collect();
        assert_eq!(sent.len(), 3, "edge-a and edge-b for the first frame, edge-a for the second");
        assert_eq!((&*sent[0].0, &sent[0].2), ("edge-a", &vec![a, b]));
        assert!(matches!(&sent[0].1, Forward::ToClients { links, frame } if links == &vec![l1, l2] && frame == b"first"));
        assert_eq!((&*sent[1].0, &sent[1].2), ("edge-b", &vec![c]));
        assert!(matches!(&sent[2].1, Forward::ToClients { frame, .. } if frame == b"second"));
        assert_eq!(remotes.of_room(&room("r1")), vec![a, b, c]);
        assert!(matches!(remotes.close(b, 1000, "bye".into()), Some((edge, Forward::Close { link, .. })) if &*edge == "edge-a" && link == l2));
        assert_eq!(remotes.find("edge-a", l2), None);
        assert!(remotes.addressed(a, &first).is_some());
    }

    #[test]
    fn an_edge_is_gone_once_unlisted_and_unheard_for_the_heartbeat_ttl() {
        let t0 = Instant::now();
        let mut remotes = RemoteMembers::default();
        let key = remotes.add("edge-a", 7, room("r1"));
        let unlisted = |_: &str| false;
        assert!(remotes.check_due(t0));
        assert!(!remotes.check_due(t0 + Duration::from_millis(999)), "once a second");
        remotes.heard_from("edge-a", t0);
        assert!(remotes.check_due(t0 + Duration::from_secs(4)));
        assert!(remotes.gone(unlisted).is_empty(), "heard 4 s ago");
        assert!(remotes.check_due(t0 + Duration::from_secs(5)));
        assert_eq!(remotes.gone(unlisted), vec![key], "unheard for 5 s and unlisted");
        assert!(remotes.gone(|id| id == "edge-a").is_empty(), "listed");
        remotes.remove(key);
        assert!(remotes.is_empty());
    }
}
