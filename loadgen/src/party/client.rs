//! One party client: a host or player playing the real game over its own WebSocket, answering
//! ACKs, checking every sequence id, and dropping and coming back with `RECONNECT` when told.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use partyflow_client::envelope;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use rand::Rng;

use super::{Command, Role, RoomShared, Window};
use crate::net::{unix_us, GameSocket, Target};
use crate::stats::{SeqTracker, SeqVerdict, Stats};

pub(super) struct Client {
    pub(super) target: Rc<Target>,
    pub(super) path: String,
    pub(super) room_id: String,
    pub(super) actor: String,
    pub(super) role: Role,
    pub(super) room: Rc<RefCell<RoomShared>>,
    pub(super) stats: Rc<RefCell<Stats>>,
    pub(super) swipe_interval: Duration,
    /// The host waits this long before starting team setup (spreads the rooms' rounds).
    pub(super) start_delay: Duration,
}

/// A host action waiting for its moment.
enum Pending {
    StartSetup,
    Swipe(String),
}

/// A dropped connection whose RECONNECT is not answered yet.
struct Rejoining {
    /// The stream seen before the drop.
    before: SeqTracker,
    dropped_at: Instant,
}

impl Client {
    pub(super) async fn run(self, mut ws: GameSocket, mut stop: watch::Receiver<bool>, mut commands: mpsc::UnboundedReceiver<Command>) {
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
