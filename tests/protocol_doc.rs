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

/// Replies to one actor, made by the room layer.
const ACTOR_MESSAGES: [&str; 6] = ["CONNECTED", "ERROR", "RECONNECTED", "RECONNECT_FAILED", "STATE_SNAPSHOT", "CONNECTION_WARNING"];

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
        pack: Arc::new(WordPack { id: "t".into(), name: "T".into(), words: (0..words).map(|i| Word { text: format!("w{i}"), difficulty: "easy" }).collect() }),
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
    game.remove(now, "p3", "voluntary");
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
    absence_events(now, &mut seen);
    room_layer_messages(now, &mut seen);
    seen
}

/// The game's answers to absence: explainer changes, skipped turns, connection notices and a
/// host promotion.
fn absence_events(mut now: Instant, seen: &mut HashMap<String, (String, Value)>) {
    let mut game = Game::new("host", "Hana", GameConfig { rounds: 2, ..config(40) });
    for p in ["a", "b", "c"] {
        game.join(p, p).unwrap();
    }
    for (actor, command) in [
        ("host", Command::StartTeamSetup { num_teams: None }),
        ("a", Command::JoinTeam { team_id: "team_1".into() }),
        ("b", Command::JoinTeam { team_id: "team_2".into() }),
        ("c", Command::JoinTeam { team_id: "team_1".into() }),
        ("host", Command::ConfirmStart),
    ] {
        game.handle_command(now, actor, command).unwrap();
    }
    game.set_present(now, "a", false);
    game.player_connection_lost("a");
    game.set_present(now, "b", false);
    game.player_connection_lost("b");
    while let Some(at) = game.poll_timeout().filter(|at| *at <= now + Duration::from_secs(8)) {
        now = at;
        game.handle_timeout(at);
    }
    game.set_present(now, "a", true);
    game.player_reconnected("a");
    assert!(game.promote_host(now, "c"));
    while let Some(e) = game.poll_output() {
        seen.entry(e.kind.to_string()).or_insert((e.scope.as_str().to_string(), e.payload));
    }
}

/// Replies to one actor come from the room layer: CONNECTED, ERROR, and the reconnection and
/// session messages.
fn room_layer_messages(mut now: Instant, seen: &mut HashMap<String, (String, Value)>) {
    let pack = config(10).pack;
    let policy = RoomPolicy::default();
    let mut room: GameRoom<u8> = GameRoom::new(RoomId::parse("ABC234").unwrap(), "host", "H", GameConfig { pack, ..config(10) }, policy, now, 0);
    let msg = |kind: &str, payload: &str| format!(r#"{{"type":"{kind}","roomId":"ABC234","payload":{payload}}}"#);
    room.join(now, "p1", "P").unwrap();
    room.join(now, "p2", "Q").unwrap();
    room.connect(now, 1, "host", "1.0").unwrap();
    room.connect(now, 2, "p1", "1.0").unwrap();
    room.connect(now, 3, "p2", "1.0").unwrap();
    room.handle_message(now, 1, DataKind::Text, msg("HOST_PAUSE", "{}").as_bytes());
    for (conn, kind, payload) in
        [(1, "START_TEAM_SETUP", "{}"), (2, "JOIN_TEAM", r#"{"teamId":"team_1"}"#), (3, "JOIN_TEAM", r#"{"teamId":"team_2"}"#), (1, "HOST_CONFIRM_START", "{}")]
    {
        room.handle_message(now, conn, DataKind::Text, msg(kind, payload).as_bytes());
    }
    // Nobody acknowledges ROUND_STARTED: resends, then CONNECTION_WARNING.
    let until = now + Duration::from_secs(8);
    while let Some(at) = room.poll_timeout().filter(|at| *at <= until) {
        now = at;
        room.handle_timeout(at);
    }
    room.handle_message(now, 3, DataKind::Text, msg("HEARTBEAT", r#"{"stateVersion":1,"stateChecksum":"00000000"}"#).as_bytes());
    room.disconnect(now, 2);
    now += Duration::from_secs(2);
    room.connect(now, 4, "p1", "1.0").unwrap();
    room.handle_message(now, 4, DataKind::Text, msg("RECONNECT", r#"{"lastSeqId":3}"#).as_bytes());
    room.disconnect(now, 4);
    now += Duration::from_secs(31);
    room.connect(now, 5, "p1", "1.0").unwrap();
    room.handle_message(now, 5, DataKind::Text, msg("RECONNECT", r#"{"lastSeqId":3}"#).as_bytes());
    while let Some(out) = room.poll_output() {
        if let RoomOutput::Send(_, frame) = out {
            let v: Value = serde_json::from_slice(partyflow::ws::frame_payload(&frame)).unwrap();
            if v["broadcast"] == "actor" {
                seen.entry(v["type"].as_str().unwrap().to_string()).or_insert(("actor".into(), v["payload"].clone()));
            }
        }
    }
}

#[test]
fn every_server_example_matches_what_the_server_sends() {
    let real = real_events();
    for kind in EVENT_TYPES.iter().chain(&ACTOR_MESSAGES) {
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
        } else if msg.kind == "RECONNECT" {
            assert!(msg.payload["lastSeqId"].is_u64());
        } else if msg.kind == "HEARTBEAT" {
            assert!(msg.payload["stateVersion"].is_u64() && msg.payload["stateChecksum"].is_string());
        } else {
            assert!(Command::parse(&msg.kind, &msg.payload).unwrap().is_some(), "{} is not a command", msg.kind);
        }
        documented.insert(msg.kind);
    }
    for kind in Command::TYPES.iter().chain(&["ACK", "RECONNECT", "HEARTBEAT"]) {
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

#[test]
fn the_documented_checksum_example_is_what_the_server_computes() {
    let doc = doc();
    let example = doc.split("Example: `").nth(1).expect("a checksum example");
    let (text, rest) = example.split_once("` → `").unwrap();
    let expected = rest.split('`').next().unwrap();
    let mut fields = text.split('|');
    let (state, version, host) = (fields.next().unwrap(), fields.next().unwrap().parse().unwrap(), fields.next().unwrap());
    let scores: Vec<(String, i64)> =
        fields.next().unwrap().split(',').map(|t| t.split_once(':').unwrap()).map(|(team, score)| (team.to_string(), score.parse().unwrap())).collect();
    assert_eq!(partyflow::session::state_checksum(state, version, host, &scores), expected);
}
