//! Game rooms across instances, both sides of it, driven: who the remote members are and what
//! goes to which instance is [`crate::cluster::RemoteMembers`]'s; this sends it and acts on it.
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
use std::time::Instant;

use bytes::Bytes;

use super::{Acting, ConnId, ConnSettings, Endpoint, Forwarded, Member, ShardState};
use crate::admission::Permit;
use crate::cluster::forward::IdSource;
use crate::cluster::{BusHandle, Forward, Outgoing, CLOSE_RECONNECT};
use crate::metrics::ShardMetrics;
use crate::rooms::RoomId;

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
        let id = self.register(m, now, Endpoint::Forwarded(Box::new(Forwarded { room, owner: owner.clone(), link })), permit, settings);
        self.links.insert(link, id);
        if let Some(bus) = &self.bus {
            bus.forward(&owner, &attach);
        }
        id
    }

    /// A game-room message from instance `from` (requests and responses of the room API are
    /// the caller's).
    pub(crate) fn on_forward(&mut self, m: &ShardMetrics, now: Instant, from: &str, message: Forward) {
        self.remotes.heard_from(from, now);
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
                    if conn.queue(m, now, frame.clone(), &self.limits) {
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
        let Some(room) = self.remotes.room_of(key).cloned() else { return };
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
        if self.remotes.is_empty() && self.links.is_empty() {
            return;
        }
        if !self.remotes.check_due(now) {
            return;
        }
        let listed = |id: &str| bus.is_live(id);
        let gone = self.remotes.gone(listed);
        let remotes = &self.remotes;
        let orphaned: Vec<ConnId> = self
            .links
            .values()
            .copied()
            .filter(|id| self.conns.get(*id).is_some_and(|c| matches!(&c.endpoint, Endpoint::Forwarded(f) if !remotes.is_live(&f.owner, listed))))
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

/// Sends `message` to instance `to`; false if it could not be queued.
pub(super) fn forward(bus: Option<&BusHandle>, (to, message): (Arc<str>, Forward)) -> bool {
    bus.is_some_and(|bus| bus.forward(&to, &message))
}

/// Sends what `outgoing` gathered; returns the members whose edge could not be reached (the
/// publish queue was full).
pub(super) fn flush_outgoing(bus: Option<&BusHandle>, m: &ShardMetrics, outgoing: &mut Outgoing) -> Vec<usize> {
    let mut failed = Vec::new();
    for (edge, message, keys) in outgoing.drain() {
        if forward(bus, (edge, message)) {
            m.messages_out.add(keys.len() as u64);
        } else {
            failed.extend(keys);
        }
    }
    failed
}
