//! Server-to-client frame encoding: header and payload in one contiguous `Bytes`.

use bytes::{BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

fn encode(opcode: OpCode, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    let mut out = BytesMut::with_capacity(header.len(len as u64).saturating_add(len));
    // Formatting into an in-memory buffer cannot fail; a failure would be a tungstenite bug, and
    // an empty frame is the safest thing to return then.
    if header.format(len as u64, &mut (&mut out).writer()).is_err() {
        return Bytes::new();
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out.freeze()
}

/// A complete unfragmented, unmasked data frame, ready to be shared by every recipient.
pub fn encode_data(kind: DataKind, payload: &[u8]) -> Bytes {
    let opcode = match kind {
        DataKind::Text => OpCode::Data(Data::Text),
        DataKind::Binary => OpCode::Data(Data::Binary),
    };
    encode(opcode, &[payload])
}

/// The payload of a complete unmasked frame made by this module (header skipped).
pub fn frame_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header..).unwrap_or_default()
}

/// A pong answering a ping with `payload` (at most 125 bytes, checked by the decoder).
pub fn encode_pong(payload: &[u8]) -> Bytes {
    encode(OpCode::Control(Control::Pong), &[payload])
}

/// A close frame with `code` and a reason cut to fit the 125-byte control payload limit.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let reason = reason.get(..end).unwrap_or("");
    encode(OpCode::Control(Control::Close), &[&code.to_be_bytes(), reason.as_bytes()])
}

/// The server's heartbeat ping: empty payload, shared by every connection.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_text_frame_layout() {
        assert_eq!(&encode_data(DataKind::Text, b"hi")[..], &[0x81, 2, b'h', b'i']);
    }

    #[test]
    fn extended_lengths() {
        let f = encode_data(DataKind::Binary, &[7u8; 300]);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        let f = encode_data(DataKind::Binary, &vec![0u8; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let f = encode_close(1001, &"é".repeat(100));
        assert_eq!(f[0], 0x88);
        let len = f[1] as usize;
        assert!(len <= 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 1001);
    }
}
