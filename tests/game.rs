//! The PartyFlow game played end to end by real WebSocket clients.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;

use common::game::{create_room, join, GameClient};
use common::Server;
use serde_json::{json, Value};

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
            let mut c = GameClient::connect(&server, &room, &id, &token);
            let hello = c.recv_until("CONNECTED");
            assert_eq!(hello["payload"]["role"], "player");
            assert_eq!(hello["payload"]["actorId"], id.as_str());
            assert!(hello["payload"]["snapshot"].get("currentWord").is_none());
            c.recv_until("TEAM_SETUP_STARTED");
            let team = if i % 2 == 0 { "team_1" } else { "team_2" };
            c.send("JOIN_TEAM", json!({"teamId": team}));
            c.recv_until("FINAL_RESULTS");
            c
        }));
    }
    let mut host = GameClient::connect(&server, &room, &host_id, &host_token);
    let hello = host.recv_until("CONNECTED");
    assert_eq!(hello["payload"]["role"], "host");
    assert_eq!(hello["payload"]["serverVersion"], "1.0");
    // Wait until all four players are connected (they each got CONNECTED) before starting.
    server.wait_connections(5);
    host.send("START_TEAM_SETUP", json!({"numTeams": 2}));
    host.recv_until("TEAMS_BALANCED");
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
            .filter(|t| !matches!(t.as_str(), "TIMER_TICK" | "COUNTDOWN_TICK" | "WORD_RESULT" | "WORD_REVEALED" | "PLAYER_ASSIGNED_TEAM" | "PLAYER_JOINED" | "CONNECTED" | "TEAMS_UNBALANCED"))
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
