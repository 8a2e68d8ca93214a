//! Incremental decoder for client-to-server frames.
//!
//! Bytes are consumed as they arrive, also in the middle of a frame's payload, so that invalid
//! UTF-8 is detected at the first bad byte rather than when a large message completes, and a
//! declared length over the limit is refused before any memory is reserved for it.

use std::io::Cursor;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::close_code;

/// What the peer sent, one complete message or control frame at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (already validated as UTF-8).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping; the payload must be echoed in a pong.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame with its status code, if it carried one.
    Close(Option<u16>),
}

/// A violation of RFC 6455 or of a configured limit; each maps to the close code to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RSV bits set without a negotiated extension.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// An opcode the RFC reserves.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A client frame without a mask.
    #[error("client frames must be masked")]
    Unmasked,
    /// A control frame that is fragmented or carries more than 125 bytes.
    #[error("control frames must be final and at most 125 bytes")]
    BadControlFrame,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is still open.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A close frame whose payload is one byte or whose code may not be sent.
    #[error("invalid close frame")]
    BadClose,
    /// Text (or a close reason) that is not valid UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A 64-bit payload length with its most significant bit set (RFC 6455 §5.2 forbids it).
    #[error("64-bit payload length with the most significant bit set")]
    BadLength,
    /// A message larger than the configured limit.
    #[error("message exceeds {0} bytes")]
    MessageTooBig(usize),
    /// A message in more frames than the configured limit (an endless stream of small or empty
    /// continuation frames never completes a message, so no message limit would apply).
    #[error("message fragmented into more than {0} frames")]
    TooManyFragments(usize),
    /// A compressed message that does not inflate (permessage-deflate).
    #[error("compressed message does not inflate")]
    BadCompression,
}

impl ProtocolError {
    /// The close code that reports this error to the peer.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::BadCompression => close_code::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig(_) | ProtocolError::TooManyFragments(_) => close_code::MESSAGE_TOO_BIG,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

enum State {
    /// Waiting for a frame header.
    Header,
    /// Reading a data frame's payload into the current message.
    Data { mask: [u8; 4], offset: usize, remaining: usize, fin: bool },
    /// Waiting for a control frame's whole (small) payload.
    Control { opcode: Control, mask: [u8; 4], len: usize },
}

/// A message being assembled from one or more data frames.
struct Partial {
    text: bool,
    data: BytesMut,
    /// Prefix of `data` known to be valid UTF-8 (text only); the rest is an incomplete sequence.
    utf8_valid: usize,
    /// Data frames of this message so far.
    frames: usize,
    /// Sent compressed (RSV1 on its first frame): chunks are inflated as they arrive.
    compressed: bool,
}

/// The inflating side of permessage-deflate for one connection. The window is the largest (it
/// reads whatever window the client compressed with). The server always asks
/// `client_no_context_takeover`, so each message inflates on its own: the connection holds an
/// inflater only while a message arrives, and gives it back to its thread's spare at the
/// message's end (a shard's connections share one between their messages, instead of ~20 KiB
/// each).
struct Inflate {
    state: Option<Box<Decompress>>,
}

/// Most bytes inflated per step: the message limit is checked after each, so a small frame
/// that inflates past it is refused having produced at most this much more.
const INFLATE_STEP: usize = 16 * 1024;
/// Ends every compressed message (RFC 7692 §7.2.2): the empty stored block the sender removed.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Decodes masked client frames into [`Event`]s.
///
/// Call [`Decoder::poll_event`] with the connection's read buffer after every read until it
/// returns `Ok(None)`. After an error the decoder is finished: every later call returns it again.
pub struct Decoder {
    max_message_bytes: usize,
    max_fragments: usize,
    state: State,
    partial: Option<Partial>,
    error: Option<ProtocolError>,
    frames_seen: u64,
    inflate: Option<Inflate>,
}

impl Decoder {
    /// A decoder refusing messages over `max_message_bytes` (and in more than 1,024 frames).
    pub fn new(max_message_bytes: usize) -> Self {
        Decoder { max_message_bytes, max_fragments: 1024, state: State::Header, partial: None, error: None, frames_seen: 0, inflate: None }
    }

    /// Accepts compressed messages (permessage-deflate was negotiated, with
    /// `client_no_context_takeover`).
    pub fn with_deflate(mut self) -> Self {
        self.inflate = Some(Inflate { state: None });
        self
    }

    /// Refuses messages in more than `max_fragments` frames instead.
    pub fn with_max_fragments(mut self, max_fragments: usize) -> Self {
        self.max_fragments = max_fragments;
        self
    }

    /// Frame headers decoded so far (for metrics).
    pub fn frames_seen(&self) -> u64 {
        self.frames_seen
    }

    /// How many more bytes the current frame needs; a hint for sizing the next read.
    pub fn bytes_wanted(&self) -> usize {
        match self.state {
            State::Header => 14,
            State::Data { remaining, .. } => remaining,
            State::Control { len, .. } => len,
        }
    }

    /// Consumes bytes from `buf` and returns the next complete event, `Ok(None)` when more bytes
    /// are needed.
    pub fn poll_event(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let result = self.step(buf);
        if let Err(err) = &result {
            self.error = Some(err.clone());
        }
        result
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        loop {
            match self.state {
                State::Header => {
                    if !self.read_header(buf)? {
                        return Ok(None);
                    }
                }
                State::Control { opcode, mask, len } => {
                    if buf.len() < len {
                        return Ok(None);
                    }
                    let mut payload = buf.split_to(len);
                    unmask(&mut payload, mask, 0);
                    self.state = State::Header;
                    return control_event(opcode, payload.freeze()).map(Some);
                }
                State::Data { mask, offset, remaining, fin } => {
                    let take = remaining.min(buf.len());
                    if take == 0 && remaining > 0 {
                        return Ok(None);
                    }
                    let mut chunk = buf.split_to(take);
                    unmask(&mut chunk, mask, offset);
                    let remaining = remaining.saturating_sub(take);
                    // The offset only matters modulo 4 (the mask's phase).
                    self.state = if remaining == 0 { State::Header } else { State::Data { mask, offset: offset.wrapping_add(take), remaining, fin } };
                    let partial = self.partial.as_mut().ok_or(ProtocolError::UnexpectedContinuation)?;
                    if partial.compressed {
                        let inflate = self.inflate.as_mut().ok_or(ProtocolError::ReservedBits)?;
                        inflate_into(inflate, partial, &chunk, self.max_message_bytes)?;
                        if remaining == 0 && fin {
                            inflate_into(inflate, partial, &DEFLATE_TAIL, self.max_message_bytes)?;
                            if let Some(state) = inflate.state.take() {
                                give_back_inflater(state);
                            }
                        }
                    } else if partial.data.is_empty() && remaining == 0 && fin {
                        // The whole message is this one chunk: hand it on without copying.
                        partial.data = chunk;
                    } else {
                        partial.data.extend_from_slice(&chunk);
                    }
                    if partial.text {
                        check_utf8(partial)?;
                    }
                    if remaining == 0 && fin {
                        return self.finish_message().map(Some);
                    }
                    if remaining > 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Parses and checks one header; returns false when `buf` does not hold all of it yet.
    fn read_header(&mut self, buf: &mut BytesMut) -> Result<bool, ProtocolError> {
        let mut cursor = Cursor::new(&buf[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(false),
            Err(_) => {
                let opcode = buf.first().map_or(0, |b| b & 0x0f);
                return Err(ProtocolError::ReservedOpcode(opcode));
            }
        };
        let header_len = cursor.position() as usize;
        if len >> 63 != 0 {
            return Err(ProtocolError::BadLength);
        }
        self.frames_seen = self.frames_seen.saturating_add(1);
        // RSV1 means "compressed", and only on the first frame of a data message of a
        // connection that negotiated permessage-deflate (RFC 7692 §6.1).
        let first_data = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        if header.rsv2 || header.rsv3 || (header.rsv1 && (self.inflate.is_none() || !first_data)) {
            return Err(ProtocolError::ReservedBits);
        }
        let mask = header.mask.ok_or(ProtocolError::Unmasked)?;
        match header.opcode {
            OpCode::Control(opcode) => {
                if !header.is_final || len > 125 {
                    return Err(ProtocolError::BadControlFrame);
                }
                self.state = State::Control { opcode, mask, len: len as usize };
            }
            OpCode::Data(opcode) => {
                let text = match (opcode, self.partial.is_some()) {
                    (Data::Continue, false) => return Err(ProtocolError::UnexpectedContinuation),
                    (Data::Continue, true) => None,
                    (Data::Text, false) => Some(true),
                    (Data::Binary, false) => Some(false),
                    (_, true) => return Err(ProtocolError::ExpectedContinuation),
                    (Data::Reserved(op), false) => return Err(ProtocolError::ReservedOpcode(op)),
                };
                if let Some(partial) = self.partial.as_mut().filter(|_| text.is_none()) {
                    partial.frames = partial.frames.saturating_add(1);
                    if partial.frames > self.max_fragments {
                        return Err(ProtocolError::TooManyFragments(self.max_fragments));
                    }
                }
                let so_far = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
                if so_far.saturating_add(len) > self.max_message_bytes as u64 {
                    return Err(ProtocolError::MessageTooBig(self.max_message_bytes));
                }
                if let Some(text) = text {
                    self.partial = Some(Partial { text, data: BytesMut::new(), utf8_valid: 0, frames: 1, compressed: header.rsv1 });
                }
                self.state = State::Data { mask, offset: 0, remaining: len as usize, fin: header.is_final };
            }
        }
        buf.advance(header_len);
        Ok(true)
    }

    fn finish_message(&mut self) -> Result<Event, ProtocolError> {
        let partial = self.partial.take().ok_or(ProtocolError::UnexpectedContinuation)?;
        if !partial.text {
            return Ok(Event::Binary(partial.data.freeze()));
        }
        if partial.utf8_valid != partial.data.len() {
            return Err(ProtocolError::InvalidUtf8);
        }
        Ok(Event::Text(partial.data.freeze()))
    }
}

thread_local! {
    /// This thread's (shard's) inflater between its connections' compressed messages: one,
    /// reset, ready for the next.
    static SPARE_INFLATER: std::cell::Cell<Option<Box<Decompress>>> = const { std::cell::Cell::new(None) };
}

fn take_inflater() -> Box<Decompress> {
    SPARE_INFLATER.with(std::cell::Cell::take).unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, 15)))
}

fn give_back_inflater(mut state: Box<Decompress>) {
    state.reset(false);
    SPARE_INFLATER.with(|spare| {
        let kept = spare.take().unwrap_or(state);
        spare.set(Some(kept));
    });
}

/// Inflates `input` onto the message, refusing it once it passes `max` bytes (checked every
/// [`INFLATE_STEP`], so a bomb is stopped before its memory is spent).
fn inflate_into(inflate: &mut Inflate, partial: &mut Partial, input: &[u8], max: usize) -> Result<(), ProtocolError> {
    let state = inflate.state.get_or_insert_with(take_inflater);
    let mut input = input;
    let mut step = [0u8; INFLATE_STEP];
    loop {
        let (before_in, before_out) = (state.total_in(), state.total_out());
        let status = state.decompress(input, &mut step, FlushDecompress::Sync).map_err(|_| ProtocolError::BadCompression)?;
        let consumed = usize::try_from(state.total_in().saturating_sub(before_in)).unwrap_or(usize::MAX);
        let produced = usize::try_from(state.total_out().saturating_sub(before_out)).unwrap_or(usize::MAX);
        input = input.get(consumed..).unwrap_or_default();
        if partial.data.len().saturating_add(produced) > max {
            return Err(ProtocolError::MessageTooBig(max));
        }
        partial.data.extend_from_slice(step.get(..produced).unwrap_or_default());
        if partial.text {
            check_utf8(partial)?;
        }
        if status == Status::StreamEnd {
            // The client ended its stream (BFINAL); the next message starts a fresh one.
            state.reset(false);
            return Ok(());
        }
        // Done once the input is used up and the output did not fill the step (nothing more
        // is buffered inside).
        if input.is_empty() && produced < INFLATE_STEP {
            return Ok(());
        }
        if consumed == 0 && produced == 0 {
            return Err(ProtocolError::BadCompression);
        }
    }
}

/// Validates what was appended since the last check; an incomplete trailing sequence is fine
/// until the message ends, an impossible one fails at once.
fn check_utf8(partial: &mut Partial) -> Result<(), ProtocolError> {
    let unchecked = partial.data.get(partial.utf8_valid..).unwrap_or_default();
    match std::str::from_utf8(unchecked) {
        Ok(_) => partial.utf8_valid = partial.data.len(),
        Err(e) if e.error_len().is_none() => partial.utf8_valid = partial.utf8_valid.saturating_add(e.valid_up_to()),
        Err(_) => return Err(ProtocolError::InvalidUtf8),
    }
    Ok(())
}

fn control_event(opcode: Control, payload: Bytes) -> Result<Event, ProtocolError> {
    match opcode {
        Control::Ping => Ok(Event::Ping(payload)),
        Control::Pong => Ok(Event::Pong),
        Control::Close => {
            let Some((code, reason)) = payload.split_first_chunk::<2>() else {
                return if payload.is_empty() { Ok(Event::Close(None)) } else { Err(ProtocolError::BadClose) };
            };
            let code = u16::from_be_bytes(*code);
            if !CloseCode::from(code).is_allowed() {
                return Err(ProtocolError::BadClose);
            }
            std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Event::Close(Some(code)))
        }
        Control::Reserved(op) => Err(ProtocolError::ReservedOpcode(op)),
    }
}

/// XORs `data` with the mask, starting at byte `offset` of the frame payload.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut rotated = mask;
    rotated.rotate_left(offset % 4);
    let word = u32::from_ne_bytes(rotated);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u32::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (byte, m) in chunks.into_remainder().iter_mut().zip(rotated) {
        *byte ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        partyflow_client::frame::encode(first, payload, Some([1, 2, 3, 4]))
    }

    fn decode_all(dec: &mut Decoder, bytes: &[u8]) -> Result<Vec<Event>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = vec![];
        while let Some(ev) = dec.poll_event(&mut buf)? {
            out.push(ev);
        }
        Ok(out)
    }

    #[test]
    fn text_message_byte_by_byte() {
        let bytes = frame(0x81, "héllo".as_bytes());
        let mut dec = Decoder::new(1024);
        let mut buf = BytesMut::new();
        let mut events = vec![];
        for b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(ev) = dec.poll_event(&mut buf).unwrap() {
                events.push(ev);
            }
        }
        assert_eq!(events, vec![Event::Text(Bytes::from("héllo"))]);
    }

    #[test]
    fn fragments_with_interleaved_ping() {
        let mut bytes = frame(0x01, b"ab");
        bytes.extend(frame(0x89, b"p"));
        bytes.extend(frame(0x80, b"cd"));
        let events = decode_all(&mut Decoder::new(1024), &bytes).unwrap();
        assert_eq!(events, vec![Event::Ping(Bytes::from("p")), Event::Text(Bytes::from("abcd"))]);
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_completes() {
        let bytes = frame(0x81, b"ok\xed\xa0\x80 and more text");
        let mut dec = Decoder::new(1024);
        // Header + 5 payload bytes: the surrogate is already impossible.
        let mut buf = BytesMut::from(&bytes[..2 + 4 + 5]);
        assert_eq!(dec.poll_event(&mut buf), Err(ProtocolError::InvalidUtf8));
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
    }

    #[test]
    fn endless_empty_continuations_are_cut_at_the_fragment_limit() {
        let mut bytes = frame(0x01, b"a");
        for _ in 0..4 {
            bytes.extend(frame(0x00, b""));
        }
        bytes.extend(frame(0x80, b"z"));
        // Six frames: within a limit of six, over a limit of five.
        assert_eq!(decode_all(&mut Decoder::new(1024).with_max_fragments(6), &bytes).unwrap(), vec![Event::Text(Bytes::from("az"))]);
        let refused = decode_all(&mut Decoder::new(1024).with_max_fragments(5), &bytes);
        assert_eq!(refused, Err(ProtocolError::TooManyFragments(5)));
        assert_eq!(ProtocolError::TooManyFragments(5).close_code(), close_code::MESSAGE_TOO_BIG);
    }

    #[test]
    fn utf8_split_across_fragments_is_accepted() {
        let euro = "€".as_bytes();
        let mut bytes = frame(0x01, &euro[..1]);
        bytes.extend(frame(0x00, &euro[1..2]));
        bytes.extend(frame(0x80, &euro[2..]));
        assert_eq!(decode_all(&mut Decoder::new(16), &bytes).unwrap(), vec![Event::Text(Bytes::from("€"))]);
    }

    #[test]
    fn truncated_utf8_at_message_end_is_invalid() {
        let bytes = frame(0x81, &"€".as_bytes()[..2]);
        assert_eq!(decode_all(&mut Decoder::new(16), &bytes), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn protocol_violations_and_their_codes() {
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (frame(0xC1, b"x"), ProtocolError::ReservedBits),
            (frame(0x83, b""), ProtocolError::ReservedOpcode(3)),
            (frame(0x8B, b""), ProtocolError::ReservedOpcode(0xb)),
            (vec![0x81, 0x01, b'x'], ProtocolError::Unmasked),
            (frame(0x09, b""), ProtocolError::BadControlFrame),
            (frame(0x89, &[0u8; 126]), ProtocolError::BadControlFrame),
            (frame(0x80, b"x"), ProtocolError::UnexpectedContinuation),
            ([frame(0x01, b"x"), frame(0x81, b"y")].concat(), ProtocolError::ExpectedContinuation),
            (frame(0x88, &[3]), ProtocolError::BadClose),
            (frame(0x88, &1005u16.to_be_bytes()), ProtocolError::BadClose),
            (frame(0x88, &[0x03, 0xe8, 0xff]), ProtocolError::InvalidUtf8),
        ];
        for (bytes, expected) in cases {
            let got = decode_all(&mut Decoder::new(1024), &bytes);
            assert_eq!(got, Err(expected.clone()), "{bytes:?}");
            let code = expected.close_code();
            assert!(code == 1002 || code == 1007);
        }
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        let mut dec = Decoder::new(100);
        let mut buf = BytesMut::from(&[0x82u8, 0xff, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4][..]);
        assert_eq!(dec.poll_event(&mut buf), Err(ProtocolError::MessageTooBig(100)));
        let mut bytes = frame(0x02, &[0u8; 60]);
        bytes.extend(frame(0x80, &[0u8; 60]));
        assert_eq!(decode_all(&mut Decoder::new(100), &bytes), Err(ProtocolError::MessageTooBig(100)));
        // A 64-bit length with the top bit set is a protocol error, not merely too big.
        let mut buf = BytesMut::from(&[0x82u8, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4][..]);
        let err = Decoder::new(100).poll_event(&mut buf).unwrap_err();
        assert_eq!((err.close_code(), err), (1002, ProtocolError::BadLength));
    }

    #[test]
    fn close_frames() {
        assert_eq!(decode_all(&mut Decoder::new(10), &frame(0x88, b"")).unwrap(), vec![Event::Close(None)]);
        let ok = frame(0x88, &[0x0f, 0xa0, b'b', b'y', b'e']);
        assert_eq!(decode_all(&mut Decoder::new(10), &ok).unwrap(), vec![Event::Close(Some(4000))]);
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = Decoder::new(10);
        let mut buf = BytesMut::from(&frame(0x83, b"")[..]);
        assert!(dec.poll_event(&mut buf).is_err());
        let mut good = BytesMut::from(&frame(0x81, b"a")[..]);
        assert!(dec.poll_event(&mut good).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut dec = Decoder::new(256);
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = dec.poll_event(&mut buf) {}
        }
    }

    /// What a client with permessage-deflate sends: raw deflate, sync-flushed, tail removed.
    fn deflate(c: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let _ = c.compress_vec(data, &mut out, flate2::FlushCompress::Sync);
        out.truncate(out.len() - 4);
        out
    }

    fn client_deflater() -> flate2::Compress {
        flate2::Compress::new(flate2::Compression::default(), false)
    }

    #[test]
    fn compressed_messages_inflate_each_on_its_own() {
        let mut dec = Decoder::new(1 << 20).with_deflate();
        let hello = "hello hello hello, compressed world";
        let one = frame(0xC1, &deflate(&mut client_deflater(), hello.as_bytes()));
        let events = decode_all(&mut dec, &[one.clone(), one].concat()).unwrap();
        assert_eq!(events, vec![Event::Text(Bytes::from(hello)), Event::Text(Bytes::from(hello))]);
        // Fragmented: RSV1 on the first frame only, then a plain message.
        let body = deflate(&mut client_deflater(), b"\x00\x01binary");
        let (a, b) = body.split_at(body.len() / 2);
        let mut bytes = [frame(0x42, a), frame(0x80, b)].concat();
        bytes.extend(frame(0x81, b"plain"));
        assert_eq!(decode_all(&mut dec, &bytes).unwrap(), vec![Event::Binary(Bytes::from_static(b"\x00\x01binary")), Event::Text(Bytes::from("plain"))]);
        // A client that kept its context although asked not to: its second message refers back
        // into a window the server no longer has, and is refused (1007).
        let mut kept = client_deflater();
        let text = "a sentence long enough to be referred back to, later on".repeat(4);
        let first = frame(0xC1, &deflate(&mut kept, text.as_bytes()));
        let second = frame(0xC1, &deflate(&mut kept, text.as_bytes()));
        let mut dec = Decoder::new(1 << 20).with_deflate();
        assert_eq!(decode_all(&mut dec, &first).unwrap(), vec![Event::Text(Bytes::from(text))]);
        assert_eq!(decode_all(&mut dec, &second).unwrap_err().close_code(), close_code::INVALID_PAYLOAD);
    }

    #[test]
    fn connections_share_the_threads_inflater_between_messages() {
        // Two connections' fragmented messages interleave: each holds an inflater while its
        // message arrives, and neither holds one once its message is whole.
        let (mut one, mut two) = (Decoder::new(1 << 20).with_deflate(), Decoder::new(1 << 20).with_deflate());
        let texts = ["first connection's message, ".repeat(20), "the second connection's own words ".repeat(20)];
        let bodies: Vec<Vec<u8>> = texts.iter().map(|t| deflate(&mut client_deflater(), t.as_bytes())).collect();
        let halves: Vec<(&[u8], &[u8])> = bodies.iter().map(|b| b.split_at(b.len() / 2)).collect();
        for round in 0..2 {
            assert!(decode_all(&mut one, &frame(0x41, halves[0].0)).unwrap().is_empty());
            assert!(decode_all(&mut two, &frame(0x41, halves[1].0)).unwrap().is_empty());
            assert!(one.inflate.as_ref().unwrap().state.is_some() && two.inflate.as_ref().unwrap().state.is_some());
            assert_eq!(decode_all(&mut one, &frame(0x80, halves[0].1)).unwrap(), vec![Event::Text(Bytes::from(texts[0].clone()))], "round {round}");
            assert_eq!(decode_all(&mut two, &frame(0x80, halves[1].1)).unwrap(), vec![Event::Text(Bytes::from(texts[1].clone()))], "round {round}");
            assert!(one.inflate.as_ref().unwrap().state.is_none() && two.inflate.as_ref().unwrap().state.is_none());
        }
    }

    #[test]
    fn compression_misuse_is_refused_with_its_close_code() {
        let compressed = deflate(&mut client_deflater(), b"x");
        // RSV1 without negotiation, on a continuation, on a control frame: 1002.
        for (negotiated, bytes) in [(false, frame(0xC1, &compressed)), (true, [frame(0x01, b"a"), frame(0xC0, b"b")].concat()), (true, frame(0xC9, b""))] {
            let dec = Decoder::new(1024);
            let mut dec = if negotiated { dec.with_deflate() } else { dec };
            let err = decode_all(&mut dec, &bytes).unwrap_err();
            assert_eq!((err.clone(), err.close_code()), (ProtocolError::ReservedBits, close_code::PROTOCOL_ERROR));
        }
        // Garbage that does not inflate: 1007; text that inflates to bad UTF-8: 1007.
        let mut dec = Decoder::new(1024).with_deflate();
        assert_eq!(decode_all(&mut dec, &frame(0xC1, &[0xff, 0xff, 0xff])).unwrap_err().close_code(), close_code::INVALID_PAYLOAD);
        let mut dec = Decoder::new(1024).with_deflate();
        let bad = deflate(&mut client_deflater(), &[0xc3, 0x28]);
        assert_eq!(decode_all(&mut dec, &frame(0xC1, &bad)).unwrap_err(), ProtocolError::InvalidUtf8);
    }

    #[test]
    fn an_inflate_bomb_is_stopped_at_the_message_limit() {
        // 64 MiB of zeros compress to about 64 KiB; the limit is 1 MiB.
        let zeros = vec![0u8; 64 << 20];
        let bomb = deflate(&mut flate2::Compress::new(flate2::Compression::best(), false), &zeros);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        let mut dec = Decoder::new(1 << 20).with_deflate();
        let err = decode_all(&mut dec, &frame(0xC2, &bomb)).unwrap_err();
        assert_eq!((err.clone(), err.close_code()), (ProtocolError::MessageTooBig(1 << 20), close_code::MESSAGE_TOO_BIG));
    }
}
