//! permessage-deflate under the party client's tokio-tungstenite, which knows no extensions:
//! the socket hands it the server's compressed frames inflated (the inflating itself is
//! `partyflow_client::deflate`'s). The load generator sends its own messages plain, as a client
//! may: what is measured is the server's fan-out, compressed once per broadcast.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use partyflow_client::deflate::Inflater;
use partyflow_client::frame::Frame;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stats::Stats;

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
