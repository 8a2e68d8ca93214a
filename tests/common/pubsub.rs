//! `/pubsub` for tests: the server API's shorthand and signed tokens.

#[allow(unused_imports)] // not every test uses it
pub use partyflow_client::PubSubClient;
use serde_json::Value;

use super::Server;

/// A server API call: `(status, JSON body)` (`null` when the body is not JSON).
pub fn api(server: &Server, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    api_at(server.addr, method, path, key, body)
}

/// [`api`] on the server at `addr`.
pub fn api_at(addr: std::net::SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    let response = partyflow_client::http::request(&addr, method, path, &headers, body.as_bytes()).expect("API call");
    (response.status, response.json())
}

/// A `/pubsub` token for `sub`, signed with `secret`, valid for ten minutes, any room.
pub fn token_for(secret: &str, sub: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    partyflow::pubsub::TokenKey::new(secret).unwrap().sign(&partyflow::pubsub::Claims { sub: sub.into(), exp: Some(exp), rooms: None, meta: None })
}
