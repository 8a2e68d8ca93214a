//! What instances say to each other about a game room one of them owns and a client reached
//! through the other (the *edge*): the client's connection, its messages, the owner's frames
//! back, and the room API calls (join, summary, membership check) the edge cannot answer.
//!
//! Each message goes to the receiving instance's inbox channel (`{prefix}inst:{id}`), one
//! `PUBLISH` per message, through the sender's one publisher connection, so each connection's
//! messages arrive in order. The format is binary and length-prefixed:
//! `[tag][from: u8 len + bytes][id: u64 BE][fields…]`; `id` is the edge's link (a forwarded
//! connection) or request id, which carries the edge shard in its top 16 bits so the receiving
//! instance knows where to deliver without a lookup.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use crate::rooms::RoomId;
use crate::ws::DataKind;

/// A room API call forwarded to the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// May `actor` open a game connection? (before the edge upgrades)
    Member {
        /// The token's actor id.
        actor: String,
    },
    /// `POST /rooms/{id}/players` with this body; `host` is the Host header for the URLs.
    Join {
        /// The request's Host header.
        host: String,
        /// The request body.
        body: Vec<u8>,
    },
    /// `GET /rooms/{id}`.
    Summary,
    /// The admin API's `GET /api/rooms/{id}` of a game room.
    AdminDetail,
    /// The admin API's `POST /api/rooms/{id}/close` with this body.
    AdminClose {
        /// The request body.
        body: Vec<u8>,
    },
    /// The admin API's `POST /api/rooms/{id}/kick` with this body.
    AdminKick {
        /// The request body.
        body: Vec<u8>,
    },
    /// Every room of the instance, for the admin API's listing (the request's room is ignored).
    Rows,
}

/// One message between instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Edge → owner: a client connected for `actor` with protocol `version`.
    Attach {
        /// The room.
        room: RoomId,
        /// The edge's link id.
        link: u64,
        /// Who (from the token the edge verified).
        actor: String,
        /// Requested protocol version.
        version: String,
    },
    /// Edge → owner: a message from the client.
    FromClient {
        /// The room.
        room: RoomId,
        /// The edge's link id.
        link: u64,
        /// Text or binary.
        kind: DataKind,
        /// The message.
        payload: Vec<u8>,
    },
    /// Edge → owner: the client is gone.
    Detach {
        /// The room.
        room: RoomId,
        /// The edge's link id.
        link: u64,
    },
    /// Owner → edge: a complete WebSocket frame for some of the edge's clients (one message
    /// per frame and edge shard, not per recipient: the encode-once fan-out, across instances).
    ToClients {
        /// The edge's link ids, all on one edge shard (at least one).
        links: Vec<u64>,
        /// The frame, as the owner encoded it.
        frame: Vec<u8>,
    },
    /// Owner → edge: close the client with `code`.
    Close {
        /// The edge's link id.
        link: u64,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Edge → owner: a room API call.
    Request {
        /// The room.
        room: RoomId,
        /// The edge's request id.
        id: u64,
        /// What is asked.
        call: Call,
    },
    /// Owner → edge: the HTTP status and JSON body answering request `id`.
    Response {
        /// The edge's request id.
        id: u64,
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: Vec<u8>,
    },
}

/// A message and the instance that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sending instance's id.
    pub from: String,
    /// The message.
    pub message: Forward,
}

/// The shard a link or request id belongs to on its edge instance.
pub fn shard_of(id: u64) -> usize {
    (id >> 48) as usize
}

/// A link or request id for `shard` (its `counter`-th).
pub fn make_id(shard: usize, counter: u64) -> u64 {
    ((shard as u64 & 0xffff) << 48) | (counter & 0xffff_ffff_ffff)
}

/// The link and request ids of one edge shard. Each process starts them at a random point of
/// the 48-bit space: an instance restarted under the same id (a crash and a quick restart)
/// must not hand out ids of its previous life that an owner may still hold, or that owner's
/// frames, host-only ones included, would reach the new holder of the id.
#[derive(Debug, Clone)]
pub struct IdSource {
    shard: usize,
    counter: u64,
}

impl IdSource {
    /// Ids for `shard`, from a random start.
    pub fn new(shard: usize) -> Self {
        IdSource { shard, counter: rand::random() }
    }

    /// The next id.
    pub fn next_id(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        make_id(self.shard, self.counter)
    }
}

impl Forward {
    /// The room the owner must route this to (messages for the edge have none).
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            Forward::Attach { room, .. } | Forward::FromClient { room, .. } | Forward::Detach { room, .. } | Forward::Request { room, .. } => Some(room),
            Forward::ToClients { .. } | Forward::Close { .. } | Forward::Response { .. } => None,
        }
    }

    /// The edge's link or request id (the first link of a [`Forward::ToClients`]).
    pub fn id(&self) -> u64 {
        match self {
            Forward::Attach { link, .. } | Forward::FromClient { link, .. } | Forward::Detach { link, .. } | Forward::Close { link, .. } => *link,
            Forward::ToClients { links, .. } => links.first().copied().unwrap_or_default(),
            Forward::Request { id, .. } | Forward::Response { id, .. } => *id,
        }
    }
}

const ATTACH: u8 = 1;
const FROM_CLIENT: u8 = 2;
const DETACH: u8 = 3;
const TO_CLIENTS: u8 = 4;
const CLOSE: u8 = 5;
const REQUEST: u8 = 6;
const RESPONSE: u8 = 7;

const CALL_MEMBER: u8 = b'M';
const CALL_JOIN: u8 = b'J';
const CALL_SUMMARY: u8 = b'S';
const CALL_ADMIN_DETAIL: u8 = b'D';
const CALL_ADMIN_CLOSE: u8 = b'C';
const CALL_ADMIN_KICK: u8 = b'K';
const CALL_ROWS: u8 = b'R';

fn short(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let bytes = bytes.get(..bytes.len().min(255)).unwrap_or_default();
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

fn kind_byte(kind: DataKind) -> u8 {
    if kind == DataKind::Text {
        b'T'
    } else {
        b'B'
    }
}

/// Encodes `message` from instance `from` (ids and names longer than 255 bytes are cut; room
/// ids, actor ids and versions are far shorter).
pub fn encode(from: &str, message: &Forward) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let tag = match message {
        Forward::Attach { .. } => ATTACH,
        Forward::FromClient { .. } => FROM_CLIENT,
        Forward::Detach { .. } => DETACH,
        Forward::ToClients { .. } => TO_CLIENTS,
        Forward::Close { .. } => CLOSE,
        Forward::Request { .. } => REQUEST,
        Forward::Response { .. } => RESPONSE,
    };
    out.push(tag);
    short(&mut out, from);
    out.extend_from_slice(&message.id().to_be_bytes());
    if let Some(room) = message.room() {
        short(&mut out, room.as_str());
    }
    match message {
        Forward::Attach { actor, version, .. } => {
            short(&mut out, actor);
            short(&mut out, version);
        }
        Forward::FromClient { kind, payload, .. } => {
            out.push(kind_byte(*kind));
            out.extend_from_slice(payload);
        }
        Forward::Detach { .. } => {}
        Forward::ToClients { links, frame } => {
            // The first link is the id; the rest follow, counted.
            let rest = links.get(1..).unwrap_or_default();
            let rest = rest.get(..rest.len().min(usize::from(u16::MAX))).unwrap_or_default();
            out.extend_from_slice(&(rest.len() as u16).to_be_bytes());
            for link in rest {
                out.extend_from_slice(&link.to_be_bytes());
            }
            out.extend_from_slice(frame);
        }
        Forward::Close { code, reason, .. } => {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(reason.as_bytes());
        }
        Forward::Request { call, .. } => match call {
            Call::Member { actor } => {
                out.push(CALL_MEMBER);
                short(&mut out, actor);
            }
            Call::Join { host, body } => {
                out.push(CALL_JOIN);
                short(&mut out, host);
                out.extend_from_slice(body);
            }
            Call::Summary => out.push(CALL_SUMMARY),
            Call::AdminDetail => out.push(CALL_ADMIN_DETAIL),
            Call::AdminClose { body } => {
                out.push(CALL_ADMIN_CLOSE);
                out.extend_from_slice(body);
            }
            Call::AdminKick { body } => {
                out.push(CALL_ADMIN_KICK);
                out.extend_from_slice(body);
            }
            Call::Rows => out.push(CALL_ROWS),
        },
        Forward::Response { status, body, .. } => {
            out.extend_from_slice(&status.to_be_bytes());
            out.extend_from_slice(body);
        }
    }
    out
}

/// Reads the fields of an encoded message front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.0.get(..n)?;
        self.0 = self.0.get(n..)?;
        Some(taken)
    }

    fn short(&mut self) -> Option<&'a str> {
        let len = self.byte()?;
        std::str::from_utf8(self.take(usize::from(len))?).ok()
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn rest(self) -> Vec<u8> {
        self.0.to_vec()
    }
}

/// Decodes a message; `None` for anything malformed.
pub fn decode(bytes: &[u8]) -> Option<Envelope> {
    let mut r = Reader(bytes);
    let tag = r.byte()?;
    let from = r.short()?.to_string();
    let id = r.u64()?;
    let room = |r: &mut Reader<'_>| r.short().and_then(RoomId::parse);
    let message = match tag {
        ATTACH => {
            let room = room(&mut r)?;
            let actor = r.short()?.to_string();
            let version = r.short()?.to_string();
            Forward::Attach { room, link: id, actor, version }
        }
        FROM_CLIENT => {
            let room = room(&mut r)?;
            let kind = match r.byte()? {
                b'T' => DataKind::Text,
                b'B' => DataKind::Binary,
                _ => return None,
            };
            Forward::FromClient { room, link: id, kind, payload: r.rest() }
        }
        DETACH => Forward::Detach { room: room(&mut r)?, link: id },
        TO_CLIENTS => {
            let more = r.u16()?;
            let mut links = vec![id];
            for _ in 0..more {
                links.push(r.u64()?);
            }
            Forward::ToClients { links, frame: r.rest() }
        }
        CLOSE => {
            let code = r.u16()?;
            let reason = String::from_utf8(r.rest()).ok()?;
            Forward::Close { link: id, code, reason }
        }
        REQUEST => {
            let room = room(&mut r)?;
            let call = match r.byte()? {
                CALL_MEMBER => Call::Member { actor: r.short()?.to_string() },
                CALL_JOIN => {
                    let host = r.short()?.to_string();
                    Call::Join { host, body: r.rest() }
                }
                CALL_SUMMARY => Call::Summary,
                CALL_ADMIN_DETAIL => Call::AdminDetail,
                CALL_ADMIN_CLOSE => Call::AdminClose { body: r.rest() },
                CALL_ADMIN_KICK => Call::AdminKick { body: r.rest() },
                CALL_ROWS => Call::Rows,
                _ => return None,
            };
            Forward::Request { room, id, call }
        }
        RESPONSE => {
            let status = r.u16()?;
            Forward::Response { id, status, body: r.rest() }
        }
        _ => return None,
    };
    Some(Envelope { from, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        RoomId::parse("ROOM42").unwrap()
    }

    #[test]
    fn a_restarted_instance_does_not_hand_out_its_earlier_ids() {
        // Two lives of the same edge shard: their first thousand ids do not meet.
        let (mut before, mut after) = (IdSource::new(5), IdSource::new(5));
        let earlier: std::collections::HashSet<u64> = (0..1000).map(|_| before.next_id()).collect();
        for _ in 0..1000 {
            let id = after.next_id();
            assert_eq!(shard_of(id), 5);
            assert!(!earlier.contains(&id));
        }
    }

    #[test]
    fn every_message_round_trips() {
        let id = make_id(3, 77);
        assert_eq!(shard_of(id), 3);
        let messages = [
            Forward::Attach { room: room(), link: id, actor: "player_1".into(), version: "1.0".into() },
            Forward::FromClient { room: room(), link: id, kind: DataKind::Text, payload: b"{\"type\":\"ACK\"}".to_vec() },
            Forward::FromClient { room: room(), link: id, kind: DataKind::Binary, payload: vec![] },
            Forward::Detach { room: room(), link: id },
            Forward::ToClients { links: vec![id], frame: vec![0x81, 2, b'h', b'i'] },
            Forward::ToClients { links: vec![id, make_id(3, 78), make_id(3, 90)], frame: vec![0x81, 0] },
            Forward::Close { link: id, code: 1012, reason: "moved".into() },
            Forward::Request { room: room(), id, call: Call::Member { actor: "host_x".into() } },
            Forward::Request { room: room(), id, call: Call::Join { host: "edge:8080".into(), body: b"{\"name\":\"A\"}".to_vec() } },
            Forward::Request { room: room(), id, call: Call::Summary },
            Forward::Request { room: room(), id, call: Call::AdminDetail },
            Forward::Request { room: room(), id, call: Call::AdminClose { body: b"{}".to_vec() } },
            Forward::Request { room: room(), id, call: Call::AdminKick { body: b"{\"playerId\":\"p\"}".to_vec() } },
            Forward::Request { room: room(), id, call: Call::Rows },
            Forward::Response { id, status: 201, body: b"{}".to_vec() },
        ];
        for message in messages {
            let bytes = encode("node-b", &message);
            assert_eq!(decode(&bytes), Some(Envelope { from: "node-b".into(), message: message.clone() }), "{message:?}");
            // Every strict prefix that cuts a fixed field is refused, never misread as another message.
            for cut in 0..10.min(bytes.len()) {
                assert_eq!(decode(bytes.get(..cut).unwrap()), None, "{message:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn garbage_is_refused() {
        let mut bad_room = encode("a", &Forward::Detach { room: room(), link: 1 });
        if let Some(last) = bad_room.last_mut() {
            *last = b' ';
        }
        for bad in [&b""[..], &[9, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 1], &[1, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 1], &bad_room] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
