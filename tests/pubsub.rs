//! `/pubsub` over real sockets: rooms with members on different shards, ordered delivery,
//! presence, directs, every error code, JWT identity and the server API.

mod common;

use std::time::Duration;

use common::game::post;
use common::pubsub::PubSubClient;
use common::{http_raw, parse_response, Server};
use partyflow::pubsub::{Claims, TokenKey};
use serde_json::{json, Value};

const SECRET: &str = "pubsub-test-secret-0123";
const API_KEY: &str = "api-test-key-0123456789";

fn token(sub: &str, exp: Option<u64>, rooms: Option<&[&str]>, meta: Option<&str>) -> String {
    let claims = Claims {
        sub: sub.into(),
        exp,
        rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()),
        meta: meta.map(|m| serde_json::value::RawValue::from_string(m.into()).unwrap()),
    };
    TokenKey::new(SECRET).unwrap().sign(&claims)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Shards with at least one connection, from `/metrics`.
fn busy_shards(server: &Server, shards: usize) -> usize {
    (0..shards).filter(|i| server.metric("partyflow_connections", &format!("shard=\"{i}\"")) > 0.0).count()
}

#[test]
fn members_on_every_shard_join_publish_in_order_see_presence_and_leave() {
    let server = Server::start(&["--shards", "4"]);
    let mut clients: Vec<PubSubClient> = (0..8).map(|_| PubSubClient::connect(&server, None).unwrap()).collect();
    assert!(busy_shards(&server, 4) >= 2, "the kernel put every connection on one shard");
    let mut conns = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let joined = c.join("lobby").unwrap();
        assert_eq!(joined, json!({"event": "joined", "room": "lobby", "data": {"members": i + 1}, "id": "join-lobby"}));
        // Without tokens a connection is its own user.
        c.send(json!({"event": "presence", "room": "lobby", "id": 1}));
        let presence = c.recv_event("presence").unwrap();
        let me = presence["data"]["members"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(me["user"], me["conn"]);
        conns.push(me["conn"].as_str().unwrap().to_string());
    }
    // The first member saw every later one arrive, in order.
    let arrivals: Vec<String> = (1..8).map(|_| clients[0].recv_event("user_joined").unwrap()["data"]["conn"].as_str().unwrap().to_string()).collect();
    assert_eq!(arrivals, conns[1..]);
    // Two senders on different connections interleave 100 messages each.
    for n in 0..100 {
        for s in [2, 5] {
            clients[s].send(json!({"event": "chat", "room": "lobby", "data": {"n": n, "text": "héllo"}}));
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut next = [0, 0];
        while next != [100, 100] {
            let v = c.recv_event("chat").unwrap();
            let from = v["from"].as_str().unwrap();
            let s = if from == conns[2] { 0 } else { 1 };
            assert_eq!(from, conns[[2, 5][s]]);
            assert_eq!(v["data"], json!({"n": next[s], "text": "héllo"}), "member {i}: sender {s} out of order");
            assert_eq!(v["room"], "lobby");
            next[s] += 1;
        }
    }
    // Presence lists all eight.
    clients[7].send(json!({"event": "presence", "room": "lobby", "id": "p"}));
    let presence = clients[7].recv_event("presence").unwrap();
    assert_eq!(presence["id"], "p");
    let listed: Vec<&str> = presence["data"]["members"].as_array().unwrap().iter().map(|m| m["conn"].as_str().unwrap()).collect();
    assert_eq!(listed, conns.iter().map(String::as_str).collect::<Vec<_>>());
    // A leave is answered and announced; a closed connection is announced too.
    clients[3].send(json!({"event": "leave", "room": "lobby", "id": 9}));
    assert_eq!(clients[3].recv_event("left").unwrap(), json!({"event": "left", "room": "lobby", "id": 9}));
    assert_eq!(clients[0].recv_event("user_left").unwrap()["data"], json!({"user": conns[3], "conn": conns[3]}));
    drop(clients.remove(4));
    assert_eq!(clients[0].recv_event("user_left").unwrap()["data"]["conn"], conns[4]);
    // Nothing more reaches the member that left.
    clients[0].send(json!({"event": "chat", "room": "lobby", "data": "after"}));
    assert_eq!(clients[1].recv_event("chat").unwrap()["data"], "after");
    assert!(clients[3].silent_for(Duration::from_millis(300)).unwrap());
    // /health carries the seed's stats.
    let health: Value = serde_json::from_str(&server.get("/health").1).unwrap();
    let stats = &health["stats"];
    assert_eq!(stats["connections"], 7);
    assert!(stats["messagesSent"].as_u64().unwrap() >= 8 * 200 && stats["messagesRecv"].as_u64().unwrap() >= 200);
    assert!(stats["bytesSent"].as_u64().unwrap() > 0 && stats["bytesRecv"].as_u64().unwrap() > 0);
    assert_eq!(stats["shards"].as_array().unwrap().len(), 4);
    assert_eq!(stats["rooms"], 1);
}

#[test]
fn every_error_code_with_the_id_and_the_connection_stays_open() {
    let server = Server::start(&["--shards", "2", "--pubsub-max-rooms-per-connection", "2", "--connection-message-rate", "20"]);
    let mut c = PubSubClient::connect(&server, None).unwrap();
    let error = |c: &mut PubSubClient, message: Value| {
        c.send(message);
        let e = c.recv_event("error").unwrap();
        (e["data"]["code"].as_str().unwrap().to_string(), e["id"].clone())
    };
    c.send_text("not json");
    assert_eq!(c.recv_event("error").unwrap()["data"]["code"], "INVALID_MESSAGE");
    assert_eq!(error(&mut c, json!({"room": "a", "id": 1})), ("INVALID_MESSAGE".into(), json!(1)));
    assert_eq!(error(&mut c, json!({"event": "chat", "room": "a", "to": "u", "id": "x"})), ("INVALID_MESSAGE".into(), json!("x")));
    assert_eq!(error(&mut c, json!({"event": "chat", "id": 2})), ("INVALID_MESSAGE".into(), json!(2)));
    assert_eq!(error(&mut c, json!({"event": "user_joined", "room": "a", "id": 3})), ("INVALID_MESSAGE".into(), json!(3)));
    assert_eq!(error(&mut c, json!({"event": "chat", "room": "a", "id": 4})), ("NOT_IN_ROOM".into(), json!(4)));
    assert_eq!(error(&mut c, json!({"event": "leave", "room": "a", "id": 5})), ("NOT_IN_ROOM".into(), json!(5)));
    assert_eq!(error(&mut c, json!({"event": "join", "room": "bad room", "id": 6})), ("ROOM_INVALID".into(), json!(6)));
    c.join("a").unwrap();
    c.join("b").unwrap();
    assert_eq!(error(&mut c, json!({"event": "join", "room": "c", "id": 7})), ("TOO_MANY_ROOMS".into(), json!(7)));
    // Past the rate (20/s in bursts of 40), messages are refused, not the connection.
    for n in 0..60 {
        c.send(json!({"event": "chat", "room": "a", "data": n}));
    }
    assert_eq!(c.recv_event("error").unwrap()["data"]["code"], "RATE_LIMITED");
    std::thread::sleep(Duration::from_millis(1100));
    c.send(json!({"event": "presence", "room": "a", "id": "still-open"}));
    assert_eq!(c.recv_event("presence").unwrap()["id"], "still-open");
    // FORBIDDEN needs a token: see the token test.
}

#[test]
fn tokens_say_who_connects_and_which_rooms_they_may_join() {
    let server = Server::start(&["--shards", "2", "--pubsub-secret", SECRET]);
    let upgrade = |path: &str, extra: &str| {
        let raw = http_raw(
            server.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"),
        );
        parse_response(&raw)
    };
    let expired = token("ann", Some(unix_now() - 10), None, None);
    let forged = TokenKey::new("another-secret-of-16+").unwrap().sign(&Claims { sub: "ann".into(), exp: None, rooms: None, meta: None });
    for (path, extra, says) in [
        ("/pubsub".to_string(), "", "required"),
        (format!("/pubsub?token={expired}"), "", "expired"),
        (format!("/pubsub?token={forged}"), "", "invalid"),
        ("/pubsub?token=garbage".into(), "", "invalid"),
        ("/pubsub".into(), "Authorization: Bearer nope\r\n", "invalid"),
    ] {
        let (status, body) = upgrade(&path, extra);
        assert_eq!(status, 401, "{path} {extra}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "UNAUTHORIZED");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{body}");
    }
    let ann = token("ann", Some(unix_now() + 600), Some(&["team-*", "lobby"]), Some(r#"{"name":"Ann"}"#));
    let mut a = PubSubClient::connect(&server, Some(&ann)).unwrap();
    let mut a2 = PubSubClient::connect_bearer(&server, &ann).unwrap();
    let mut b = PubSubClient::connect_bearer(&server, &token("bob", None, None, None)).unwrap();
    a.join("team-red").unwrap();
    a.send(json!({"event": "join", "room": "other", "id": "f"}));
    let e = a.recv_event("error").unwrap();
    assert_eq!((e["data"]["code"].as_str(), e["id"].as_str()), (Some("FORBIDDEN"), Some("f")));
    a.send(json!({"event": "presence", "room": "other", "id": "g"}));
    assert_eq!(a.recv_event("error").unwrap()["data"]["code"], "FORBIDDEN");
    b.join("team-red").unwrap();
    // The user is the token's sub, and presence shows its meta.
    let joined = a.recv_event("user_joined").unwrap();
    assert_eq!(joined["data"]["user"], "bob");
    b.send(json!({"event": "presence", "room": "team-red", "id": 1}));
    let members = b.recv_event("presence").unwrap()["data"]["members"].clone();
    assert_eq!(members[0]["user"], "ann");
    assert_eq!(members[0]["meta"], json!({"name": "Ann"}));
    assert!(members[1].get("meta").is_none());
    // A direct reaches every connection of the user, with the sender's user id.
    b.send(json!({"event": "dm", "to": "ann", "data": {"t": "psst"}}));
    for c in [&mut a, &mut a2] {
        assert_eq!(c.recv_event("dm").unwrap(), json!({"event": "dm", "from": "bob", "data": {"t": "psst"}}));
    }
    b.send(json!({"event": "dm", "to": "nobody", "data": 1}));
    b.send(json!({"event": "chat", "room": "team-red", "data": "fin"}));
    assert_eq!(a.recv_event("chat").unwrap()["from"], "bob");
    assert!(a2.silent_for(Duration::from_millis(200)).unwrap());
}

#[test]
fn partyflow_token_mints_what_the_server_accepts() {
    let server = Server::start(&["--pubsub-secret", SECRET]);
    let mint = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_partyflow")).arg("token").args(args).env("PARTYFLOW_PUBSUB_SECRET", SECRET).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap().trim().to_string(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, token, _) = mint(&["--sub", "ops", "--rooms", "alerts-*", "--ttl", "5m", "--meta", r#"{"role":"ops"}"#]);
    assert_eq!(code, Some(0));
    let mut c = PubSubClient::connect(&server, Some(&token)).unwrap();
    c.join("alerts-eu").unwrap();
    c.send(json!({"event": "presence", "room": "alerts-eu"}));
    let members = c.recv_event("presence").unwrap()["data"]["members"].clone();
    assert_eq!((members.as_array().unwrap().len(), &members[0]["user"], &members[0]["meta"]), (1, &json!("ops"), &json!({"role": "ops"})));
    c.send(json!({"event": "join", "room": "lobby"}));
    assert_eq!(c.recv_event("error").unwrap()["data"]["code"], "FORBIDDEN");
    let (code, _, err) = mint(&["--sub", "ops", "--meta", "[1]"]);
    assert_eq!((code, err.trim()), (Some(2), "partyflow token: --meta must be a JSON object"));
}

#[test]
fn the_server_api_publishes_sends_lists_and_disconnects() {
    let server = Server::start(&["--shards", "3", "--pubsub-secret", SECRET, "--api-key", API_KEY]);
    let api = |method: &str, path: &str, key: Option<&str>, body: &str| common::pubsub::api(&server, method, path, key, body);
    assert_eq!(api("POST", "/api/publish", None, "{}").0, 401);
    assert_eq!(api("POST", "/api/publish", Some("wrong-key-of-some-length"), "{}").0, 401);
    assert_eq!(api("GET", "/api/rooms/r/presence", None, "").0, 401);
    let mut ann = PubSubClient::connect(&server, Some(&token("ann", None, None, None))).unwrap();
    let mut ann2 = PubSubClient::connect(&server, Some(&token("ann", None, None, None))).unwrap();
    let mut bob = PubSubClient::connect(&server, Some(&token("bob", None, None, None))).unwrap();
    ann.join("news").unwrap();
    bob.join("news").unwrap();
    let body = json!({"room": "news", "event": "headline", "data": {"title": "Hi"}}).to_string();
    assert_eq!(api("POST", "/api/publish", Some(API_KEY), &body), (200, json!({"ok": true})));
    for c in [&mut ann, &mut bob] {
        // As a publish, without `from`.
        assert_eq!(c.recv_event("headline").unwrap(), json!({"event": "headline", "room": "news", "data": {"title": "Hi"}}));
    }
    let body = json!({"to": "ann", "event": "notice", "data": [1, 2]}).to_string();
    assert_eq!(api("POST", "/api/send", Some(API_KEY), &body).0, 200);
    for c in [&mut ann, &mut ann2] {
        assert_eq!(c.recv_event("notice").unwrap(), json!({"event": "notice", "data": [1, 2]}));
    }
    let (status, presence) = api("GET", "/api/rooms/news/presence", Some(API_KEY), "");
    assert_eq!(status, 200);
    let users: Vec<&str> = presence["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    assert_eq!((presence["room"].as_str(), users), (Some("news"), vec!["ann", "bob"]));
    assert_eq!(api("GET", "/api/rooms/empty/presence", Some(API_KEY), "").1, json!({"room": "empty", "members": []}));
    for (path, body) in [("/api/publish", r#"{"room":"bad room","event":"e"}"#), ("/api/send", r#"{"to":"","event":"e"}"#), ("/api/send", "nope")] {
        assert_eq!(api("POST", path, Some(API_KEY), body).0, 400, "{path} {body}");
    }
    assert_eq!(api("POST", "/api/disconnect", Some(API_KEY), r#"{"user":"ann"}"#).0, 200);
    for c in [&mut ann, &mut ann2] {
        while c.recv().is_some() {}
        assert_eq!(c.closed, Some(4003));
    }
    assert_eq!(bob.recv_event("user_left").unwrap()["data"]["user"], "ann");
    // Without --api-key the API is not there.
    let off = Server::start(&["--shards", "1"]);
    let (status, body) = post(&off, "/api/publish", &json!({}));
    assert_eq!(status, 404, "{body}");
}
