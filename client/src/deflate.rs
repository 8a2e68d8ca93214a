//! permessage-deflate (RFC 7692) on the client's side: the offer, and the inflating of the
//! server's compressed messages. Sans-IO.
//!
//! The server compresses each message on its own (`server_no_context_takeover`), so one inflater
//! reset per message serves a connection. A client may send its own messages plain.

use std::io;

use flate2::{Decompress, FlushDecompress, Status};

use crate::frame::Frame;

/// The extension offered: the client keeps no context between its own messages either.
pub const OFFER: &str = "permessage-deflate; client_no_context_takeover";

/// The largest message inflated (the server's default limit is far below).
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

/// The server frames of a connection read by hand, inflated where compressed.
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
}
