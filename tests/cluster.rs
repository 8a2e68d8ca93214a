//! Several instances sharing one real `redis-server`: instance identity, and `/relay` rooms with
//! members on different instances (exact, per-sender ordered, no duplicates), also across a
//! Redis restart.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::game::get_json;
use common::redis::Redis;
use common::{connect, Client, Server};
use tungstenite::Message;

/// Members of every test room: two on each instance.
const MEMBERS: usize = 4;

fn instance(redis: &Redis, id: &str) -> Server {
    let url = redis.url();
    Server::start(&["--shards", "2", "--secret", "s", "--redis", url.as_str(), "--instance-id", id])
}

fn set_timeout(ws: &mut Client, timeout: Duration) {
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(timeout)).unwrap();
    }
}

fn text(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("relay connection") {
            Message::Text(t) => return t.to_string(),
            _ => continue,
        }
    }
}

/// Until every member has seen a probe from every other member's instance: subscriptions are
/// set up asynchronously, so wait for them on messages, not on a clock.
fn until_joined(members: &mut [Client]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for round in 0.. {
        assert!(Instant::now() < deadline, "instances never joined the room");
        for (i, m) in members.iter_mut().enumerate() {
            m.send(Message::text(format!("probe {round} {i}"))).unwrap();
        }
        // Each member reads the probes of this round that reach it.
        let mut heard_all = true;
        for m in members.iter_mut() {
            set_timeout(m, Duration::from_millis(300));
            let mut from: Vec<usize> = Vec::new();
            while let Ok(Message::Text(t)) = m.read() {
                let parts: Vec<&str> = t.split(' ').collect();
                if parts.first() == Some(&"probe") && parts.get(1) == Some(&round.to_string().as_str()) {
                    from.push(parts[2].parse().unwrap());
                }
            }
            set_timeout(m, Duration::from_secs(10));
            from.sort();
            from.dedup();
            heard_all &= from.len() == MEMBERS;
        }
        if heard_all {
            return;
        }
    }
}

/// Every member sends `n` messages; every member must get all of them once, each sender's in
/// order.
fn exchange(members: &mut [Client], n: usize, tag: &str) {
    for i in 0..n {
        for (m, ws) in members.iter_mut().enumerate() {
            ws.send(Message::text(format!("{tag} {m} {i}"))).unwrap();
        }
    }
    for (who, ws) in members.iter_mut().enumerate() {
        let mut next: HashMap<usize, usize> = HashMap::new();
        let mut got = 0;
        while got < n * MEMBERS {
            let t = text(ws);
            let parts: Vec<&str> = t.split(' ').collect();
            if parts[0] != tag {
                continue;
            }
            let (sender, i): (usize, usize) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
            let expected = next.entry(sender).or_default();
            assert_eq!(i, *expected, "member {who}: sender {sender}'s messages out of order or duplicated");
            *expected += 1;
            got += 1;
        }
    }
}

#[test]
fn a_relay_room_spans_two_instances_exactly_and_in_order() {
    let redis = Redis::start();
    let (a, b) = (instance(&redis, "node-a"), instance(&redis, "node-b"));
    let mut members: Vec<Client> =
        vec![connect(&a, "/relay?room=lobby"), connect(&a, "/relay?room=lobby"), connect(&b, "/relay?room=lobby"), connect(&b, "/relay?room=lobby")];
    until_joined(&mut members);
    exchange(&mut members, 50, "m");
    // Each instance published each of its members' messages once and skipped its own.
    let published = a.metric("partyflow_relay_published_total", "");
    assert!(published >= 100.0, "{published}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h) = get_json(&a, "/health");
        if h["instances"].as_array().is_some_and(|l| l.len() == 2) {
            assert_eq!(h["instanceId"], "node-a");
            break;
        }
        assert!(Instant::now() < deadline, "instances never listed: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn relay_across_instances_survives_a_redis_restart() {
    let mut redis = Redis::start();
    let port = redis.port;
    let (a, b) = (instance(&redis, "node-a"), instance(&redis, "node-b"));
    let mut members: Vec<Client> =
        vec![connect(&a, "/relay?room=r1"), connect(&a, "/relay?room=r1"), connect(&b, "/relay?room=r1"), connect(&b, "/relay?room=r1")];
    until_joined(&mut members);
    exchange(&mut members, 10, "before");
    redis.stop();
    // Local delivery goes on while Redis is gone; nothing crashes.
    members[0].send(Message::text("local-only")).unwrap();
    while text(&mut members[1]) != "local-only" {}
    let _redis = Redis::start_on(port);
    until_joined(&mut members);
    exchange(&mut members, 10, "after");
    assert!(get_json(&a, "/health").0 == 200 && get_json(&b, "/health").0 == 200);
}

#[test]
fn a_game_room_has_one_live_owner_and_another_instance_takes_over_when_it_dies() {
    use common::game::{started_game, GameClient};
    use serde_json::json;
    let redis = Redis::start();
    let fast = ["--countdown", "1", "--score-review", "300ms", "--min-round-duration", "1s"];
    let url = redis.url();
    let start = |id: &str| Server::start(&[&["--shards", "2", "--secret", "s", "--redis", url.as_str(), "--instance-id", id][..], &fast[..]].concat());
    let a = start("node-a");
    let b = start("node-b");
    let (room, (mut host, host_token), _players) = started_game(&a, 2, json!({"rounds": 1, "roundDurationSec": 3}));
    let key = format!("partyflow:room:{room}");
    redis.wait_for(&key, |v| v.is_some_and(|v| v["instance"] == "node-a"));
    // While its owner lives, another instance refuses the room instead of forking it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_json(&b, &format!("/rooms/{room}"));
        if status == 421 {
            assert_eq!(body["error"]["code"], "ROOM_ON_ANOTHER_INSTANCE");
            break;
        }
        // a writes its heartbeat key within a second of starting; until then b would recover.
        assert!(Instant::now() < deadline, "b never saw a: {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
        assert!(get_json(&b, "/health").1["instances"].as_array().is_some_and(|l| l.len() <= 2));
    }
    let host_id = host.actor.clone();
    // Let the write-behind catch up with what the host has seen, then kill the owner.
    host.fence();
    let version = host.seen.iter().rev().find_map(|v| v["payload"]["stateVersion"].as_u64()).unwrap();
    redis.wait_for(&key, |v| v.is_some_and(|v| v["game"]["stateVersion"].as_u64() >= Some(version)));
    drop(host);
    drop(a); // SIGKILL
             // Once a's heartbeat has expired, b takes the room over from its last snapshot.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get_json(&b, &format!("/rooms/{room}"));
        if status == 200 {
            break;
        }
        assert_eq!(status, 421, "{body}");
        assert!(Instant::now() < deadline, "b never took the room over");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The game goes on from its last snapshot: a running turn comes back paused for the host.
    let mut host = GameClient::connect(&b, &room, &host_id, &host_token);
    let hello = host.recv_until("CONNECTED");
    if hello["payload"]["state"] == "ROUND_PAUSED" {
        host.send("HOST_RESUME", json!({}));
    }
    loop {
        let v = host.recv().expect("the game goes on at b");
        match v["type"].as_str() {
            Some("GAME_PAUSED") => host.send("HOST_RESUME", json!({})),
            Some("FINAL_RESULTS") => break,
            _ => {}
        }
    }
    redis.wait_for(&key, |v| v.is_some_and(|v| v["instance"] == "node-b"));
}
