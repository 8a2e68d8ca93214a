//! One webhook event: `{"id", "type", "time", "roomId", "seq", "instanceId", "data"}`.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Where a durable event is kept until the receiver acknowledges it: a Redis Stream and the
/// entry's id in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRef {
    /// The stream's key.
    pub stream: Arc<str>,
    /// The entry's id (`<ms>-<n>`).
    pub entry: String,
}

/// An event for the app's backend. `id` is unique and the same on every retry; `seq` counts a
/// room's events from 1 without gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique: `{roomId}:{seq}` made unique across the room's lives by its creation time.
    pub id: String,
    /// `room.created`, `player.joined`, `game.ended`, `member.joined`, …
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    /// When it happened, Unix milliseconds.
    pub time: u64,
    /// The room.
    pub room_id: String,
    /// The room's event number, from 1.
    pub seq: u64,
    /// The instance that emitted it.
    pub instance_id: String,
    /// What happened.
    pub data: serde_json::Value,
    /// Its stream entry, when it is kept in Redis (not sent).
    #[serde(skip)]
    pub stored: Option<StreamRef>,
}

impl Event {
    /// Whether `filters` (types or prefixes ending in `.` or `*`; empty: all) select this event.
    pub fn selected_by(&self, filters: &[String]) -> bool {
        filters.is_empty()
            || filters.iter().any(|f| match f.strip_suffix('*') {
                Some(prefix) => self.kind.starts_with(prefix),
                None if f.ends_with('.') => self.kind.starts_with(f.as_str()),
                None => self.kind == f.as_str(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_documented_and_filter_by_type_or_prefix() {
        let e = Event {
            id: "R1:1".into(),
            kind: "room.created".into(),
            time: 5,
            room_id: "R1".into(),
            seq: 1,
            instance_id: "i".into(),
            data: serde_json::json!({"a": 1}),
            stored: None,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"id": "R1:1", "type": "room.created", "time": 5, "roomId": "R1", "seq": 1, "instanceId": "i", "data": {"a": 1}})
        );
        assert!(e.selected_by(&[]));
        assert!(e.selected_by(&["room.".into()]) && e.selected_by(&["room*".into()]) && e.selected_by(&["room.created".into()]));
        assert!(!e.selected_by(&["game.ended".into(), "player.".into()]));
    }
}
