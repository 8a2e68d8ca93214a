//! Panic containment at the room boundary: a bug in one game room's handling closes that room,
//! not the shard with every other room and connection on it.
//!
//! The room's own state is not trusted after a panic: its members are found from the shard's
//! side (connections whose endpoint is the room, remote members of it), told
//! `ROOM_CLOSED {reason: "internal_error"}` and closed with `1011`; its stored snapshot is
//! deleted so that a state that made it panic is not loaded again.

use std::any::Any;
use std::time::Instant;

use super::{Endpoint, ShardState};
use crate::metrics::ShardMetrics;
use crate::protocol::{self, ServerMsg};
use crate::rooms::RoomId;
use crate::ws::{self, close_code, DataKind};

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}

impl ShardState {
    /// `room` panicked while handling something for `actor` at `now`: close it for everyone.
    pub(super) fn room_panicked(&mut self, m: &ShardMetrics, now: Instant, room: &RoomId, actor: &str, why: &str) {
        tracing::error!(room = room.as_str(), actor, panic = why, "a game room panicked; closing it (its clients get ROOM_CLOSED internal_error and 1011)");
        m.room_panics.add(1);
        if self.games.remove(room).is_some() {
            m.rooms.add(-1);
        }
        if let Some(p) = self.persist.as_mut() {
            p.write_behind.mark_closed(now, room);
        }
        if let Some(leases) = self.leases.as_mut() {
            leases.release(room);
        }
        let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let payload = serde_json::json!({"reason": "internal_error", "state": "ROOM_CLOSED"});
        let msg = ServerMsg {
            kind: "ROOM_CLOSED",
            room_id: room.as_str(),
            timestamp: unix_ms,
            version: "1.0",
            broadcast: "all",
            payload: &payload,
            sequence_id: None,
            requires_ack: false,
            ack_id: None,
        };
        let frame = ws::encode_data(DataKind::Text, &protocol::encode_server(&msg));
        let local: Vec<usize> = self.conns.iter().filter(|(_, c)| matches!(&c.endpoint, Endpoint::Game(r) if r == room)).map(|(id, _)| id).collect();
        for id in local {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.departed = true;
                if conn.queue(m, now, frame.clone(), &self.limits) {
                    m.messages_out.add(1);
                }
                conn.begin_close(m, now, close_code::INTERNAL_ERROR, "internal error", false);
            }
        }
        for key in self.remotes.of_room(room) {
            let messages = [self.remotes.addressed(key, &frame), self.remotes.close(key, close_code::INTERNAL_ERROR, "internal error".into())];
            for message in messages.into_iter().flatten() {
                super::forwarding::forward(self.bus.as_ref(), message);
            }
        }
        self.wake_timer_for(self.next_deadline());
    }
}
