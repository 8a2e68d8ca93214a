//! Reconnection over real sockets: exact backfill against a never-disconnected peer, the
//! windows on both sides, the disconnect timeline, host pause and promotion, ACK give-up,
//! connection replacement, desync repair and LEAVE_ROOM. Durations are shrunk by flags; every
//! wait is on a message (or a fence), and the only sleeps are the absences whose length is the
//! thing under test, each at least a second away from the window it must fall on.

mod common;

use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::Duration;

use common::game::{started_game, GameClient};
use common::Server;
use serde_json::{json, Value};

const FAST: &[&str] = &["--shards", "2", "--countdown", "1", "--score-review", "300ms", "--min-round-duration", "1s"];

fn server(extra: &[&str]) -> Server {
    Server::start(&[FAST, extra].concat())
}

/// Swipes the current word and waits until `watchers` saw its WORD_RESULT.
fn swipe(host: &mut GameClient, watchers: &mut [&mut GameClient]) {
    let word = host.seen.iter().rev().find(|v| v["type"] == "WORD_REVEALED").expect("a word")["payload"]["wordId"].clone();
    host.send("WORD_SWIPED", json!({"wordId": word, "action": "guessed"}));
    let result = host.recv_until("WORD_RESULT").unwrap();
    host.recv_until("WORD_REVEALED").unwrap();
    for w in watchers.iter_mut() {
        while w.recv().expect("watcher closed")["sequenceId"] != result["sequenceId"] {}
    }
}

/// Reconnects `actor` and sends RECONNECT with `last_seq`: (new client, CONNECTED, reply).
fn reconnect(server: &Server, room: &str, actor: &str, token: &str, last_seq: u64) -> (GameClient, Value, Value) {
    let mut c = GameClient::connect(server, room, actor, token).unwrap();
    let hello = c.recv_until("CONNECTED").unwrap();
    c.send("RECONNECT", json!({"lastSeqId": last_seq, "sessionId": "s1", "disconnectTimestamp": 0}));
    let reply = loop {
        let v = c.recv().expect("closed before the reply");
        if matches!(v["type"].as_str(), Some("RECONNECTED" | "RECONNECT_FAILED" | "STATE_SNAPSHOT")) {
            break v;
        }
    };
    (c, hello, reply)
}

/// What a reconnected client holds from `after` on: backfill plus live events, by sequence id.
fn recovered(reply: &Value, client: &GameClient, upto: u64) -> BTreeMap<u64, Value> {
    let mut held: BTreeMap<u64, Value> = BTreeMap::new();
    for v in reply["payload"]["missedEvents"].as_array().expect("a backfill") {
        assert!(v["sequenceId"].as_u64().unwrap() <= upto, "backfill ends at CONNECTED.lastSequenceId");
        assert!(held.insert(v["sequenceId"].as_u64().unwrap(), v.clone()).is_none(), "nothing twice");
    }
    for (seq, v) in client.events() {
        assert!(seq > upto, "live events start after CONNECTED.lastSequenceId");
        assert!(held.insert(seq, v).is_none(), "nothing twice");
    }
    held
}

#[test]
fn player_backfill_equals_a_connected_peer_even_with_an_event_racing_the_reconnect() {
    let server = server(&[]);
    let (room, (mut host, _), mut players) = started_game(&server, 3, json!({}));
    let (mut away, away_token) = players.remove(0);
    let (mut peer, _) = players.remove(0);
    let away_id = away.actor.clone();
    away.fence().unwrap();
    let last_seen = away.last_seq();
    drop(away);
    for _ in 0..3 {
        swipe(&mut host, &mut [&mut peer]);
    }
    let mut c = GameClient::connect(&server, &room, &away_id, &away_token).unwrap();
    let hello = c.recv_until("CONNECTED").unwrap();
    let upto = hello["payload"]["lastSequenceId"].as_u64().unwrap();
    // A live event sequenced after CONNECTED but before the server reads RECONNECT.
    swipe(&mut host, &mut [&mut peer]);
    c.send("RECONNECT", json!({"lastSeqId": last_seen}));
    let reply = c.recv_until("RECONNECTED").unwrap();
    swipe(&mut host, &mut [&mut peer, &mut c]);
    let held = recovered(&reply, &c, upto);
    let expected: BTreeMap<u64, Value> = peer.events().into_iter().filter(|(seq, _)| *seq > last_seen).collect();
    assert!(expected.len() >= 5, "three swipes, a racing one and a last one: {}", expected.len());
    assert_eq!(held, expected, "exactly the peer's events, nothing missing or doubled");
    assert!(held.values().all(|v| v["broadcast"] != "host" && v["payload"].get("wordText").is_none()), "nothing host-only");
    assert_eq!(reply["payload"]["missedEvents"].as_array().unwrap()[0]["sequenceId"].as_u64(), expected.keys().next().copied());
    assert!(server.metric("partyflow_reconnects_total", "outcome=\"backfill\"") >= 1.0);
}

#[test]
fn host_backfill_carries_its_host_only_events() {
    let server = server(&[]);
    let (room, (mut host, host_token), mut players) = started_game(&server, 2, json!({}));
    let (mut peer, _) = players.remove(0);
    let host_id = host.actor.clone();
    host.fence().unwrap();
    let last_seen = host.last_seq();
    drop(host);
    // Time goes on while the host is away; it must get every sequence id it missed.
    let tick = peer.recv_until("TIMER_TICK").unwrap();
    let (c, hello, reply) = reconnect(&server, &room, &host_id, &host_token, last_seen);
    let upto = hello["payload"]["lastSequenceId"].as_u64().unwrap();
    assert_eq!(reply["type"], "RECONNECTED");
    assert!(reply["payload"]["gameState"]["currentWord"]["wordText"].is_string(), "the host's snapshot has the word");
    let held = recovered(&reply, &c, upto);
    let seqs: Vec<u64> = held.keys().copied().filter(|s| *s <= upto).collect();
    assert_eq!(seqs, (last_seen + 1..=upto).collect::<Vec<_>>(), "the host is entitled to every event");
    assert!(held.contains_key(&tick["sequenceId"].as_u64().unwrap()));
}

#[test]
fn the_host_misses_a_word_while_away_and_gets_it_back() {
    let server = server(&[]);
    let (room, (mut host, host_token), mut players) = started_game(&server, 2, json!({"roundDurationSec": 1}));
    let (mut peer, _) = players.remove(0);
    let host_id = host.actor.clone();
    // The first turn ends after 1 s; the host leaves during the review, the next turn deals a
    // host-only WORD_REVEALED while it is away.
    host.recv_until("SCORE_SUMMARY").unwrap();
    let last_seen = host.last_seq();
    drop(host);
    peer.recv_until("ROUND_STARTED").unwrap();
    let (c, hello, reply) = reconnect(&server, &room, &host_id, &host_token, last_seen);
    let held = recovered(&reply, &c, hello["payload"]["lastSequenceId"].as_u64().unwrap());
    let revealed: Vec<&Value> = held.values().filter(|v| v["type"] == "WORD_REVEALED").collect();
    assert!(!revealed.is_empty(), "{:?}", held.values().map(|v| v["type"].clone()).collect::<Vec<_>>());
    assert!(revealed.iter().all(|v| v["broadcast"] == "host" && v["payload"]["wordText"].is_string()));
}

#[test]
fn backfill_snapshot_and_expiry_on_either_side_of_each_window() {
    let server = server(&[
        "--reconnect-backfill-window",
        "2s",
        "--reconnect-snapshot-window",
        "5s",
        "--disconnect-grace",
        "2s",
        "--disconnect-warning",
        "5s",
        "--disconnect-remove",
        "60s",
    ]);
    let (room, (_host, _), mut players) = started_game(&server, 2, json!({}));
    let (c, token) = players.remove(0);
    let actor = c.actor.clone();
    let mut c = c;
    for (away, expect, missed_is_array) in
        [(Duration::ZERO, "RECONNECTED", true), (Duration::from_secs(3), "RECONNECTED", false), (Duration::from_millis(6_500), "RECONNECT_FAILED", false)]
    {
        c.fence().unwrap();
        let last = c.last_seq();
        drop(c);
        sleep(away);
        let (next, _, reply) = reconnect(&server, &room, &actor, &token, last);
        assert_eq!(reply["type"], expect, "away {away:?}: {reply}");
        if expect == "RECONNECTED" {
            assert_eq!(reply["payload"]["missedEvents"].is_array(), missed_is_array, "away {away:?}");
        } else {
            assert_eq!(reply["payload"]["reason"], "SESSION_EXPIRED");
            assert_eq!(reply["payload"]["canRejoin"], true);
        }
        c = next;
    }
}

#[test]
fn unacknowledged_events_are_resent_then_a_connection_warning() {
    let server = server(&["--ack-timeout", "200ms", "--ack-retries", "2"]);
    let (_room, (_host, _), mut players) = started_game(&server, 2, json!({"roundDurationSec": 1}));
    let (mut silent, _) = players.remove(0);
    // started_game answered the first ROUND_STARTED; the turn's ROUND_ENDED goes unanswered.
    silent.auto_ack = false;
    silent.recv_until("ROUND_ENDED").unwrap();
    let warning = silent.recv_until("CONNECTION_WARNING").unwrap();
    assert_eq!(warning["payload"]["attempts"], 3);
    let ack_id = warning["payload"]["ackId"].as_str().unwrap().to_string();
    let sends = silent.seen.iter().filter(|v| v["ackId"] == ack_id.as_str() && v["type"] != "CONNECTION_WARNING").count();
    assert_eq!(sends, 3, "sent once, resent twice");
    assert!(server.metric("partyflow_degraded_connections_total", "") >= 1.0);
    silent.send("ACK", json!({"ackId": "ack_999999"}));
    silent.fence().unwrap();
    assert!(server.metric("partyflow_unmatched_acks_total", "") >= 1.0);
}

#[test]
fn a_replaced_connection_causes_no_presence_flicker_and_backfills_from_zero_gap() {
    let server = server(&["--disconnect-grace", "100ms", "--disconnect-warning", "200ms"]);
    let (room, (mut host, _), mut players) = started_game(&server, 2, json!({}));
    let (mut old, token) = players.remove(0);
    old.fence().unwrap();
    let last = old.last_seq();
    let actor = old.actor.clone();
    let (_new, _, reply) = reconnect(&server, &room, &actor, &token, last);
    assert_eq!(reply["type"], "RECONNECTED");
    assert!(reply["payload"]["missedEvents"].is_array(), "replacement counts as no absence");
    while old.recv().is_some() {}
    assert_eq!(old.seen.last().unwrap()["close"], 4002);
    // Long past the shrunken grace and warning, nobody was told anything.
    swipe(&mut host, &mut []);
    sleep(Duration::from_millis(400));
    let seen = host.fence().unwrap();
    assert!(seen.iter().chain(&host.seen).all(|v| !matches!(v["type"].as_str(), Some("PLAYER_LEFT" | "PLAYER_CONNECTION_LOST" | "PLAYER_RECONNECTED"))));
}

#[test]
fn away_host_pauses_the_round_then_is_replaced_and_the_new_host_plays() {
    let server = server(&["--host-pause-after", "300ms", "--host-promote-after", "900ms"]);
    let (_room, (host, _), mut players) = started_game(&server, 3, json!({}));
    let old_host = host.actor.clone();
    drop(host);
    let (mut a, _) = players.remove(0);
    let (mut b, _) = players.remove(0);
    let paused = a.recv_until("GAME_PAUSED").unwrap();
    assert_eq!(paused["payload"]["reason"], "host_disconnected");
    let promoted = a.recv_until("HOST_PROMOTED").unwrap();
    assert_eq!(promoted["payload"]["previousHostId"], old_host.as_str());
    // Seat order: P0 (a) explains turn 1, so P1 (b) is promoted.
    assert_eq!(promoted["payload"]["hostId"], b.actor.as_str());
    let snapshot = b.recv_until("STATE_SNAPSHOT").unwrap();
    let word = snapshot["payload"]["gameState"]["currentWord"]["wordId"].clone();
    assert!(word.is_string(), "the new host sees the current word");
    b.send("HOST_RESUME", json!({}));
    b.recv_until("GAME_RESUMED").unwrap();
    b.send("WORD_SWIPED", json!({"wordId": word, "action": "guessed"}));
    b.recv_until("WORD_RESULT").unwrap();
    let next = b.recv_until("WORD_REVEALED").unwrap();
    assert!(next["payload"]["wordText"].is_string());
    a.recv_until("WORD_RESULT").unwrap();
    let seen = a.fence().unwrap();
    assert!(seen.iter().chain(&a.seen).all(|v| v["type"] != "WORD_REVEALED" && v["payload"].get("wordText").is_none()), "players never see words");
}

#[test]
fn every_player_drops_at_once_and_the_room_carries_on_when_they_return() {
    let server = server(&["--disconnect-grace", "200ms", "--disconnect-warning", "400ms", "--disconnect-remove", "60s"]);
    let (room, (mut host, _), players) = started_game(&server, 2, json!({}));
    let tokens: Vec<(String, String)> = players.iter().map(|(c, t)| (c.actor.clone(), t.clone())).collect();
    drop(players);
    let ended = host.recv_until("ROUND_ENDED").unwrap();
    assert_eq!(ended["payload"]["reason"], "team_disconnected");
    host.recv_until("NEXT_ROUND_READY").unwrap();
    while host.seen.iter().filter(|v| v["type"] == "PLAYER_CONNECTION_LOST").count() < 2 {
        host.recv_until("PLAYER_CONNECTION_LOST").unwrap();
    }
    let (status, summary) = common::game::get_json(&server, &format!("/rooms/{room}"));
    assert_eq!((status, summary["state"].as_str()), (200, Some("READY_FOR_NEXT")), "waiting for players: {summary}");
    let mut back = Vec::new();
    for (actor, token) in &tokens {
        let mut c = GameClient::connect(&server, &room, actor, token).unwrap();
        c.recv_until("CONNECTED").unwrap();
        back.push(c);
    }
    host.recv_until("PLAYER_RECONNECTED").unwrap();
    let started = host.recv_until("ROUND_STARTED").unwrap();
    assert!(started["payload"]["explainerPlayerId"].is_string());
}

#[test]
fn a_player_gone_past_the_removal_leaves_the_room_and_its_token_stops_working() {
    let server = server(&["--disconnect-grace", "100ms", "--disconnect-warning", "200ms", "--disconnect-remove", "400ms"]);
    let (room, (mut host, _), mut players) = started_game(&server, 3, json!({}));
    let (gone, token) = players.remove(0);
    let actor = gone.actor.clone();
    drop(gone);
    let left = host.recv_until("PLAYER_LEFT").unwrap();
    assert_eq!(left["payload"]["playerId"], actor.as_str());
    assert_eq!(left["payload"]["reason"], "disconnected");
    let upgrade = format!(
        "GET /ws?roomId={room}&token={token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (status, body) = common::parse_response(&common::http_raw(server.addr, &upgrade));
    assert_eq!(status, 401, "{body}");
}

#[test]
fn a_checksum_mismatch_is_repaired_with_a_snapshot() {
    let server = server(&[]);
    let (_room, (_host, _), mut players) = started_game(&server, 2, json!({}));
    let (mut c, _) = players.remove(0);
    let hello = c.seen.iter().find(|v| v["type"] == "CONNECTED").unwrap().clone();
    assert!(hello["payload"]["stateChecksum"].as_str().unwrap().len() == 8);
    c.send("HEARTBEAT", json!({"stateVersion": 0, "stateChecksum": "00000000"}));
    let snapshot = c.recv_until("STATE_SNAPSHOT").unwrap();
    let (version, checksum) = (snapshot["payload"]["stateVersion"].clone(), snapshot["payload"]["stateChecksum"].clone());
    c.send("HEARTBEAT", json!({"stateVersion": version, "stateChecksum": checksum}));
    assert!(c.fence().unwrap().iter().all(|v| v["type"] != "STATE_SNAPSHOT"), "a match gets nothing");
    assert!(server.metric("partyflow_state_resyncs_total", "") >= 1.0);
}

#[test]
fn leave_room_sends_player_left_then_closes_with_1000() {
    let server = server(&[]);
    let (_room, (mut host, _), mut players) = started_game(&server, 3, json!({}));
    let (mut leaver, _) = players.remove(0);
    leaver.send("LEAVE_ROOM", json!({}));
    let left = leaver.recv_until("PLAYER_LEFT").unwrap();
    assert_eq!(left["payload"]["reason"], "voluntary");
    while leaver.recv().is_some() {}
    assert_eq!(leaver.seen.last().unwrap()["close"], 1000);
    host.recv_until("PLAYER_LEFT").unwrap();
}
