//! The soak scenario: party rooms that live and die for a long time, with churn inside each
//! room (members dropping and reconnecting, players leaving and new ones joining), while the
//! server's memory, connections and rooms and the errors the clients see are sampled. A flat
//! memory line after the warm-up and no growing error count say the server leaks nothing.

use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;

use crate::party::{self, Command, PartyArgs, Role, RoomHandle};
use crate::stats::ResourceSample;
use crate::{sampler, RunContext};

/// Soak scenario settings.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub party: PartyArgs,
    /// How long a room plays before its host closes it and a new room takes its place (each
    /// room ±50 %).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub room_lifetime: Duration,
    /// Mean time between churn events in each room (±50 %), alternately: a member drops and
    /// reconnects, then a player leaves and a new one joins.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub churn_interval: Duration,
    /// How often the server's memory, connections and rooms are sampled.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Fail if the server's resident memory grows faster than this after the warm-up (KiB per
    /// minute, least squares over the samples).
    #[arg(long)]
    pub max_rss_growth_kib_per_min: Option<f64>,
}

impl SoakArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, value) in [("--room-lifetime", self.room_lifetime), ("--churn-interval", self.churn_interval), ("--sample-interval", self.sample_interval)] {
            if value < Duration::from_millis(100) {
                anyhow::bail!("{flag} must be at least 100ms");
            }
        }
        Ok(())
    }
}

pub async fn run(ctx: Rc<RunContext>, args: SoakArgs, server_pid: Option<String>) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    *ctx.phase.borrow_mut() = "warm-up".into();
    let slots: Vec<_> = (0..args.party.rooms)
        .filter(|slot| ctx.share.owns(*slot))
        .map(|slot| {
            let (ctx, args, stop) = (ctx.clone(), args.clone(), stop_rx.clone());
            tokio::task::spawn_local(async move { run_slot(slot, &ctx, &args, stop).await })
        })
        .collect();
    tokio::time::sleep(ctx.warmup).await;
    let started = ctx.start_measuring().await?;
    let mut ticker = tokio::time::interval(args.sample_interval);
    while started.elapsed() < ctx.duration {
        ticker.tick().await;
        // With several client threads the first one samples (its errors column counts its own
        // clients; the report's totals count every thread's).
        if ctx.share.index == 0 {
            let sample = sample(&ctx, server_pid.as_deref(), started).await;
            ctx.stats.borrow_mut().soak.samples.push(sample);
        }
    }
    ctx.stop_measuring().await?;
    let _ = stop_tx.send(true);
    for slot in slots {
        slot.await?;
    }
    Ok(())
}

/// The server's memory, connections and rooms (summed over every `--url`) and the errors so far.
async fn sample(ctx: &RunContext, server_pid: Option<&str>, started: Instant) -> ResourceSample {
    let mut texts = Vec::new();
    for target in &ctx.targets {
        texts.push(target.get_text("/metrics").await.map(|(_, t)| t).unwrap_or_default());
    }
    let sum = |name: &str| texts.iter().map(|t| sampler::metric_total(t, name)).sum::<Option<f64>>();
    let rss_kib = match server_pid {
        Some(pid) => sampler::sample(pid).map(|s| s.rss_kib),
        None => sum("process_resident_memory_bytes").map(|b| (b / 1024.0) as u64),
    };
    ResourceSample {
        at: started.elapsed().as_secs_f64(),
        rss_kib,
        connections: sum("partyflow_connections"),
        rooms: sum("partyflow_rooms"),
        errors: ctx.stats.borrow().error_count(),
    }
}

/// One room slot: a room is created, plays with churn for its lifetime, is closed by its host
/// and replaced, until the run stops.
async fn run_slot(slot: usize, ctx: &RunContext, args: &SoakArgs, mut stop: watch::Receiver<bool>) {
    for generation in 0.. {
        if *stop.borrow() {
            return;
        }
        // A new number per room, so successive rooms of a slot go to every instance in turn.
        let r = slot + generation * args.party.rooms;
        let mut room = match party::setup_room(r, ctx, &args.party, &stop).await {
            Ok(room) => room,
            Err(err) => {
                driver_error(ctx, &format!("setting up a room: {err:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let lifetime = args.room_lifetime.mul_f64(rand::rng().random_range(0.5..1.5));
        let born = Instant::now();
        let mut churns = 0u64;
        loop {
            let pause = args.churn_interval.mul_f64(rand::rng().random_range(0.5..1.5)).min(lifetime.saturating_sub(born.elapsed()));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                finish(ctx, room).await;
                return;
            }
            if born.elapsed() >= lifetime {
                break;
            }
            churn(ctx, args, &mut room, churns, &stop).await;
            churns += 1;
        }
        if let Some(host) = room.clients.iter().find(|c| c.role == Role::Host) {
            let _ = host.commands.send(Command::CloseRoom);
        }
        finish(ctx, room).await;
        ctx.stats.borrow_mut().soak.rooms_finished += 1;
    }
}

/// Even churns drop and reconnect a random member; odd ones make a random player leave and a
/// new one join.
async fn churn(ctx: &RunContext, args: &SoakArgs, room: &mut RoomHandle, n: u64, stop: &watch::Receiver<bool>) {
    let live: Vec<usize> = (0..room.clients.len()).filter(|i| !room.clients[*i].task.is_finished()).collect();
    let players: Vec<usize> = live.iter().copied().filter(|i| room.clients[*i].role != Role::Host).collect();
    let pick = |from: &[usize]| from.get(rand::rng().random_range(0..from.len().max(1))).copied();
    if n.is_multiple_of(2) {
        if let Some(i) = pick(&live) {
            let _ = room.clients[i].commands.send(Command::Reconnect);
            ctx.stats.borrow_mut().soak.drops += 1;
        }
        return;
    }
    let Some(i) = pick(&players) else { return };
    let _ = room.clients[i].commands.send(Command::Leave);
    ctx.stats.borrow_mut().soak.leaves += 1;
    match room.join(ctx, &args.party, stop).await {
        Ok(()) => ctx.stats.borrow_mut().soak.joins += 1,
        Err(err) => driver_error(ctx, &format!("joining a room: {err:#}")),
    }
}

/// Waits for every client of `room` to end (they were told to, or the run stopped), then adds
/// what they missed to the counts.
async fn finish(ctx: &RunContext, room: RoomHandle) {
    for client in room.clients {
        if tokio::time::timeout(Duration::from_secs(10), client.task).await.is_err() {
            ctx.stats.borrow_mut().error("client_did_not_end");
        }
    }
    room.shared.borrow().account(&mut ctx.stats.borrow_mut());
}

/// Counts and prints a failure to set up or join a room (not a message's error).
fn driver_error(ctx: &RunContext, what: &str) {
    let code = if what.starts_with("joining") { "join" } else { "setup" };
    ctx.stats.borrow_mut().error(code);
    eprintln!("partyflow-loadgen: {what}");
}
