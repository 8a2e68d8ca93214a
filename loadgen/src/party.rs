//! The party scenario: real rooms playing the real game, and the storm variant that drops and
//! reconnects a fraction of all connections at once.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::net::{unix_us, Target};
use crate::stats::{SeqTracker, SeqVerdict, Stats};
use crate::{Pacer, RunContext};

/// Party scenario settings.
#[derive(Debug, Clone, clap::Args)]
pub struct PartyArgs {
    /// Rooms to create and play.
    #[arg(long, default_value_t = 1000)]
    pub rooms: usize,
    /// Players per room (plus the host).
    #[arg(long, default_value_t = 10)]
    pub players: usize,
    /// Mean time between the host's swipes (±20 % jitter).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub swipe_interval: Duration,
    /// Round length asked for when creating rooms (roundDurationSec).
    #[arg(long, default_value_t = 60)]
    pub round_duration: u64,
    /// Start every room's game at the same moment instead of spreading the starts over one
    /// round length (at most 20 s): a harsher, synchronized load where rounds end and begin
    /// together.
    #[arg(long)]
    pub synchronized: bool,
}

/// Storm scenario settings.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub party: PartyArgs,
    /// Fraction of all connections dropped at once, halfway through the measured window.
    #[arg(long, default_value_t = 0.2)]
    pub drop_fraction: f64,
}

/// What the clients of one room share: the host's view of sequence ids and swipe times.
#[derive(Default)]
struct RoomShared {
    /// Every sequence id the host saw, and whether it was host-only.
    host_scopes: BTreeMap<u64, bool>,
    /// Sequence windows of every connection of every player (one per connection, or one per
    /// run of connections joined by a backfill), and whether a backfill joined it.
    player_windows: Vec<(SeqTracker, bool)>,
    host_windows: Vec<(SeqTracker, bool)>,
    /// When the host swiped each recent word.
    swipes: HashMap<String, Instant>,
    last_swipe: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Host,
    Player(usize),
}

struct Client {
    target: Rc<Target>,
    n: usize,
    path: String,
    room_id: String,
    actor: String,
    role: Role,
    room: Rc<RefCell<RoomShared>>,
    stats: Rc<RefCell<Stats>>,
    swipe_interval: Duration,
    /// The host waits this long before starting team setup (spreads the rooms' rounds).
    start_delay: Duration,
}

/// Longest spread of the rooms' start times.
const STAGGER_MAX_SECS: u64 = 20;

/// A host action waiting for its moment.
enum Pending {
    StartSetup,
    Swipe(String),
}

/// Runs the scenario; `drop_fraction` makes it a storm.
pub async fn run(ctx: Rc<RunContext>, args: PartyArgs, drop_fraction: Option<f64>) -> anyhow::Result<()> {
    let (stats, phase, warmup, duration) = (ctx.stats.clone(), ctx.phase.clone(), ctx.warmup, ctx.duration);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (storm_tx, storm_rx) = watch::channel(0u64);
    let mut setups = Vec::new();
    let mut rooms = Vec::new();
    *phase.borrow_mut() = "connecting".into();
    for r in 0..args.rooms {
        let room = Rc::new(RefCell::new(RoomShared::default()));
        rooms.push(room.clone());
        let (ctx, args) = (ctx.clone(), args.clone());
        let (stop_rx, storm_rx) = (stop_rx.clone(), storm_rx.clone());
        setups.push(tokio::task::spawn_local(async move { setup_room(r, &ctx, &args, room, stop_rx, storm_rx, drop_fraction.unwrap_or(0.0)).await }));
    }
    for setup in setups {
        setup.await?.context("setting up a room")?;
    }
    *phase.borrow_mut() = "warm-up".into();
    tokio::time::sleep(warmup).await;
    stats.borrow_mut().start_measuring(Instant::now());
    *phase.borrow_mut() = "measuring".into();
    if drop_fraction.is_some() {
        tokio::time::sleep(duration / 2).await;
        *phase.borrow_mut() = "storm".into();
        let _ = storm_tx.send(1);
        tokio::time::sleep(duration - duration / 2).await;
    } else {
        tokio::time::sleep(duration).await;
    }
    *phase.borrow_mut() = "stopping".into();
    let _ = stop_tx.send(true);
    // Let the clients record their last windows.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = stats.borrow_mut();
    for room in rooms {
        let room = room.borrow();
        for (w, backfilled) in &room.host_windows {
            let missing = w.gaps();
            if *backfilled {
                s.reconnects.gaps_after_backfill += missing;
            } else {
                s.lost += missing;
            }
        }
        for (w, backfilled) in &room.player_windows {
            let (Some(first), Some(last)) = (w.seen().first(), w.seen().last()) else { continue };
            let missing = room.host_scopes.range(first..=last).filter(|(seq, host_only)| !**host_only && !w.seen().contains(seq)).count() as u64;
            if *backfilled {
                s.reconnects.gaps_after_backfill += missing;
            } else {
                s.lost += missing;
            }
        }
    }
    Ok(())
}

async fn setup_room(
    r: usize,
    ctx: &RunContext,
    args: &PartyArgs,
    room: Rc<RefCell<RoomShared>>,
    stop: watch::Receiver<bool>,
    storm: watch::Receiver<u64>,
    drop_fraction: f64,
) -> anyhow::Result<()> {
    let (pacer, stats): (&Pacer, &Rc<RefCell<Stats>>) = (&ctx.pacer, &ctx.stats);
    // With several --url, room r is created on instance r and its members spread over all of
    // them in turn: members on another instance reach the room through it (forwarding).
    let target_of = |member: usize| &ctx.targets[(r + member) % ctx.targets.len()];
    let target = target_of(0);
    let base = r * (args.players + 1);
    pacer.wait().await;
    let settings = json!({"hostName": format!("Host {r}"), "maxPlayers": args.players, "rounds": 20, "roundDurationSec": args.round_duration});
    let (status, created) = target.post(base, "/rooms", &settings).await?;
    if status != 201 {
        bail!("POST /rooms answered {status}: {created}");
    }
    let room_id = created["roomId"].as_str().unwrap_or_default().to_string();
    let mut members =
        vec![(Role::Host, created["hostId"].as_str().unwrap_or_default().to_string(), created["hostToken"].as_str().unwrap_or_default().to_string())];
    for p in 0..args.players {
        pacer.wait().await;
        let (status, joined) = target_of(p + 1).post(base + p + 1, &format!("/rooms/{room_id}/players"), &json!({"playerName": format!("P{p}")})).await?;
        if status != 201 {
            bail!("joining {room_id} answered {status}: {joined}");
        }
        members.push((Role::Player(p), joined["playerId"].as_str().unwrap_or_default().to_string(), joined["token"].as_str().unwrap_or_default().to_string()));
    }
    let mut sockets = Vec::new();
    for (i, (_, _, token)) in members.iter().enumerate() {
        pacer.wait().await;
        let path = format!("/ws?roomId={room_id}&token={token}&version=1.0");
        let (ws, us) = target_of(i).websocket(base + i, &path).await?;
        stats.borrow_mut().record_connect(us);
        sockets.push((ws, path));
    }
    let start_delay = if args.synchronized {
        Duration::ZERO
    } else {
        Duration::from_secs(args.round_duration.min(STAGGER_MAX_SECS)).mul_f64(rand::rng().random_range(0.0..1.0))
    };
    for (i, ((ws, path), (role, actor, _))) in sockets.into_iter().zip(members).enumerate() {
        let client = Client {
            target: target_of(i).clone(),
            n: base + i,
            path,
            room_id: room_id.clone(),
            actor,
            role,
            room: room.clone(),
            stats: stats.clone(),
            swipe_interval: args.swipe_interval,
            start_delay,
        };
        // A deterministic choice of who drops in a storm.
        let drops = ((base + i) as f64 * 0.618_033_988_75).fract() < drop_fraction;
        tokio::task::spawn_local(client.run(ws, stop.clone(), storm.clone(), drops));
    }
    Ok(())
}

/// A connection dropped in a storm whose RECONNECT is not answered yet.
struct Rejoining {
    /// The stream seen before the drop.
    before: SeqTracker,
    dropped_at: Instant,
}

impl Client {
    async fn run(self, mut ws: WebSocketStream<TcpStream>, mut stop: watch::Receiver<bool>, mut storm: watch::Receiver<u64>, drops: bool) {
        let mut window = SeqTracker::default();
        let mut backfilled = false;
        let mut rejoining: Option<Rejoining> = None;
        let mut next_swipe: Option<(tokio::time::Instant, Pending)> = None;
        let mut last_tick: Option<(Instant, u64)> = None;
        loop {
            let swipe_at = next_swipe.as_ref().map(|(at, _)| *at);
            tokio::select! {
                msg = ws.next() => {
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None => {
                            if !*stop.borrow() {
                                self.stats.borrow_mut().error("connection_closed");
                            }
                            break;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) => {
                            self.stats.borrow_mut().error("connection");
                            break;
                        }
                    };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        self.stats.borrow_mut().error("bad_json");
                        continue;
                    };
                    if let Some(r) = rejoining.take_if(|_| matches!(v["type"].as_str(), Some("RECONNECTED" | "RECONNECT_FAILED" | "STATE_SNAPSHOT"))) {
                        backfilled |= self.rejoined(&v, r, &mut window);
                        // A returning host carries on swiping the word its snapshot shows.
                        if let Some(word) = v["payload"]["gameState"]["currentWord"]["wordId"].as_str().filter(|_| self.role == Role::Host) {
                            let at = tokio::time::Instant::now() + self.swipe_interval;
                            next_swipe = Some((at, Pending::Swipe(word.to_string())));
                        }
                        continue;
                    }
                    for reply in self.on_message(&v, &mut window, &mut next_swipe, &mut last_tick) {
                        if ws.send(Message::text(reply.to_string())).await.is_err() {
                            self.stats.borrow_mut().error("connection");
                        }
                    }
                }
                _ = tokio::time::sleep_until(swipe_at.unwrap_or_else(tokio::time::Instant::now)), if swipe_at.is_some() => {
                    let word = match next_swipe.take() {
                        Some((_, Pending::Swipe(word))) => word,
                        Some((_, Pending::StartSetup)) => {
                            let start = self.envelope("START_TEAM_SETUP", json!({"numTeams": 2}));
                            self.stats.borrow_mut().sent += 1;
                            let _ = ws.send(Message::text(start.to_string())).await;
                            continue;
                        }
                        None => continue,
                    };
                    let now = Instant::now();
                    {
                        let mut room = self.room.borrow_mut();
                        if room.swipes.len() > 64 {
                            room.swipes.clear();
                        }
                        room.swipes.insert(word.clone(), now);
                        room.last_swipe = Some(now);
                    }
                    let swipe = self.envelope("WORD_SWIPED", json!({"wordId": word, "action": "guessed"}));
                    self.stats.borrow_mut().sent += 1;
                    let _ = ws.send(Message::text(swipe.to_string())).await;
                }
                _ = storm.changed(), if drops => {
                    // Drop the connection abruptly, come back with the same token and ask for
                    // what was missed since the last sequence id processed.
                    drop(ws);
                    let dropped_at = Instant::now();
                    let before = std::mem::take(&mut window);
                    let last_seq = before.seen().last().copied().unwrap_or(0);
                    if let Some(r) = rejoining.replace(Rejoining { before, dropped_at }) {
                        self.close_window(r.before, backfilled);
                    }
                    next_swipe = None;
                    last_tick = None;
                    match self.target.websocket(self.n, &self.path).await {
                        Ok((fresh, us)) => {
                            self.stats.borrow_mut().record_connect(us);
                            ws = fresh;
                        }
                        Err(_) => {
                            self.stats.borrow_mut().error("reconnect");
                            return;
                        }
                    }
                    let reconnect = self.envelope("RECONNECT", json!({"lastSeqId": last_seq}));
                    if ws.send(Message::text(reconnect.to_string())).await.is_err() {
                        self.stats.borrow_mut().error("reconnect");
                    }
                }
                _ = stop.changed() => break,
            }
        }
        if let Some(r) = rejoining {
            self.close_window(r.before, false);
        }
        self.close_window(window, backfilled);
    }

    fn close_window(&self, window: SeqTracker, backfilled: bool) {
        let mut room = self.room.borrow_mut();
        match self.role {
            Role::Host => room.host_windows.push((window, backfilled)),
            Role::Player(_) => room.player_windows.push((window, backfilled)),
        }
    }

    /// The server answered RECONNECT with `v`. A backfill joins the stream from before the drop
    /// to the new one (returns true); otherwise the old stream is closed as it was.
    fn rejoined(&self, v: &Value, r: Rejoining, window: &mut SeqTracker) -> bool {
        let mut stats = self.stats.borrow_mut();
        let _ = stats.reconnects.latency.record(r.dropped_at.elapsed().as_micros().max(1) as u64);
        let missed = v["payload"]["missedEvents"].as_array().filter(|_| v["type"] == "RECONNECTED");
        let Some(missed) = missed else {
            match v["type"].as_str() {
                Some("RECONNECTED") => stats.reconnects.snapshot += 1,
                Some("RECONNECT_FAILED") => stats.reconnects.expired += 1,
                _ => stats.error("reconnect_unexpected_snapshot"),
            }
            drop(stats);
            self.close_window(r.before, false);
            return false;
        };
        stats.reconnects.backfill += 1;
        stats.reconnects.backfilled_events += missed.len() as u64;
        let seqs: Vec<u64> = missed.iter().filter_map(|m| m["sequenceId"].as_u64()).collect();
        if self.role == Role::Host {
            let mut room = self.room.borrow_mut();
            for m in missed {
                if let Some(seq) = m["sequenceId"].as_u64() {
                    room.host_scopes.insert(seq, m["broadcast"] == "host");
                }
            }
        }
        window.merge(r.before.seen().iter().copied());
        window.merge(seqs);
        true
    }

    fn envelope(&self, kind: &str, payload: Value) -> Value {
        json!({"type": kind, "roomId": self.room_id, "actorId": self.actor, "timestamp": unix_us() / 1000, "version": "1.0", "payload": payload})
    }

    /// Records what `v` says and returns the messages to send in reply.
    fn on_message(
        &self,
        v: &Value,
        window: &mut SeqTracker,
        next_swipe: &mut Option<(tokio::time::Instant, Pending)>,
        last_tick: &mut Option<(Instant, u64)>,
    ) -> Vec<Value> {
        let now = Instant::now();
        let kind = v["type"].as_str().unwrap_or_default();
        let payload = &v["payload"];
        let mut replies = Vec::new();
        let mut stats = self.stats.borrow_mut();
        if v["requiresAck"] == true {
            replies.push(self.envelope("ACK", json!({"ackId": v["ackId"], "status": "received"})));
            stats.acks_sent += 1;
        }
        if let Some(seq) = v["sequenceId"].as_u64() {
            if self.role == Role::Host {
                self.room.borrow_mut().host_scopes.insert(seq, v["broadcast"] == "host");
            }
            match window.observe(seq) {
                SeqVerdict::Duplicate if v["requiresAck"] == true => {
                    stats.resent += 1;
                    return replies;
                }
                SeqVerdict::Duplicate => {
                    stats.duplicated += 1;
                    return replies;
                }
                SeqVerdict::OutOfOrder => stats.out_of_order += 1,
                SeqVerdict::InOrder => {}
            }
        }
        // Latency: from the host's swipe for what a swipe causes, else from the server's stamp.
        let room = self.room.borrow();
        let caused_by_swipe = match kind {
            "WORD_RESULT" => payload["wordId"].as_str().and_then(|w| room.swipes.get(w)).copied(),
            // The first word of a round follows ROUND_STARTED, not a swipe (last_swipe is cleared
            // when a round ends).
            "WORD_REVEALED" => room.last_swipe,
            _ => None,
        };
        drop(room);
        let latency_us = match caused_by_swipe {
            Some(at) => now.saturating_duration_since(at).as_micros() as u64,
            None => unix_us().saturating_sub(v["timestamp"].as_u64().unwrap_or(0) * 1000),
        };
        if !matches!(kind, "CONNECTED" | "ERROR" | "RECONNECTED" | "RECONNECT_FAILED" | "STATE_SNAPSHOT") {
            stats.delivered(kind, latency_us);
        }
        match kind {
            "TIMER_TICK" => {
                let remaining = payload["remainingSeconds"].as_u64().unwrap_or(0);
                if let Some((at, prev)) = *last_tick {
                    if prev == remaining + 1 {
                        let interval = now.saturating_duration_since(at).as_micros() as i64;
                        stats.record_tick_jitter((interval - 1_000_000).unsigned_abs());
                    }
                }
                *last_tick = Some((now, remaining));
            }
            "ERROR" => {
                let code = payload["code"].as_str().unwrap_or("UNKNOWN");
                // A swipe sent just as the round ended loses the race: expected, not a fault.
                if code == "INVALID_TRANSITION" && self.role == Role::Host && next_swipe.is_none() {
                    stats.late_swipes += 1;
                } else {
                    stats.error(code);
                }
            }
            _ => {}
        }
        drop(stats);
        match (self.role, kind) {
            (Role::Host, "CONNECTED") if payload["state"] == "LOBBY" => {
                *next_swipe = Some((tokio::time::Instant::now() + self.start_delay, Pending::StartSetup));
            }
            (Role::Host, "GAME_RESTARTED") => replies.push(self.envelope("START_TEAM_SETUP", json!({"numTeams": 2}))),
            (Role::Host, "TEAMS_BALANCED") => replies.push(self.envelope("HOST_CONFIRM_START", json!({}))),
            (Role::Host, "FINAL_RESULTS") => replies.push(self.envelope("HOST_RESTART", json!({}))),
            (Role::Host, "WORD_REVEALED") => {
                let jitter = rand::rng().random_range(0.8..1.2);
                let at = tokio::time::Instant::now() + self.swipe_interval.mul_f64(jitter);
                *next_swipe = payload["wordId"].as_str().map(|w| (at, Pending::Swipe(w.to_string())));
            }
            (Role::Host, "ROUND_ENDED") => {
                *next_swipe = None;
                self.room.borrow_mut().last_swipe = None;
            }
            (Role::Player(i), "TEAM_SETUP_STARTED") => {
                let teams = payload["teams"].as_array().map_or(2, Vec::len).max(1);
                replies.push(self.envelope("JOIN_TEAM", json!({"teamId": format!("team_{}", i % teams + 1)})));
            }
            _ => {}
        }
        self.stats.borrow_mut().sent += replies.len() as u64;
        replies
    }
}
