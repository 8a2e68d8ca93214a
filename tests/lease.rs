//! Room leases against a real `redis-server`: an instance gives a room up the moment another
//! instance holds its lease, or when it cannot renew the lease for a whole TTL, and the game
//! goes on from its last state once the room can be served again.

mod common;

use std::time::{Duration, Instant};

use common::game::{get_json, post, started_game, GameClient};
use common::redis::Redis;
use common::Server;
use serde_json::json;

fn server(redis: &Redis, lease_ttl: &str) -> Server {
    let url = redis.url();
    let args = ["--shards", "2", "--secret", "s", "--redis", url.as_str(), "--instance-id", "node-a", "--room-lease-ttl", lease_ttl, "--countdown", "1"];
    Server::start(&[&args[..], &["--min-round-duration", "1s", "--persist-interval", "20ms"]].concat())
}

/// Reads until the server closes the connection; the close code.
fn close_code(client: &mut GameClient) -> u64 {
    while client.recv().is_some() {}
    client.seen.last().and_then(|v| v["close"].as_u64()).unwrap_or(0)
}

#[test]
fn a_room_whose_lease_another_instance_holds_is_given_up_at_once() {
    let redis = Redis::start();
    let s = server(&redis, "3s");
    let (room, (mut host, host_token), _players) = started_game(&s, 2, json!({}));
    let lease = format!("partyflow:lease:{room}");
    assert_eq!(redis.get(&lease).as_deref(), Some("node-a"));
    let snapshot_key = format!("partyflow:room:{room}");
    redis.wait_for(&snapshot_key, |v| v.is_some_and(|v| v["game"]["state"] == "ROUND_ACTIVE"));
    // Another instance (that died at once) holds the lease now.
    redis::cmd("SET").arg(&lease).arg("node-x").arg("PX").arg(60_000).query::<()>(&mut redis.conn()).unwrap();
    let taken = Instant::now();
    assert_eq!(close_code(&mut host), 1012, "the host is told to reconnect");
    assert!(taken.elapsed() < Duration::from_secs(3), "given up within one renewal: {:?}", taken.elapsed());
    assert_eq!(s.metric("partyflow_rooms_fenced_total", ""), 1.0);
    let frozen = redis.get(&snapshot_key);
    // node-x has no heartbeat: the room is moving, not here.
    let (status, body) = get_json(&s, &format!("/rooms/{room}"));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("ROOM_MOVING")), "{body}");
    assert_eq!(redis.get(&snapshot_key), frozen, "a fenced instance writes nothing");
    // The lease runs out (here: goes): the room is served again from its snapshot.
    redis::cmd("DEL").arg(&lease).query::<()>(&mut redis.conn()).unwrap();
    let mut host = GameClient::connect_when_ready(&s, &room, &host.actor, &host_token, Duration::from_secs(5)).unwrap();
    let hello = host.recv_until("CONNECTED").unwrap();
    assert_eq!(hello["payload"]["state"], "ROUND_PAUSED", "a running turn comes back paused");
    assert_eq!(redis.get(&lease).as_deref(), Some("node-a"));
}

#[test]
fn redis_down_past_the_lease_suspends_the_room_and_it_resumes_when_redis_returns() {
    let mut redis = Redis::start();
    let port = redis.port;
    let s = server(&redis, "1s");
    let (room, (mut host, host_token), _players) = started_game(&s, 2, json!({}));
    let word = host.seen.iter().rev().find(|v| v["type"] == "WORD_REVEALED").unwrap()["payload"]["wordId"].clone();
    host.send("WORD_SWIPED", json!({"wordId": word, "action": "guessed"}));
    host.recv_until("WORD_RESULT").unwrap();
    host.fence().unwrap();
    redis.stop();
    // Unrenewable for a whole TTL: the room stops here (another instance could have it by now).
    assert_eq!(close_code(&mut host), 1012);
    let (status, body) = post(&s, &format!("/rooms/{room}/players"), &json!({"playerName": "late"}));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("STORE_UNAVAILABLE")), "{body}");
    // Redis comes back empty; the room's last state, kept by the store, is written and served.
    let redis = Redis::start_on(port);
    let mut host = GameClient::connect_when_ready(&s, &room, &host.actor, &host_token, Duration::from_secs(15)).unwrap();
    let hello = host.recv_until("CONNECTED").unwrap();
    assert_eq!(hello["payload"]["state"], "ROUND_PAUSED");
    let scores: Vec<i64> = hello["payload"]["snapshot"]["teams"].as_array().unwrap().iter().map(|t| t["score"].as_i64().unwrap()).collect();
    assert_eq!(scores.iter().sum::<i64>(), 1, "the point scored before the outage is kept: {hello}");
    assert_eq!(redis.get(&format!("partyflow:lease:{room}")).as_deref(), Some("node-a"));
    host.send("HOST_RESUME", json!({}));
    host.recv_until("GAME_RESUMED").unwrap();
}
