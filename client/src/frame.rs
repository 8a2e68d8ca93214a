//! WebSocket frames (RFC 6455 §5) as a client writes and reads them. Sans-IO.

/// Encodes a client frame with `first` as its first byte (FIN, RSV bits and opcode taken as
/// given, so that tools can build illegal frames) and `payload` masked with `mask`, or unmasked
/// (illegal from a client) when `mask` is `None`.
pub fn encode(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = Vec::with_capacity(payload.len().saturating_add(14));
    out.push(first);
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().zip(m.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A complete frame at the front of a buffer: its first byte (FIN, RSV1, opcode), whether it
/// was masked (a server's never is), and where its payload lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub first: u8,
    pub masked: bool,
    pub payload: std::ops::Range<usize>,
}

impl Frame {
    pub fn opcode(&self) -> u8 {
        self.first & 0x0f
    }

    /// RSV1 on a data frame: a compressed message (permessage-deflate).
    pub fn compressed(&self) -> bool {
        self.first & 0x40 != 0
    }

    /// The frame at the front of `buf`, once all of it is there. A masked frame's payload is
    /// left masked (servers send none).
    pub fn parse(buf: &[u8]) -> Option<Frame> {
        let (&first, &b1) = (buf.first()?, buf.get(1)?);
        let (len, at) = match b1 & 0x7f {
            126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
            127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
            n => (n as usize, 2),
        };
        let masked = b1 & 0x80 != 0;
        let at: usize = if masked { at + 4 } else { at };
        (buf.len() >= at.checked_add(len)?).then_some(Frame { first, masked, payload: at..at + len })
    }
}

/// The status code of a close frame's payload (1005 when it has none).
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_at_each_length_form() {
        for len in [0, 125, 126, 0xffff, 0x10000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let plain = encode(0x82, &payload, None);
            let frame = Frame::parse(&plain).unwrap();
            assert_eq!((frame.opcode(), frame.masked, &plain[frame.payload.clone()]), (2, false, &payload[..]));
            assert!(Frame::parse(&plain[..plain.len() - 1]).is_none() || len == 0);
            let masked = encode(0x81, &payload, Some([1, 2, 3, 4]));
            let frame = Frame::parse(&masked).unwrap();
            let unmasked: Vec<u8> = masked[frame.payload.clone()].iter().zip([1u8, 2, 3, 4].iter().cycle()).map(|(b, k)| b ^ k).collect();
            assert_eq!((frame.masked, unmasked), (true, payload));
        }
        assert_eq!((close_code(&[0x03, 0xe8, b'x']), close_code(&[])), (1000, 1005));
    }
}
