//! The party scenario: real rooms playing the real game, and the storm variant that drops and
//! reconnects a fraction of all connections at once. The soak (`soak.rs`) drives the same rooms
//! and clients with churn. This file sets rooms up and runs them; one client's play is
//! [`client`].

mod client;

use client::Client;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::Rng;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::net::{GameSocket, Target};
use crate::stats::{SeqTracker, Stats};
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
pub(super) struct Window {
    pub(super) seen: SeqTracker,
    /// A backfill joined it: what is missing is a backfill's gap, not a loss.
    pub(super) backfilled: bool,
    /// The client joined as a spectator: only `all` events were due to it.
    pub(super) spectator: bool,
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

/// Longest spread of the rooms' start times.
const STAGGER_MAX_SECS: u64 = 20;

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
