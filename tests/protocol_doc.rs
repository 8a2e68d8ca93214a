//! PROTOCOL.md cannot drift from the code: its client examples must parse as the commands they
//! name, and each server example must carry exactly the payload fields (and scope) the server
//! really sends for that type, as produced by a scripted game.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use partyflow::game::words::{Word, WordPack};
use partyflow::game::{Command, Game, GameConfig, Role, State, Swipe, EVENT_TYPES};
use partyflow::protocol::{parse_client, ErrorCode};
use partyflow::rooms::{GameRoom, RoomId, RoomOutput, RoomPolicy};
use partyflow::ws::DataKind;
use serde_json::Value;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md")).unwrap()
}

fn examples(doc: &str) -> Vec<Value> {
    doc.split("```json")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .map(|block| serde_json::from_str(block).unwrap_or_else(|e| panic!("bad JSON example ({e}):\n{block}")))
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn config(words: usize) -> GameConfig {
    GameConfig {
        max_players: 10,
        num_teams: 2,
        rounds: 1,
        round_duration: Duration::from_secs(3),
        countdown: 1,
        score_review: Duration::from_secs(1),
        pack: Arc::new(WordPack {
            id: "t".into(),
            name: "T".into(),
            words: (0..words).map(|i| Word { text: format!("w{i}"), difficulty: "easy" }).collect(),
        }),
        seed: 3,
    }
}

/// One real event of every type, with its scope name.
fn real_events() -> HashMap<String, (String, Value)> {
    let mut seen = HashMap::new();
    let mut game = Game::new("host", "Hana", config(4));
    let mut now = Instant::now();
    let drain = |game: &mut Game, seen: &mut HashMap<String, (String, Value)>| {
        while let Some(e) = game.poll_output() {
            seen.entry(e.kind.to_string()).or_insert((e.scope.as_str().to_string(), e.payload));
        }
    };
    let advance = |game: &mut Game, now: &mut Instant, by: Duration, seen: &mut HashMap<String, (String, Value)>| {
        let target = *now + by;
        while let Some(at) = game.poll_timeout().filter(|at| *at <= target) {
            *now = at;
            game.handle_timeout(at);
            drain(game, seen);
        }
        *now = target;
    };
    for p in ["p1", "p2", "p3"] {
        game.join(p, p).unwrap();
    }
    game.remove("p3", "voluntary");
    let script = [
        ("host", Command::StartTeamSetup { num_teams: None }),
        ("p1", Command::JoinTeam { team_id: "team_1".into() }),
        ("p2", Command::JoinTeam { team_id: "team_2".into() }),
        ("p2", Command::JoinTeam { team_id: "team_1".into() }),
        ("host", Command::CancelSetup),
        ("host", Command::StartTeamSetup { num_teams: None }),
        ("p1", Command::JoinTeam { team_id: "team_1".into() }),
        ("p2", Command::JoinTeam { team_id: "team_2".into() }),
        ("host", Command::ConfirmStart),
    ];
    for (actor, command) in script {
        game.handle_command(now, actor, command).unwrap();
    }
    drain(&mut game, &mut seen);
    advance(&mut game, &mut now, Duration::from_millis(1500), &mut seen);
    let first_word = seen["WORD_REVEALED"].1["wordId"].as_str().unwrap().to_string();
    game.handle_command(now, "host", Command::SwipeWord { word_id: first_word, action: Swipe::Guessed }).unwrap();
    game.handle_command(now, "host", Command::Pause).unwrap();
    game.handle_command(now, "host", Command::Resume).unwrap();
    drain(&mut game, &mut seen);
    // The first turn times out; the second starts after the review and countdown.
    advance(&mut game, &mut now, Duration::from_secs(5), &mut seen);
    assert_eq!(game.state(), State::RoundActive);
    // Second turn: skip every remaining word to exhaust the pack.
    while let Some(word) = game.snapshot(Role::Host)["currentWord"]["wordId"].as_str().map(String::from) {
        game.handle_command(now, "host", Command::SwipeWord { word_id: word, action: Swipe::Skipped }).unwrap();
        drain(&mut game, &mut seen);
    }
    drain(&mut game, &mut seen);
    advance(&mut game, &mut now, Duration::from_secs(10), &mut seen);
    game.handle_command(now, "host", Command::Restart).unwrap();
    game.handle_command(now, "host", Command::CloseRoom).unwrap();
    drain(&mut game, &mut seen);
    // CONNECTED and ERROR come from the room layer.
    let pack = config(10).pack;
    let mut room: GameRoom<u8> = GameRoom::new(RoomId::parse("ABC234").unwrap(), "host", "H", GameConfig { pack, ..config(10) }, RoomPolicy::default(), now, 0);
    room.connect(now, 1, "host", "1.0").unwrap();
    room.handle_message(now, 1, DataKind::Text, br#"{"type":"HOST_PAUSE","roomId":"ABC234"}"#);
    while let Some(out) = room.poll_output() {
        if let RoomOutput::Send(_, frame) = out {
            let header = match frame[1] & 0x7f { 126 => 4, 127 => 10, _ => 2 };
            let v: Value = serde_json::from_slice(&frame[header..]).unwrap();
            seen.entry(v["type"].as_str().unwrap().to_string()).or_insert(("actor".into(), v["payload"].clone()));
        }
    }
    seen
}

#[test]
fn every_server_example_matches_what_the_server_sends() {
    let real = real_events();
    for kind in EVENT_TYPES.iter().chain(&["CONNECTED", "ERROR"]) {
        assert!(real.contains_key(*kind), "the script did not produce {kind}");
    }
    let mut documented = BTreeSet::new();
    for ex in examples(&doc()).into_iter().filter(|e| e.get("broadcast").is_some()) {
        let kind = ex["type"].as_str().unwrap().to_string();
        let envelope = keys(&ex);
        let required: BTreeSet<String> = ["type", "roomId", "timestamp", "version", "broadcast", "payload"].map(String::from).into();
        let optional: BTreeSet<String> = ["sequenceId", "requiresAck", "ackId"].map(String::from).into();
        assert!(required.is_subset(&envelope), "{kind}: envelope lacks {:?}", required.difference(&envelope).collect::<Vec<_>>());
        assert!(envelope.is_subset(&required.union(&optional).cloned().collect()), "{kind}: unknown envelope fields");
        let (scope, payload) = real.get(&kind).unwrap_or_else(|| panic!("PROTOCOL.md documents {kind}, which the server never sends"));
        assert_eq!(ex["broadcast"].as_str().unwrap(), scope, "{kind}: scope");
        assert_eq!(keys(&ex["payload"]), keys(payload), "{kind}: payload fields");
        assert_eq!(ex.get("sequenceId").is_some(), scope != "actor", "{kind}: sequenceId on room events only");
        if kind == "CONNECTED" {
            let mut snapshot = keys(&payload["snapshot"]);
            snapshot.remove("currentWord");
            assert_eq!(keys(&ex["payload"]["snapshot"]), snapshot, "CONNECTED snapshot fields");
        }
        documented.insert(kind);
    }
    let missing: Vec<_> = real.keys().filter(|k| !documented.contains(*k)).collect();
    assert!(missing.is_empty(), "undocumented server messages: {missing:?}");
}

#[test]
fn every_client_example_is_accepted_and_every_command_documented() {
    let mut documented = BTreeSet::new();
    for ex in examples(&doc()).into_iter().filter(|e| e.get("broadcast").is_none()) {
        let msg = parse_client(ex.to_string().as_bytes()).unwrap_or_else(|e| panic!("{ex}: {e}"));
        if msg.kind == "ACK" {
            assert!(msg.payload["ackId"].is_string());
        } else {
            assert!(Command::parse(&msg.kind, &msg.payload).unwrap().is_some(), "{} is not a command", msg.kind);
        }
        documented.insert(msg.kind);
    }
    for kind in Command::TYPES.iter().chain(&["ACK"]) {
        assert!(documented.contains(*kind), "{kind} has no example");
    }
}

#[test]
fn every_state_and_error_code_is_documented() {
    let doc = doc();
    for state in State::ALL {
        assert!(doc.contains(&format!("| `{}` |", state.as_str())), "state {} missing from the table", state.as_str());
    }
    for code in ErrorCode::ALL {
        assert!(doc.contains(&format!("| `{}` |", code.as_str())), "error code {} missing", code.as_str());
    }
}
