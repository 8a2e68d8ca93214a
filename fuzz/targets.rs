//! The bodies of the fuzz targets: each takes arbitrary bytes and must never panic, whatever
//! they are. Shared by `cargo fuzz` (`fuzz_targets/*.rs`, one per body) and by the stable
//! fallback (`tests/fuzz_stable.rs`), which runs the same bodies over the seed corpus and
//! mutations of it when no nightly toolchain with `cargo fuzz` is at hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use partyflow::auth::TokenKey;
use partyflow::cluster::{envelope, forward};
use partyflow::game::words::WordPack;
use partyflow::game::{Command, GameConfig};
use partyflow::http::{parse_head, Route};
use partyflow::rooms::{GameRoom, RoomId, RoomPolicy};
use partyflow::store::RoomSnapshot;
use partyflow::ws::{validate_upgrade, DataKind, Decoder, Event};

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (as in `fuzz_targets/`) and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("http_request", http_request),
    ("ws_frames", ws_frames),
    ("ws_inflate", ws_inflate),
    ("game_message", game_message),
    ("token", token),
    ("cluster_messages", cluster_messages),
    ("snapshot", snapshot),
    ("room_session", room_session),
    ("pubsub_message", pubsub_message),
];

/// An HTTP request head: parsing, framing, routing and the upgrade checks.
pub fn http_request(data: &[u8]) {
    if let Ok(Some((request, _))) = parse_head(data, 8192) {
        let _ = request.body_length();
        let _ = Route::parse(&request.target);
        let _ = validate_upgrade(&request, &[]);
        let _ = validate_upgrade(&request, &["https://example.com".to_string()]);
    }
}

/// A WebSocket byte stream, read in pieces of the first byte's size: fragmentation, control
/// frames and UTF-8 state across arbitrary read splits.
pub fn ws_frames(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else { return };
    let mut decoder = Decoder::new(4096).with_max_fragments(64);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(usize::from(split).max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.poll_event(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = e.close_code();
                    return;
                }
            }
        }
    }
}

/// A compressed message (permessage-deflate) from a client: its bytes after a three-byte head
/// are the deflate data; the head picks text or binary, where the message is split into two
/// frames and the size of the reads. Inflated under a 64 KiB limit, twice (the second time with
/// the inflater the first one gave back).
pub fn ws_inflate(data: &[u8]) {
    let [flags, split, read, payload @ ..] = data else { return };
    let opcode = if flags & 1 == 0 { 0x1 } else { 0x2 };
    let at = payload.len() * usize::from(*split) / 256;
    let mut stream = Vec::new();
    for _ in 0..2 {
        let (first, rest) = payload.split_at(at);
        if rest.is_empty() {
            stream.extend(partyflow_client::frame::encode(0xC0 | opcode, first, Some([1, 2, 3, 4])));
        } else {
            stream.extend(partyflow_client::frame::encode(0x40 | opcode, first, Some([1, 2, 3, 4])));
            stream.extend(partyflow_client::frame::encode(0x80, rest, Some([5, 6, 7, 8])));
        }
    }
    let mut decoder = Decoder::new(64 * 1024).with_deflate();
    let mut buf = BytesMut::new();
    for piece in stream.chunks(usize::from(*read).max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.poll_event(&mut buf) {
                // Whatever the data, never a message past the limit, never text that is not UTF-8.
                Ok(Some(Event::Binary(message))) => assert!(message.len() <= 64 * 1024),
                Ok(Some(Event::Text(message))) => assert!(message.len() <= 64 * 1024 && std::str::from_utf8(&message).is_ok()),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = e.close_code();
                    return;
                }
            }
        }
    }
}

/// A client message: the envelope and the command validation.
pub fn game_message(data: &[u8]) {
    if let Ok(msg) = partyflow::protocol::parse_client(data) {
        let _ = Command::parse(&msg.kind, &msg.payload);
    }
}

/// A token presented at the upgrade.
pub fn token(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TokenKey::from_secret("fuzz").verify(text, 1_800_000_000);
    }
}

/// What another instance may publish: relay publications and game-room forwarding.
pub fn cluster_messages(data: &[u8]) {
    let _ = envelope::decode(data);
    let _ = forward::decode(data);
}

/// A stored room snapshot, decoded and restored.
pub fn snapshot(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(snapshot) = RoomSnapshot::decode(text) else { return };
    let packs: Vec<Arc<WordPack>> = WordPack::shipped().into_iter().map(Arc::new).collect();
    let _ = GameRoom::<u32>::recover(&snapshot, &packs, RoomPolicy::default(), Instant::now(), 1_700_000_000_000);
}

/// A room with a host and two players connected, then the input as a sequence of messages
/// (separated by newlines, each from the connection its first byte picks) with time moving:
/// every command, `ACK`, `HEARTBEAT` and `RECONNECT` (backfill and snapshot paths) on a live
/// game.
pub fn room_session(data: &[u8]) {
    let Some(pack) = WordPack::shipped().into_iter().next() else { return };
    let config = GameConfig {
        max_players: 10,
        num_teams: 2,
        rounds: 2,
        round_duration: Duration::from_secs(10),
        countdown: 1,
        score_review: Duration::from_secs(1),
        pack: Arc::new(pack),
        seed: 7,
    };
    let Some(id) = RoomId::parse("FUZZ42") else { return };
    let mut now = Instant::now();
    let mut room: GameRoom<u32> = GameRoom::new(id, "host", "Host", config, RoomPolicy::default(), now, 1_700_000_000_000);
    for (conn, actor) in [(0u32, "host"), (1, "p1"), (2, "p2")] {
        if actor != "host" {
            let _ = room.join(now, actor, actor);
        }
        let _ = room.connect(now, conn, actor, "1.0");
    }
    for line in data.split(|b| *b == b'\n') {
        let Some((&pick, message)) = line.split_first() else { continue };
        let conn = u32::from(pick % 4);
        match pick / 4 % 8 {
            0 => room.disconnect(now, conn),
            1 => {
                let actor = ["host", "p1", "p2", "nobody"].get(usize::from(pick % 4)).copied().unwrap_or("host");
                let _ = room.connect(now, conn, actor, "1.0");
            }
            _ => room.handle_message(now, conn, DataKind::Text, message),
        }
        now += Duration::from_millis(u64::from(pick) * 97);
        if room.poll_timeout().is_some_and(|at| at <= now) {
            room.handle_timeout(now);
        }
        while room.poll_output().is_some() {}
    }
}

/// `/pubsub` client messages (one per line, each from the connection its first byte picks)
/// through the parser, the sessions (rate limits, the built-in handlers) and two shards'
/// rooms; and the same bytes as another instance's publication.
pub fn pubsub_message(data: &[u8]) {
    use partyflow::metrics::Metrics;
    use partyflow::pubsub::{Conn, ConnRef, Handlers, Output, PubSubShard, RoomPatterns, Session, ShardMessage};

    let now = Instant::now();
    let (handlers, metrics) = (Handlers::default(), Metrics::new(2, now));
    let mut shards: Vec<PubSubShard> = (0..2).map(|i| PubSubShard::new(i, 2, true)).collect();
    let mut sessions: Vec<Session> = (0..3usize)
        .map(|key| {
            let conn =
                Conn::new(ConnRef { shard: key % 2, key, serial: 1 }, format!("c{key}").into(), format!("u{}", key % 2).into(), None, RoomPatterns::any());
            Session::new(conn, now, 4, 1000.0)
        })
        .collect();
    for session in &sessions {
        shards[session.conn.conn_ref().shard].connect(&session.conn);
    }
    let mut commands = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&pick, message)) = line.split_first() else { continue };
        if let Ok(text) = std::str::from_utf8(message) {
            let _ = partyflow::pubsub::message::parse(text);
        }
        let Some(session) = sessions.get_mut(usize::from(pick) % 3) else { continue };
        session.handle_message(now, DataKind::Text, message, &handlers, &metrics, &mut commands);
        let shard = session.conn.conn_ref().shard;
        for command in commands.drain(..) {
            if let Some(s) = shards.get_mut(shard) {
                s.handle_command(&session.conn, command);
            }
        }
        // Messages between the shards until both are quiet.
        let mut pending: Vec<(usize, ShardMessage)> = Vec::new();
        loop {
            for s in &mut shards {
                while let Some(output) = s.poll_output() {
                    if let Output::ToShard(to, message) = output {
                        pending.push((to, message));
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            for (to, message) in pending.drain(..) {
                if let Some(s) = shards.get_mut(to) {
                    s.handle_message(message);
                }
            }
        }
    }
    for channel in ["pf:ps:r:lobby", "pf:ps:u:u1"] {
        if let Some((_, cast)) = partyflow::cluster::pubsub::decode("pf:", channel, data) {
            if let Some(s) = shards.first_mut() {
                s.remote(cast);
            }
        }
    }
}
