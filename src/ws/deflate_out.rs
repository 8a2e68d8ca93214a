//! The compressing side of permessage-deflate, shared by a shard's connections: a data frame is
//! compressed at most once, the first time a connection that negotiated compression needs it,
//! and the compressed frame is reused for every other such connection (a broadcast is one
//! `Bytes` cloned into every member's queue, so the same buffer comes back for each member).
//! With `server_no_context_takeover` every message is compressed from a fresh state, so one
//! compressor per window size serves every connection.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Frames remembered: a game room fans out a few frames (one per scope and version) to its
/// members in turn, so a handful of entries catches every repeat.
const CACHE: usize = 8;

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeflateStats {
    /// Payload bytes of the messages compressed, before.
    pub bytes_before: u64,
    /// Their payload bytes after.
    pub bytes_after: u64,
    /// Messages compressed (each once, whatever the number of recipients).
    pub compressed: u64,
    /// Messages sent plain on a compressed connection (small, or not smaller compressed).
    pub skipped: u64,
}

struct Entry {
    /// The plain frame, held so that its buffer cannot be freed and reused while cached.
    plain: Bytes,
    window_bits: u8,
    sent: Bytes,
}

/// One shard's compressors and its cache of compressed frames.
pub struct FrameDeflater {
    /// By window bits 9-15.
    compressors: [Option<Compress>; 7],
    cache: VecDeque<Entry>,
    min_bytes: usize,
    stats: DeflateStats,
    scratch: Vec<u8>,
}

impl FrameDeflater {
    /// Messages smaller than `min_bytes` are sent plain.
    pub fn new(min_bytes: usize) -> Self {
        FrameDeflater { compressors: Default::default(), cache: VecDeque::with_capacity(CACHE), min_bytes, stats: DeflateStats::default(), scratch: Vec::new() }
    }

    /// What happened so far.
    pub fn stats(&self) -> DeflateStats {
        self.stats
    }

    /// The frame to queue for a connection compressing with `window_bits` (9-15): `frame`
    /// itself for control frames and messages sent plain, else its compressed form (RSV1).
    pub fn frame_for(&mut self, frame: &Bytes, window_bits: u8) -> Bytes {
        let Some((first, payload)) = data_payload(frame) else { return frame.clone() };
        let same = |e: &Entry| e.window_bits == window_bits && e.plain.as_ptr() == frame.as_ptr() && e.plain.len() == frame.len();
        if let Some(hit) = self.cache.iter().find(|e| same(e)) {
            return hit.sent.clone();
        }
        let sent = if payload.len() < self.min_bytes { None } else { self.compress(first, payload, window_bits) };
        let sent = match sent {
            Some(compressed) => {
                self.stats.compressed = self.stats.compressed.saturating_add(1);
                self.stats.bytes_before = self.stats.bytes_before.saturating_add(payload.len() as u64);
                self.stats.bytes_after = self.stats.bytes_after.saturating_add(frame_payload_len(&compressed) as u64);
                compressed
            }
            None => {
                self.stats.skipped = self.stats.skipped.saturating_add(1);
                frame.clone()
            }
        };
        if self.cache.len() >= CACHE {
            self.cache.pop_front();
        }
        self.cache.push_back(Entry { plain: frame.clone(), window_bits, sent: sent.clone() });
        sent
    }

    /// `payload` deflated from a fresh state into a frame with RSV1, or `None` when that is
    /// not smaller than sending it plain.
    fn compress(&mut self, first: u8, payload: &[u8], window_bits: u8) -> Option<Bytes> {
        let bits = window_bits.clamp(9, 15);
        let slot = self.compressors.get_mut(usize::from(bits.saturating_sub(9)))?;
        let compressor = slot.get_or_insert_with(|| Compress::new_with_window_bits(Compression::fast(), false, bits));
        compressor.reset();
        self.scratch.clear();
        // Room for the worst case (stored blocks and the flush), so one call does it: zlib-rs's
        // fastest level asserts (panics) rather than stop when its output runs short.
        self.scratch.reserve(payload.len().saturating_add(payload.len() / 8).saturating_add(1024));
        compressor.compress_vec(payload, &mut self.scratch, FlushCompress::Sync).ok()?;
        if compressor.total_in() != payload.len() as u64 {
            return None;
        }
        // RFC 7692 §7.2.1: the sync flush's empty stored block (00 00 ff ff) is left off.
        let body = self.scratch.strip_suffix(&[0x00, 0x00, 0xff, 0xff])?;
        if body.len() >= payload.len() {
            return None;
        }
        let opcode = if first & 0x0f == 0x01 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Binary) };
        let header = FrameHeader { opcode, rsv1: true, ..FrameHeader::default() };
        let mut out = BytesMut::with_capacity(header.len(body.len() as u64).saturating_add(body.len()));
        header.format(body.len() as u64, &mut (&mut out).writer()).ok()?;
        out.extend_from_slice(body);
        Some(out.freeze())
    }
}

/// The first byte and payload of a complete, unfragmented text or binary frame without RSV
/// bits (what this server encodes); `None` for anything else.
fn data_payload(frame: &[u8]) -> Option<(u8, &[u8])> {
    let first = *frame.first()?;
    if first & 0xf0 != 0x80 || !matches!(first & 0x0f, 0x01 | 0x02) {
        return None;
    }
    Some((first, super::frame_payload(frame)))
}

fn frame_payload_len(frame: &[u8]) -> usize {
    super::frame_payload(frame).len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{encode_data, ping_frame, DataKind};

    fn inflate(frame: &[u8]) -> Vec<u8> {
        assert_eq!(frame[0] & 0x40, 0x40, "RSV1 set");
        let mut body = super::super::frame_payload(frame).to_vec();
        body.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        let mut out = Vec::with_capacity(1 << 16);
        flate2::Decompress::new(false).decompress_vec(&body, &mut out, flate2::FlushDecompress::Sync).unwrap();
        out
    }

    #[test]
    fn a_broadcast_is_compressed_once_for_every_compressed_member() {
        let mut d = FrameDeflater::new(64);
        let text = "a round of words, a round of words, a round of words ".repeat(20);
        let frame = encode_data(DataKind::Text, text.as_bytes());
        let first = d.frame_for(&frame, 15);
        for _ in 0..9 {
            let again = d.frame_for(&frame.clone(), 15);
            assert_eq!(again.as_ptr(), first.as_ptr(), "the same compressed buffer for every member");
        }
        assert_eq!(d.stats().compressed, 1);
        assert!(first.len() < frame.len() / 4, "{} vs {}", first.len(), frame.len());
        assert_eq!(inflate(&first), text.as_bytes());
        // Another window size is another compression; an equal message in another buffer too.
        let small_window = d.frame_for(&frame, 9);
        assert_eq!(inflate(&small_window), text.as_bytes());
        let other = encode_data(DataKind::Text, text.as_bytes());
        d.frame_for(&other, 15);
        assert_eq!(d.stats().compressed, 3);
    }

    #[test]
    fn control_frames_small_and_incompressible_messages_go_plain() {
        let mut d = FrameDeflater::new(64);
        let ping = ping_frame();
        assert_eq!(d.frame_for(&ping, 15), ping);
        let small = encode_data(DataKind::Text, b"tiny");
        assert_eq!(d.frame_for(&small, 15), small);
        let mut noise = xorshift(0x9e37_79b9_7f4a_7c15);
        let random = encode_data(DataKind::Binary, &(0..2000).map(|_| noise()).collect::<Vec<u8>>());
        assert_eq!(d.frame_for(&random, 15), random, "not smaller compressed: sent plain");
        assert_eq!((d.stats().compressed, d.stats().skipped), (0, 2));
        // Large incompressible messages: zlib-rs's fastest level panicked on a short output
        // buffer (found by Autobahn 12.1.8); the buffer now has room for the worst case.
        let big = encode_data(DataKind::Binary, &(0..256 * 1024).map(|_| noise()).collect::<Vec<u8>>());
        assert_eq!(d.frame_for(&big, 15), big);
    }

    /// Incompressible bytes, reproducibly (xorshift64).
    fn xorshift(mut x: u64) -> impl FnMut() -> u8 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        }
    }
}
