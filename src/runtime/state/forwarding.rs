//! Game rooms across instances, both sides of it.
//!
//! - **Edge**: a client whose room another instance owns connects here; its connection is a
//!   [`Endpoint::Forwarded`] whose messages go to the owner and whose frames come back from it,
//!   byte for byte what the owner would have sent on a direct connection. Heartbeats and the
//!   outbound queue stay here.
//! - **Owner**: such a client is a [`Member::Remote`] of the room, exactly like a local
//!   connection to the room (same sequence ids, scopes, ACKs, RECONNECT and backfill); its frames
//!   go back to its edge.
//!
//! Either side lets the other's clients go when that instance's heartbeat key is gone and it
//! has not been heard from for a heartbeat TTL (the instance list lags a new instance by up to
//! its refresh period; a message from it proves it alive).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use slab::Slab;

use super::{Acting, ConnId, ConnSettings, Endpoint, Member, ShardState};
use crate::admission::Permit;
use crate::cluster::forward::{shard_of, IdSource};
use crate::cluster::{BusHandle, Forward};
use crate::metrics::ShardMetrics;
use crate::rooms::RoomId;

/// Close code telling a client to reconnect: its room moved or its instance is going
/// (RFC 6455 registry: 1012 Service Restart).
pub(crate) const CLOSE_RECONNECT: u16 = 1012;

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

/// Frames for remote members gathered while a room's outputs are drained, sent as one message
/// per frame and edge shard (in the order they were first gathered, so every member's frames
/// keep their order).
#[derive(Default)]
pub(super) struct Outgoing {
    groups: Vec<Group>,
}

impl Outgoing {
    /// Sends what was gathered; returns the members whose edge could not be reached (the
    /// publish queue was full).
    pub(super) fn flush(&mut self, bus: Option<&BusHandle>, m: &ShardMetrics) -> Vec<usize> {
        let mut failed = Vec::new();
        for group in self.groups.drain(..) {
            let sent = bus.is_some_and(|bus| bus.forward(&group.edge, &Forward::ToClients { links: group.links, frame: group.frame.to_vec() }));
            if sent {
                m.messages_out.add(group.keys.len() as u64);
            } else {
                failed.extend(group.keys);
            }
        }
        failed
    }
}

/// The remote members of one shard's game rooms.
#[derive(Debug, Default)]
pub(super) struct RemoteMembers {
    members: Slab<RemoteMember>,
    /// By edge instance, then link id.
    by_edge: AHashMap<Arc<str>, AHashMap<u64, usize>>,
    last_check: Option<Instant>,
    /// When each other instance last sent this shard a game-room message.
    last_heard: AHashMap<String, Instant>,
}

impl RemoteMembers {
    fn add(&mut self, edge: &str, link: u64, room: RoomId) -> usize {
        let edge: Arc<str> = self.by_edge.get_key_value(edge).map_or_else(|| edge.into(), |(k, _)| k.clone());
        let key = self.members.insert(RemoteMember { edge: edge.clone(), link, room });
        self.by_edge.entry(edge).or_default().insert(link, key);
        key
    }

    fn find(&self, edge: &str, link: u64) -> Option<usize> {
        self.by_edge.get(edge)?.get(&link).copied()
    }

    /// Forgets a member (gone, closed, or its edge unreachable).
    pub(super) fn remove(&mut self, key: usize) {
        let Some(member) = self.members.try_remove(key) else { return };
        if let Some(links) = self.by_edge.get_mut(&member.edge) {
            links.remove(&member.link);
            if links.is_empty() {
                self.by_edge.remove(&member.edge);
            }
        }
    }

    /// The members of `room`.
    pub(super) fn of_room(&self, room: &RoomId) -> Vec<usize> {
        self.members.iter().filter(|(_, r)| &r.room == room).map(|(key, _)| key).collect()
    }

    /// Sends a frame to the member's edge; `false` if it could not be queued.
    pub(super) fn send(&self, bus: Option<&BusHandle>, key: usize, frame: &Bytes) -> bool {
        let (Some(member), Some(bus)) = (self.members.get(key), bus) else { return false };
        bus.forward(&member.edge, &Forward::ToClients { links: vec![member.link], frame: frame.to_vec() })
    }

    /// Adds a frame for member `key` to `outgoing`, beside the other recipients of the same
    /// frame on the same edge shard.
    pub(super) fn gather(&self, outgoing: &mut Outgoing, key: usize, frame: Bytes) {
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

    /// Tells the member's edge to close it, and forgets it.
    pub(super) fn close(&mut self, bus: Option<&BusHandle>, key: usize, code: u16, reason: String) {
        if let (Some(member), Some(bus)) = (self.members.get(key), bus) {
            bus.forward(&member.edge, &Forward::Close { link: member.link, code, reason });
        }
        self.remove(key);
    }
}

impl ShardState {
    /// Registers a client of `room`, which instance `owner` serves, and tells the owner.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register_forwarded(
        &mut self,
        m: &ShardMetrics,
        now: Instant,
        (room, owner): (RoomId, Arc<str>),
        (actor, version): (String, String),
        permit: Permit,
        settings: ConnSettings,
    ) -> ConnId {
        let link = self.link_ids.get_or_insert_with(|| IdSource::new(self.index)).next_id();
        let attach = Forward::Attach { room: room.clone(), link, actor, version };
        let id = self.register(m, now, Endpoint::Forwarded { room, owner: owner.clone(), link }, permit, settings);
        self.links.insert(link, id);
        if let Some(bus) = &self.bus {
            bus.forward(&owner, &attach);
        }
        id
    }

    /// A game-room message from instance `from` (requests and responses of the room API are
    /// the caller's).
    pub(crate) fn on_forward(&mut self, m: &ShardMetrics, now: Instant, from: &str, message: Forward) {
        match self.remotes.last_heard.get_mut(from) {
            Some(at) => *at = now,
            None => {
                self.remotes.last_heard.insert(from.to_string(), now);
            }
        }
        match message {
            // Owner side.
            Forward::Attach { room, link, actor, version } => {
                if !self.has_game(&room) || self.fence_if_expired(m, now, &room) {
                    if let Some(bus) = &self.bus {
                        let reason = "the room is not served by this instance; reconnect".to_string();
                        bus.forward(from, &Forward::Close { link, code: CLOSE_RECONNECT, reason });
                    }
                    return;
                }
                // The same link again (the edge restarted and its random ids met an old one):
                // the old member is gone first, so nothing meant for it reaches the new client.
                if let Some(old) = self.remotes.find(from, link) {
                    self.drop_remote(m, now, old);
                }
                let key = self.remotes.add(from, link, room.clone());
                self.with_game_for(m, now, &room, Acting::Actor(&actor), |r| {
                    let _ = r.connect(now, Member::Remote(key), &actor, &version);
                });
            }
            Forward::FromClient { room, link, kind, payload } => {
                m.messages_in.add(1);
                let Some(key) = self.remotes.find(from, link) else {
                    // The room let this client go (it was fenced, or closed it while the edge
                    // was unreachable): tell the edge, or the client would wait forever.
                    if let Some(bus) = &self.bus {
                        let reason = "the room is not served by this instance; reconnect".to_string();
                        bus.forward(from, &Forward::Close { link, code: CLOSE_RECONNECT, reason });
                    }
                    return;
                };
                if self.fence_if_expired(m, now, &room) {
                    return;
                }
                self.with_game_for(m, now, &room, Acting::Member(Member::Remote(key)), |r| r.handle_message(now, Member::Remote(key), kind, &payload));
            }
            Forward::Detach { link, .. } => {
                if let Some(key) = self.remotes.find(from, link) {
                    self.drop_remote(m, now, key);
                }
            }
            // Edge side.
            Forward::ToClients { links, frame } => {
                // One buffer for every recipient, as for a local broadcast.
                let frame = Bytes::from(frame);
                for link in links {
                    let Some(&id) = self.links.get(&link) else { continue };
                    let Some(conn) = self.conns.get_mut(id) else { continue };
                    if conn.is_closing() {
                        continue;
                    }
                    if conn.queue(m, now, frame.clone()) {
                        m.messages_out.add(1);
                    } else {
                        self.leave_game(m, now, id);
                    }
                }
            }
            Forward::Close { link, code, reason } => {
                let Some(&id) = self.links.get(&link) else { return };
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.begin_close(m, now, code, &reason, false);
                    // The owner already let this client go.
                    conn.departed = true;
                }
            }
            Forward::Request { .. } | Forward::Response { .. } => {}
        }
    }

    /// Remote member `key` is gone: its room hears of it (if the room may still act here).
    fn drop_remote(&mut self, m: &ShardMetrics, now: Instant, key: usize) {
        let Some(room) = self.remotes.members.get(key).map(|r| r.room.clone()) else { return };
        self.remotes.remove(key);
        if !self.fence_if_expired(m, now, &room) {
            self.with_game_for(m, now, &room, Acting::Member(Member::Remote(key)), |r| r.disconnect(now, Member::Remote(key)));
        }
    }

    /// Once a second: clients whose edge instance is gone leave their rooms here, and clients
    /// here whose owner instance is gone are told to reconnect (another instance takes the room
    /// over once the owner's lease runs out).
    pub(super) fn check_instances(&mut self, m: &ShardMetrics, now: Instant) {
        let Some(bus) = self.bus.clone() else { return };
        if self.remotes.members.is_empty() && self.links.is_empty() {
            return;
        }
        if self.remotes.last_check.is_some_and(|t| now < t + INSTANCE_CHECK_EVERY) {
            return;
        }
        self.remotes.last_check = Some(now);
        self.remotes.last_heard.retain(|_, at| now < *at + HEARD_RECENTLY);
        let heard = &self.remotes.last_heard;
        let live = |id: &str| heard.contains_key(id) || bus.is_live(id);
        let gone: Vec<usize> = self.remotes.members.iter().filter(|(_, r)| !live(&r.edge)).map(|(key, _)| key).collect();
        let orphaned: Vec<ConnId> = self
            .links
            .values()
            .copied()
            .filter(|id| self.conns.get(*id).is_some_and(|c| matches!(&c.endpoint, Endpoint::Forwarded { owner, .. } if !live(owner))))
            .collect();
        for key in gone {
            self.drop_remote(m, now, key);
        }
        for id in orphaned {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.departed = true;
                conn.begin_close(m, now, CLOSE_RECONNECT, "the room's instance stopped; reconnect", false);
            }
        }
    }
}
