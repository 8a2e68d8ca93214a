//! The party scenario: real rooms playing the real game, and the storm variant that drops and
//! reconnects a fraction of all connections at once. The soak (`soak.rs`) drives the same rooms
//! and clients with churn.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use partyflow_client::envelope;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::net::{unix_us, GameSocket, Target};
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
pub struct RoomShared {
    /// Every sequence id the host saw, and its scope (`broadcast`).
    host_scopes: BTreeMap<u64, String>,
    /// Sequence windows of every connection of every player (one per connection, or one per
    /// run of connections joined by a backfill).
    player_windows: Vec<Window>,
    host_windows: Vec<Window>,
    /// When the host swiped each recent word.
    swipes: HashMap<String, Instant>,
    last_swipe: Option<Instant>,
}

/// The sequence ids one connection (or a run of connections joined by backfills) received.
struct Window {
    seen: SeqTracker,
    /// A backfill joined it: what is missing is a backfill's gap, not a loss.
    backfilled: bool,
    /// The client joined as a spectator: only `all` events were due to it.
    spectator: bool,
}

impl RoomShared {
    /// Adds what this room's windows are missing (relative to the host's view) to `s`.
    pub fn account(&self, s: &mut Stats) {
        for w in &self.host_windows {
            let missing = w.seen.gaps();
            if w.backfilled {
                s.reconnects.gaps_after_backfill += missing;
            } else {
                s.lost += missing;
            }
        }
        for w in &self.player_windows {
            let (Some(first), Some(last)) = (w.seen.seen().first(), w.seen.seen().last()) else { continue };
            let due = |scope: &String| if w.spectator { scope == "all" } else { scope != "host" };
            let missing = self.host_scopes.range(first..=last).filter(|(seq, scope)| due(scope) && !w.seen.seen().contains(seq)).count() as u64;
            if w.backfilled {
                s.reconnects.gaps_after_backfill += missing;
            } else {
                s.lost += missing;
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Host,
    /// A player (its seat number picks its team), or a spectator who joined a running game.
    Player {
        seat: usize,
        spectator: bool,
    },
}

/// What the driver tells one client to do.
#[derive(Debug, Clone, Copy)]
pub enum Command {
    /// Drop the connection abruptly, come back with the same token and `RECONNECT`.
    Reconnect,
    /// Send `LEAVE_ROOM` and stop once the server closes the connection.
    Leave,
    /// (The host) send `ROOM_CLOSE`; every client stops once the room is closed.
    CloseRoom,
}

/// A running client and how to command it.
pub struct ClientHandle {
    pub role: Role,
    pub commands: mpsc::UnboundedSender<Command>,
    pub task: JoinHandle<()>,
}

/// A room created through the API, with its clients connected and playing.
pub struct RoomHandle {
    pub id: String,
    pub shared: Rc<RefCell<RoomShared>>,
    pub clients: Vec<ClientHandle>,
    /// The room's number: picks the instance it is created on.
    r: usize,
    /// The first connection number of this room (picks source addresses).
    base: usize,
    /// Seats handed out so far (joins after the start get new numbers).
    seats: usize,
}

struct Client {
    target: Rc<Target>,
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
    let mut setups = Vec::new();
    *phase.borrow_mut() = "connecting".into();
    for r in (0..args.rooms).filter(|r| ctx.share.owns(*r)) {
        let (ctx, args, stop_rx) = (ctx.clone(), args.clone(), stop_rx.clone());
        setups.push(tokio::task::spawn_local(async move { setup_room(r, &ctx, &args, &stop_rx).await }));
    }
    let mut rooms = Vec::new();
    for setup in setups {
        rooms.push(setup.await?.context("setting up a room")?);
    }
    *phase.borrow_mut() = "warm-up".into();
    tokio::time::sleep(warmup).await;
    ctx.start_measuring().await?;
    if let Some(fraction) = drop_fraction {
        tokio::time::sleep(duration / 2).await;
        *phase.borrow_mut() = "storm".into();
        for room in &rooms {
            for (i, client) in room.clients.iter().enumerate() {
                // A deterministic choice of who drops.
                if ((room.base + i) as f64 * 0.618_033_988_75).fract() < fraction {
                    let _ = client.commands.send(Command::Reconnect);
                }
            }
        }
        tokio::time::sleep(duration - duration / 2).await;
    } else {
        tokio::time::sleep(duration).await;
    }
    ctx.stop_measuring().await?;
    let _ = stop_tx.send(true);
    // Let the clients record their last windows.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = stats.borrow_mut();
    for room in rooms {
        room.shared.borrow().account(&mut s);
    }
    Ok(())
}

impl RoomHandle {
    /// Joins one more player through the API and starts its client (a spectator once the game
    /// has begun).
    pub async fn join(&mut self, ctx: &RunContext, args: &PartyArgs, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
        let seat = self.seats;
        self.seats += 1;
        let target = &ctx.targets[(self.r + seat + 1) % ctx.targets.len()];
        ctx.pacer.wait().await;
        let (status, joined) = target.post(&format!("/rooms/{}/players", self.id), &json!({"playerName": format!("P{seat}")})).await?;
        if status != 201 {
            bail!("joining {} answered {status}: {joined}", self.id);
        }
        let role = Role::Player { seat, spectator: joined["role"] == "spectator" };
        let token = joined["token"].as_str().unwrap_or_default();
        let path = format!("/ws?roomId={}&token={token}&version=1.0", self.id);
        let (ws, us) = target.websocket(&path, &ctx.stats).await?;
        ctx.stats.borrow_mut().record_connect(us);
        let actor = joined["playerId"].as_str().unwrap_or_default().to_string();
        self.start_client(ctx, args, target.clone(), path, actor, role, Duration::ZERO, ws, stop);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn start_client(
        &mut self,
        ctx: &RunContext,
        args: &PartyArgs,
        target: Rc<Target>,
        path: String,
        actor: String,
        role: Role,
        start_delay: Duration,
        ws: GameSocket,
        stop: &watch::Receiver<bool>,
    ) {
        let client = Client {
            target,
            path,
            room_id: self.id.clone(),
            actor,
            role,
            room: self.shared.clone(),
            stats: ctx.stats.clone(),
            swipe_interval: args.swipe_interval,
            start_delay,
        };
        let (commands, inbox) = mpsc::unbounded_channel();
        let task = tokio::task::spawn_local(client.run(ws, stop.clone(), inbox));
        self.clients.push(ClientHandle { role, commands, task });
    }
}

/// Creates room `r`, joins its players and connects everyone; the clients then play until
/// `stop` (or until they are told otherwise).
pub async fn setup_room(r: usize, ctx: &RunContext, args: &PartyArgs, stop: &watch::Receiver<bool>) -> anyhow::Result<RoomHandle> {
    let (pacer, stats): (&Pacer, &Rc<RefCell<Stats>>) = (&ctx.pacer, &ctx.stats);
    // With several --url, room r is created on instance r and its members spread over all of
    // them in turn: members on another instance reach the room through it (forwarding).
    let target_of = |member: usize| &ctx.targets[(r + member) % ctx.targets.len()];
    let target = target_of(0);
    let base = r * (args.players + 1);
    pacer.wait().await;
    let settings = json!({"hostName": format!("Host {r}"), "maxPlayers": args.players, "rounds": 20, "roundDurationSec": args.round_duration});
    let (status, created) = target.post("/rooms", &settings).await?;
    if status != 201 {
        bail!("POST /rooms answered {status}: {created}");
    }
    let room_id = created["roomId"].as_str().unwrap_or_default().to_string();
    let mut members =
        vec![(Role::Host, created["hostId"].as_str().unwrap_or_default().to_string(), created["hostToken"].as_str().unwrap_or_default().to_string())];
    for p in 0..args.players {
        pacer.wait().await;
        let (status, joined) = target_of(p + 1).post(&format!("/rooms/{room_id}/players"), &json!({"playerName": format!("P{p}")})).await?;
        if status != 201 {
            bail!("joining {room_id} answered {status}: {joined}");
        }
        members.push((
            Role::Player { seat: p, spectator: false },
            joined["playerId"].as_str().unwrap_or_default().to_string(),
            joined["token"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let mut sockets = Vec::new();
    for (i, (_, _, token)) in members.iter().enumerate() {
        pacer.wait().await;
        let path = format!("/ws?roomId={room_id}&token={token}&version=1.0");
        let (ws, us) = target_of(i).websocket(&path, stats).await?;
        stats.borrow_mut().record_connect(us);
        sockets.push((ws, path));
    }
    let start_delay = if args.synchronized {
        Duration::ZERO
    } else {
        Duration::from_secs(args.round_duration.min(STAGGER_MAX_SECS)).mul_f64(rand::rng().random_range(0.0..1.0))
    };
    let mut room = RoomHandle { id: room_id, shared: Rc::default(), clients: Vec::new(), r, base, seats: args.players };
    for (i, ((ws, path), (role, actor, _))) in sockets.into_iter().zip(members).enumerate() {
        room.start_client(ctx, args, target_of(i).clone(), path, actor, role, start_delay, ws, stop);
    }
    Ok(room)
}

/// A dropped connection whose RECONNECT is not answered yet.
struct Rejoining {
    /// The stream seen before the drop.
    before: SeqTracker,
    dropped_at: Instant,
}

impl Client {
    async fn run(self, mut ws: GameSocket, mut stop: watch::Receiver<bool>, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut window = SeqTracker::default();
        let mut backfilled = false;
        // Told to leave or close, or the room was closed: the server's close is expected.
        let mut ending = false;
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
                            if !*stop.borrow() && !ending {
                                self.stats.borrow_mut().error("connection_closed");
                            }
                            break;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) => {
                            if !ending {
                                self.stats.borrow_mut().error("connection");
                            }
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
                    ending |= v["type"] == "ROOM_CLOSED";
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
                command = commands.recv(), if !ending => {
                    let Some(command) = command else {
                        // The driver let go of this client: it plays on until `stop`.
                        ending = true;
                        continue;
                    };
                    if let Some((kind, payload)) = match command {
                        Command::Reconnect => None,
                        Command::Leave => Some(("LEAVE_ROOM", json!({}))),
                        Command::CloseRoom => Some(("ROOM_CLOSE", json!({}))),
                    } {
                        ending = true;
                        next_swipe = None;
                        self.stats.borrow_mut().sent += 1;
                        let _ = ws.send(Message::text(self.envelope(kind, payload).to_string())).await;
                        continue;
                    }
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
                    match self.target.websocket(&self.path, &self.stats).await {
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

    fn close_window(&self, seen: SeqTracker, backfilled: bool) {
        let mut room = self.room.borrow_mut();
        match self.role {
            Role::Host => room.host_windows.push(Window { seen, backfilled, spectator: false }),
            Role::Player { spectator, .. } => room.player_windows.push(Window { seen, backfilled, spectator }),
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
                    room.host_scopes.insert(seq, m["broadcast"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        window.merge(r.before.seen().iter().copied());
        window.merge(seqs);
        true
    }

    fn envelope(&self, kind: &str, payload: Value) -> Value {
        envelope::envelope(kind, &self.room_id, &self.actor, unix_us() / 1000, payload)
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
        if let Some(ack) = envelope::ack_payload(v) {
            replies.push(self.envelope("ACK", ack));
            stats.acks_sent += 1;
        }
        if let Some(seq) = envelope::sequence_id(v) {
            if self.role == Role::Host {
                self.room.borrow_mut().host_scopes.insert(seq, v["broadcast"].as_str().unwrap_or_default().to_string());
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
            (Role::Player { seat: i, .. }, "TEAM_SETUP_STARTED") => {
                let teams = payload["teams"].as_array().map_or(2, Vec::len).max(1);
                replies.push(self.envelope("JOIN_TEAM", json!({"teamId": format!("team_{}", i % teams + 1)})));
            }
            _ => {}
        }
        self.stats.borrow_mut().sent += replies.len() as u64;
        replies
    }
}
