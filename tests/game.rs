//! The PartyFlow game played end to end by real WebSocket clients.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;

use common::game::{create_room, get_json, join, post, GameClient};
use common::Server;
use serde_json::json;

const FAST: &[&str] = &["--shards", "2", "--countdown", "1", "--score-review", "300ms", "--min-round-duration", "1s"];

/// Host + 4 players, 2 teams, 2 rounds of 2 s, from room creation to FINAL_RESULTS.
#[test]
fn full_game_from_creation_to_final_results() {
    let server = Arc::new(Server::start(FAST));
    let (room, host_id, host_token) = create_room(&server, json!({"numTeams": 2, "rounds": 2, "roundDurationSec": 2}));
    let players: Vec<(String, String, String)> = (1..=4).map(|i| join(&server, &room, &format!("Player {i}"))).collect();
    assert!(players.iter().all(|(_, _, role)| role == "player"));

    let mut threads = Vec::new();
    for (i, (id, token, _)) in players.iter().enumerate() {
        let (server, room, id, token) = (server.clone(), room.clone(), id.clone(), token.clone());
        threads.push(thread::spawn(move || {
            let mut c = GameClient::connect(&server, &room, &id, &token).unwrap();
            let hello = c.recv_until("CONNECTED").unwrap();
            assert_eq!(hello["payload"]["role"], "player");
            assert_eq!(hello["payload"]["actorId"], id.as_str());
            assert!(hello["payload"]["snapshot"].get("currentWord").is_none());
            c.recv_until("TEAM_SETUP_STARTED").unwrap();
            let team = if i % 2 == 0 { "team_1" } else { "team_2" };
            c.send("JOIN_TEAM", json!({"teamId": team}));
            c.recv_until("FINAL_RESULTS").unwrap();
            c
        }));
    }
    let mut host = GameClient::connect(&server, &room, &host_id, &host_token).unwrap();
    let hello = host.recv_until("CONNECTED").unwrap();
    assert_eq!(hello["payload"]["role"], "host");
    assert_eq!(hello["payload"]["serverVersion"], "1.0");
    // Wait until all four players are connected (they each got CONNECTED) before starting.
    server.wait_connections(5);
    host.send("START_TEAM_SETUP", json!({"numTeams": 2}));
    host.recv_until("TEAMS_BALANCED").unwrap();
    host.send("HOST_CONFIRM_START", json!({}));
    let mut revealed = HashSet::new();
    loop {
        let v = host.recv().expect("host connection ended early");
        match v["type"].as_str().unwrap() {
            "WORD_REVEALED" => {
                revealed.insert(v["payload"]["wordText"].as_str().unwrap().to_string());
                let swiped = host.seen.iter().filter(|m| m["type"] == "WORD_RESULT").count();
                if swiped < 6 {
                    host.send("WORD_SWIPED", json!({"wordId": v["payload"]["wordId"], "action": if swiped % 3 == 2 { "skipped" } else { "guessed" }}));
                }
            }
            "FINAL_RESULTS" => break,
            _ => {}
        }
    }
    let clients: Vec<GameClient> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let milestones = |c: &GameClient| -> Vec<String> {
        c.types()
            .into_iter()
            .filter(|t| {
                !matches!(
                    t.as_str(),
                    "TIMER_TICK"
                        | "COUNTDOWN_TICK"
                        | "WORD_RESULT"
                        | "WORD_REVEALED"
                        | "PLAYER_ASSIGNED_TEAM"
                        | "PLAYER_JOINED"
                        | "CONNECTED"
                        | "TEAMS_UNBALANCED"
                )
            })
            .collect()
    };
    let turn = ["ROUND_STARTED", "ROUND_ENDED", "SCORE_SUMMARY"];
    let mut expected = vec!["TEAM_SETUP_STARTED", "TEAMS_BALANCED"];
    for t in 0..4 {
        if t > 0 {
            expected.push("NEXT_ROUND_READY");
        }
        expected.extend(turn);
    }
    expected.extend(["GAME_ENDED", "FINAL_RESULTS"]);
    for c in clients.iter().chain([&host]) {
        assert_eq!(milestones(c), expected, "{}", c.actor);
        // Room events are numbered strictly increasing for every recipient.
        let seqs: Vec<u64> = c.seen.iter().filter_map(|v| v["sequenceId"].as_u64()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{}: {seqs:?}", c.actor);
        assert!(c.types().iter().filter(|t| *t == "COUNTDOWN_TICK").count() == 4);
        assert!(c.types().iter().filter(|t| *t == "TIMER_TICK").count() >= 4);
    }
    // Host-only delivery: players never see WORD_REVEALED nor any revealed word's text.
    assert!(!revealed.is_empty());
    for c in &clients {
        assert!(!c.types().contains(&"WORD_REVEALED".to_string()), "{}", c.actor);
        for v in &c.seen {
            let text = v.to_string();
            for word in &revealed {
                assert!(!text.contains(&format!("\"{word}\"")), "{} saw the word {word} in {}", c.actor, v["type"]);
            }
        }
    }
    let ended = host.seen.iter().find(|v| v["type"] == "GAME_ENDED").unwrap();
    assert_eq!(ended["requiresAck"], true);
    assert_eq!(ended["payload"]["totalWordsPlayed"], 6);
    assert_eq!(ended["payload"]["winnerTeamId"], "team_1", "all six swipes fall in team_1's first turn");
    let results = clients[0].seen.last().unwrap();
    assert_eq!(results["payload"]["state"], "FINAL_RESULTS");
    let (status, summary) = common::game::get_json(&server, &format!("/rooms/{room}"));
    assert_eq!(status, 200);
    assert_eq!(summary["state"], "FINAL_RESULTS");
    assert_eq!(summary["playerCount"], 4);
}

/// Host and two players connected, teams set up and the round started; returns the clients.
fn started_room(server: &Server, settings: serde_json::Value) -> (GameClient, Vec<GameClient>) {
    let (room, host_id, host_token) = create_room(server, settings);
    let mut host = GameClient::connect(server, &room, &host_id, &host_token).unwrap();
    host.recv_until("CONNECTED").unwrap();
    let mut players: Vec<GameClient> = (0..2)
        .map(|i| {
            let (id, token, _) = join(server, &room, &format!("P{i}"));
            let mut c = GameClient::connect(server, &room, &id, &token).unwrap();
            c.recv_until("CONNECTED").unwrap();
            c
        })
        .collect();
    host.send("START_TEAM_SETUP", json!({}));
    for (i, p) in players.iter_mut().enumerate() {
        p.recv_until("TEAM_SETUP_STARTED").unwrap();
        p.send("JOIN_TEAM", json!({"teamId": format!("team_{}", i + 1)}));
    }
    host.recv_until("TEAMS_BALANCED").unwrap();
    host.send("HOST_CONFIRM_START", json!({}));
    host.recv_until("ROUND_STARTED").unwrap();
    (host, players)
}

#[test]
fn double_swipe_race_first_wins_second_gets_invalid_transition() {
    let server = Server::start(FAST);
    let (mut host, _players) = started_room(&server, json!({"roundDurationSec": 30}));
    let word = host.recv_until("WORD_REVEALED").unwrap();
    let swipe = json!({"wordId": word["payload"]["wordId"], "action": "guessed"});
    host.send("WORD_SWIPED", swipe.clone());
    host.send("WORD_SWIPED", swipe);
    let result = host.recv_until("WORD_RESULT").unwrap();
    assert_eq!(result["payload"]["newScore"], 1);
    let error = host.recv_until("ERROR").unwrap();
    assert_eq!(error["payload"]["code"], "INVALID_TRANSITION");
    assert_eq!(error["broadcast"], "actor");
    assert_eq!(host.types().iter().filter(|t| *t == "WORD_RESULT").count(), 1);
}

#[test]
fn pause_stops_the_timer_and_resume_continues_it() {
    let server = Server::start(FAST);
    let (mut host, _players) = started_room(&server, json!({"roundDurationSec": 6}));
    let tick = host.recv_until("TIMER_TICK").unwrap();
    assert_eq!(tick["payload"]["remainingSeconds"], 5);
    host.send("HOST_PAUSE", json!({}));
    let paused = host.recv_until("GAME_PAUSED").unwrap();
    let remaining_ms = paused["payload"]["remainingMs"].as_u64().unwrap();
    assert!((1000..=5000).contains(&remaining_ms), "{remaining_ms}");
    assert_eq!(paused["payload"]["state"], "ROUND_PAUSED");
    // Nothing ticks while paused.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    host.send("HOST_RESUME", json!({}));
    let resumed = host.recv_until("GAME_RESUMED").unwrap();
    assert_eq!(host.seen.iter().rev().skip(1).take_while(|v| v["type"] != "GAME_PAUSED").count(), 0, "no event between pause and resume");
    assert_eq!(resumed["payload"]["remainingMs"], remaining_ms);
    let next = host.recv_until("TIMER_TICK").unwrap();
    // remainingMs is truncated to whole milliseconds, so a multiple of 1,000 may hide a sliver.
    let expected = remaining_ms.div_ceil(1000) - 1;
    let got = next["payload"]["remainingSeconds"].as_u64().unwrap();
    assert!(got == expected || (remaining_ms % 1000 == 0 && got == expected + 1), "the clock continues where it stopped: {got} after {remaining_ms} ms");
    host.recv_until("ROUND_ENDED").unwrap();
}

#[test]
fn invalid_and_unauthorized_messages_get_errors_for_the_sender_only() {
    let server = Server::start(FAST);
    let (room, host_id, host_token) = create_room(&server, json!({}));
    let (pid, ptoken, _) = join(&server, &room, "Pat");
    let mut host = GameClient::connect(&server, &room, &host_id, &host_token).unwrap();
    host.recv_until("CONNECTED").unwrap();
    let mut player = GameClient::connect(&server, &room, &pid, &ptoken).unwrap();
    player.recv_until("CONNECTED").unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "INVALID_MESSAGE"),
        (json!({"type": "DANCE", "roomId": room}).to_string(), "UNKNOWN_TYPE"),
        (json!({"roomId": room}).to_string(), "MISSING_FIELD"),
        (json!({"type": "HOST_PAUSE", "roomId": room}).to_string(), "UNAUTHORIZED"),
        (json!({"type": "START_TEAM_SETUP", "roomId": room, "actorId": host_id}).to_string(), "UNAUTHORIZED"),
        (json!({"type": "JOIN_TEAM", "roomId": "ZZZZZZ", "payload": {"teamId": "team_1"}}).to_string(), "ROOM_NOT_FOUND"),
        (json!({"type": "JOIN_TEAM", "roomId": room, "payload": {"teamId": "team_1"}}).to_string(), "INVALID_TRANSITION"),
        (json!({"type": "JOIN_TEAM", "roomId": room, "payload": {}}).to_string(), "MISSING_FIELD"),
    ];
    for (text, code) in cases {
        player.send_raw(&text);
        let error = player.recv_until("ERROR").unwrap();
        assert_eq!(error["payload"]["code"], code, "{text}");
    }
    // Host-only actions in the wrong state.
    for kind in ["HOST_CONFIRM_START", "HOST_PAUSE", "HOST_RESUME", "HOST_CANCEL_SETUP", "HOST_RESTART"] {
        host.send(kind, json!({}));
        assert_eq!(host.recv_until("ERROR").unwrap()["payload"]["code"], "INVALID_TRANSITION", "{kind}");
    }
    host.send("START_TEAM_SETUP", json!({}));
    assert_eq!(host.recv_until("ERROR").unwrap()["payload"]["code"], "INVALID_TRANSITION", "one player cannot fill two teams");
    // The player's errors never reached the host.
    host.send("ROOM_CLOSE", json!({}));
    host.recv_until("ROOM_CLOSED").unwrap();
    assert!(host.seen.iter().filter(|v| v["type"] == "ERROR").count() == 6);
}

#[test]
fn wrong_protocol_major_gets_upgrade_required_then_4001() {
    let server = Server::start(FAST);
    let (room, host_id, host_token) = create_room(&server, json!({}));
    let mut c = GameClient::connect_version(&server, &room, &host_id, &host_token, "2.0").unwrap();
    let error = c.recv_until("ERROR").unwrap();
    assert_eq!(error["payload"]["code"], "UPGRADE_REQUIRED");
    assert_eq!(c.recv(), None);
    assert_eq!(c.seen.last().unwrap()["close"], 4001);
    // A newer minor of the same major is served in its own form.
    let mut c = GameClient::connect_version(&server, &room, &host_id, &host_token, "1.4").unwrap();
    let hello = c.recv_until("CONNECTED").unwrap();
    assert_eq!(hello["version"], "1.4");
    assert_eq!(hello["payload"]["serverVersion"], "1.0");
}

#[test]
fn forged_foreign_and_expired_tokens_are_refused_before_the_upgrade() {
    let server = Server::start(&["--shards", "2", "--token-ttl", "1s"]);
    let (room, _, token) = create_room(&server, json!({}));
    let (other_room, _, _) = create_room(&server, json!({}));
    let upgrade = |path: String| {
        common::parse_response(&common::http_raw(server.addr, &format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )))
    };
    let forged = token.replace("host", "hozt");
    for (what, path) in [
        ("missing", format!("/ws?roomId={room}")),
        ("garbage", format!("/ws?roomId={room}&token=abc")),
        ("forged", format!("/ws?roomId={room}&token={forged}")),
        ("other room", format!("/ws?roomId={other_room}&token={token}")),
    ] {
        let (status, body) = upgrade(path);
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.contains("UNAUTHORIZED"));
    }
    let (status, _) = upgrade(format!("/ws?roomId={room}&token={token}"));
    assert_eq!(status, 101, "a fresh token is valid for at least its TTL");
    // Expiry is in whole seconds, rounded up: the token dies between 1 and 2 s after issue.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, body) = upgrade(format!("/ws?roomId={room}&token={token}"));
        if status == 401 {
            assert!(body.contains("expired"), "{body}");
            break;
        }
        assert_eq!(status, 101);
        assert!(std::time::Instant::now() < deadline, "the token never expired");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn room_api_validation_seats_and_summary() {
    let server = Server::start(&["--shards", "2"]);
    let (status, packs) = common::game::get_json(&server, "/word-packs");
    assert_eq!(status, 200);
    let packs = packs["wordPacks"].as_array().unwrap();
    assert!(packs.len() >= 3);
    assert!(packs.iter().all(|p| p["wordCount"].as_u64().unwrap() >= 150));
    let (status, v) = common::game::post(&server, "/rooms", &json!({"hostName": "<script>", "maxPlayers": 2}));
    assert_eq!(status, 201);
    let room = v["roomId"].as_str().unwrap().to_string();
    assert_eq!(room.len(), 6);
    assert!(room.chars().all(|c| "ABCDEFGHJKMNPQRSTUVWXYZ23456789".contains(c)));
    assert!(v["wsUrl"].as_str().unwrap().starts_with("ws://"));
    for bad in [
        json!({}),
        json!({"hostName": ""}),
        json!({"hostName": "x", "maxPlayers": 0}),
        json!({"hostName": "x", "numTeams": 5}),
        json!({"hostName": "x", "wordPackId": "nope"}),
    ] {
        assert_eq!(common::game::post(&server, "/rooms", &bad).0, 400, "{bad}");
    }
    join(&server, &room, "A");
    join(&server, &room, "B");
    let (status, v) = common::game::post(&server, &format!("/rooms/{room}/players"), &json!({"playerName": "C"}));
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("ROOM_FULL")));
    let (status, v) = common::game::post(&server, "/rooms/ZZZZZZ/players", &json!({"playerName": "C"}));
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("ROOM_NOT_FOUND")));
    let (status, summary) = common::game::get_json(&server, &format!("/rooms/{room}"));
    assert_eq!(status, 200);
    assert_eq!(summary, json!({"roomId": room, "state": "LOBBY", "playerCount": 2, "maxPlayers": 2, "connectedCount": 0, "degradedConnections": 0}));
    assert_eq!(common::game::get_json(&server, "/rooms/ZZZZZZ").0, 404);
    let big = json!({"hostName": "x".repeat(20_000)});
    assert_eq!(common::game::post(&server, "/rooms", &big).0, 413);
    assert_eq!(server.metric("partyflow_handshakes_failed_total", "reason=\"body_too_large\""), 1.0);
}

#[test]
fn late_joiner_is_a_spectator_and_room_close_ends_every_connection() {
    let server = Server::start(FAST);
    let (mut host, mut players) = started_room(&server, json!({"roundDurationSec": 30}));
    let room = host.room.clone();
    let (sid, stoken, role) = join(&server, &room, "Late");
    assert_eq!(role, "spectator");
    let mut spectator = GameClient::connect(&server, &room, &sid, &stoken).unwrap();
    assert_eq!(spectator.recv_until("CONNECTED").unwrap()["payload"]["role"], "spectator");
    spectator.send("JOIN_TEAM", json!({"teamId": "team_1"}));
    assert_eq!(spectator.recv_until("ERROR").unwrap()["payload"]["code"], "UNAUTHORIZED");
    host.send("ROOM_CLOSE", json!({}));
    for c in players.iter_mut().chain([&mut spectator, &mut host]) {
        c.recv_until("ROOM_CLOSED").unwrap();
        while c.recv().is_some() {}
        assert_eq!(c.seen.last().unwrap()["close"], 1000, "{}", c.actor);
    }
    assert_eq!(common::game::get_json(&server, &format!("/rooms/{room}")).0, 404);
}

#[test]
fn pack_exhaustion_ends_the_round_and_the_game() {
    let mut args = FAST.to_vec();
    args.extend(["--client-message-rate", "1000"]);
    let server = Server::start(&args);
    let (mut host, _players) = started_room(&server, json!({"roundDurationSec": 120, "wordPackId": "around_the_house"}));
    loop {
        let v = host.recv().unwrap();
        match v["type"].as_str().unwrap() {
            "WORD_REVEALED" => host.send("WORD_SWIPED", json!({"wordId": v["payload"]["wordId"], "action": "guessed"})),
            "PACK_EXHAUSTED" => break,
            _ => {}
        }
    }
    let ended = host.recv_until("ROUND_ENDED").unwrap();
    assert_eq!(ended["payload"]["reason"], "pack_exhausted");
    assert_eq!(host.recv_until("SCORE_SUMMARY").unwrap()["payload"]["nextRoundIn"], serde_json::Value::Null);
    let game = host.recv_until("GAME_ENDED").unwrap();
    assert_eq!(game["payload"]["totalWordsPlayed"], 171);
    host.recv_until("FINAL_RESULTS").unwrap();
}

#[test]
fn rooms_per_shard_are_capped_and_a_closed_room_frees_its_place() {
    let server = Server::start(&["--shards", "1", "--max-rooms-per-shard", "2"]);
    let (first_room, first_host, first_token) = create_room(&server, json!({}));
    let _second = create_room(&server, json!({}));
    let (status, body) = post(&server, "/rooms", &json!({"hostName": "H"}));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("SERVER_FULL")), "{body}");
    let (status, _) = post(&server, "/rooms?roomId=CHOSEN1", &json!({"hostName": "H"}));
    assert_eq!(status, 503, "a chosen id is no way around the cap");
    // The first host closes its room: there is a place again.
    let rooms_before = get_json(&server, "/health").1["rooms"].as_i64().unwrap();
    let mut host = GameClient::connect(&server, &first_room, &first_host, &first_token).unwrap();
    host.recv_until("CONNECTED").unwrap();
    host.send("ROOM_CLOSE", json!({}));
    host.recv_until("ROOM_CLOSED").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get_json(&server, "/health").1["rooms"].as_i64().unwrap() >= rooms_before {
        assert!(std::time::Instant::now() < deadline, "the closed room never went");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    create_room(&server, json!({}));
}

#[test]
fn a_room_is_closed_when_it_reaches_its_maximum_lifetime() {
    let server = Server::start(&["--shards", "1", "--room-max-lifetime", "2s"]);
    let (room, _, _) = create_room(&server, json!({}));
    let (player, token, _) = join(&server, &room, "P");
    let created = std::time::Instant::now();
    let mut p = GameClient::connect(&server, &room, &player, &token).unwrap();
    let closed = p.recv_until("ROOM_CLOSED").unwrap();
    assert_eq!(closed["payload"]["reason"], "max_lifetime");
    assert!(created.elapsed() >= std::time::Duration::from_millis(1900), "{:?}", created.elapsed());
    assert!(p.recv().is_none());
    assert_eq!(p.seen.last().unwrap()["close"], 1000);
    assert_eq!(get_json(&server, &format!("/rooms/{room}")).0, 404);
}
