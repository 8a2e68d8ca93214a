//! The game under a simulated clock: exact events, scopes and times, no sleeps.

use super::*;
use words::Word;

struct Sim {
    game: Game,
    now: Instant,
    start: Instant,
    log: Vec<(Duration, Event)>,
}

fn pack(words: usize) -> Arc<WordPack> {
    Arc::new(WordPack { id: "test".into(), name: "Test".into(), words: (0..words).map(|i| Word { text: format!("secret{i}"), difficulty: "easy" }).collect() })
}

fn config(words: usize) -> GameConfig {
    GameConfig {
        max_players: 10,
        num_teams: 2,
        rounds: 2,
        round_duration: Duration::from_secs(10),
        countdown: 3,
        score_review: Duration::from_secs(5),
        pack: pack(words),
        seed: 42,
    }
}

impl Sim {
    fn new(config: GameConfig) -> Sim {
        let now = Instant::now();
        let mut sim = Sim { game: Game::new("host", "Hana", config), now, start: now, log: Vec::new() };
        sim.drain();
        sim
    }

    fn drain(&mut self) {
        while let Some(ev) = self.game.poll_output() {
            self.log.push((self.now - self.start, ev));
        }
    }

    /// Moves the clock to `now + d`, firing every timer on the way at its own time.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        let mut steps = 0;
        while let Some(at) = self.game.poll_timeout().filter(|at| *at <= target) {
            self.now = at.max(self.now);
            self.game.handle_timeout(self.now);
            self.drain();
            steps += 1;
            assert!(steps < 10_000, "livelock");
        }
        self.now = target;
    }

    fn cmd(&mut self, actor: &str, command: Command) -> Result<(), ErrorCode> {
        let result = self.game.handle_command(self.now, actor, command).map_err(|r| r.code);
        self.drain();
        result
    }

    fn kinds_since(&self, from: usize) -> Vec<&'static str> {
        self.log[from..].iter().map(|(_, e)| e.kind).collect()
    }

    fn last(&self, kind: &str) -> &Event {
        &self.log.iter().rev().find(|(_, e)| e.kind == kind).unwrap().1
    }

    fn current_word(&self) -> String {
        self.last("WORD_REVEALED").payload["wordId"].as_str().unwrap().to_string()
    }

    /// Four players in two balanced teams.
    fn ready(config: GameConfig) -> Sim {
        let mut sim = Sim::new(config);
        for i in 1..=4 {
            assert_eq!(sim.game.join(&format!("p{i}"), &format!("Player {i}")).unwrap(), Role::Player);
            sim.drain();
        }
        sim.cmd("host", Command::StartTeamSetup { num_teams: None }).unwrap();
        for (p, t) in [("p1", "team_1"), ("p2", "team_2"), ("p3", "team_1"), ("p4", "team_2")] {
            sim.cmd(p, Command::JoinTeam { team_id: t.into() }).unwrap();
        }
        assert_eq!(sim.game.state(), State::ReadyToStart);
        sim
    }
}

#[test]
fn full_game_event_sequence_scopes_and_times() {
    let mut sim = Sim::ready(config(100));
    let kinds: Vec<_> = sim.kinds_since(0);
    assert_eq!(kinds.first(), Some(&"ROOM_CREATED"));
    assert_eq!(kinds.iter().filter(|k| **k == "PLAYER_JOINED").count(), 4);
    assert_eq!(kinds.last(), Some(&"TEAMS_BALANCED"));
    let t0 = sim.now - sim.start;
    let mark = sim.log.len();
    sim.cmd("host", Command::ConfirmStart).unwrap();
    sim.advance(Duration::from_secs(3));
    // Two swipes, one second apart, during the first turn.
    sim.advance(Duration::from_millis(500));
    let w = sim.current_word();
    sim.cmd("host", Command::SwipeWord { word_id: w, action: Swipe::Guessed }).unwrap();
    sim.advance(Duration::from_secs(1));
    let w = sim.current_word();
    sim.cmd("host", Command::SwipeWord { word_id: w, action: Swipe::Skipped }).unwrap();
    // Rest of the game: 4 turns of 10 s, countdowns and reviews in between.
    sim.advance(Duration::from_secs(120));
    assert_eq!(sim.game.state(), State::FinalResults);

    let first_turn: Vec<_> = sim.log[mark..].iter().take(20).map(|(t, e)| (*t - t0, e.kind)).collect();
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    assert_eq!(
        first_turn,
        vec![
            (s(0), "COUNTDOWN_TICK"),
            (s(1), "COUNTDOWN_TICK"),
            (s(2), "COUNTDOWN_TICK"),
            (s(3), "ROUND_STARTED"),
            (s(3), "WORD_REVEALED"),
            (ms(3500), "WORD_RESULT"),
            (ms(3500), "WORD_REVEALED"),
            (s(4), "TIMER_TICK"),
            (ms(4500), "WORD_RESULT"),
            (ms(4500), "WORD_REVEALED"),
            (s(5), "TIMER_TICK"),
            (s(6), "TIMER_TICK"),
            (s(7), "TIMER_TICK"),
            (s(8), "TIMER_TICK"),
            (s(9), "TIMER_TICK"),
            (s(10), "TIMER_TICK"),
            (s(11), "TIMER_TICK"),
            (s(12), "TIMER_TICK"),
            (s(13), "ROUND_ENDED"),
            (s(13), "SCORE_SUMMARY"),
        ]
    );
    let ticks: Vec<u64> =
        sim.log[mark..].iter().filter(|(_, e)| e.kind == "TIMER_TICK").take(9).map(|(_, e)| e.payload["remainingSeconds"].as_u64().unwrap()).collect();
    assert_eq!(ticks, vec![9, 8, 7, 6, 5, 4, 3, 2, 1]);

    let rest = sim.kinds_since(mark);
    assert_eq!(rest.iter().filter(|k| **k == "ROUND_STARTED").count(), 4, "2 rounds x 2 teams");
    assert_eq!(rest.iter().filter(|k| **k == "NEXT_ROUND_READY").count(), 3);
    assert_eq!(&rest[rest.len() - 2..], &["GAME_ENDED", "FINAL_RESULTS"]);

    // Teams and explainers rotate: team_1 (p1), team_2 (p2), team_1 (p3), team_2 (p4).
    let starts: Vec<(String, String)> = sim.log[mark..]
        .iter()
        .filter(|(_, e)| e.kind == "ROUND_STARTED")
        .map(|(_, e)| (e.payload["activeTeamId"].as_str().unwrap().into(), e.payload["explainerPlayerId"].as_str().unwrap().into()))
        .collect();
    let expect = [("team_1", "p1"), ("team_2", "p2"), ("team_1", "p3"), ("team_2", "p4")];
    assert_eq!(starts, expect.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());

    let ended = &sim.last("GAME_ENDED").payload;
    assert_eq!(ended["winnerTeamId"], "team_1");
    assert_eq!(ended["totalWordsPlayed"], 2);
    assert_eq!(ended["mvpPlayerId"], "p1");
    assert!(sim.last("GAME_ENDED").requires_ack && sim.last("ROUND_ENDED").requires_ack && sim.last("ROUND_STARTED").requires_ack);

    // Host-only delivery: only WORD_REVEALED carries word text, and only to the host.
    for (_, e) in &sim.log {
        let text = e.payload.to_string();
        if e.kind == "WORD_REVEALED" {
            assert_eq!(e.scope, Scope::Host);
            assert!(text.contains("secret"));
        } else {
            assert_ne!(e.scope, Scope::Host, "{}", e.kind);
            assert!(!text.contains("secret"), "{} leaks a word: {text}", e.kind);
        }
    }
}

#[test]
fn invalid_transitions_and_unauthorized_actions() {
    let mut sim = Sim::new(config(100));
    use Command::*;
    assert_eq!(sim.cmd("host", StartTeamSetup { num_teams: None }), Err(ErrorCode::InvalidTransition), "no players yet");
    sim.game.join("p1", "A").unwrap();
    sim.game.join("p2", "B").unwrap();
    sim.drain();
    assert_eq!(sim.cmd("p1", StartTeamSetup { num_teams: None }), Err(ErrorCode::Unauthorized));
    assert_eq!(sim.cmd("stranger", Pause), Err(ErrorCode::Unauthorized));
    assert_eq!(sim.cmd("host", StartTeamSetup { num_teams: Some(3) }), Err(ErrorCode::InvalidTransition), "3 teams, 2 players");
    for c in [ConfirmStart, CancelSetup, Pause, Resume, Restart] {
        assert_eq!(sim.cmd("host", c.clone()), Err(ErrorCode::InvalidTransition), "{c:?} in lobby");
    }
    assert_eq!(sim.cmd("p1", JoinTeam { team_id: "team_1".into() }), Err(ErrorCode::InvalidTransition));
    assert_eq!(sim.cmd("host", SwipeWord { word_id: "word_0".into(), action: Swipe::Guessed }), Err(ErrorCode::InvalidTransition));
    sim.cmd("host", StartTeamSetup { num_teams: None }).unwrap();
    assert_eq!(sim.cmd("host", StartTeamSetup { num_teams: None }), Err(ErrorCode::InvalidTransition), "twice");
    assert_eq!(sim.cmd("host", JoinTeam { team_id: "team_1".into() }), Err(ErrorCode::Unauthorized));
    assert_eq!(sim.cmd("p1", JoinTeam { team_id: "team_9".into() }), Err(ErrorCode::InvalidMessage));
    assert_eq!(sim.cmd("host", ConfirmStart), Err(ErrorCode::InvalidTransition), "teams not balanced");
    // A late joiner is a spectator and may not act.
    assert_eq!(sim.game.join("late", "L").unwrap(), Role::Spectator);
    assert_eq!(sim.cmd("late", JoinTeam { team_id: "team_1".into() }), Err(ErrorCode::Unauthorized));
    sim.cmd("p1", JoinTeam { team_id: "team_1".into() }).unwrap();
    assert_eq!(sim.cmd("p1", JoinTeam { team_id: "team_1".into() }), Err(ErrorCode::InvalidTransition), "already there");
    sim.cmd("p2", JoinTeam { team_id: "team_2".into() }).unwrap();
    assert_eq!(sim.game.state(), State::ReadyToStart);
    sim.cmd("p2", JoinTeam { team_id: "team_1".into() }).unwrap();
    assert_eq!(sim.game.state(), State::TeamSetup, "moving teams can unbalance");
    sim.cmd("host", CancelSetup).unwrap();
    assert_eq!(sim.game.state(), State::Lobby);
    assert_eq!(sim.cmd("host", Leave), Err(ErrorCode::Unauthorized));
}

#[test]
fn double_swipe_race_first_wins() {
    let mut sim = Sim::ready(config(100));
    sim.cmd("host", Command::ConfirmStart).unwrap();
    sim.advance(Duration::from_secs(3));
    let w = sim.current_word();
    let swipe = Command::SwipeWord { word_id: w, action: Swipe::Guessed };
    assert_eq!(sim.cmd("host", swipe.clone()), Ok(()));
    assert_eq!(sim.cmd("host", swipe), Err(ErrorCode::InvalidTransition));
    assert_eq!(sim.log.iter().filter(|(_, e)| e.kind == "WORD_RESULT").count(), 1);
    assert_eq!(sim.last("WORD_RESULT").payload["newScore"], 1);
}

#[test]
fn pause_stops_the_clock_and_resume_continues_it_exactly() {
    let mut sim = Sim::ready(config(100));
    sim.cmd("host", Command::ConfirmStart).unwrap();
    sim.advance(Duration::from_secs(3)); // round starts, 10 s on the clock
    sim.advance(Duration::from_millis(3500)); // 6.5 s left
    sim.cmd("host", Command::Pause).unwrap();
    assert_eq!(sim.game.state(), State::RoundPaused);
    assert_eq!(sim.last("GAME_PAUSED").payload["remainingMs"], 6500);
    let mark = sim.log.len();
    sim.advance(Duration::from_secs(30));
    assert!(sim.kinds_since(mark).is_empty(), "time stands still while paused");
    assert_eq!(sim.cmd("host", Command::Pause), Err(ErrorCode::InvalidTransition));
    let resumed_at = sim.now - sim.start;
    sim.cmd("host", Command::Resume).unwrap();
    sim.advance(Duration::from_secs(7));
    let after: Vec<(Duration, &str, Value)> = sim.log[mark..]
        .iter()
        .filter(|(_, e)| matches!(e.kind, "TIMER_TICK" | "ROUND_ENDED"))
        .map(|(t, e)| (*t - resumed_at, e.kind, e.payload["remainingSeconds"].clone()))
        .collect();
    let ms = Duration::from_millis;
    assert_eq!(
        after,
        vec![
            (ms(500), "TIMER_TICK", json!(6)),
            (ms(1500), "TIMER_TICK", json!(5)),
            (ms(2500), "TIMER_TICK", json!(4)),
            (ms(3500), "TIMER_TICK", json!(3)),
            (ms(4500), "TIMER_TICK", json!(2)),
            (ms(5500), "TIMER_TICK", json!(1)),
            (ms(6500), "ROUND_ENDED", Value::Null),
        ]
    );
}

#[test]
fn pack_exhaustion_ends_the_round_and_the_game() {
    let mut sim = Sim::ready(config(3));
    sim.cmd("host", Command::ConfirmStart).unwrap();
    sim.advance(Duration::from_secs(3));
    for _ in 0..3 {
        let w = sim.current_word();
        sim.cmd("host", Command::SwipeWord { word_id: w, action: Swipe::Guessed }).unwrap();
    }
    assert!(sim.kinds_since(0).contains(&"PACK_EXHAUSTED"));
    assert_eq!(sim.last("ROUND_ENDED").payload["reason"], "pack_exhausted");
    assert_eq!(sim.last("SCORE_SUMMARY").payload["nextRoundIn"], Value::Null);
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.game.state(), State::FinalResults);
    assert_eq!(sim.last("GAME_ENDED").payload["totalWordsPlayed"], 3);
}

#[test]
fn seats_spectators_restart_and_close() {
    let mut sim = Sim::new(GameConfig { max_players: 2, ..config(100) });
    sim.game.join("p1", "A").unwrap();
    sim.game.join("p2", "B").unwrap();
    assert_eq!(sim.game.join("p3", "C").unwrap_err().code, ErrorCode::RoomFull);
    sim.cmd("host", Command::StartTeamSetup { num_teams: None }).unwrap();
    assert_eq!(sim.game.join("s1", "S").unwrap(), Role::Spectator);
    let now = sim.now;
    sim.game.remove(now, "p2", "voluntary");
    sim.drain();
    assert_eq!(sim.last("PLAYER_LEFT").payload["reason"], "voluntary");
    sim.cmd("p1", Command::JoinTeam { team_id: "team_1".into() }).unwrap();
    assert_eq!(sim.game.state(), State::TeamSetup, "team_2 is empty");
    sim.game.join("p2", "B").unwrap();
    sim.cmd("host", Command::CancelSetup).unwrap();
    sim.cmd("host", Command::CloseRoom).unwrap();
    assert!(sim.game.is_closed());
    assert_eq!(sim.last("ROOM_CLOSED").payload["state"], "ROOM_CLOSED");
    assert_eq!(sim.cmd("host", Command::Pause), Err(ErrorCode::RoomNotFound));
    assert_eq!(sim.game.join("x", "X").unwrap_err().code, ErrorCode::RoomNotFound);
}

#[test]
fn restart_returns_to_lobby_and_promotes_spectators() {
    let mut sim = Sim::ready(GameConfig { rounds: 1, ..config(100) });
    sim.cmd("host", Command::ConfirmStart).unwrap();
    assert_eq!(sim.game.join("s1", "S").unwrap(), Role::Spectator);
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.game.state(), State::FinalResults);
    assert_eq!(sim.last("GAME_ENDED").payload["winnerTeamId"], Value::Null, "0:0 is a tie");
    sim.cmd("host", Command::Restart).unwrap();
    assert_eq!(sim.game.state(), State::Lobby);
    assert_eq!(sim.game.role_of("s1"), Some(Role::Player));
    assert_eq!(sim.game.player_count(), 5);
}

#[test]
fn state_version_grows_with_every_state_change() {
    let mut sim = Sim::ready(config(100));
    let before = sim.game.state_version();
    sim.cmd("host", Command::ConfirmStart).unwrap();
    assert_eq!(sim.game.state_version(), before + 1);
    assert_eq!(sim.last("COUNTDOWN_TICK").payload["stateVersion"], before + 1);
    sim.advance(Duration::from_secs(3));
    assert_eq!(sim.game.state_version(), before + 2);
}

#[test]
fn every_state_is_reachable() {
    let mut sim = Sim::ready(GameConfig { rounds: 1, ..config(100) });
    sim.cmd("host", Command::ConfirmStart).unwrap();
    sim.advance(Duration::from_secs(4));
    sim.cmd("host", Command::Pause).unwrap();
    sim.cmd("host", Command::Resume).unwrap();
    sim.advance(Duration::from_secs(60));
    sim.cmd("host", Command::CloseRoom).unwrap();
    let mut seen: std::collections::HashSet<&str> = [State::RoomCreated.as_str()].into();
    seen.extend(sim.log.iter().filter_map(|(_, e)| e.payload.get("state").and_then(Value::as_str)));
    let all: std::collections::HashSet<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(seen, all);
}
