//! Cost of the game's hot transitions: a swipe (WORD_RESULT + next WORD_REVEALED) in the bare
//! state machine, and the same swipe through a room of 11 (parse, transition, sequence, encode
//! once per scope, fan-out plan).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use partyflow::game::words::WordPack;
use partyflow::game::{Command, Game, GameConfig, Role, Swipe};
use partyflow::rooms::{GameRoom, RoomId, RoomPolicy};
use partyflow::ws::DataKind;

fn config() -> GameConfig {
    let pack = Arc::new(WordPack::shipped().remove(0));
    GameConfig {
        max_players: 10,
        num_teams: 2,
        rounds: 3,
        round_duration: Duration::from_secs(3600),
        countdown: 0,
        score_review: Duration::from_secs(1),
        pack,
        seed: 1,
    }
}

/// A game with 10 players whose first round has just started, and its current word.
fn game_in_round(now: Instant) -> (Game, String) {
    let mut game = Game::new("host", "H", config());
    for i in 0..10 {
        game.join(&format!("p{i}"), "P").unwrap();
    }
    game.handle_command(now, "host", Command::StartTeamSetup { num_teams: None }).unwrap();
    for i in 0..10 {
        game.handle_command(now, &format!("p{i}"), Command::JoinTeam { team_id: format!("team_{}", i % 2 + 1) }).unwrap();
    }
    game.handle_command(now, "host", Command::ConfirmStart).unwrap();
    while game.poll_output().is_some() {}
    let word = game.snapshot(Role::Host)["currentWord"]["wordId"].as_str().unwrap().to_string();
    (game, word)
}

/// The same as a room with the host (conn 0) and 10 players connected; returns the current word.
fn room_in_round(now: Instant) -> (GameRoom<u32>, String) {
    let policy = RoomPolicy { messages_per_sec: partyflow::session::Rate { per_sec: 1e9, burst: 1e9 }, ..RoomPolicy::default() };
    let mut room = GameRoom::new(RoomId::parse("ABC234").unwrap(), "host", "H", config(), policy, now, 0);
    for i in 0..10 {
        room.join(now, &format!("p{i}"), "P").unwrap();
    }
    room.connect(now, 0, "host", "1.0").unwrap();
    for i in 0..10u32 {
        room.connect(now, i + 1, &format!("p{i}"), "1.0").unwrap();
    }
    room.handle_message(now, 0, DataKind::Text, br#"{"type":"START_TEAM_SETUP","roomId":"ABC234"}"#);
    for i in 0..10u32 {
        let join = format!(r#"{{"type":"JOIN_TEAM","roomId":"ABC234","payload":{{"teamId":"team_{}"}}}}"#, i % 2 + 1);
        room.handle_message(now, i + 1, DataKind::Text, join.as_bytes());
    }
    room.handle_message(now, 0, DataKind::Text, br#"{"type":"HOST_CONFIRM_START","roomId":"ABC234"}"#);
    let mut word = String::new();
    while let Some(out) = room.poll_output() {
        if let partyflow::rooms::RoomOutput::Send(0, frame) = &out {
            let text = String::from_utf8_lossy(frame);
            if let Some(i) = text.find("\"wordId\":\"") {
                let rest = &text[i + 10..];
                word = rest[..rest.find('"').unwrap()].to_string();
            }
        }
    }
    (room, word)
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    c.bench_function("game_swipe_transition", |b| {
        b.iter_batched_ref(
            || game_in_round(now),
            |(game, word)| {
                game.handle_command(now, "host", Command::SwipeWord { word_id: std::mem::take(word), action: Swipe::Guessed }).unwrap();
                while let Some(e) = game.poll_output() {
                    black_box(e);
                }
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("room_swipe_parse_transition_fanout_11", |b| {
        b.iter_batched_ref(
            || room_in_round(now),
            |(room, word)| {
                let text = format!(r#"{{"type":"WORD_SWIPED","roomId":"ABC234","version":"1.0","payload":{{"wordId":"{word}","action":"guessed"}}}}"#);
                room.handle_message(now, 0, DataKind::Text, text.as_bytes());
                let mut sends = 0;
                while let Some(out) = room.poll_output() {
                    sends += 1;
                    black_box(out);
                }
                assert_eq!(sends, 12, "WORD_RESULT to 11, WORD_REVEALED to the host");
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
