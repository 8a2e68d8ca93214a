//! The PartyFlow game's JSON envelope (PROTOCOL.md, "Envelope"): what a client sends, and the
//! ACK a message that asks for one is answered with. Sans-IO.

use serde_json::{json, Value};

/// The protocol version this client speaks.
pub const VERSION: &str = "1.0";

/// A message of `kind` from `actor` in `room`, stamped `timestamp_ms` (Unix ms).
pub fn envelope(kind: &str, room: &str, actor: &str, timestamp_ms: u64, payload: Value) -> Value {
    json!({"type": kind, "roomId": room, "actorId": actor, "timestamp": timestamp_ms, "version": VERSION, "payload": payload})
}

/// The payload of the `ACK` that `message` asks for (`requiresAck`), if it asks.
pub fn ack_payload(message: &Value) -> Option<Value> {
    (message["requiresAck"] == true).then(|| json!({"ackId": message["ackId"], "status": "received"}))
}

/// The room event's sequence id (reconnection resumes after the highest one seen).
pub fn sequence_id(message: &Value) -> Option<u64> {
    message["sequenceId"].as_u64()
}

/// Now in Unix ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_answers_only_what_asks_for_one() {
        let asks = json!({"type": "WORD_REVEALED", "requiresAck": true, "ackId": "a7", "sequenceId": 9});
        assert_eq!(ack_payload(&asks), Some(json!({"ackId": "a7", "status": "received"})));
        assert_eq!(ack_payload(&json!({"type": "TIMER_TICK"})), None);
        assert_eq!(sequence_id(&asks), Some(9));
        let sent = envelope("JOIN_TEAM", "r1", "p1", 5, json!({"teamId": "team_1"}));
        assert_eq!((sent["type"].as_str(), sent["version"].as_str(), sent["timestamp"].as_u64()), (Some("JOIN_TEAM"), Some("1.0"), Some(5)));
    }
}
