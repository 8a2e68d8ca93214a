//! The pubsub scenario: R rooms × M connections on `/pubsub`, each connection in
//! `--rooms-per-conn` rooms (its own and the next ones), the first `--publishers` members of
//! each room publishing to it at `--rate`, and optionally sending directs to another user at
//! `--direct-rate`. With several `--url`s connection i goes to instance i mod N.
//!
//! Every message's `data` is a short string `"room:publisher:seq:sent_ns:padding"`, so each
//! receiver measures latency and detects loss and reordering per (room, publisher) on its own,
//! as in the relay scenario. Frames are written and read by hand for the same reason.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use partyflow::pubsub::{Claims, TokenKey};
use partyflow_client::deflate::ServerFrames;
use partyflow_client::frame;

use crate::net::{raw_websocket, Target};
use crate::stats::Stats;
use crate::RunContext;

/// Pubsub scenario settings.
#[derive(Debug, Clone, clap::Args)]
pub struct PubSubArgs {
    /// Number of rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Connections whose own room each is (every room then has members × rooms-per-conn members).
    #[arg(long, default_value_t = 11)]
    pub members: usize,
    /// Rooms each connection joins: its own and the next ones.
    #[arg(long, default_value_t = 1)]
    pub rooms_per_conn: usize,
    /// Messages per second each publisher publishes to its room.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Publishing members per room.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Direct messages per second each publisher sends to another user (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub direct_rate: f64,
    /// Padding of each message's data, in bytes.
    #[arg(long, default_value_t = 96)]
    pub payload: usize,
    /// The server's --pubsub-secret: connections present tokens for users lg-0, lg-1, …
    /// (needed for directs, which address users by name).
    #[arg(long, env = "PARTYFLOW_PUBSUB_SECRET", hide_env_values = true)]
    pub pubsub_secret: Option<String>,
}

impl PubSubArgs {
    /// Refuses settings the scenario cannot run with, naming the flag.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1_000_000.0) {
            anyhow::bail!("--rate must be above 0 and at most 1000000 messages per second (got {})", self.rate);
        }
        if !(self.direct_rate.is_finite() && (0.0..=1_000_000.0).contains(&self.direct_rate)) {
            anyhow::bail!("--direct-rate must be 0 to 1000000 messages per second (got {})", self.direct_rate);
        }
        if self.members == 0 || self.rooms == 0 || self.rooms_per_conn == 0 || self.rooms_per_conn > self.rooms {
            anyhow::bail!("--rooms and --members must be at least 1, --rooms-per-conn 1..=--rooms");
        }
        if self.direct_rate > 0.0 && self.pubsub_secret.is_none() {
            anyhow::bail!("--direct-rate needs --pubsub-secret (directs address users by name)");
        }
        Ok(())
    }

    /// Connections held.
    pub fn connections(&self) -> usize {
        self.rooms * self.members
    }
}

/// A client frame carrying `text`.
fn text_frame(text: &str) -> Vec<u8> {
    frame::encode(0x81, text.as_bytes(), Some([0; 4]))
}

pub async fn run(ctx: Rc<RunContext>, args: PubSubArgs) -> anyhow::Result<()> {
    let (targets, pacer, stats, phase): (&[Rc<Target>], _, _, _) = (&ctx.targets, &ctx.pacer, ctx.stats.clone(), ctx.phase.clone());
    let (warmup, duration) = (ctx.warmup, ctx.duration);
    let publishers_per_room = args.publishers.clamp(1, args.members);
    let key = args.pubsub_secret.as_deref().map(TokenKey::new).transpose().map_err(|e| anyhow::anyhow!("--pubsub-secret: {e}"))?;
    let total = args.connections();
    let padding = "x".repeat(args.payload);
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let joined = Rc::new(RefCell::new(0usize));
    *phase.borrow_mut() = "connecting".into();
    // (room, publisher number, connection number, user to send directs to, writer)
    let mut publishers: Vec<(usize, u64, usize, usize, OwnedWriteHalf)> = Vec::new();
    let mut listeners: Vec<OwnedWriteHalf> = Vec::new();
    let mut expected_joins = 0;
    for room in (0..args.rooms).filter(|r| ctx.share.owns(*r)) {
        for member in 0..args.members {
            pacer.wait().await;
            let n = room * args.members + member;
            let target = &targets[n % targets.len()];
            let path = match &key {
                Some(key) => format!("/pubsub?token={}", key.sign(&Claims { sub: format!("lg-{n}"), exp: None, rooms: None, meta: None })),
                None => "/pubsub".to_string(),
            };
            let (stream, early, us) = raw_websocket(target, &path).await?;
            stats.borrow_mut().record_connect(us);
            let (reader, mut writer) = stream.into_split();
            for k in 0..args.rooms_per_conn {
                let joins = format!(r#"{{"event":"join","room":"lg-{}"}}"#, (room + k) % args.rooms);
                writer.write_all(&text_frame(&joins)).await?;
            }
            expected_joins += args.rooms_per_conn;
            tokio::task::spawn_local(receive(reader, early, epoch, stats.clone(), joined.clone(), stop_rx.clone()));
            if member < publishers_per_room {
                publishers.push((room, member as u64, n, (n + args.members) % total, writer));
            } else {
                listeners.push(writer);
            }
        }
    }
    // Publishing starts once every connection is in its rooms.
    let deadline = Instant::now() + Duration::from_secs(60);
    while *joined.borrow() < expected_joins {
        anyhow::ensure!(Instant::now() < deadline, "only {} of {expected_joins} joins were answered", joined.borrow());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *phase.borrow_mut() = "warm-up".into();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let direct_every = (args.direct_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.direct_rate));
    let start = tokio::time::Instant::now();
    let end = start + warmup + duration;
    let mut tasks = Vec::new();
    let count = publishers.len().max(1);
    for (i, (room, publisher, n, direct_to, mut sink)) in publishers.into_iter().enumerate() {
        let (stats, padding) = (stats.clone(), padding.clone());
        let first = start + interval.mul_f64(i as f64 / count as f64);
        tasks.push(tokio::task::spawn_local(async move {
            let mut ticker = tokio::time::interval_at(first, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut directs = direct_every.map(|every| {
                let mut t = tokio::time::interval_at(first, every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let (mut seq, mut direct_seq) = (0u64, 0u64);
            while tokio::time::Instant::now() < end {
                let direct = match directs.as_mut() {
                    Some(d) => tokio::select! { _ = ticker.tick() => false, _ = d.tick() => true },
                    None => {
                        ticker.tick().await;
                        false
                    }
                };
                let ns = epoch.elapsed().as_nanos() as u64;
                let text = if direct {
                    direct_seq += 1;
                    format!(r#"{{"event":"d","to":"lg-{direct_to}","data":"d:{n}:{}:{ns}:{padding}"}}"#, direct_seq - 1)
                } else {
                    seq += 1;
                    format!(r#"{{"event":"m","room":"lg-{room}","data":"{room}:{publisher}:{}:{ns}:{padding}"}}"#, seq - 1)
                };
                if sink.write_all(&text_frame(&text)).await.is_err() {
                    stats.borrow_mut().error("connection");
                    break;
                }
                stats.borrow_mut().sent += 1;
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.stop_measuring().await?;
    let _ = stop_tx.send(true);
    for mut sink in sinks.into_iter().chain(listeners) {
        let _ = sink.shutdown().await;
    }
    Ok(())
}

/// The fields of a message's `data`: (stream, seq, sent_ns), where the stream is the room and
/// publisher (or `d` and the sender, for directs).
fn fields(frame: &[u8]) -> Option<((u64, u64), u64, u64)> {
    const DATA: &[u8] = b"\"data\":\"";
    let at = frame.windows(DATA.len()).position(|w| w == DATA)? + DATA.len();
    let text = std::str::from_utf8(frame.get(at..)?).ok()?;
    let mut parts = text.split(':');
    let room = parts.next()?;
    let room = if room == "d" { u64::MAX } else { room.parse().ok()? };
    let publisher = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some(((room, publisher), seq, sent))
}

async fn receive(
    mut reader: OwnedReadHalf,
    early: Vec<u8>,
    epoch: Instant,
    stats: Rc<RefCell<Stats>>,
    joined: Rc<RefCell<usize>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut frames = ServerFrames::new(early);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut next_seq: HashMap<(u64, u64), u64> = HashMap::new();
    loop {
        while let Some(message) = frames.next_message() {
            let Ok((opcode, body)) = message else {
                stats.borrow_mut().error("compression");
                return;
            };
            if opcode == 0x8 {
                return;
            }
            if opcode != 0x1 {
                continue;
            }
            if body.starts_with(br#"{"event":"joined""#) {
                *joined.borrow_mut() += 1;
                continue;
            }
            if body.starts_with(br#"{"event":"error""#) {
                stats.borrow_mut().error("pubsub-error");
                continue;
            }
            let Some((stream, seq, sent_ns)) = fields(body) else { continue };
            let mut s = stats.borrow_mut();
            match next_seq.get(&stream) {
                Some(&expected) if seq > expected => s.lost += seq - expected,
                Some(&expected) if seq < expected => s.out_of_order += 1,
                _ => {}
            }
            next_seq.insert(stream, seq + 1);
            let latency_us = (epoch.elapsed().as_nanos() as u64).saturating_sub(sent_ns) / 1000;
            s.delivered(if stream.0 == u64::MAX { "direct" } else { "pubsub" }, latency_us);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_fields_are_read_back() {
        let frame = br#"{"event":"m","room":"lg-3","from":"lg-31","data":"3:1:42:123456:xxxx"}"#;
        assert_eq!(fields(frame), Some(((3, 1), 42, 123456)));
        assert_eq!(fields(br#"{"event":"d","from":"u","data":"d:7:0:9:x"}"#), Some(((u64::MAX, 7), 0, 9)));
        assert_eq!(fields(br#"{"event":"user_joined","room":"lg-3","data":{"user":"u"}}"#), None);
    }
}
