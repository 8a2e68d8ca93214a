//! The message one instance publishes for a relay room: who published it, text or binary, and
//! the payload, in one buffer: `[id length: u8][instance id][kind: b'T' | b'B'][payload]`.
//! The instance id lets each instance skip its own publications (it has already delivered them
//! locally).
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use crate::ws::DataKind;

/// A decoded publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication<'a> {
    /// The publishing instance.
    pub instance: &'a str,
    /// Text or binary.
    pub kind: DataKind,
    /// The message.
    pub payload: &'a [u8],
}

/// Encodes a publication (`instance` is at most 255 bytes; longer ids are cut).
pub fn encode(instance: &str, kind: DataKind, payload: &[u8]) -> Vec<u8> {
    let id = instance.as_bytes();
    let id = id.get(..id.len().min(255)).unwrap_or_default();
    let mut out = Vec::with_capacity(id.len().saturating_add(payload.len()).saturating_add(2));
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.push(if kind == DataKind::Text { b'T' } else { b'B' });
    out.extend_from_slice(payload);
    out
}

/// Decodes a publication; `None` for anything malformed.
pub fn decode(bytes: &[u8]) -> Option<Publication<'_>> {
    let (&len, rest) = bytes.split_first()?;
    let id = rest.get(..usize::from(len))?;
    let (&kind, payload) = rest.get(usize::from(len)..)?.split_first()?;
    let kind = match kind {
        b'T' => DataKind::Text,
        b'B' => DataKind::Binary,
        _ => return None,
    };
    Some(Publication { instance: std::str::from_utf8(id).ok()?, kind, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let bytes = encode("node-a:8080", DataKind::Text, b"hello");
        assert_eq!(decode(&bytes), Some(Publication { instance: "node-a:8080", kind: DataKind::Text, payload: b"hello" }));
        let empty = encode("x", DataKind::Binary, b"");
        assert_eq!(decode(&empty).unwrap().payload, b"");
        for bad in [&b""[..], &[5, b'a'], &[1, b'a', b'X', 1], &[1, 0xff, b'T']] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
