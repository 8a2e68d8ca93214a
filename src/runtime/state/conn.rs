//! One connection as its shard sees it: what its messages do, its queue, heartbeat, rate limits
//! and close deadline, and the compression it agreed.

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::admission::Permit;
use crate::config::ServeConfig;
use crate::metrics::latency::{self, Latency};
use crate::metrics::ShardMetrics;
use crate::outbox::Outbox;
use crate::rooms::RoomId;
use crate::session::{Heartbeat, HeartbeatAction, HeartbeatConfig, Rate, TokenBucket};
use crate::ws::{self, close_code};

/// How long a closing connection may take to flush its close frame and hear the peer's.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection's messages do.
#[derive(Debug)]
pub(crate) enum Endpoint {
    /// Every message comes back to its sender.
    Echo,
    /// Every message goes to every member of the room, sender included.
    Relay(RoomId),
    /// Messages are game protocol for this room.
    Game(RoomId),
    /// Messages are game protocol for this room, which instance `owner` serves; `link` names
    /// the connection there (boxed: the rare case, and the largest).
    Forwarded(Box<Forwarded>),
    /// Messages are the `/pubsub` protocol, run by the app's handlers.
    PubSub(Box<crate::pubsub::Session>),
}

/// A connection to a game room another instance serves.
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub(crate) room: RoomId,
    pub(crate) owner: Arc<str>,
    pub(crate) link: u64,
}

/// One WebSocket connection as the shard sees it. What every connection of the server shares
/// (limits, intervals) is the shard's [`ConnLimits`], passed in: a connection holds only what
/// is its own.
pub(crate) struct Conn {
    pub(crate) outbox: Outbox,
    /// When a frame was queued on the empty outbox: its wait ends when the outbox is written out.
    pub(super) queued_since: Option<Instant>,
    pub(super) waker: Option<Waker>,
    pub(super) heartbeat: Heartbeat,
    pub(super) endpoint: Endpoint,
    /// Set once a close frame is queued: the moment the connection is cut regardless.
    pub(super) close_deadline: Option<Instant>,
    /// The deadline this connection holds in the shard's timer heap.
    pub(super) armed: Option<Instant>,
    /// The driver must stop now and drop the socket.
    pub(crate) terminate: bool,
    /// A game connection's room, or a `/pubsub` connection's rooms, were told it is gone (at
    /// the first sign: close, error, timeout).
    pub(super) departed: bool,
    /// `/relay` and `/echo` messages this connection may still send (game rooms limit their own).
    pub(super) messages: TokenBucket,
    /// Message bytes this connection may still send (every endpoint).
    pub(super) bytes: TokenBucket,
    /// Pings this connection may still have answered; past that they are not.
    pub(super) pings: TokenBucket,
    /// When the peer last sent a data message (or connected).
    pub(super) last_message: Instant,
    /// permessage-deflate: the window bits (9-15) this connection's messages are compressed with.
    pub(super) deflate_window_bits: Option<u8>,
    pub(super) _permit: Permit,
}

thread_local! {
    /// This shard's compressors and the frames they compressed (see [`ws::FrameDeflater`]).
    static DEFLATER: std::cell::RefCell<Option<ws::FrameDeflater>> = const { std::cell::RefCell::new(None) };
}

/// `frame` as a connection with a `window_bits` window gets it (messages under `min_bytes` go
/// plain), compressed at most once per frame per shard.
pub(super) fn deflated(m: &ShardMetrics, frame: Bytes, window_bits: u8, min_bytes: usize) -> Bytes {
    DEFLATER.with(|d| {
        let mut d = d.borrow_mut();
        let d = d.get_or_insert_with(|| ws::FrameDeflater::new(min_bytes));
        let before = d.stats();
        let sent = d.frame_for(&frame, window_bits);
        let after = d.stats();
        m.deflate_bytes_before.add(after.bytes_before - before.bytes_before);
        m.deflate_bytes_after.add(after.bytes_after - before.bytes_after);
        m.deflate_compressed.add(after.compressed - before.compressed);
        m.deflate_skipped.add(after.skipped - before.skipped);
        sent
    })
}

/// What every connection of the server is held to (from the flags), kept once per shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Ping interval and pong timeout.
    pub(crate) heartbeat: HeartbeatConfig,
    /// Outbound bytes queued before the connection is cut as a slow consumer.
    pub(crate) max_outbound_bytes: usize,
    /// Messages on `/relay` and `/echo` (bursts of twice the rate).
    pub(crate) messages: Rate,
    /// Message bytes any connection may send.
    pub(crate) bytes: Rate,
    /// Pings answered (bursts of twice the rate).
    pub(crate) pings: Rate,
    /// A connection that sends no data message this long is closed (`None`: never).
    pub(crate) idle_timeout: Option<Duration>,
    /// Compressed connections get messages under this size plain (`--compression-min-bytes`).
    pub(crate) compression_min_bytes: usize,
}

impl ConnLimits {
    pub(crate) fn from_config(config: &ServeConfig) -> Self {
        let byte_rate = config.connection_byte_rate as f64;
        ConnLimits {
            heartbeat: HeartbeatConfig { ping_interval: config.ping_interval, pong_timeout: config.pong_timeout },
            max_outbound_bytes: config.max_outbound_bytes,
            messages: Rate::with_double_burst(config.connection_message_rate),
            // A burst of twice the rate, and never less than one largest message.
            bytes: Rate { per_sec: byte_rate, burst: (2.0 * byte_rate).max(config.max_message_bytes as f64) },
            pings: Rate::with_double_burst(config.pings_per_sec),
            idle_timeout: (!config.idle_connection_timeout.is_zero()).then_some(config.idle_connection_timeout),
            compression_min_bytes: config.compression_min_bytes,
        }
    }
}

impl Default for ConnLimits {
    /// The flags' defaults.
    fn default() -> Self {
        ConnLimits::from_config(&ServeConfig::default())
    }
}

/// What a new connection is set up with of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSettings {
    /// When the first ping is due (a random phase within the ping interval).
    pub(crate) first_ping: Duration,
    /// permessage-deflate's window bits, when it was negotiated.
    pub(crate) deflate_window_bits: Option<u8>,
}

impl Conn {
    /// Sets the waker the driver will be woken through.
    pub(crate) fn set_waker(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }

    pub(super) fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether this is a `/pubsub` connection (whose messages feed the other shards).
    pub(crate) fn is_pubsub(&self) -> bool {
        matches!(self.endpoint, Endpoint::PubSub(_))
    }

    /// Whether a close frame is queued (nothing else will be sent).
    pub(crate) fn is_closing(&self) -> bool {
        self.outbox.is_sealed()
    }

    /// When this connection's timers next have something to do: its close deadline once it is
    /// closing, else the earlier of its heartbeat and its idle timeout. `None` once cut.
    pub(super) fn next_deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        if self.terminate {
            return None;
        }
        if let Some(deadline) = self.close_deadline {
            return Some(deadline);
        }
        let heartbeat = self.heartbeat.poll_timeout(limits.heartbeat);
        Some(limits.idle_timeout.map_or(heartbeat, |idle| heartbeat.min(self.last_message + idle)))
    }

    /// Advances this connection's timers to `now`: cuts it past its close deadline, closes it
    /// when idle or silent (returning `true`: its room must hear it left), pings it when due.
    pub(super) fn handle_timeout(&mut self, m: &ShardMetrics, now: Instant, limits: &ConnLimits) -> bool {
        if let Some(deadline) = self.close_deadline {
            if now >= deadline && !self.terminate {
                self.terminate = true;
                self.wake();
            }
            return false;
        }
        if limits.idle_timeout.is_some_and(|idle| now >= self.last_message + idle) {
            m.idle_closes.add(1);
            self.begin_close(m, now, close_code::GOING_AWAY, "idle: no message within the idle timeout", false);
            return true;
        }
        match self.heartbeat.handle_timeout(now, limits.heartbeat) {
            Some(HeartbeatAction::SendPing) => {
                self.queue(m, now, ws::ping_frame(), limits);
                false
            }
            Some(HeartbeatAction::TimedOut) => {
                m.heartbeat_timeouts.add(1);
                self.begin_close(m, now, close_code::GOING_AWAY, "no data or pong within the pong timeout", true);
                true
            }
            None => false,
        }
    }

    /// Queues a close frame. `discard` drops what is still queued (a slow or dead reader would
    /// never take it); otherwise queued frames go out first.
    pub(super) fn begin_close(&mut self, m: &ShardMetrics, now: Instant, code: u16, reason: &str, discard: bool) {
        if self.is_closing() {
            return;
        }
        if discard {
            self.outbox.discard_unsent();
        }
        self.outbox.seal(ws::encode_close(code, reason));
        m.close_sent(code);
        m.frames_out.add(1);
        self.close_deadline = Some(now + CLOSE_TIMEOUT);
        self.wake();
    }

    /// Records that `n` bytes were written; once the outbox is empty, how long its oldest frame
    /// waited.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.outbox.advance(n);
        if self.outbox.is_empty() {
            if let Some(since) = self.queued_since.take() {
                latency::record(Latency::QueueDelay, since.elapsed());
            }
        }
    }

    /// Queues a frame; a member whose queue is full is closed as a slow consumer.
    pub(super) fn queue(&mut self, m: &ShardMetrics, now: Instant, frame: Bytes, limits: &ConnLimits) -> bool {
        let frame = match self.deflate_window_bits {
            Some(bits) => deflated(m, frame, bits, limits.compression_min_bytes),
            None => frame,
        };
        if self.outbox.is_empty() {
            self.queued_since = Some(now);
        }
        match self.outbox.push(frame, limits.max_outbound_bytes) {
            Ok(()) => {
                m.frames_out.add(1);
                self.wake();
                true
            }
            Err(overflow) => {
                m.slow_consumer_disconnects.add(1);
                let reason = format!("slow consumer: more than {} bytes queued", overflow.limit);
                self.begin_close(m, now, close_code::POLICY_VIOLATION, &reason, true);
                false
            }
        }
    }
}
