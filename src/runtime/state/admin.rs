//! The admin API's view of a shard: a row per room it owns, and a `/pubsub` room's members.

use super::ShardState;
use crate::admin::RoomRow;
use crate::rooms::RoomId;

impl ShardState {
    /// A row per room this shard owns (game, relay and `/pubsub`), served by `instance`.
    pub(crate) fn admin_rows(&self, instance: &str) -> Vec<RoomRow> {
        let row = |id: &RoomId, kind: &str, state: String, (members, connected): (usize, usize), created: Option<i64>| RoomRow {
            id: id.as_str().to_string(),
            kind: kind.to_string(),
            state,
            members,
            connected,
            created,
            instance: instance.to_string(),
            shard: self.index,
        };
        let games = self
            .games
            .iter()
            .map(|(id, entry)| row(id, "game", entry.room.game().state().as_str().to_string(), entry.room.head_count(), Some(entry.room.created_unix_ms())));
        let relays = self.rooms.iter().map(|(id, n)| row(id, "relay", "open".into(), (n, n), None));
        let pubsub =
            self.pubsub.iter().flat_map(|ps| ps.owned_rooms().map(|(id, members)| row(id, "pubsub", "open".into(), (members.len(), members.len()), None)));
        games.chain(relays).chain(pubsub).collect()
    }

    /// A `/pubsub` room's members on this instance (`None`: no such room here).
    pub(crate) fn admin_pubsub_members(&self, room: &RoomId) -> Option<Vec<serde_json::Value>> {
        let ps = self.pubsub.as_ref()?;
        let (_, members) = ps.owned_rooms().find(|(id, _)| *id == room)?;
        Some(members.iter().map(|m| serde_json::json!({"user": &*m.user, "conn": &*m.label})).collect())
    }
}
