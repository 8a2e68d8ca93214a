//! The admin API over real sockets: listing (filtered, paged, across instances), a room's
//! detail, closing a game room and kicking a player or a `/pubsub` user, each seen by the
//! clients; every endpoint refuses a request without the key.

mod common;

use std::time::Duration;

use common::game::{create_room, join, GameClient};
use common::pubsub::{api, api_at, PubSubClient};
use common::receiver::Receiver;
use common::redis::Redis;
use common::Server;
use serde_json::{json, Value};

const KEY: &str = "admin-test-key-0123456789";
const HOOK_SECRET: &str = "admin-test-hook-secret-01";

fn get(server: &Server, path: &str) -> (u16, Value) {
    api(server, "GET", path, Some(KEY), "")
}

fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    api(server, "POST", path, Some(KEY), &body.to_string())
}

/// A game room with its host and two players connected.
fn game_room(server: &Server) -> (String, GameClient, Vec<(GameClient, String, String)>) {
    let (room, host_id, host_token) = create_room(server, json!({"hostName": "Hana"}));
    let mut host = GameClient::connect(server, &room, &host_id, &host_token).unwrap();
    host.recv_until("CONNECTED").unwrap();
    let mut players = Vec::new();
    for name in ["Ann", "Bob"] {
        let (id, token, _) = join(server, &room, name);
        let mut client = GameClient::connect(server, &room, &id, &token).unwrap();
        client.recv_until("CONNECTED").unwrap();
        players.push((client, id, token));
    }
    (room, host, players)
}

/// Reads until the server closes; the close code.
fn close_code(client: &mut GameClient) -> u16 {
    while client.recv().is_some() {}
    client.seen.last().and_then(|v| v["close"].as_u64()).unwrap_or(0) as u16
}

#[test]
fn every_admin_endpoint_needs_the_key() {
    let server = Server::start(&["--api-key", KEY]);
    for (method, path) in [("GET", "/api/rooms"), ("GET", "/api/rooms/ABC123"), ("POST", "/api/rooms/ABC123/close"), ("POST", "/api/rooms/ABC123/kick")] {
        let body = if method == "POST" { "{}" } else { "" };
        assert_eq!(api(&server, method, path, None, body).0, 401, "{method} {path}");
        assert_eq!(api(&server, method, path, Some("wrong-key-wrong-key"), body).0, 401, "{method} {path}");
    }
    assert_eq!(get(&server, "/api/rooms?kind=chat").0, 400);
    assert_eq!(get(&server, "/api/rooms/NOSUCH").0, 404);
    assert_eq!(post(&server, "/api/rooms/NOSUCH/close", json!({})).0, 404);
    // The page is served (the key guards the calls it makes), unless turned off.
    let (status, page) = server.get("/admin");
    assert!(status == 200 && page.contains("data-testid=\"admin-key\""));
    let off = Server::start(&["--api-key", KEY, "--admin-page", "false"]);
    assert_eq!(off.get("/admin").0, 404);
    assert_eq!(api(&off, "GET", "/api/rooms", Some(KEY), "").0, 200, "the API stays");
}

#[test]
fn a_game_room_is_listed_shown_kicked_from_and_closed() {
    let receiver = Receiver::start(HOOK_SECRET, vec![]);
    let hooks = receiver.url();
    let server =
        Server::start(&["--api-key", KEY, "--shards", "2", "--webhook-url", &hooks, "--webhook-secret", HOOK_SECRET, "--webhook-events", "room.closed"]);
    let (room, mut host, mut players) = game_room(&server);
    let (status, list) = get(&server, "/api/rooms?kind=game");
    assert_eq!(status, 200, "{list}");
    let row = list["rooms"].as_array().unwrap().iter().find(|r| r["id"] == room.as_str()).cloned().unwrap();
    assert_eq!(
        (row["kind"].as_str(), row["state"].as_str(), row["members"].as_u64(), row["connected"].as_u64()),
        (Some("game"), Some("LOBBY"), Some(3), Some(3))
    );
    assert!(row["created"].is_i64() && row["instance"].is_string() && row["shard"].is_u64());
    assert!(get(&server, "/api/rooms?kind=pubsub").1["rooms"].as_array().unwrap().is_empty());

    let (status, detail) = get(&server, &format!("/api/rooms/{room}"));
    assert_eq!(status, 200, "{detail}");
    let roles: Vec<(&str, &str, bool)> = detail["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["role"].as_str().unwrap(), m["connected"].as_bool().unwrap()))
        .collect();
    assert_eq!(roles, [("Hana", "host", true), ("Ann", "player", true), ("Bob", "player", true)]);
    assert_eq!(detail["state"], "LOBBY");

    // Kicked without a ban: Ann's connection closes with 4004, her token still admits her.
    let (ann, ann_id, ann_token) = players.remove(0);
    let mut ann = ann;
    assert_eq!(post(&server, &format!("/api/rooms/{room}/kick"), json!({"playerId": ann_id})).0, 200);
    assert_eq!(close_code(&mut ann), 4004);
    let mut ann_again = GameClient::connect(&server, &room, &ann_id, &ann_token).unwrap();
    ann_again.recv_until("CONNECTED").unwrap();
    // Kicked with a ban: Bob loses his seat (the others hear PLAYER_LEFT) and his token.
    let (mut bob, bob_id, bob_token) = players.remove(0);
    assert_eq!(post(&server, &format!("/api/rooms/{room}/kick"), json!({"playerId": bob_id, "ban": true})).0, 200);
    assert_eq!(close_code(&mut bob), 4004);
    let left = host.recv_until("PLAYER_LEFT").unwrap();
    assert_eq!((left["payload"]["playerId"].as_str(), left["payload"]["reason"].as_str()), (Some(bob_id.as_str()), Some("kicked")));
    let refused = common::http_raw(server.addr, &format!("GET /ws?roomId={room}&token={bob_token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    assert_eq!(common::parse_response(&refused).0, 401, "a banned player's token no longer admits it");
    assert_eq!(post(&server, &format!("/api/rooms/{room}/kick"), json!({"playerId": detail["members"][0]["id"]})).0, 409, "not the host");
    assert_eq!(post(&server, &format!("/api/rooms/{room}/kick"), json!({"playerId": "player_nobody"})).0, 404);

    // Closed: everyone hears ROOM_CLOSED {reason: admin}; the backend hears room.closed.
    assert_eq!(post(&server, &format!("/api/rooms/{room}/close"), json!({"reason": "reported"})).0, 200);
    assert_eq!(host.recv_until("ROOM_CLOSED").unwrap()["payload"]["reason"], "admin");
    assert_eq!(ann_again.recv_until("ROOM_CLOSED").unwrap()["payload"]["reason"], "admin");
    let events = receiver.until("room.closed", Duration::from_secs(10));
    assert_eq!(events.iter().find(|e| e["roomId"] == room.as_str()).unwrap()["data"]["reason"], "admin");
    assert!(server.metric("partyflow_admin_actions_total", "action=\"kick\"") >= 2.0);
    assert!(server.metric("partyflow_admin_actions_total", "action=\"close\"") >= 1.0);
    assert!(server.log().iter().any(|l| l.contains("admin closed a room")));
}

#[test]
fn pubsub_rooms_are_listed_shown_and_a_user_kicked() {
    let server = Server::start(&["--api-key", KEY, "--shards", "2"]);
    let mut a = PubSubClient::connect(&server, None).unwrap();
    let mut b = PubSubClient::connect(&server, None).unwrap();
    a.join("lobby").unwrap();
    b.join("lobby").unwrap();
    let (_, list) = get(&server, "/api/rooms?kind=pubsub");
    assert_eq!(list["rooms"][0]["id"], "lobby");
    assert_eq!(list["rooms"][0]["members"], 2);
    let (_, detail) = get(&server, "/api/rooms/lobby");
    let mut users: Vec<&str> = detail["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    users.sort();
    let mut expected = vec![a.user.as_str(), b.user.as_str()];
    expected.sort();
    assert_eq!((detail["kind"].as_str(), users), (Some("pubsub"), expected));
    assert_eq!(post(&server, "/api/rooms/lobby/close", json!({})).0, 409, "a /pubsub room is not closed, its users are kicked");
    assert_eq!(post(&server, "/api/rooms/lobby/kick", json!({"user": b.user, "ban": true})).0, 200);
    while b.recv().is_some() {}
    assert_eq!(b.closed, Some(4004));
    a.recv_event("user_left").unwrap();
    let (_, after) = get(&server, "/api/rooms/lobby");
    assert_eq!(after["members"].as_array().unwrap().len(), 1);
}

#[test]
fn a_banned_pubsub_user_cannot_join_again() {
    let secret = "admin-pubsub-secret-0123";
    let server = Server::start(&["--api-key", KEY, "--pubsub-secret", secret]);
    let token = common::pubsub::token_for(secret, "eve");
    let mut eve = PubSubClient::connect(&server, Some(&token)).unwrap();
    eve.join("lobby").unwrap();
    assert_eq!(post(&server, "/api/rooms/lobby/kick", json!({"user": "eve", "ban": true})).0, 200);
    while eve.recv().is_some() {}
    assert_eq!(eve.closed, Some(4004));
    let mut again = PubSubClient::connect(&server, Some(&token)).unwrap();
    again.send(json!({"event": "join", "room": "lobby", "id": 7}));
    let error = again.recv_event("error").unwrap();
    assert_eq!((error["id"].as_i64(), error["data"]["code"].as_str()), (Some(7), Some("FORBIDDEN")));
    // Not in the room: publishing to it is NOT_IN_ROOM; other rooms are open to eve.
    again.send(json!({"event": "say", "room": "lobby", "data": 1, "id": 8}));
    assert_eq!(again.recv_event("error").unwrap()["data"]["code"], "NOT_IN_ROOM");
    again.join("elsewhere").unwrap();
}

#[test]
fn the_listing_pages_with_a_cursor() {
    let server = Server::start(&["--api-key", KEY, "--shards", "2"]);
    let mut rooms: Vec<String> = (0..5).map(|_| create_room(&server, json!({"hostName": "H"})).0).collect();
    rooms.sort();
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            None => "/api/rooms?limit=2".to_string(),
            Some(c) => format!("/api/rooms?limit=2&cursor={}", c.replace(',', "%2C").replace(':', "%3A")),
        };
        let (status, page) = get(&server, &path);
        assert_eq!(status, 200, "{page}");
        let ids: Vec<String> = page["rooms"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, rooms);
}

#[test]
fn with_redis_the_api_spans_instances() {
    let redis = Redis::start();
    let url = redis.url();
    let start = |id: &str| Server::start(&["--api-key", KEY, "--secret", "admin-cluster-secret", "--redis", &url, "--instance-id", id]);
    let (a, b) = (start("adm-a"), start("adm-b"));
    let (room, mut host, _players) = game_room(&a);
    // Listed by b, with a as its instance (b learns of a within its heartbeat).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let row = loop {
        let (status, list) = api_at(b.addr, "GET", "/api/rooms", Some(KEY), "");
        assert_eq!(status, 200, "{list}");
        if let Some(row) = list["rooms"].as_array().unwrap().iter().find(|r| r["id"] == room.as_str()) {
            break row.clone();
        }
        assert!(std::time::Instant::now() < deadline, "b never listed a's room: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(row["instance"], "adm-a");
    // Shown and closed through b.
    let (status, detail) = api_at(b.addr, "GET", &format!("/api/rooms/{room}"), Some(KEY), "");
    assert_eq!((status, detail["instance"].as_str()), (200, Some("adm-a")), "{detail}");
    assert_eq!(api_at(b.addr, "POST", &format!("/api/rooms/{room}/close"), Some(KEY), "{}").0, 200);
    assert_eq!(host.recv_until("ROOM_CLOSED").unwrap()["payload"]["reason"], "admin");
}
