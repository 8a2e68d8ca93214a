//! Several instances sharing one real `redis-server`: instance identity, `/relay` rooms with
//! members on different instances (exact, per-sender ordered, no duplicates), also across a
//! Redis restart, and game rooms played through any instance: host-only events, reconnection
//! with backfill and the owner's death, all through a forwarding instance.

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
    ws.get_ref().set_read_timeout(Some(timeout)).unwrap();
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
    let numsub = || -> i64 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg("partyflow:relay:lobby").query(&mut redis.conn()).unwrap();
        n
    };
    assert_eq!(numsub(), 2, "one subscription per instance, not per member");
    let before = a.metric("partyflow_relay_published_total", "");
    exchange(&mut members, 50, "m");
    // Each instance published each of its members' messages once (not once per member) and
    // skipped its own. Everything was delivered, so the counter is at most a batch behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.metric("partyflow_relay_published_total", "") - before < 100.0 {
        assert!(Instant::now() < deadline, "a published fewer than its members' 100 messages");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.metric("partyflow_relay_published_total", "") - before, 100.0, "one publication per message");
    // b's members leave: b unsubscribes, a stays.
    for mut m in members.drain(2..) {
        m.close(None).unwrap();
        while m.read().is_ok() {}
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while numsub() != 1 {
        assert!(Instant::now() < deadline, "b kept its subscription after its last member left");
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// An instance for game rooms, with short game timings and a 2 s lease.
fn game_instance(redis: &Redis, id: &str) -> Server {
    let url = redis.url();
    let fast = ["--countdown", "1", "--score-review", "300ms", "--min-round-duration", "1s", "--room-lease-ttl", "2s"];
    Server::start(&[&["--shards", "2", "--secret", "s", "--redis", url.as_str(), "--instance-id", id][..], &fast[..]].concat())
}

fn lease_holder(redis: &Redis, room: &str) -> Option<String> {
    redis.get(&format!("partyflow:lease:{room}"))
}

#[test]
fn a_game_is_played_with_the_host_on_one_instance_and_players_on_another() {
    use common::game::{started_game_at, Where};
    use serde_json::json;
    let redis = Redis::start();
    let (a, b) = (game_instance(&redis, "node-a"), game_instance(&redis, "node-b"));
    // The room lives on a; the players join and play through b, which forwards to a.
    let at = Where { create: &a, host: &a, players: &b };
    let (room, (mut host, _), mut players) = started_game_at(at, 2, json!({"rounds": 1, "roundDurationSec": 2}));
    assert_eq!(lease_holder(&redis, &room).as_deref(), Some("node-a"));
    let (status, summary) = get_json(&b, &format!("/rooms/{room}"));
    assert_eq!((status, summary["connectedCount"].as_u64()), (200, Some(3)), "b answers for a: {summary}");
    // A full turn: the host swipes twice, the timer ends the turn, everyone sees the summary.
    for _ in 0..2 {
        let word = host.seen.iter().rev().find(|v| v["type"] == "WORD_REVEALED").unwrap()["payload"]["wordId"].clone();
        host.send("WORD_SWIPED", json!({"wordId": word, "action": "guessed"}));
        host.recv_until("WORD_RESULT").unwrap();
        host.recv_until("WORD_REVEALED").unwrap();
    }
    host.recv_until("SCORE_SUMMARY").unwrap();
    let host_events = host.events();
    for (p, _) in players.iter_mut() {
        p.recv_until("SCORE_SUMMARY").unwrap();
        let events = p.events();
        // The same events under the same sequence ids as on the owner...
        for (seq, v) in &events {
            if let Some(h) = host_events.get(seq) {
                assert_eq!((&h["type"], &h["payload"]["stateVersion"]), (&v["type"], &v["payload"]["stateVersion"]), "seq {seq}");
            }
        }
        let shared = |e: &std::collections::BTreeMap<u64, serde_json::Value>| -> Vec<u64> {
            e.iter()
                .filter(|(_, v)| ["ROUND_STARTED", "WORD_RESULT", "ROUND_ENDED", "SCORE_SUMMARY"].contains(&v["type"].as_str().unwrap()))
                .map(|(s, _)| *s)
                .collect()
        };
        assert_eq!(shared(&events), shared(&host_events), "{}: the turn's public events", p.actor);
        assert_eq!(shared(&events).len(), 5, "started, two results, ended, summary");
        // ...and never what only the host may see.
        assert!(p.seen.iter().all(|v| v["type"] != "WORD_REVEALED"), "{}: host-only event forwarded to a player", p.actor);
    }
    assert!(a.metric("partyflow_forward_sent_total", "") > 0.0 && b.metric("partyflow_forward_sent_total", "") > 0.0);
    // One message per frame and edge, not per recipient: a sent b fewer messages than b
    // delivered to its two players.
    let (sent, delivered) = (a.metric("partyflow_forward_sent_total", ""), b.metric("partyflow_messages_out_total", ""));
    assert!(sent < delivered, "a sent {sent} messages for {delivered} frames delivered on b");
}

#[test]
fn sigkill_of_the_owner_mid_turn_moves_the_room_and_the_game_finishes() {
    use common::game::{started_game_at, GameClient, Where};
    use serde_json::json;
    let redis = Redis::start();
    let a = game_instance(&redis, "node-a");
    let b = game_instance(&redis, "node-b");
    // Owned by a, everyone connected through b.
    let at = Where { create: &a, host: &b, players: &b };
    let (room, (mut host, host_token), players) = started_game_at(at, 2, json!({"rounds": 1, "roundDurationSec": 3}));
    let key = format!("partyflow:room:{room}");
    host.fence().unwrap();
    let version = host.seen.iter().rev().find_map(|v| v["payload"]["stateVersion"].as_u64()).unwrap();
    redis.wait_for(&key, |v| v.is_some_and(|v| v["instance"] == "node-a" && v["game"]["stateVersion"].as_u64() >= Some(version)));
    let killed = Instant::now();
    drop(a); // SIGKILL, mid-turn
    let mut players = players;
    // Up to the heartbeat TTL (5 s) and a refresh of the instance list pass first.
    set_timeout(&mut host.ws, Duration::from_secs(30));
    for (p, _) in players.iter_mut() {
        set_timeout(&mut p.ws, Duration::from_secs(30));
    }
    // b tells its clients to reconnect once a's heartbeat is gone; by then a's lease (2 s) is
    // over and b takes the room over from its last snapshot.
    while host.recv().is_some() {}
    assert_eq!(host.seen.last().unwrap()["close"], 1012, "told to reconnect");
    let (host_id, mut player_ids) = (host.actor.clone(), Vec::new());
    for (mut p, token) in players {
        while p.recv().is_some() {}
        player_ids.push((p.actor.clone(), token));
    }
    let mut host = GameClient::connect_when_ready(&b, &room, &host_id, &host_token, Duration::from_secs(15)).unwrap();
    let hello = host.recv_until("CONNECTED").unwrap();
    // a's heartbeat key outlives it by at most 5 s, b refreshes its instance list every 2 s
    // and checks its clients every second: b lets go within 8 s, by which time a's lease (2 s)
    // is long over, and the takeover is one snapshot load (measured here: 5.1 s in all).
    assert!(killed.elapsed() < Duration::from_secs(12), "taken over in {:?}", killed.elapsed());
    assert_eq!(lease_holder(&redis, &room).as_deref(), Some("node-b"));
    let mut players: Vec<GameClient> =
        player_ids.iter().map(|(id, token)| GameClient::connect_when_ready(&b, &room, id, token, Duration::from_secs(5)).unwrap()).collect();
    // The running turn comes back paused for the host; the game then finishes on b.
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
    for p in players.iter_mut() {
        p.recv_until("FINAL_RESULTS").unwrap();
    }
    redis.wait_for(&key, |v| v.is_some_and(|v| v["instance"] == "node-b"));
}

#[test]
fn the_host_plays_through_another_instance_and_reconnects_there_with_its_backfill() {
    use common::game::{started_game_at, GameClient, Where};
    use serde_json::json;
    let redis = Redis::start();
    let (a, b) = (game_instance(&redis, "node-a"), game_instance(&redis, "node-b"));
    // The room and its players live on a; the host plays through b.
    let at = Where { create: &a, host: &b, players: &a };
    let (room, (mut host, host_token), mut players) = started_game_at(at, 2, json!({"roundDurationSec": 30}));
    let word = host.seen.iter().rev().find(|v| v["type"] == "WORD_REVEALED").expect("the host's word, forwarded").clone();
    assert!(word["broadcast"] == "host" && word["payload"]["wordText"].is_string(), "{word}");
    // The host drops; the turn goes on (timer ticks) while it is away.
    host.fence().unwrap();
    let (host_id, last_seen) = (host.actor.clone(), host.last_seq());
    drop(host);
    let (peer, _) = &mut players[0];
    let tick = peer.recv_until("TIMER_TICK").unwrap()["sequenceId"].as_u64().unwrap();
    // Back through b: RECONNECT is forwarded, the owner's backfill comes back.
    let mut host = GameClient::connect(&b, &room, &host_id, &host_token).unwrap();
    let hello = host.recv_until("CONNECTED").unwrap();
    let upto = hello["payload"]["lastSequenceId"].as_u64().unwrap();
    host.send("RECONNECT", json!({"lastSeqId": last_seen}));
    let reply = host.recv_until("RECONNECTED").unwrap();
    let missed: Vec<u64> = reply["payload"]["missedEvents"].as_array().expect("a backfill").iter().map(|v| v["sequenceId"].as_u64().unwrap()).collect();
    assert_eq!(missed, (last_seen + 1..=upto).collect::<Vec<_>>(), "the host is entitled to every event it missed");
    assert!(missed.contains(&tick), "the tick seen while away is in the backfill");
    // The host plays on through b; its words stay with it.
    let word = reply["payload"]["gameState"]["currentWord"]["wordId"].clone();
    assert!(word.is_string(), "the host's snapshot has the word: {reply}");
    host.send("WORD_SWIPED", json!({"wordId": word, "action": "guessed"}));
    let result = host.recv_until("WORD_RESULT").unwrap();
    host.recv_until("WORD_REVEALED").unwrap();
    for (p, _) in players.iter_mut() {
        while p.recv().expect("player connection")["sequenceId"] != result["sequenceId"] {}
        assert!(p.seen.iter().all(|v| v["type"] != "WORD_REVEALED" && v["broadcast"] != "host"), "{}: host-only event to a player", p.actor);
    }
}

#[test]
fn an_edge_client_of_a_room_given_up_while_redis_was_down_is_told_to_reconnect() {
    use common::game::{started_game_at, Where};
    use serde_json::json;
    let mut redis = Redis::start();
    let port = redis.port;
    let (a, b) = (game_instance(&redis, "node-a"), game_instance(&redis, "node-b"));
    let at = Where { create: &a, host: &a, players: &b };
    let (_room, (mut host, _), mut players) = started_game_at(at, 2, json!({}));
    let (player, _) = &mut players[0];
    player.fence().unwrap();
    redis.stop();
    // a cannot renew the lease (2 s) and gives the room up; its word to b is lost with Redis.
    while host.recv().is_some() {}
    assert_eq!(host.seen.last().unwrap()["close"], 1012);
    let _redis = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    while get_json(&b, "/health").1["cluster"] != "up" {
        assert!(Instant::now() < deadline, "b never reached the new redis");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The player's next message reaches a, which no longer knows it: b is told to close it.
    set_timeout(&mut player.ws, Duration::from_secs(10));
    player.send("FENCE", json!({}));
    while player.recv().is_some() {}
    assert_eq!(player.seen.last().unwrap()["close"], 1012, "told to reconnect, not left waiting: {:?}", player.types());
}
