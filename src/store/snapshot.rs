//! The persisted form of a game room and its key.
//!
//! Key: `{prefix}room:{roomId}` (default prefix `partyflow:`), a string holding the JSON below,
//! written with a TTL (`--persist-ttl`) refreshed on every write and deleted when the room
//! closes.
//!
//! ```json
//! {"format": 1, "roomId": "ABC234", "savedAtUnixMs": 1707695250000, "sequence": 142,
//!  "game": {"hostId": "...", "settings": {...}, "state": "ROUND_ACTIVE", "stateVersion": 6,
//!           "participants": [...], "teams": [...], "round": {...}, "timersMs": [...], ...}}
//! ```
//!
//! `format` is bumped on every change a reader must know about; a server reads every format up
//! to its own (fields added later carry serde defaults) and refuses newer ones.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use serde::{Deserialize, Serialize};

use crate::game::SavedGame;

/// The snapshot format this server writes.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// One room as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSnapshot {
    /// Format version ([`SNAPSHOT_FORMAT`] when written by this server).
    pub format: u32,
    /// The room id.
    pub room_id: String,
    /// Wall clock when saved.
    pub saved_at_unix_ms: i64,
    /// The last sequence id handed out when saved.
    pub sequence: u64,
    /// The last webhook event number handed out (absent in snapshots written before webhooks).
    #[serde(default)]
    pub webhook_seq: u64,
    /// The instance that wrote it (with several instances): while that instance's heartbeat
    /// is live, no other instance recovers the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The game.
    pub game: SavedGame,
}

/// Why a stored snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not JSON of this shape.
    #[error("snapshot is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Written by a newer server.
    #[error("snapshot format {0} is newer than this server's {SNAPSHOT_FORMAT}")]
    TooNew(u32),
}

/// The heartbeat key of instance `id`: present while that instance lives.
pub fn instance_key(prefix: &str, id: &str) -> String {
    format!("{prefix}instance:{id}")
}

/// The lease key of room `room_id`: holds the id of the instance that owns the room.
pub fn lease_key(prefix: &str, room_id: &str) -> String {
    format!("{prefix}lease:{room_id}")
}

impl RoomSnapshot {
    /// The Redis key of room `room_id`.
    pub fn key(prefix: &str, room_id: &str) -> String {
        format!("{prefix}room:{room_id}")
    }

    /// JSON text.
    pub fn encode(&self) -> String {
        // Strings, numbers and plain structs always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses JSON text written by this or an older server.
    pub fn decode(text: &str) -> Result<RoomSnapshot, SnapshotError> {
        let snapshot: RoomSnapshot = serde_json::from_str(text)?;
        if snapshot.format > SNAPSHOT_FORMAT {
            return Err(SnapshotError::TooNew(snapshot.format));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_formats_are_read_and_newer_refused() {
        let text = r#"{"format":1,"roomId":"ABC234","savedAtUnixMs":1,"sequence":7,"game":{"hostId":"h","settings":{"maxPlayers":10,"numTeams":2,"rounds":1,"roundDurationMs":60000,"countdown":3,"scoreReviewMs":5000,"wordPackId":"default_animals","seed":1},"numTeams":2,"state":"LOBBY","stateVersion":2,"participants":[],"teams":[],"gamesStarted":0,"deckDealt":0,"turnsPlayed":0,"round":null,"countdownLeft":0,"timersMs":[null,null,null,null],"tickRemaining":0,"gameElapsedMs":null,"wordsPlayed":0,"waitingForPlayers":false}}"#;
        let snapshot = RoomSnapshot::decode(text).unwrap();
        assert_eq!((snapshot.sequence, snapshot.game.state.as_str()), (7, "LOBBY"));
        assert_eq!(RoomSnapshot::decode(&snapshot.encode()).unwrap(), snapshot, "field for field");
        let newer = text.replace("\"format\":1", "\"format\":2");
        assert!(matches!(RoomSnapshot::decode(&newer), Err(SnapshotError::TooNew(2))));
        assert!(matches!(RoomSnapshot::decode("{}"), Err(SnapshotError::Invalid(_))));
        assert_eq!(RoomSnapshot::key("partyflow:", "ABC234"), "partyflow:room:ABC234");
    }
}
