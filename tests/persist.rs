//! Write-behind persistence and crash recovery against a real `redis-server` and real server
//! processes: SIGKILL mid-turn and a restart, Redis stopped and restarted during a game, Redis
//! paused until the queue overflows, the key's lifetime, and Redis down at start. Outages longer
//! than a room's lease: tests/lease.rs.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::game::{get_json, started_game, GameClient};
use common::redis::Redis;
use common::Server;
use partyflow::rooms::SEQUENCE_GAP;
use serde_json::{json, Value};

const FAST: &[&str] = &["--shards", "2", "--countdown", "1", "--score-review", "300ms", "--min-round-duration", "1s", "--secret", "test-secret"];

/// A server persisting to `redis` (every 20 ms unless `extra` says otherwise).
fn server(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let interval: &[&str] = if extra.contains(&"--persist-interval") { &[] } else { &["--persist-interval", "20ms"] };
    Server::start(&[FAST, &["--redis", url.as_str()], interval, extra].concat())
}

fn key(room: &str) -> String {
    format!("partyflow:room:{room}")
}

fn score(snapshot: Option<&Value>, team: usize) -> Option<i64> {
    snapshot?["game"]["teams"].get(team)?["score"].as_i64()
}

/// Swipes the word the host sees as `guessed` and waits for the next word.
fn swipe(host: &mut GameClient) -> Value {
    let word = host.seen.iter().rev().find(|v| v["type"] == "WORD_REVEALED").unwrap()["payload"]["wordId"].clone();
    host.send("WORD_SWIPED", json!({"wordId": word, "action": "guessed"}));
    let result = host.recv_until("WORD_RESULT").unwrap();
    host.recv_until("WORD_REVEALED").unwrap();
    result
}

fn health(server: &Server) -> Value {
    get_json(server, "/health").1
}

fn wait_health(server: &Server, redis_state: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while health(server)["redis"] != redis_state {
        assert!(std::time::Instant::now() < deadline, "/health never said redis {redis_state}: {}", health(server));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_mid_turn_then_restart_recovers_the_game_paused_and_it_finishes() {
    let redis = Redis::start();
    // The same instance restarting (its id is normally host:port; the test's port changes).
    let a = server(&redis, &["--instance-id", "node-1"]);
    let (room, (mut host, host_token), players) = started_game(&a, 2, json!({"rounds": 1, "roundDurationSec": 8}));
    for _ in 0..3 {
        swipe(&mut host);
    }
    let revealed_before: HashSet<String> =
        host.seen.iter().filter(|v| v["type"] == "WORD_REVEALED").map(|v| v["payload"]["wordId"].as_str().unwrap().to_string()).collect();
    let last_seq = host.last_seq();
    // The write-behind caught up with the third point (waiting on Redis, not on a clock).
    let saved = redis.wait_for(&key(&room), |v| score(v, 0) == Some(3)).unwrap();
    assert_eq!(saved["format"], 1);
    let host_id = host.actor.clone();
    let player_ids: Vec<(String, String)> = players.iter().map(|(c, t)| (c.actor.clone(), t.clone())).collect();
    drop((host, players));
    drop(a); // SIGKILL

    let b = server(&redis, &["--instance-id", "node-1"]);
    let (status, summary) = get_json(&b, &format!("/rooms/{room}"));
    assert_eq!((status, summary["state"].as_str()), (200, Some("ROUND_PAUSED")), "{summary}");
    let mut host = GameClient::connect(&b, &room, &host_id, &host_token).unwrap();
    let hello = host.recv_until("CONNECTED").unwrap();
    let snapshot = &hello["payload"]["snapshot"];
    assert_eq!(hello["payload"]["role"], "host");
    assert_eq!(snapshot["teams"][0]["score"], 3);
    assert_eq!(snapshot["round"]["turnNumber"], 1);
    assert_eq!(snapshot["round"]["paused"], true);
    assert!(hello["payload"]["lastSequenceId"].as_u64().unwrap() > last_seq + SEQUENCE_GAP - 1, "sequence ids never go backwards");
    host.send("RECONNECT", json!({"lastSeqId": last_seq}));
    let reply = host.recv_until("RECONNECTED").unwrap();
    assert_eq!(reply["payload"]["missedEvents"], Value::Null, "the snapshot path, never a wrong backfill");
    assert_eq!(reply["payload"]["currentState"], "ROUND_PAUSED");
    let mut clients = Vec::new();
    for (id, token) in &player_ids {
        let mut c = GameClient::connect(&b, &room, id, token).unwrap();
        let hello = c.recv_until("CONNECTED").unwrap();
        assert_eq!(hello["payload"]["snapshot"]["teams"][0]["score"], 3);
        assert!(hello["payload"]["snapshot"].get("currentWord").is_none());
        clients.push(c);
    }
    host.send("HOST_RESUME", json!({}));
    host.recv_until("GAME_RESUMED").unwrap();
    let current = snapshot["currentWord"]["wordId"].as_str().unwrap().to_string();
    host.seen.push(json!({"type": "WORD_REVEALED", "payload": {"wordId": current}}));
    let result = swipe(&mut host);
    assert_eq!(result["payload"]["newScore"], 4);
    assert!(result["sequenceId"].as_u64().unwrap() > last_seq + SEQUENCE_GAP);
    loop {
        let v = host.recv().expect("host connection");
        if v["type"] == "WORD_REVEALED" {
            let word = v["payload"]["wordId"].as_str().unwrap().to_string();
            assert!(!revealed_before.contains(&word), "{word} was dealt before the crash");
        }
        if v["type"] == "FINAL_RESULTS" {
            break;
        }
    }
    for c in &mut clients {
        c.recv_until("FINAL_RESULTS").unwrap();
    }
}

#[test]
fn redis_stopped_and_restarted_during_a_game() {
    let mut redis = Redis::start();
    let port = redis.port;
    // An outage within the room's lease (a longer one: tests/lease.rs).
    let s = server(&redis, &["--room-lease-ttl", "10m"]);
    let (room, (mut host, _), mut players) = started_game(&s, 2, json!({}));
    swipe(&mut host);
    redis.wait_for(&key(&room), |v| score(v, 0) == Some(1));
    redis.stop();
    // Gameplay carries on without a hiccup for the clients.
    for _ in 0..3 {
        swipe(&mut host);
    }
    wait_health(&s, "down");
    let (player, _) = &mut players[0];
    let seen = player.fence().unwrap();
    assert!(seen.iter().chain(&player.seen).all(|v| v["type"] != "ERROR" || v["payload"]["code"] == "UNKNOWN_TYPE"), "no error reached a client");
    // Redis comes back empty; everything in memory is written again.
    let redis = Redis::start_on(port);
    wait_health(&s, "up");
    redis.wait_for(&key(&room), |v| score(v, 0) == Some(4));
    assert!(s.metric("partyflow_persist_failures_total", "") >= 1.0);
}

#[test]
fn a_paused_redis_fills_the_queue_and_the_game_goes_on() {
    let redis = Redis::start();
    // The lease outlives the pause (its renewals are writes too); the host may swipe quickly.
    let s = server(&redis, &["--persist-queue", "1", "--persist-interval", "5ms", "--room-lease-ttl", "60s", "--client-message-rate", "1000"]);
    let rooms: Vec<_> = (0..3).map(|_| started_game(&s, 2, json!({}))).collect();
    let (room, (mut host, _), _) = rooms.into_iter().next().unwrap();
    // Paused until the test says so, not for a fixed time a slow machine could outlast.
    redis::cmd("CLIENT").arg("PAUSE").arg(30_000).arg("WRITE").query::<()>(&mut redis.conn()).unwrap();
    // While Redis does not answer writes, every swipe is still played at once.
    for _ in 0..5 {
        swipe(&mut host);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.metric("partyflow_persist_queue_full_total", "") < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the queue never filled");
        swipe(&mut host);
    }
    let points = host.seen.iter().filter(|v| v["type"] == "WORD_RESULT").count() as i64;
    redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut redis.conn()).unwrap();
    // Once Redis answers again, the newest state gets through.
    redis.wait_for(&key(&room), |v| score(v, 0) == Some(points));
}

#[test]
fn the_key_lives_with_the_room_and_goes_when_it_closes() {
    let redis = Redis::start();
    let s = server(&redis, &["--persist-ttl", "1h"]);
    let (room, (mut host, _), _) = started_game(&s, 2, json!({}));
    redis.wait_for(&key(&room), |v| v.is_some_and(|v| v["game"]["state"] == "ROUND_ACTIVE"));
    let ttl: i64 = redis::cmd("PTTL").arg(key(&room)).query(&mut redis.conn()).unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "TTL set and refreshed: {ttl} ms");
    host.send("ROOM_CLOSE", json!({}));
    host.recv_until("ROOM_CLOSED").unwrap();
    redis.wait_for(&key(&room), |v| v.is_none());
    // A closed room is not recovered: it is gone.
    assert_eq!(get_json(&s, &format!("/rooms/{room}")).0, 404);
}

#[test]
fn redis_down_at_start_refuses_new_game_rooms_until_it_is_up_and_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let s = Server::start(&[FAST, &["--redis", url.as_str()]].concat());
    wait_health(&s, "down");
    // A game room needs its lease: without Redis there is none to take.
    let (status, body) = common::game::post(&s, "/rooms", &json!({"hostName": "H"}));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("STORE_UNAVAILABLE")), "{body}");
    assert!(s.log().iter().any(|l| l.contains("redis is unreachable")), "the log says so");
    // Relay rooms do not need Redis.
    let mut relay = common::connect(&s, "/relay?room=r");
    relay.send(tungstenite::Message::text("hi")).unwrap();
    assert_eq!(relay.read().unwrap(), tungstenite::Message::text("hi"));
    let _redis = Redis::start_on(port);
    wait_health(&s, "up");
    let (_room, (mut host, _), _) = started_game(&s, 2, json!({}));
    swipe(&mut host);
}

#[test]
fn redis_without_a_secret_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_partyflow")).args(["--redis", "redis://127.0.0.1:1/0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--redis needs --secret"));
}

#[test]
fn in_memory_by_default() {
    let s = Server::start(FAST);
    assert_eq!(health(&s)["redis"], "disabled");
}
