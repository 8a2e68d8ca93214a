//! The relay scenario: R rooms × M members on `/relay`, the first `--publishers` members of each
//! room publishing; with several `--url`s member i connects to instance i mod N (so rooms span
//! instances and, with two instances and two publishers, each instance has a publisher).
//!
//! Each message carries its publisher's number, sequence number and send time, so every
//! receiver can measure latency and detect loss, duplication and reordering per publisher on
//! its own. Clients speak the
//! (simple, unmasked-from-server) frame format by hand: at a hundred thousand deliveries a
//! second a full WebSocket library per message would make the load generator the bottleneck.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use partyflow_client::deflate::ServerFrames;
use partyflow_client::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::net::{raw_websocket, Target};
use crate::stats::Stats;
use crate::RunContext;

/// What fills a message after its 24 bytes of numbers.
const FILLER: &[u8] = br#"{"type":"move","player":"p7","x":120,"y":48,"dx":-3,"dy":1,"frame":20931},"#;

/// Relay scenario settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Number of rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Members per room, the publisher included.
    #[arg(long, default_value_t = 11)]
    pub members: usize,
    /// Messages per second published in each room.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Payload size in bytes (at least 24: publisher, sequence number and timestamp).
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
    /// Publishing members per room (each at `--rate`).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
}

impl RelayArgs {
    /// Refuses settings the scenario cannot run with, naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1_000_000.0) {
            anyhow::bail!("--rate must be above 0 and at most 1000000 messages per second (got {})", self.rate);
        }
        if self.members == 0 || self.rooms == 0 {
            anyhow::bail!("--rooms and --members must be at least 1");
        }
        Ok(())
    }
}

pub async fn run(ctx: Rc<RunContext>, args: RelayArgs) -> anyhow::Result<()> {
    let (targets, pacer, stats, phase): (&[Rc<Target>], _, _, _) = (&ctx.targets, &ctx.pacer, ctx.stats.clone(), ctx.phase.clone());
    let (warmup, duration) = (ctx.warmup, ctx.duration);
    let payload = args.payload.max(24);
    let publishers_per_room = args.publishers.clamp(1, args.members.max(1));
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    *phase.borrow_mut() = "connecting".into();
    let mut publishers: Vec<OwnedWriteHalf> = Vec::new();
    // Dropping a write half shuts the socket's sending side, which ends the session: keep them.
    let mut listeners: Vec<OwnedWriteHalf> = Vec::new();
    for room in (0..args.rooms).filter(|r| ctx.share.owns(*r)) {
        for member in 0..args.members {
            pacer.wait().await;
            let target = &targets[member % targets.len()];
            let (stream, early, us) = raw_websocket(target, &format!("/relay?room=lg-{room}")).await?;
            stats.borrow_mut().record_connect(us);
            let (reader, writer) = stream.into_split();
            tokio::task::spawn_local(receive(reader, early, epoch, stats.clone(), stop_rx.clone()));
            if member < publishers_per_room {
                publishers.push(writer);
            } else {
                listeners.push(writer);
            }
        }
    }
    *phase.borrow_mut() = "warm-up".into();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = tokio::time::Instant::now();
    let end = start + warmup + duration;
    let mut tasks = Vec::new();
    let total_publishers = publishers.len().max(1);
    for (i, mut sink) in publishers.into_iter().enumerate() {
        let stats = stats.clone();
        let publisher = (i % publishers_per_room) as u64;
        // Spread the publishers' phases over one interval.
        let first = start + interval.mul_f64(i as f64 / total_publishers as f64);
        tasks.push(tokio::task::spawn_local(async move {
            let mut ticker = tokio::time::interval_at(first, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seq = 0u64;
            while tokio::time::Instant::now() < end {
                ticker.tick().await;
                // After the numbers, text like a game's state updates (compressible as real
                // messages are, not as a run of zeros).
                let mut body: Vec<u8> = FILLER.iter().copied().cycle().take(payload).collect();
                body[..8].copy_from_slice(&seq.to_le_bytes());
                body[8..16].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
                body[16..24].copy_from_slice(&publisher.to_le_bytes());
                if sink.write_all(&frame::encode(0x82, &body, Some([0; 4]))).await.is_err() {
                    stats.borrow_mut().error("connection");
                    break;
                }
                stats.borrow_mut().sent += 1;
                seq += 1;
            }
            sink
        }));
    }
    tokio::time::sleep(warmup).await;
    ctx.start_measuring().await?;
    let mut sinks = Vec::new();
    for task in tasks {
        sinks.push(task.await?);
    }
    // Let in-flight messages arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.stop_measuring().await?;
    let _ = stop_tx.send(true);
    for mut sink in sinks.into_iter().chain(listeners) {
        let _ = sink.shutdown().await;
    }
    Ok(())
}

async fn receive(mut reader: OwnedReadHalf, early: Vec<u8>, epoch: Instant, stats: Rc<RefCell<Stats>>, mut stop: watch::Receiver<bool>) {
    let mut frames = ServerFrames::new(early);
    let mut chunk = vec![0u8; 64 * 1024];
    // Next expected sequence number of each publisher of the room.
    let mut next_seq: Vec<Option<u64>> = Vec::new();
    loop {
        while let Some(message) = frames.next_message() {
            let Ok((opcode, body)) = message else {
                stats.borrow_mut().error("compression");
                return;
            };
            if opcode == 0x8 {
                return;
            }
            if opcode != 0x2 || body.len() < 24 {
                continue;
            }
            let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
            let sent_ns = u64::from_le_bytes(body[8..16].try_into().unwrap_or_default());
            let publisher = u64::from_le_bytes(body[16..24].try_into().unwrap_or_default()).min(1023) as usize;
            if next_seq.len() <= publisher {
                next_seq.resize(publisher + 1, None);
            }
            let mut s = stats.borrow_mut();
            match next_seq[publisher] {
                Some(expected) if seq > expected => s.lost += seq - expected,
                Some(expected) if seq < expected => s.out_of_order += 1,
                _ => {}
            }
            next_seq[publisher] = Some(seq + 1);
            let latency_us = (epoch.elapsed().as_nanos() as u64).saturating_sub(sent_ns) / 1000;
            s.delivered("relay", latency_us);
        }
        let n = tokio::select! {
            n = reader.read(&mut chunk) => n,
            _ = stop.changed() => return,
        };
        match n {
            Ok(0) => return,
            Ok(n) => {
                stats.borrow_mut().received_bytes(n);
                frames.extend(&chunk[..n]);
            }
            Err(_) => {
                stats.borrow_mut().error("connection");
                return;
            }
        }
    }
}
