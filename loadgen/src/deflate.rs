//! permessage-deflate (RFC 7692) on the load generator's side: the offer it makes with
//! `--compression`, and the inflating of the server's compressed messages.
//!
//! The server compresses each message on its own (`server_no_context_takeover`), so one inflater
//! reset per message serves a connection. The load generator sends its own messages plain, as a
//! client may: what is measured is the server's fan-out, compressed once per broadcast.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stats::Stats;

/// The extension offered: the load generator keeps no context between its own messages either.
pub const OFFER: &str = "permessage-deflate; client_no_context_takeover";

/// The largest message the load generator inflates (the server's default limit is far below).
const MAX_INFLATED: usize = 16 << 20;

/// One connection's inflater.
pub struct Inflater(Decompress);

impl Default for Inflater {
    fn default() -> Self {
        Inflater(Decompress::new(false))
    }
}

impl Inflater {
    /// Appends the inflated `payload` of one compressed message to `out`.
    pub fn inflate(&mut self, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.0.reset(false);
        // RFC 7692 §7.2.2: the sender removed the empty block's tail; it is put back to end the message.
        let start = out.len();
        for mut input in [payload, &[0x00, 0x00, 0xff, 0xff][..]] {
            loop {
                if out.capacity() - out.len() < 1024 {
                    out.reserve((input.len() * 4).max(16 * 1024));
                }
                let before = self.0.total_in();
                let status = self.0.decompress_vec(input, out, FlushDecompress::Sync).map_err(io::Error::other)?;
                input = &input[(self.0.total_in() - before) as usize..];
                if out.len() - start > MAX_INFLATED {
                    return Err(io::Error::other("a compressed message inflates past 16 MiB"));
                }
                // Done with this input once it is consumed and the output had room to spare.
                if status == Status::StreamEnd || (input.is_empty() && out.len() < out.capacity()) {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// A complete server frame at the front of a buffer: its first byte (FIN, RSV1, opcode) and
/// where its payload lies.
pub struct Frame {
    pub first: u8,
    pub payload: std::ops::Range<usize>,
}

impl Frame {
    pub fn opcode(&self) -> u8 {
        self.first & 0x0f
    }

    /// RSV1 on a data frame: a compressed message.
    pub fn compressed(&self) -> bool {
        self.first & 0x40 != 0
    }

    /// Splits a complete unmasked server frame off the front of `buf`.
    pub fn parse(buf: &[u8]) -> Option<Frame> {
        let (&first, &b1) = (buf.first()?, buf.get(1)?);
        let (len, at) = match b1 & 0x7f {
            126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
            127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
            n => (n as usize, 2),
        };
        (buf.len() >= at + len).then_some(Frame { first, payload: at..at + len })
    }
}

/// The server frames of a raw connection, inflated where compressed, as the relay and pub/sub
/// clients read them.
#[derive(Default)]
pub struct ServerFrames {
    buf: Vec<u8>,
    consumed: usize,
    inflater: Inflater,
    inflated: Vec<u8>,
}

impl ServerFrames {
    /// Starts with the bytes that came with the handshake's answer.
    pub fn new(early: Vec<u8>) -> Self {
        ServerFrames { buf: early, ..ServerFrames::default() }
    }

    /// Bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.drain(..std::mem::take(&mut self.consumed));
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message: opcode and payload (inflated).
    pub fn next_message(&mut self) -> Option<io::Result<(u8, &[u8])>> {
        let frame = Frame::parse(&self.buf[self.consumed..])?;
        let payload = self.consumed + frame.payload.start..self.consumed + frame.payload.end;
        self.consumed = payload.end;
        if !frame.compressed() {
            return Some(Ok((frame.opcode(), &self.buf[payload])));
        }
        self.inflated.clear();
        Some(self.inflater.inflate(&self.buf[payload], &mut self.inflated).map(|()| (frame.opcode(), &self.inflated[..])))
    }
}

/// The socket under a WebSocket library that knows no permessage-deflate (the party client's
/// tokio-tungstenite): after the handshake's answer, compressed server frames are handed up
/// inflated, as plain frames. Every byte read is counted as received on the wire.
pub struct Inflating<S> {
    inner: S,
    stats: Rc<RefCell<Stats>>,
    /// Frames are rewritten only once the handshake's answer has passed.
    head_passed: bool,
    /// Read from the socket, not yet handed up.
    raw: Vec<u8>,
    /// Ready to hand up.
    ready: Vec<u8>,
    handed: usize,
    inflater: Inflater,
    /// Whether compressed frames are expected (the offer was made); otherwise bytes pass through.
    compression: bool,
    /// Frames follow (the offer was made and the upgrade accepted).
    frames: bool,
}

impl<S> Inflating<S> {
    pub fn new(inner: S, compression: bool, stats: Rc<RefCell<Stats>>) -> Self {
        Inflating { inner, stats, head_passed: false, raw: Vec::new(), ready: Vec::new(), handed: 0, inflater: Inflater::default(), compression, frames: false }
    }

    /// Moves what is complete in `raw` to `ready`: the handshake's head as it is, then each
    /// frame, inflated and re-framed when compressed.
    fn process(&mut self) -> io::Result<()> {
        if !self.head_passed {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(()) };
            // Anything but a 101 (a refusal and its body) is handed up as it is.
            self.frames = self.compression && self.raw.starts_with(b"HTTP/1.1 101");
            self.ready.extend(self.raw.drain(..end + 4));
            self.head_passed = true;
        }
        if !self.frames {
            self.ready.append(&mut self.raw);
            return Ok(());
        }
        let mut consumed = 0;
        while let Some(frame) = Frame::parse(&self.raw[consumed..]) {
            let (start, end) = (consumed + frame.payload.start, consumed + frame.payload.end);
            if frame.compressed() {
                let mut message = Vec::new();
                self.inflater.inflate(&self.raw[start..end], &mut message)?;
                self.ready.push(frame.first & !0x40);
                match message.len() {
                    n @ 0..=125 => self.ready.push(n as u8),
                    n @ 126..=0xffff => {
                        self.ready.push(126);
                        self.ready.extend_from_slice(&(n as u16).to_be_bytes());
                    }
                    n => {
                        self.ready.push(127);
                        self.ready.extend_from_slice(&(n as u64).to_be_bytes());
                    }
                }
                self.ready.extend_from_slice(&message);
            } else {
                self.ready.extend_from_slice(&self.raw[consumed..end]);
            }
            consumed = end;
        }
        self.raw.drain(..consumed);
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.handed == this.ready.len() {
            this.ready.clear();
            this.handed = 0;
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.stats.borrow_mut().received_bytes(read.filled().len());
            this.raw.extend_from_slice(read.filled());
            this.process()?;
        }
        let n = out.remaining().min(this.ready.len() - this.handed);
        out.put_slice(&this.ready[this.handed..this.handed + n]);
        this.handed += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// A server's compressed message: raw deflate, flushed, the 00 00 ff ff tail removed.
    fn compressed_frame(text: &str) -> Vec<u8> {
        let mut body = Vec::with_capacity(text.len() + 64);
        Compress::new(Compression::fast(), false).compress_vec(text.as_bytes(), &mut body, FlushCompress::Sync).unwrap();
        body.truncate(body.len() - 4);
        let mut frame = vec![0xc1, body.len() as u8];
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn compressed_and_plain_frames_come_out_as_messages() {
        let text = "{\"type\":\"TIMER_TICK\",\"payload\":{\"remaining\":42}}".repeat(2);
        let mut bytes = compressed_frame(&text);
        bytes.extend_from_slice(&[0x81, 2, b'h', b'i']);
        let mut frames = ServerFrames::new(bytes[..3].to_vec());
        assert!(frames.next_message().is_none(), "an incomplete frame waits");
        frames.extend(&bytes[3..]);
        let (opcode, first) = frames.next_message().unwrap().unwrap();
        assert_eq!((opcode, first), (1, text.as_bytes()));
        let (opcode, second) = frames.next_message().unwrap().unwrap();
        assert_eq!((opcode, second), (1, &b"hi"[..]));
        assert!(frames.next_message().is_none());
    }

    #[test]
    fn the_rewriting_stream_hands_up_the_head_then_plain_frames() {
        let text = "x".repeat(300);
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        wire.extend_from_slice(&compressed_frame(&text));
        let stats = Rc::new(RefCell::new(Stats::default()));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut handed = Vec::new();
        runtime.block_on(async {
            use tokio::io::AsyncReadExt;
            Inflating::new(&wire[..], true, stats).read_to_end(&mut handed).await.unwrap();
        });
        let head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".len();
        assert_eq!(&handed[..head], &wire[..head]);
        assert_eq!(&handed[head..head + 4], &[0x81, 126, 1, 44], "FIN text, RSV1 cleared, 300 bytes");
        assert_eq!(&handed[head + 4..], text.as_bytes());
    }
}
