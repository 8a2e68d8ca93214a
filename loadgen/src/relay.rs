//! The relay scenario: R rooms × M members on `/relay`, member 0 of each room publishing.
//!
//! Each message carries its publisher's sequence number and send time, so every receiver can
//! measure latency and detect loss, duplication and reordering on its own.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::report::Report;

/// Relay scenario settings.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Number of rooms.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Members per room, the publisher included.
    #[arg(long, default_value_t = 11)]
    members: usize,
    /// Messages per second published in each room.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Payload size in bytes (at least 16: sequence number and timestamp).
    #[arg(long, default_value_t = 128)]
    payload: usize,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    delivered: u64,
    lost: u64,
    out_of_order: u64,
    errors: u64,
    latency_us: Option<Histogram<u64>>,
}

pub async fn run(ws_base: String, args: RelayArgs, warmup: Duration, duration: Duration) -> anyhow::Result<Report> {
    let payload = args.payload.max(16);
    let epoch = Instant::now();
    let tally = Rc::new(RefCell::new(Tally { latency_us: Some(Histogram::new(3)?), ..Tally::default() }));
    let mut connect_us = Histogram::<u64>::new(3)?;
    let local = tokio::task::LocalSet::new();
    let measure_from = Rc::new(RefCell::new(None::<Instant>));
    local
        .run_until(async {
            let mut publishers = Vec::new();
            for room in 0..args.rooms {
                for member in 0..args.members {
                    let url = format!("{ws_base}/relay?room=lg-{room}");
                    let started = Instant::now();
                    let (ws, _) = tokio_tungstenite::connect_async(&url).await.with_context(|| format!("connecting {url}"))?;
                    connect_us.record(started.elapsed().as_micros() as u64)?;
                    let (sink, stream) = ws.split();
                    tokio::task::spawn_local(receive(stream, epoch, tally.clone(), measure_from.clone()));
                    if member == 0 {
                        publishers.push(sink);
                    }
                }
            }
            let interval = Duration::from_secs_f64(1.0 / args.rate);
            let start = Instant::now();
            let end = start + warmup + duration;
            let mut tasks = Vec::new();
            for (i, mut sink) in publishers.into_iter().enumerate() {
                let tally = tally.clone();
                // Spread the publishers' phases over one interval.
                let first = start + interval.mul_f64(i as f64 / args.rooms.max(1) as f64);
                tasks.push(tokio::task::spawn_local(async move {
                    let mut ticker = tokio::time::interval_at(first.into(), interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    let mut seq = 0u64;
                    while Instant::now() < end {
                        ticker.tick().await;
                        let mut body = vec![0u8; payload];
                        body[..8].copy_from_slice(&seq.to_le_bytes());
                        body[8..16].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
                        if sink.send(Message::binary(body)).await.is_err() {
                            tally.borrow_mut().errors += 1;
                            break;
                        }
                        tally.borrow_mut().sent += 1;
                        seq += 1;
                    }
                    sink
                }));
            }
            tokio::time::sleep(warmup).await;
            *measure_from.borrow_mut() = Some(Instant::now());
            {
                let mut t = tally.borrow_mut();
                t.delivered = 0;
                t.sent = 0;
                if let Some(h) = t.latency_us.as_mut() {
                    h.reset();
                }
            }
            let mut sinks = Vec::new();
            for task in tasks {
                sinks.push(task.await?);
            }
            // Let in-flight messages arrive before counting.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for mut sink in sinks {
                let _ = sink.close().await;
            }
            anyhow::Ok(())
        })
        .await?;
    let measured = measure_from.borrow().map_or(duration, |from| from.elapsed().min(duration));
    let mut t = tally.borrow_mut();
    Ok(Report {
        scenario: "relay",
        connections: args.rooms * args.members,
        measured,
        sent: t.sent,
        delivered: t.delivered,
        lost: t.lost,
        out_of_order: t.out_of_order,
        errors: t.errors,
        latency_us: t.latency_us.take().unwrap_or_else(|| Histogram::new(3).expect("histogram")),
        connect_us,
    })
}

async fn receive<S>(mut stream: S, epoch: Instant, tally: Rc<RefCell<Tally>>, measure_from: Rc<RefCell<Option<Instant>>>)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut next_seq = None::<u64>;
    while let Some(msg) = stream.next().await {
        let body = match msg {
            Ok(Message::Binary(body)) if body.len() >= 16 => body,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(_) => {
                tally.borrow_mut().errors += 1;
                break;
            }
        };
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        let sent_ns = u64::from_le_bytes(body[8..16].try_into().unwrap_or_default());
        let mut t = tally.borrow_mut();
        match next_seq {
            Some(expected) if seq > expected => t.lost += seq - expected,
            Some(expected) if seq < expected => t.out_of_order += 1,
            _ => {}
        }
        next_seq = Some(seq + 1);
        if measure_from.borrow().is_some() {
            t.delivered += 1;
            let latency_us = (epoch.elapsed().as_nanos() as u64).saturating_sub(sent_ns) / 1000;
            if let Some(h) = t.latency_us.as_mut() {
                let _ = h.record(latency_us);
            }
        }
    }
}
