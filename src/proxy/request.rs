//! The JSON bodies of the proxy calls.

use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The request headers a connect call passes on.
pub const PASSED_HEADERS: [&str; 4] = ["origin", "user-agent", "cookie", "authorization"];

/// `{"conn", "remoteAddr", "headers": {...}, "token": claims?}`.
pub fn connect(conn: &str, remote_addr: &str, headers: &[(&str, &str)], token: Option<Value>) -> Vec<u8> {
    let headers: serde_json::Map<String, Value> = headers.iter().map(|(k, v)| ((*k).to_string(), Value::from(*v))).collect();
    let mut body = json!({"conn": conn, "remoteAddr": remote_addr, "headers": headers});
    if let (Some(token), Some(map)) = (token, body.as_object_mut()) {
        map.insert("token".into(), token);
    }
    body.to_string().into_bytes()
}

/// `{"user", "conn", "room"}`.
pub fn join(user: &str, conn: &str, room: &str) -> Vec<u8> {
    json!({"user": user, "conn": conn, "room": room}).to_string().into_bytes()
}

/// `{"user", "conn", "room", "event", "data"}` (`data` as the client sent it).
pub fn publish(user: &str, conn: &str, room: &str, event: &str, data: &str) -> Vec<u8> {
    let data = RawValue::from_string(data.to_string()).unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default());
    json!({"user": user, "conn": conn, "room": room, "event": event, "data": data}).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_as_documented() {
        let v: Value = serde_json::from_slice(&connect("c1", "127.0.0.1:5", &[("origin", "https://a")], Some(json!({"sub": "ann"})))).unwrap();
        assert_eq!(v, json!({"conn": "c1", "remoteAddr": "127.0.0.1:5", "headers": {"origin": "https://a"}, "token": {"sub": "ann"}}));
        let v: Value = serde_json::from_slice(&publish("ann", "c1", "r", "chat", r#"{"t":"hi"}"#)).unwrap();
        assert_eq!(v, json!({"user": "ann", "conn": "c1", "room": "r", "event": "chat", "data": {"t": "hi"}}));
        assert_eq!(serde_json::from_slice::<Value>(&join("ann", "c1", "r")).unwrap(), json!({"user": "ann", "conn": "c1", "room": "r"}));
    }
}
