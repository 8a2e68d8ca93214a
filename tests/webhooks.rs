//! Webhooks to a real HTTP receiver on loopback: signed batches, every event of a whole game in
//! order ending with `game.ended` and its scores, and retries after a `500`, a timeout and a
//! refused connection, with nothing lost and a room's order kept.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::game::started_game;
use common::receiver::{Answer, Receiver};
use common::Server;
use serde_json::{json, Value};

const SECRET: &str = "webhook-test-secret-0123";

fn play_to_the_end(server: &Server) -> String {
    let (room, (mut host, _), mut players) = started_game(server, 2, json!({"rounds": 1, "roundDurationSec": 2}));
    loop {
        let v = host.recv().expect("the host's connection");
        match v["type"].as_str() {
            Some("WORD_REVEALED") => host.send("WORD_SWIPED", json!({"wordId": v["payload"]["wordId"], "action": "guessed"})),
            Some("GAME_ENDED") => break,
            _ => {}
        }
    }
    for (p, _) in players.iter_mut() {
        p.recv_until("GAME_ENDED").unwrap();
    }
    room
}

#[test]
fn a_whole_game_reaches_the_receiver_signed_in_order_and_ends_with_the_scores() {
    let receiver = Receiver::start(SECRET, vec![]);
    let url = receiver.url();
    let server = Server::start(&["--webhook-url", &url, "--webhook-secret", SECRET, "--min-round-duration", "1s", "--countdown", "1", "--score-review", "1s"]);
    let room = play_to_the_end(&server);
    let events: Vec<Value> = receiver.until("game.ended", Duration::from_secs(20)).into_iter().filter(|e| e["roomId"] == room.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"room.created"));
    assert_eq!(kinds.iter().filter(|k| **k == "player.joined").count(), 2);
    assert!(kinds.contains(&"game.started") && kinds.contains(&"round.ended"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"game.ended"));
    // seq counts the room's events from 1 without gaps, in the order delivered.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let ended = events.last().unwrap();
    let teams = ended["data"]["teams"].as_array().unwrap();
    assert_eq!(teams.len(), 2);
    assert!(teams.iter().all(|t| t["score"].is_i64() && t["players"].as_array().unwrap().iter().all(|p| p["name"].is_string())), "{ended}");
    assert!(ended["data"]["winnerTeamId"].is_string() || ended["data"]["winnerTeamId"].is_null());
    assert!(events.iter().all(|e| e["id"].is_string() && e["time"].is_u64() && e["instanceId"].is_string()));
    assert!(server.metric("partyflow_webhook_events_delivered_total", "") >= events.len() as f64);
}

#[test]
fn failures_are_retried_until_delivered_with_nothing_lost_and_order_kept() {
    // A 500, a request left hanging past the timeout, then fine.
    let receiver = Receiver::start(SECRET, vec![Answer::Status(500), Answer::Hang]);
    let url = receiver.url();
    let server = Server::start(&["--webhook-url", &url, "--webhook-secret", SECRET, "--webhook-timeout", "1s", "--webhook-events", "room.,player."]);
    let (room, _, _) = common::game::create_room(&server, json!({"hostName": "Hana"}));
    for name in ["A", "B", "C"] {
        common::game::join(&server, &room, name);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.events.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "not every event arrived: {:?}", receiver.events.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let events: Vec<Value> = receiver.events.lock().unwrap().clone();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "{events:?}");
    assert!(*receiver.requests.lock().unwrap() >= 3, "a 500, a timeout, then success");
    assert!(server.metric("partyflow_webhook_batches_retried_total", "") >= 2.0);
}

#[test]
fn a_refused_connection_is_retried_and_start_up_checks_the_flags() {
    // Nothing listens yet: the events wait and go once the receiver is up.
    let spare = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = spare.local_addr().unwrap();
    drop(spare);
    let url = format!("http://{addr}/hooks");
    let server = Server::start(&["--webhook-url", &url, "--webhook-secret", SECRET]);
    common::game::create_room(&server, json!({"hostName": "Hana"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("partyflow_webhook_requests_failed_total", "") < 1.0 {
        assert!(Instant::now() < deadline, "no failed attempt counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let listener = TcpListener::bind(addr).unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&request).contains("room.created") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the request ended without the event: {}", String::from_utf8_lossy(&request));
        request.extend_from_slice(&chunk[..n]);
    }
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    for (args, says) in [
        (vec!["--webhook-url", "http://127.0.0.1:9/x"], "--webhook-url needs --webhook-secret"),
        (vec!["--webhook-url", "ftp://x", "--webhook-secret", SECRET], "--webhook-url must be an http:// or https:// URL"),
        (vec!["--webhook-url", "http://127.0.0.1:9/x", "--webhook-secret", "short"], "--webhook-secret must be at least 16 characters"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_partyflow")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn pubsub_rooms_report_their_lifecycle() {
    let receiver = Receiver::start(SECRET, vec![]);
    let url = receiver.url();
    let server = Server::start(&["--shards", "2", "--webhook-url", &url, "--webhook-secret", SECRET]);
    let mut a = common::pubsub::PubSubClient::connect(&server, None).unwrap();
    let mut b = common::pubsub::PubSubClient::connect(&server, None).unwrap();
    a.join("lobby").unwrap();
    b.join("lobby").unwrap();
    b.send(json!({"event": "leave", "room": "lobby", "id": 1}));
    b.recv_event("left").unwrap();
    let (ua, ub) = (json!(a.user.clone()), json!(b.user.clone()));
    drop(a);
    let events = receiver.until("room.vacated", Duration::from_secs(20));
    let seen: Vec<(String, u64, Value)> = events
        .iter()
        .filter(|e| e["roomId"] == "lobby")
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["seq"].as_u64().unwrap(), e["data"]["user"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("room.occupied".to_string(), 1, Value::Null),
            ("member.joined".into(), 2, ua.clone()),
            ("member.joined".into(), 3, ub.clone()),
            ("member.left".into(), 4, ub),
            ("member.left".into(), 5, ua),
            ("room.vacated".into(), 6, Value::Null),
        ]
    );
}

/// Emits `n` events for a new room, one every `every` (room.created, then players joining).
fn room_with_joins(server: &Server, n: usize, every: Duration) -> String {
    let (room, _, _) = common::game::create_room(server, json!({"hostName": "Hana"}));
    for i in 1..n {
        std::thread::sleep(every);
        common::game::join(server, &room, &format!("P{i}"));
    }
    room
}

#[test]
fn a_receiver_down_for_ten_seconds_loses_nothing() {
    let spare = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = spare.local_addr().unwrap();
    drop(spare);
    let url = format!("http://{addr}/hooks");
    let server = Server::start(&["--webhook-url", &url, "--webhook-secret", SECRET, "--webhook-events", "room.,player."]);
    let down_since = Instant::now();
    // Two rooms emit 8 events each while nothing listens, for ten seconds.
    let rooms: Vec<String> = std::thread::scope(|s| {
        let a = s.spawn(|| room_with_joins(&server, 8, Duration::from_millis(1_400)));
        let b = s.spawn(|| room_with_joins(&server, 8, Duration::from_millis(1_400)));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down_since.elapsed()));
    assert!(server.metric("partyflow_webhook_requests_failed_total", "") >= 3.0, "requests were tried while the receiver was down");
    assert_eq!(server.metric("partyflow_webhook_events_delivered_total", ""), 0.0);
    let receiver = Receiver::start_on(TcpListener::bind(addr).unwrap(), SECRET, vec![]);
    let events = receiver.until_all(Duration::from_secs(40), |events| events.len() >= 16);
    for room in &rooms {
        let seqs: Vec<u64> = events.iter().filter(|e| e["roomId"] == room.as_str()).map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>(), "room {room}: every event, in order");
    }
    assert_eq!(server.metric("partyflow_webhook_events_dropped_total", ""), 0.0);
}

#[test]
fn a_receiver_that_never_answers_slows_no_room() {
    // Every request hangs; the server would wait 30 s for each.
    let receiver = Receiver::start(SECRET, vec![Answer::Hang; 1_000]);
    let url = receiver.url();
    let server = Server::start(&[
        "--webhook-url",
        &url,
        "--webhook-secret",
        SECRET,
        "--webhook-timeout",
        "30s",
        "--min-round-duration",
        "1s",
        "--countdown",
        "1",
        "--score-review",
        "1s",
    ]);
    let (_room, (mut host, _), mut players) = started_game(&server, 2, json!({"rounds": 1, "roundDurationSec": 4}));
    // The host's every swipe is answered with its WORD_RESULT while the receiver hangs.
    let mut round_trips = Vec::new();
    let mut sent_at = None;
    loop {
        let v = host.recv().expect("the host's connection");
        match v["type"].as_str() {
            Some("WORD_REVEALED") => {
                sent_at = Some(Instant::now());
                host.send("WORD_SWIPED", json!({"wordId": v["payload"]["wordId"], "action": "guessed"}));
            }
            Some("WORD_RESULT") => round_trips.extend(sent_at.take().map(|t| t.elapsed())),
            Some("GAME_ENDED") => break,
            _ => {}
        }
    }
    for (p, _) in players.iter_mut() {
        p.recv_until("GAME_ENDED").unwrap();
    }
    assert!(*receiver.requests.lock().unwrap() >= 1, "the receiver was holding a request");
    assert_eq!(server.metric("partyflow_webhook_events_delivered_total", ""), 0.0, "nothing was acknowledged");
    assert!(round_trips.len() >= 2, "{round_trips:?}");
    // A shard waiting on the receiver would show seconds here (the timeout is 30 s).
    assert!(round_trips.iter().all(|rtt| *rtt < Duration::from_secs(1)), "{round_trips:?}");
}
