//! Deterministic simulation of whole room lifetimes on the production room code
//! (`GameRoom`, its game, presence, log and ACK machines) with a simulated clock.
//!
//! Each lifetime is driven by one seed: random joins, drops, reconnects (often exactly at, or a
//! millisecond either side of, a window or timeline boundary), duplicate connections, racing and
//! repeated actions, lost ACKs, desynced heartbeats, host loss and clock jumps. After every step
//! it checks:
//! - no host-only event or word text reaches a player or spectator, live or backfilled;
//! - every live event reaches exactly the connected members entitled to it, as the very frame
//!   the room logged (so the log is what a never-disconnected peer received);
//! - after a backfill, the actor holds every event of its role in `(lastSeqId, lastSequenceId]`,
//!   nothing missing or doubled;
//! - team scores equal the sum of `WORD_RESULT`s;
//! - the explainer of a running turn is a player of the active team who has not been gone past
//!   the grace;
//! - the log, the connections and the output queue stay bounded.
//!
//! Now and then the server "crashes": the room is saved, encoded, decoded and recovered, and
//! the lifetime goes on from the recovered room.
//!
//! `PARTYFLOW_SIM_LIFETIMES` (default 10,000) sets the count; a failure prints
//! `PARTYFLOW_SIM_SEED=<seed>`, which replays exactly that lifetime.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use partyflow::game::words::{Word, WordPack};
use partyflow::game::{GameConfig, Role, State};
use partyflow::protocol::Scope;
use partyflow::rooms::{GameRoom, RoomId, RoomOutput, RoomPolicy};
use partyflow::session::{EventLogConfig, PresenceConfig};
use partyflow::store::RoomSnapshot;
use partyflow::ws::{frame_payload, DataKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const ROOM: &str = "SIM234";
const STEPS: usize = 150;
const S: Duration = Duration::from_secs(1);

struct Client {
    actor: String,
    conn: Option<u32>,
    version: &'static str,
    /// Every sequenced frame this actor holds (live or backfilled), by sequence id.
    held: BTreeMap<u64, Vec<u8>>,
    /// When its connection dropped (for the explainer check).
    dropped_at: Option<Instant>,
    /// `lastSequenceId` of its current connection's `CONNECTED`.
    connected_seq: u64,
    acks: bool,
}

struct Sim {
    rng: StdRng,
    room: GameRoom<u32>,
    now: Instant,
    clients: Vec<Client>,
    next_conn: u32,
    /// Every sequenced event, read from the room's log after each step: (scope, frame).
    stream: BTreeMap<u64, (Scope, Vec<u8>)>,
    scores: HashMap<String, i64>,
    grace: Duration,
    max_log: usize,
    /// How often each message type was seen, to show the lifetimes covered the ground.
    seen: BTreeMap<String, u64>,
    pack: Arc<WordPack>,
}

fn policy() -> RoomPolicy {
    let defaults = RoomPolicy::default();
    RoomPolicy {
        presence: PresenceConfig::default(),
        event_log: EventLogConfig { max_events: 256, ..defaults.event_log },
        messages_per_sec: partyflow::session::Rate { per_sec: 1000.0, burst: 1000.0 },
        ..defaults
    }
}

fn text(frame: &[u8]) -> &str {
    std::str::from_utf8(frame_payload(frame)).unwrap_or("<not utf-8>")
}

/// The `sequenceId` of an envelope's JSON text, found without parsing the whole message.
fn sequence_id(json: &str) -> Option<u64> {
    let rest = json.split("\"sequenceId\":").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The same envelope: the same bytes, or the same JSON but for the recipient's `version`.
fn same_event(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let parse = |f: &[u8]| {
        serde_json::from_slice::<Value>(frame_payload(f)).ok().map(|mut v| {
            v["version"] = Value::Null;
            v
        })
    };
    parse(a).is_some_and(|a| Some(a) == parse(b))
}

fn entitled(role: Option<Role>, scope: &Scope, actor: &str) -> bool {
    match scope {
        Scope::All => true,
        Scope::Host => role == Some(Role::Host),
        Scope::Players => role == Some(Role::Player),
        Scope::Actor(id) => id == actor,
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Instant::now();
        let words = (0..rng.random_range(8..60)).map(|i| Word { text: format!("w{i}"), difficulty: "easy" }).collect();
        let pack = Arc::new(WordPack { id: "sim".into(), name: "Sim".into(), words });
        let config = GameConfig {
            max_players: rng.random_range(2..=10),
            num_teams: 2,
            rounds: rng.random_range(1..=2),
            round_duration: Duration::from_secs(rng.random_range(10..=40)),
            countdown: 1,
            score_review: 2 * S,
            pack: pack.clone(),
            seed,
        };
        let policy = policy();
        let room = GameRoom::new(RoomId::parse(ROOM).unwrap(), "host", "Host", config, policy, now, 1_700_000_000_000);
        let host = Client { actor: "host".into(), conn: None, version: "1.0", held: BTreeMap::new(), dropped_at: None, connected_seq: 0, acks: true };
        let mut sim = Sim {
            rng,
            room,
            now,
            clients: vec![host],
            next_conn: 0,
            stream: BTreeMap::new(),
            scores: HashMap::new(),
            grace: policy.presence.grace,
            max_log: policy.event_log.max_events,
            seen: BTreeMap::new(),
            pack,
        };
        sim.collect(Vec::new()).unwrap();
        sim
    }

    fn msg(kind: &str, payload: Value) -> Vec<u8> {
        json!({"type": kind, "roomId": ROOM, "version": "1.0", "payload": payload}).to_string().into_bytes()
    }

    fn send(&mut self, who: usize, kind: &str, payload: Value) -> Result<(), String> {
        let Some(conn) = self.clients[who].conn else { return Ok(()) };
        self.room.handle_message(self.now, conn, DataKind::Text, &Self::msg(kind, payload));
        self.collect(vec![])
    }

    /// Fires every deadline up to `to`, checking after each, then sets the clock to `to`.
    fn advance_to(&mut self, to: Instant) -> Result<(), String> {
        while let Some(at) = self.room.poll_timeout().filter(|at| *at <= to) {
            self.now = self.now.max(at);
            self.room.handle_timeout(self.now);
            self.collect(vec![])?;
        }
        self.now = self.now.max(to);
        Ok(())
    }

    fn connect(&mut self, who: usize, reconnect: Option<u64>) -> Result<(), String> {
        self.next_conn += 1;
        let conn = self.next_conn;
        let (actor, version) = (self.clients[who].actor.clone(), self.clients[who].version);
        if self.room.connect(self.now, conn, &actor, version).is_err() {
            return self.collect(vec![]);
        }
        self.clients[who].conn = Some(conn);
        self.clients[who].dropped_at = None;
        self.collect(vec![])?;
        if let Some(last) = reconnect {
            self.room.handle_message(self.now, conn, DataKind::Text, &Self::msg("RECONNECT", json!({"lastSeqId": last})));
            self.collect(vec![(who, last)])?;
        }
        Ok(())
    }

    fn drop_conn(&mut self, who: usize) -> Result<(), String> {
        if let Some(conn) = self.clients[who].conn.take() {
            self.room.disconnect(self.now, conn);
            self.clients[who].dropped_at = Some(self.now);
        }
        self.collect(vec![])
    }

    /// Carries out the room's outputs and checks every invariant. `reconnects` names the
    /// clients whose RECONNECT (with that lastSeqId) this step answered.
    fn collect(&mut self, reconnects: Vec<(usize, u64)>) -> Result<(), String> {
        // The full event stream, from the room's own log.
        let last = self.stream.keys().next_back().copied().unwrap_or(0);
        for e in self.room.event_log().range(last, u64::MAX) {
            self.stream.insert(e.seq, (e.scope.clone(), e.frame.to_vec()));
            let body: Value = serde_json::from_slice(frame_payload(&e.frame)).map_err(|e| e.to_string())?;
            *self.seen.entry(e.kind.to_string()).or_default() += 1;
            match e.kind {
                "TEAM_SETUP_STARTED" | "GAME_RESTARTED" | "SETUP_CANCELLED" => self.scores.clear(),
                "WORD_RESULT" => {
                    let team = body["payload"]["teamId"].as_str().unwrap_or_default().to_string();
                    let score = self.scores.entry(team).or_default();
                    *score += body["payload"]["pointsAwarded"].as_i64().unwrap_or(0);
                    if Some(*score) != body["payload"]["newScore"].as_i64() {
                        return Err(format!("WORD_RESULT newScore {} but the results sum to {score}", body["payload"]["newScore"]));
                    }
                }
                _ => {}
            }
        }
        if self.stream.len() > 10_000 {
            let keep = self.stream.split_off(&(self.stream.keys().next_back().copied().unwrap_or(0) - 1000));
            self.stream = keep;
        }
        let conn_of: HashMap<u32, usize> = self.clients.iter().enumerate().filter_map(|(i, c)| c.conn.map(|k| (k, i))).collect();
        let mut delivered: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut acks = Vec::new();
        let mut outputs = 0;
        while let Some(out) = self.room.poll_output() {
            outputs += 1;
            let (conn, frame) = match out {
                RoomOutput::Send(conn, frame) => (conn, frame),
                RoomOutput::Close(conn, ..) => {
                    if let Some(&who) = conn_of.get(&conn) {
                        if self.clients[who].conn == Some(conn) {
                            self.clients[who].conn = None;
                            self.clients[who].dropped_at = Some(self.now);
                        }
                    }
                    continue;
                }
                RoomOutput::Count(_) | RoomOutput::Webhook(..) => continue,
            };
            let Some(&who) = conn_of.get(&conn) else { continue };
            let role = self.room.role_of(&self.clients[who].actor);
            let json = text(&frame);
            if role != Some(Role::Host) && (json.contains("\"wordText\"") || json.contains("\"broadcast\":\"host\"")) {
                return Err(format!("{} ({role:?}) received host-only data: {json}", self.clients[who].actor));
            }
            if json.starts_with("{\"type\":\"CONNECTED\"") {
                let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
                self.clients[who].connected_seq = v["payload"]["lastSequenceId"].as_u64().unwrap_or(0);
            }
            for kind in ["RECONNECT_FAILED", "STATE_SNAPSHOT", "CONNECTION_WARNING"] {
                if json.starts_with(&format!("{{\"type\":\"{kind}\"")) {
                    *self.seen.entry(kind.to_string()).or_default() += 1;
                }
            }
            if json.starts_with("{\"type\":\"RECONNECTED\"") {
                let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
                let kind = if v["payload"]["missedEvents"].is_array() { "RECONNECTED (backfill)" } else { "RECONNECTED (snapshot)" };
                *self.seen.entry(kind.to_string()).or_default() += 1;
                let Some(missed) = v["payload"]["missedEvents"].as_array() else { continue };
                let Some(&(_, after)) = reconnects.iter().find(|(w, _)| *w == who) else { return Err("an unasked RECONNECTED".into()) };
                let upto = self.clients[who].connected_seq;
                let mut got = Vec::new();
                for m in missed {
                    let seq = m["sequenceId"].as_u64().ok_or("a missed event without sequenceId")?;
                    let logged: Value =
                        serde_json::from_slice(frame_payload(&self.stream.get(&seq).ok_or("backfill of an unknown event")?.1)).map_err(|e| e.to_string())?;
                    let mut m = m.clone();
                    m["version"] = logged["version"].clone();
                    if m != logged {
                        return Err(format!("backfilled {seq} differs from what was sent live"));
                    }
                    got.push(seq);
                }
                let window = if after < upto { self.stream.range(after + 1..=upto) } else { self.stream.range(0..0) };
                let want: Vec<u64> = window.filter(|(_, (scope, _))| entitled(role, scope, &self.clients[who].actor)).map(|(seq, _)| *seq).collect();
                if got != want {
                    return Err(format!("{}: backfill {got:?}, entitled {want:?} (after {after}, upto {upto})", self.clients[who].actor));
                }
                for seq in got {
                    self.clients[who].held.insert(seq, Vec::new());
                }
                continue;
            }
            if let Some(seq) = sequence_id(json) {
                let (_, logged) = self.stream.get(&seq).ok_or_else(|| format!("live event {seq} is not in the log"))?;
                if !same_event(logged, &frame) {
                    return Err(format!("live frame {seq} differs from the logged one"));
                }
                delivered.entry(seq).or_default().push(who);
                self.clients[who].held.insert(seq, Vec::new());
                if json.contains("\"requiresAck\":true") && self.clients[who].acks {
                    let ack_id = json.split("\"ackId\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string();
                    acks.push((conn, ack_id));
                }
            }
        }
        if outputs > 10_000 {
            return Err(format!("{outputs} outputs in one step"));
        }
        // Live fan-out: each new event reached exactly the connected members entitled to it
        // (resends of older events go to the unacknowledged only).
        for (seq, receivers) in delivered.iter().filter(|(seq, _)| **seq > last) {
            let Some((scope, _)) = self.stream.get(seq) else { continue };
            for (i, c) in self.clients.iter().enumerate() {
                let Some(conn) = c.conn else { continue };
                let should = entitled(self.room.role_of(&c.actor), scope, &c.actor) && c.connected_seq < *seq;
                let did = receivers.contains(&i);
                if did && !should {
                    return Err(format!("event {seq} reached {} (conn {conn}) unentitled", c.actor));
                }
                let first_delivery = !receivers.is_empty();
                if should && !did && first_delivery && self.room.role_of(&c.actor).is_some() && !matches!(scope, Scope::Host) {
                    return Err(format!("event {seq} missed connected {}", c.actor));
                }
            }
        }
        for (conn, ack_id) in acks {
            self.room.handle_message(self.now, conn, DataKind::Text, &Self::msg("ACK", json!({"ackId": ack_id})));
            while self.room.poll_output().is_some() {}
        }
        self.check_game()
    }

    fn check_game(&self) -> Result<(), String> {
        let game = self.room.game();
        for (team, score) in game.scores() {
            if self.scores.get(&team).copied().unwrap_or(0) != score {
                return Err(format!("{team} has {score} points but its WORD_RESULTs sum to {:?}", self.scores.get(&team)));
            }
        }
        if matches!(game.state(), State::RoundStarting | State::RoundActive | State::RoundPaused) {
            let (explainer, team) = game.explainer().ok_or("a turn without an explainer")?;
            if game.role_of(explainer) != Some(Role::Player) || game.team_of(explainer).as_deref() != Some(team.as_str()) {
                return Err(format!("explainer {explainer} is not a player of {team}"));
            }
            let gone_past_grace = self.clients.iter().find(|c| c.actor == explainer).and_then(|c| c.dropped_at).is_some_and(|t| self.now >= t + self.grace);
            if gone_past_grace {
                let since = self.clients.iter().find(|c| c.actor == explainer).and_then(|c| c.dropped_at).map(|t| self.now - t);
                return Err(format!(
                    "explainer {explainer} has been gone past the grace ({since:?}; state {:?}, host {}, present {})",
                    game.state(),
                    game.host_id(),
                    game.is_present(explainer)
                ));
            }
        }
        if self.room.event_log().len() > self.max_log {
            return Err("the event log outgrew its bound".into());
        }
        if self.room.connections() > self.clients.len() {
            return Err("more connections than actors".into());
        }
        Ok(())
    }

    /// One random step.
    fn step(&mut self) -> Result<(), String> {
        let n = self.clients.len();
        let who = self.rng.random_range(0..n);
        let state = self.room.game().state();
        match self.rng.random_range(0..100) {
            0..=5 if n < 12 => self.join(),
            6..=15 => {
                let last = self.clients[who].held.keys().next_back().copied().unwrap_or(0);
                let claim = match self.rng.random_range(0..10) {
                    0 => self.rng.random_range(0..=last + 5),
                    _ => last,
                };
                let reconnect = self.rng.random_bool(0.9).then_some(claim);
                self.connect(who, reconnect)
            }
            16..=23 => self.drop_conn(who),
            24..=31 => {
                // Come back exactly at, or a millisecond either side of, a boundary.
                let Some(dropped) = self.clients[who].dropped_at.filter(|_| self.clients[who].conn.is_none()) else { return Ok(()) };
                let boundary = [5, 10, 15, 30, 60][self.rng.random_range(0..5)];
                let offset = [-1i64, 0, 1][self.rng.random_range(0..3)];
                let at = dropped + boundary * S;
                let at = if offset < 0 { at - Duration::from_millis(1) } else { at + Duration::from_millis(offset as u64) };
                self.advance_to(at)?;
                let last = self.clients[who].held.keys().next_back().copied().unwrap_or(0);
                self.connect(who, Some(last))
            }
            32..=61 => self.host_action(state),
            62..=71 => {
                // Mostly players still without a team; sometimes a switch.
                let unplaced = (0..n)
                    .find(|&i| self.room.game().team_of(&self.clients[i].actor).is_none() && self.room.role_of(&self.clients[i].actor) == Some(Role::Player));
                let who = unplaced.filter(|_| self.rng.random_bool(0.8)).unwrap_or(who);
                let team = format!("team_{}", self.rng.random_range(1..=2));
                self.send(who, "JOIN_TEAM", json!({"teamId": team}))
            }
            72 => self.send(who, "LEAVE_ROOM", json!({})),
            73..=75 => {
                let game = self.room.game();
                let (version, sum) = (game.state_version(), game.checksum());
                let payload =
                    if self.rng.random_bool(0.5) { json!({"stateVersion": version, "stateChecksum": sum}) } else { json!({"stateChecksum": "00000000"}) };
                self.send(who, "HEARTBEAT", payload)
            }
            76..=91 => {
                let to = self.room.poll_timeout().unwrap_or(self.now + S);
                self.advance_to(to)
            }
            92..=97 => {
                let by = Duration::from_millis(self.rng.random_range(0..8_000));
                self.advance_to(self.now + by)
            }
            98 if self.rng.random_bool(0.3) => self.crash_and_recover(),
            _ => {
                let by = Duration::from_secs(self.rng.random_range(10..90));
                self.advance_to(self.now + by)
            }
        }
    }

    /// The server dies and the room comes back from its persisted snapshot (through the JSON
    /// form); every connection is gone.
    fn crash_and_recover(&mut self) -> Result<(), String> {
        let text = self.room.save(self.now, 1_700_000_000_000).encode();
        let snapshot = RoomSnapshot::decode(&text).map_err(|e| e.to_string())?;
        let recovered = GameRoom::recover(&snapshot, std::slice::from_ref(&self.pack), policy(), self.now, 1_700_000_000_000).map_err(|e| e.to_string())?;
        self.room = recovered;
        // Recovery documents that everyone still present counts as gone since the recovery:
        // the crash lost when each connection dropped.
        let now = self.now;
        for c in &mut self.clients {
            let present = self.room.game().is_present(&c.actor);
            if c.conn.take().is_some() || (c.dropped_at.is_some() && present) {
                c.dropped_at = Some(now);
            }
        }
        *self.seen.entry("(crash recovery)".into()).or_default() += 1;
        self.collect(vec![])
    }

    fn join(&mut self) -> Result<(), String> {
        let id = format!("p{}", self.clients.len());
        if self.room.join(self.now, &id, &id).is_ok() {
            let version = if self.rng.random_bool(0.2) { "1.1" } else { "1.0" };
            let acks = self.rng.random_bool(0.8);
            self.clients.push(Client { actor: id, conn: None, version, held: BTreeMap::new(), dropped_at: None, connected_seq: 0, acks });
        }
        self.collect(vec![])
    }

    fn host_action(&mut self, state: State) -> Result<(), String> {
        let host = self.clients.iter().position(|c| self.room.role_of(&c.actor) == Some(Role::Host)).unwrap_or(0);
        let word = self.room.game().snapshot(Role::Host)["currentWord"]["wordId"].clone();
        match state {
            State::Lobby => self.send(host, "START_TEAM_SETUP", json!({})),
            State::ReadyToStart => self.send(host, "HOST_CONFIRM_START", json!({})),
            State::TeamSetup if self.rng.random_bool(0.02) => self.send(host, "HOST_CANCEL_SETUP", json!({})),
            State::RoundActive => match self.rng.random_range(0..10) {
                0 => self.send(host, "HOST_PAUSE", json!({})),
                1 => {
                    // A racing duplicate: the second swipe names a word that is gone.
                    self.send(host, "WORD_SWIPED", json!({"wordId": word, "action": "guessed"}))?;
                    self.send(host, "WORD_SWIPED", json!({"wordId": word, "action": "skipped"}))
                }
                _ => {
                    let action = if self.rng.random_bool(0.7) { "guessed" } else { "skipped" };
                    self.send(host, "WORD_SWIPED", json!({"wordId": word, "action": action}))
                }
            },
            State::RoundPaused => self.send(host, "HOST_RESUME", json!({})),
            State::FinalResults if self.rng.random_bool(0.5) => self.send(host, "HOST_RESTART", json!({})),
            _ if self.rng.random_bool(0.01) => self.send(host, "ROOM_CLOSE", json!({})),
            _ => Ok(()),
        }
    }
}

fn lifetime(seed: u64, seen: &mut BTreeMap<String, u64>) -> Result<(), String> {
    let mut sim = Sim::new(seed);
    sim.connect(0, None)?;
    for _ in 0..sim.rng.random_range(2..=10) {
        sim.join()?;
        let who = sim.clients.len() - 1;
        sim.connect(who, None)?;
    }
    for _ in 0..STEPS {
        if sim.room.is_closed() {
            break;
        }
        sim.step()?;
    }
    // Let every timeline run out: removals, promotion, idle reclaim.
    let end = sim.now + Duration::from_secs(3600);
    sim.advance_to(end)?;
    for (kind, n) in sim.seen {
        *seen.entry(kind).or_default() += n;
    }
    Ok(())
}

#[test]
fn room_lifetimes_keep_every_invariant() {
    let lifetimes: u64 = std::env::var("PARTYFLOW_SIM_LIFETIMES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seeds: Vec<u64> = match std::env::var("PARTYFLOW_SIM_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..lifetimes).map(|i| 0x5eed_0000 + i).collect(),
    };
    let started = Instant::now();
    let mut seen = BTreeMap::new();
    for seed in &seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lifetime(*seed, &mut seen)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("lifetime failed: {why}\nreplay with PARTYFLOW_SIM_SEED={seed}"),
            Err(_) => panic!("lifetime panicked\nreplay with PARTYFLOW_SIM_SEED={seed}"),
        }
    }
    println!("{} room lifetimes in {:.1} s; messages seen: {seen:?}", seeds.len(), started.elapsed().as_secs_f64());
    if seeds.len() >= 1000 {
        for kind in [
            "(crash recovery)",
            "RECONNECTED (backfill)",
            "RECONNECTED (snapshot)",
            "RECONNECT_FAILED",
            "HOST_PROMOTED",
            "EXPLAINER_CHANGED",
            "PLAYER_LEFT",
            "WORD_RESULT",
            "GAME_ENDED",
            "GAME_PAUSED",
            "CONNECTION_WARNING",
            "STATE_SNAPSHOT",
        ] {
            assert!(seen.get(kind).copied().unwrap_or(0) > 0, "no lifetime produced {kind}: the simulation does not cover it");
        }
    }
}
