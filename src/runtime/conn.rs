//! The driver of one upgraded connection: moves bytes between its socket and the shard state.
//!
//! One future per connection does both directions, so the socket needs no splitting and no
//! locks. Each poll writes what the connection's outbox holds (all queued frames in one
//! vectored `sendmsg`, falling back to glommio's readiness wait when the socket is full), then
//! reads and decodes what arrived. Frames queued by other connections' broadcasts only wake
//! the driver; since it runs after the waking task yields, all of a reactor turn's broadcasts
//! leave in one write (corking grows with load).

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use socket2::SockRef;

use super::shard::Shard;
use super::state::ConnId;
use crate::metrics::latency::{self, Latency};
use crate::ws::{self, close_code, DataKind, Decoder, Event};

/// Most frames gathered into one `sendmsg`.
const MAX_IOVECS: usize = 64;
/// Reads before a connection waits for the shard's next ring poll, so one busy connection cannot
/// hold the shard (see `turn.rs`).
const POLL_BUDGET: usize = 16;
/// Smallest single read; the largest is the shard's scratch buffer.
const READ_MIN: usize = 4 * 1024;

enum Reading {
    /// Decoding frames.
    Frames,
    /// A close was received or a protocol error seen: bytes are read and dropped until EOF.
    Discarding,
}

enum Step {
    Progress,
    Idle,
    Done,
}

/// Drives one connection until it is closed; unregisters it when dropped.
pub(crate) struct ConnDriver {
    shard: Rc<Shard>,
    id: ConnId,
    stream: TcpStream,
    rbuf: BytesMut,
    decoder: Decoder,
    reading: Reading,
    peer_sent_close: bool,
    write_shut: bool,
    /// The close deadline is armed in the shard's timer heap.
    close_armed: bool,
}

impl ConnDriver {
    /// `inflate`: permessage-deflate was negotiated.
    pub(crate) fn new(shard: Rc<Shard>, id: ConnId, stream: TcpStream, leftover: &[u8], inflate: bool) -> Self {
        let decoder = Decoder::new(shard.shared.config.max_message_bytes).with_max_fragments(shard.shared.config.effective_max_fragments());
        let decoder = if inflate { decoder.with_deflate() } else { decoder };
        ConnDriver {
            shard,
            id,
            stream,
            rbuf: BytesMut::from(leftover),
            decoder,
            reading: Reading::Frames,
            peer_sent_close: false,
            write_shut: false,
            close_armed: false,
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Step {
        let flushed = match self.flush(cx) {
            Ok(flushed) => flushed,
            Err(_) => return Step::Done,
        };
        let closing = self.is_closing();
        if closing && !self.close_armed {
            // The close deadline (the peer has that long to finish the handshake) is earlier
            // than what the connection had armed in the shard's timer heap.
            self.close_armed = true;
            self.shard.state.borrow_mut().arm_conn(self.id);
        }
        if flushed && closing {
            if self.peer_sent_close {
                // Close handshake complete: the server closes TCP first (RFC 6455 §7.1.1).
                return Step::Done;
            }
            if !self.write_shut {
                self.write_shut = true;
                let _ = SockRef::from(&self.fd()).shutdown(std::net::Shutdown::Write);
            }
        }
        self.read(cx)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to `self.stream`, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(self.stream.as_raw_fd()) }
    }

    fn is_closing(&self) -> bool {
        self.shard.state.borrow_mut().conn(self.id).is_none_or(|c| c.is_closing())
    }

    /// Writes queued frames. `Ok(true)`: the outbox is empty; `Ok(false)`: the socket is full
    /// and the waker is registered for writability; `Err`: the connection is finished.
    fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let metrics = self.shard.metrics();
        loop {
            let front = {
                let mut state = self.shard.state.borrow_mut();
                let conn = state.conn(self.id).ok_or(io::ErrorKind::NotConnected)?;
                if conn.terminate {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                if conn.outbox.is_empty() {
                    return Ok(true);
                }
                let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                let fd = self.fd();
                let socket = SockRef::from(&fd);
                let sent = if conn.outbox.len() == 1 {
                    // The common case at moderate load: one frame, no iovec to build.
                    let front = conn.outbox.front().unwrap_or_default();
                    socket.send_with_flags(&front, flags)
                } else {
                    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                    let n = conn.outbox.gather(&mut slices);
                    socket.send_vectored_with_flags(slices.get(..n).unwrap_or_default(), flags)
                };
                match sent {
                    Ok(written) => {
                        conn.wrote(written);
                        metrics.bytes_out.add(written as u64);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.outbox.front(),
                    Err(e) => return Err(e),
                }
            };
            let Some(front) = front else { continue };
            // The socket is full: let glommio wait for room (it retries the send itself).
            match Pin::new(&mut self.stream).poll_write(cx, &front) {
                Poll::Ready(Ok(written)) => {
                    if let Some(conn) = self.shard.state.borrow_mut().conn(self.id) {
                        conn.wrote(written);
                    }
                    metrics.bytes_out.add(written as u64);
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
    }

    fn read(&mut self, cx: &mut Context<'_>) -> Step {
        // A `/pubsub` connection waits while the shard's messages to the other shards pile up:
        // its client is held back by TCP instead of the shard by memory.
        if self.shard.mesh_out.is_congested() && self.shard.state.borrow_mut().conn(self.id).is_some_and(|c| c.is_pubsub()) {
            self.shard.mesh_out.hold(cx.waker());
            return Step::Idle;
        }
        // Reads land in the shard's scratch buffer (zeroed once) and only the bytes received are
        // copied to the connection, so no read zero-fills or keeps a per-connection buffer.
        let shard = self.shard.clone();
        let mut scratch = shard.read_scratch.borrow_mut();
        let want = self.decoder.bytes_wanted().clamp(READ_MIN, scratch.len());
        let Some(into) = scratch.get_mut(..want) else { return Step::Done };
        let polled = Pin::new(&mut self.stream).poll_read(cx, into);
        let n = match polled {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(_)) => 0,
            Poll::Pending => return Step::Idle,
        };
        if n == 0 {
            return Step::Done;
        }
        self.rbuf.extend_from_slice(scratch.get(..n).unwrap_or_default());
        drop(scratch);
        let now = Instant::now();
        let metrics = self.shard.metrics();
        metrics.bytes_in.add(n as u64);
        self.shard.state.borrow_mut().on_activity(self.id, now);
        match self.reading {
            Reading::Discarding => self.rbuf.clear(),
            Reading::Frames => {
                // The connection boundary: a panic while handling this connection's bytes
                // (rooms catch their own) closes this connection with 1011, not the shard.
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode(now)));
                let took = now.elapsed();
                latency::record(Latency::Handling, took);
                latency::record_work(took);
                if let Err(panic) = handled {
                    let shard = self.shard.clone();
                    let metrics = shard.metrics();
                    let why = super::state::panic_message(panic.as_ref());
                    tracing::error!(shard = self.shard.index, conn = self.id, panic = why, "a connection's handling panicked; closing it with 1011");
                    metrics.connection_panics.add(1);
                    shard.state.borrow_mut().close(metrics, now, self.id, close_code::INTERNAL_ERROR, "internal error");
                    self.stop_decoding();
                }
            }
        }
        if self.rbuf.is_empty() {
            // Idle connections hold no read buffer: thousands of them would otherwise keep
            // a few KiB each.
            self.rbuf = BytesMut::new();
        }
        Step::Progress
    }

    fn decode(&mut self, now: Instant) {
        let shard = self.shard.clone();
        let metrics = shard.metrics();
        let frames_before = self.decoder.frames_seen();
        loop {
            let event = match self.decoder.poll_event(&mut self.rbuf) {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(err) => {
                    shard.state.borrow_mut().close(metrics, now, self.id, err.close_code(), &err.to_string());
                    self.stop_decoding();
                    break;
                }
            };
            let mut state = shard.state.borrow_mut();
            match event {
                Event::Text(payload) => state.on_message(metrics, now, self.id, DataKind::Text, &payload),
                Event::Binary(payload) => state.on_message(metrics, now, self.id, DataKind::Binary, &payload),
                Event::Ping(payload) => state.send_control(metrics, now, self.id, ws::encode_pong(&payload)),
                Event::Pong => {}
                Event::Close(code) => {
                    // Echo the peer's code; a close without one is answered with 1000.
                    state.close(metrics, now, self.id, code.unwrap_or(close_code::NORMAL), "");
                    drop(state);
                    self.peer_sent_close = true;
                    self.stop_decoding();
                    break;
                }
            }
        }
        metrics.frames_in.add(self.decoder.frames_seen() - frames_before);
    }

    fn stop_decoding(&mut self) {
        self.reading = Reading::Discarding;
        self.rbuf.clear();
    }
}

impl Future for ConnDriver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..POLL_BUDGET {
            match this.step(cx) {
                Step::Progress => continue,
                Step::Done => return Poll::Ready(()),
                Step::Idle => {
                    let mut state = this.shard.state.borrow_mut();
                    return match state.conn(this.id) {
                        Some(conn) => {
                            conn.set_waker(cx.waker());
                            Poll::Pending
                        }
                        None => Poll::Ready(()),
                    };
                }
            }
        }
        this.shard.metrics().poll_budget_deferrals.add(1);
        this.shard.next_turn.defer(cx.waker());
        Poll::Pending
    }
}

impl Drop for ConnDriver {
    fn drop(&mut self) {
        let metrics = self.shard.metrics();
        self.shard.state.borrow_mut().unregister(metrics, Instant::now(), self.id);
    }
}
