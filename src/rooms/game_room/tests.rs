use super::*;
use crate::game::words::WordPack;
use std::sync::Arc;

fn room(now: Instant) -> GameRoom<u32> {
    room_with_rounds_of(now, 10)
}

fn room_with_rounds_of(now: Instant, round_secs: u64) -> GameRoom<u32> {
    let config = GameConfig {
        max_players: 10,
        num_teams: 2,
        rounds: 1,
        round_duration: Duration::from_secs(round_secs),
        countdown: 1,
        score_review: Duration::from_secs(1),
        pack: Arc::new(WordPack::shipped().remove(0)),
        seed: 1,
    };
    GameRoom::new(RoomId::parse("ROOM42").unwrap(), "host", "H", config, RoomPolicy::default(), now, 1_700_000_000_000)
}

fn sends(room: &mut GameRoom<u32>) -> Vec<(u32, Value)> {
    std::iter::from_fn(|| room.poll_output())
        .filter_map(|o| match o {
            RoomOutput::Send(c, frame) => Some((c, serde_json::from_slice(&frame[frame_header_len(&frame)..]).unwrap())),
            RoomOutput::Close(..) | RoomOutput::Count(_) | RoomOutput::Webhook(..) => None,
        })
        .collect()
}

fn frame_header_len(frame: &[u8]) -> usize {
    match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

fn msg(kind: &str, payload: Value) -> Vec<u8> {
    json!({"type": kind, "roomId": "ROOM42", "version": "1.0", "payload": payload}).to_string().into_bytes()
}

/// A room with the host (conn 0) and two players (conns 1, 2) connected.
fn room_of_three(t0: Instant, p2_version: &str) -> GameRoom<u32> {
    room_of_three_with(room(t0), t0, p2_version)
}

fn room_of_three_with(mut r: GameRoom<u32>, t0: Instant, p2_version: &str) -> GameRoom<u32> {
    r.join(t0, "p1", "A").unwrap();
    r.join(t0, "p2", "B").unwrap();
    r.connect(t0, 0, "host", "1.0").unwrap();
    r.connect(t0, 1, "p1", "1.0").unwrap();
    r.connect(t0, 2, "p2", p2_version).unwrap();
    r
}

#[test]
fn connected_then_scoped_fan_out_with_one_buffer_per_scope() {
    let t0 = Instant::now();
    let mut r = room_of_three(t0, "1.1");
    let hello = sends(&mut r);
    assert_eq!(hello.len(), 3);
    assert_eq!(hello[0].1["type"], "CONNECTED");
    assert_eq!(hello[2].1["version"], "1.1");
    assert_eq!(hello[2].1["payload"]["role"], "player");
    assert!(hello[0].1.get("sequenceId").is_none());
    r.handle_message(t0, 0, DataKind::Text, &msg("START_TEAM_SETUP", json!({})));
    let out: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
    let frames: Vec<&Bytes> = out
        .iter()
        .map(|o| match o {
            RoomOutput::Send(_, f) => f,
            _ => panic!(),
        })
        .collect();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].as_ptr(), frames[1].as_ptr(), "same version: one shared buffer");
    assert_ne!(frames[0].as_ptr(), frames[2].as_ptr(), "other minor version: its own encoding");
}

#[test]
fn errors_go_to_the_actor_only_and_are_rate_limited() {
    let t0 = Instant::now();
    let mut r = room(t0);
    r.join(t0, "p1", "A").unwrap();
    r.connect(t0, 0, "host", "1.0").unwrap();
    r.connect(t0, 1, "p1", "1.0").unwrap();
    sends(&mut r);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{nope".to_vec(), "INVALID_MESSAGE"),
        (msg("DANCE", json!({})), "UNKNOWN_TYPE"),
        (br#"{"roomId":"ROOM42"}"#.to_vec(), "MISSING_FIELD"),
        (msg("HOST_PAUSE", json!({})), "UNAUTHORIZED"),
        (json!({"type": "JOIN_TEAM", "roomId": "OTHER1", "payload": {}}).to_string().into_bytes(), "ROOM_NOT_FOUND"),
        (json!({"type": "LEAVE_ROOM", "roomId": "ROOM42", "actorId": "host"}).to_string().into_bytes(), "UNAUTHORIZED"),
        (msg("JOIN_TEAM", json!({"teamId": "team_1"})), "INVALID_TRANSITION"),
    ];
    for (i, (bytes, code)) in cases.into_iter().enumerate() {
        r.handle_message(t0 + Duration::from_secs(i as u64), 1, DataKind::Text, &bytes);
        let out = sends(&mut r);
        assert_eq!(out.len(), 1, "{code}");
        assert_eq!(out[0].0, 1);
        assert_eq!(out[0].1["type"], "ERROR");
        assert_eq!(out[0].1["broadcast"], "actor");
        assert_eq!(out[0].1["payload"]["code"], code);
    }
    // A flood of bad messages: error replies stop at the error burst.
    let flood = t0 + Duration::from_secs(100);
    for _ in 0..100 {
        r.handle_message(flood, 1, DataKind::Text, b"{nope");
    }
    assert_eq!(sends(&mut r).len(), 10, "error replies are bounded by the error burst");
    // A flood of valid messages: past the message burst they are refused with RATE_LIMITED.
    let later = flood + Duration::from_secs(100);
    for _ in 0..60 {
        r.handle_message(later, 1, DataKind::Text, &msg("ACK", json!({"ackId": "none"})));
    }
    let out = sends(&mut r);
    assert_eq!(out.len(), 10);
    assert!(out.iter().all(|(c, v)| *c == 1 && v["payload"]["code"] == "RATE_LIMITED"));
}

#[test]
fn unsupported_major_gets_upgrade_required_then_4001() {
    let t0 = Instant::now();
    let mut r = room(t0);
    assert!(r.connect(t0, 9, "host", "2.0").is_err());
    let out: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
    assert!(matches!(&out[0], RoomOutput::Send(9, f) if String::from_utf8_lossy(f).contains("UPGRADE_REQUIRED")));
    assert_eq!(out[1], RoomOutput::Close(9, CLOSE_UPGRADE_REQUIRED, "protocol 2.0 is not supported; this server speaks 1.0".into()));
}

#[test]
fn acks_are_retried_and_sequence_ids_increase() {
    let t0 = Instant::now();
    let mut r = room_of_three(t0, "1.0");
    r.handle_message(t0, 0, DataKind::Text, &msg("START_TEAM_SETUP", json!({})));
    r.handle_message(t0, 1, DataKind::Text, &msg("JOIN_TEAM", json!({"teamId": "team_1"})));
    r.handle_message(t0, 2, DataKind::Text, &msg("JOIN_TEAM", json!({"teamId": "team_2"})));
    r.handle_message(t0, 0, DataKind::Text, &msg("HOST_CONFIRM_START", json!({})));
    let mut now = t0;
    let mut seqs = vec![];
    let mut all = sends(&mut r);
    while let Some(at) = r.poll_timeout().filter(|at| *at <= t0 + Duration::from_secs(3)) {
        now = at;
        r.handle_timeout(now);
        all.extend(sends(&mut r));
    }
    for (conn, v) in &all {
        if *conn == 1 {
            if let Some(s) = v.get("sequenceId").and_then(Value::as_u64) {
                seqs.push(s);
            }
        }
    }
    // Resends repeat their sequence id; first deliveries strictly increase.
    let mut first = seqs.clone();
    first.dedup();
    let mut seen = std::collections::HashSet::new();
    first.retain(|s| seen.insert(*s));
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let started: Vec<_> = all.iter().filter(|(c, v)| *c == 1 && v["type"] == "ROUND_STARTED").collect();
    assert!(started.len() >= 2, "resent after 2 s without ACK: {}", started.len());
    let ack_id = started[0].1["ackId"].as_str().unwrap().to_string();
    assert_eq!(started[0].1["requiresAck"], true);
    r.handle_message(now, 1, DataKind::Text, &msg("ACK", json!({"ackId": ack_id})));
    // Player 1 acknowledged; only the others are still being retried.
    r.handle_timeout(now + Duration::from_secs(2));
    let resent = sends(&mut r);
    assert!(resent.iter().all(|(c, v)| *c != 1 || v["type"] != "ROUND_STARTED"));
    assert!(resent.iter().any(|(c, v)| *c == 2 && v["type"] == "ROUND_STARTED"));
}

const S: Duration = Duration::from_secs(1);

/// Host (conn 0), p1 (conn 1) in team 1, p2 (conn 2) in team 2, a 60 s turn 1 running at
/// the returned time with p1 explaining, everything acknowledged.
fn round_running(t0: Instant) -> (GameRoom<u32>, Instant) {
    round_running_acked(t0, true)
}

fn round_running_acked(t0: Instant, acked: bool) -> (GameRoom<u32>, Instant) {
    let mut r = room_of_three_with(room_with_rounds_of(t0, 60), t0, "1.0");
    for (conn, kind, payload) in [
        (0, "START_TEAM_SETUP", json!({})),
        (1, "JOIN_TEAM", json!({"teamId": "team_1"})),
        (2, "JOIN_TEAM", json!({"teamId": "team_2"})),
        (0, "HOST_CONFIRM_START", json!({})),
    ] {
        r.handle_message(t0, conn, DataKind::Text, &msg(kind, payload));
    }
    let now = advance(&mut r, t0, t0 + S);
    assert_eq!(r.game().state().as_str(), "ROUND_ACTIVE");
    let out = sends(&mut r);
    for conn in (0..3).filter(|_| acked) {
        ack_all(&mut r, now, conn, &of(&out, conn));
    }
    (r, now)
}

/// Fires every deadline up to `to` in order; returns `to`.
fn advance(r: &mut GameRoom<u32>, mut now: Instant, to: Instant) -> Instant {
    while let Some(at) = r.poll_timeout().filter(|at| *at <= to) {
        now = at.max(now);
        r.handle_timeout(now);
    }
    to
}

fn of(out: &[(u32, Value)], conn: u32) -> Vec<Value> {
    out.iter().filter(|(c, _)| *c == conn).map(|(_, v)| v.clone()).collect()
}

fn ack_all(r: &mut GameRoom<u32>, now: Instant, conn: u32, seen: &[Value]) {
    for v in seen.iter().filter(|v| v["requiresAck"] == true) {
        r.handle_message(now, conn, DataKind::Text, &msg("ACK", json!({"ackId": v["ackId"]})));
    }
}

#[test]
fn backfill_just_inside_the_window_equals_what_a_connected_peer_got() {
    let t0 = Instant::now();
    let (mut r, now) = round_running(t0);
    let last_seen = r.last_sequence_id();
    r.disconnect(now, 1);
    // The host swipes while p1 is away; p2 (same role, never disconnected) sees it live.
    let mut p2_live = Vec::new();
    let mut t = now;
    for _ in 0..3 {
        let word = r.game().snapshot(Role::Host)["currentWord"]["wordId"].as_str().unwrap().to_string();
        t += S;
        advance(&mut r, t - S, t);
        r.handle_message(t, 0, DataKind::Text, &msg("WORD_SWIPED", json!({"wordId": word, "action": "guessed"})));
        let out = sends(&mut r);
        ack_all(&mut r, t, 0, &of(&out, 0));
        ack_all(&mut r, t, 2, &of(&out, 2));
        p2_live.extend(of(&out, 2));
    }
    let back = now + Duration::from_millis(4_900);
    advance(&mut r, t, back);
    p2_live.extend(of(&sends(&mut r), 2));
    r.connect(back, 11, "p1", "1.0").unwrap();
    let connected = sends(&mut r);
    let upto = of(&connected, 11)[0]["payload"]["lastSequenceId"].as_u64().unwrap();
    r.handle_message(back, 11, DataKind::Text, &msg("RECONNECT", json!({"lastSeqId": last_seen, "sessionId": "x", "disconnectTimestamp": 0})));
    let reply = of(&sends(&mut r), 11);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0]["type"], "RECONNECTED");
    let missed = reply[0]["payload"]["missedEvents"].as_array().unwrap().clone();
    let expected: Vec<Value> = p2_live.iter().filter(|v| v["sequenceId"].as_u64().is_some_and(|s| s > last_seen && s <= upto)).cloned().collect();
    assert!(!expected.is_empty());
    assert_eq!(missed, expected, "exactly what a connected player received, nothing host-only");
    assert!(missed.iter().all(|v| v["type"] != "WORD_REVEALED"));
    assert_eq!(reply[0]["payload"]["stateChecksum"], r.game().checksum());
}

#[test]
fn just_past_the_backfill_window_is_a_snapshot_and_past_the_snapshot_window_expires() {
    let t0 = Instant::now();
    let (mut r, now) = round_running(t0);
    let seq = r.last_sequence_id();
    r.disconnect(now, 2);
    let back = now + Duration::from_millis(5_100);
    advance(&mut r, now, back);
    sends(&mut r);
    r.connect(back, 12, "p2", "1.0").unwrap();
    r.handle_message(back, 12, DataKind::Text, &msg("RECONNECT", json!({"lastSeqId": seq})));
    let reply = of(&sends(&mut r), 12);
    let last = reply.last().unwrap();
    assert_eq!(last["type"], "RECONNECTED");
    assert_eq!(last["payload"]["missedEvents"], Value::Null);
    assert!(last["payload"]["message"].as_str().unwrap().contains("missed"));
    // Gone 29.9 s: still a snapshot. Gone 30.1 s: expired, and p2 sits out the turn.
    for (gone_ms, expect) in [(29_900, "RECONNECTED"), (30_100, "RECONNECT_FAILED")] {
        let t = advance(&mut r, back, back + S);
        r.disconnect(t, 12);
        let again = advance(&mut r, t, t + Duration::from_millis(gone_ms));
        sends(&mut r);
        r.connect(again, 12, "p2", "1.0").unwrap();
        r.handle_message(again, 12, DataKind::Text, &msg("RECONNECT", json!({"lastSeqId": r.last_sequence_id()})));
        let reply = of(&sends(&mut r), 12);
        assert_eq!(reply.iter().find(|v| v["type"].as_str().unwrap().starts_with("RECONNECT")).unwrap()["type"], expect, "{gone_ms} ms");
    }
}

#[test]
fn the_host_is_backfilled_with_its_words_for_30_seconds() {
    let t0 = Instant::now();
    let (mut r, now) = round_running(t0);
    let seq = r.last_sequence_id();
    r.disconnect(now, 0);
    let back = advance(&mut r, now, now + Duration::from_millis(9_000));
    sends(&mut r);
    r.connect(back, 10, "host", "1.0").unwrap();
    r.handle_message(back, 10, DataKind::Text, &msg("RECONNECT", json!({"lastSeqId": seq})));
    let reply = of(&sends(&mut r), 10);
    let rec = reply.iter().find(|v| v["type"] == "RECONNECTED").unwrap();
    let missed = rec["payload"]["missedEvents"].as_array().unwrap();
    assert!(missed.iter().all(|v| v["type"] == "TIMER_TICK"), "{missed:?}");
    assert_eq!(missed.len(), 9, "one tick a second");
    assert!(rec["payload"]["gameState"]["currentWord"]["wordText"].is_string(), "the host's snapshot has the word");
}

#[test]
fn disconnect_timeline_and_explainer_repair() {
    let t0 = Instant::now();
    let (mut r, now) = round_running(t0);
    assert_eq!(r.game().explainer().unwrap().0, "p1");
    r.disconnect(now, 1);
    let t = advance(&mut r, now, now + Duration::from_millis(4_999));
    assert!(of(&sends(&mut r), 0).iter().all(|v| v["type"] == "TIMER_TICK"), "the grace is silent");
    // Past the grace p1 cannot explain; team 1 has nobody else, so its turn ends.
    let t = advance(&mut r, t, now + 5 * S);
    let out = of(&sends(&mut r), 2);
    assert!(out.iter().any(|v| v["type"] == "ROUND_ENDED" && v["payload"]["reason"] == "team_disconnected"), "{out:?}");
    let t = advance(&mut r, t, now + 15 * S);
    let out = of(&sends(&mut r), 2);
    assert!(out.iter().any(|v| v["type"] == "PLAYER_CONNECTION_LOST" && v["payload"]["playerId"] == "p1"));
    // The game went on without p1: team 2 played its turn.
    assert!(out.iter().any(|v| v["type"] == "ROUND_STARTED" && v["payload"]["activeTeamId"] == "team_2"));
    let t = advance(&mut r, t, now + 60 * S);
    let out = of(&sends(&mut r), 2);
    let left: Vec<_> = out.iter().filter(|v| v["type"] == "PLAYER_LEFT").collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["payload"]["reason"], "disconnected");
    assert_eq!(r.role_of("p1"), None);
    let _ = t;
}

#[test]
fn a_return_after_the_grace_is_announced_and_a_blip_is_not() {
    let t0 = Instant::now();
    let (mut r, now) = round_running(t0);
    r.disconnect(now, 2);
    r.connect(now + 2 * S, 12, "p2", "1.0").unwrap();
    assert!(of(&sends(&mut r), 0).iter().all(|v| v["type"] != "PLAYER_RECONNECTED"));
    r.disconnect(now + 3 * S, 12);
    let t = advance(&mut r, now + 3 * S, now + 10 * S);
    sends(&mut r);
    r.connect(t, 22, "p2", "1.0").unwrap();
    assert!(of(&sends(&mut r), 0).iter().any(|v| v["type"] == "PLAYER_RECONNECTED"));
}

#[test]
fn away_host_pauses_the_round_then_a_player_is_promoted() {
    let t0 = Instant::now();
    let (mut r, now) = round_running(t0);
    r.disconnect(now, 0);
    advance(&mut r, now, now + Duration::from_millis(9_999));
    assert!(sends(&mut r).iter().all(|(_, v)| v["type"] != "GAME_PAUSED"));
    let t = advance(&mut r, now, now + 10 * S);
    let paused: Vec<_> = of(&sends(&mut r), 1).into_iter().filter(|v| v["type"] == "GAME_PAUSED").collect();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["payload"]["reason"], "host_disconnected");
    let t = advance(&mut r, t, now + 60 * S);
    let out = sends(&mut r);
    let promoted = of(&out, 1).into_iter().find(|v| v["type"] == "HOST_PROMOTED").unwrap();
    assert_eq!(promoted["payload"]["hostId"], "p2", "first connected player in seat order who is not explaining");
    assert_eq!(promoted["payload"]["previousHostId"], "host");
    let snapshot = of(&out, 2).into_iter().find(|v| v["type"] == "STATE_SNAPSHOT").unwrap();
    assert!(snapshot["payload"]["gameState"]["currentWord"]["wordId"].is_string());
    assert_eq!(r.game().explainer().unwrap().0, "p1", "the turn goes on");
    // The new host acts with its own (player) token: resume, then swipe.
    r.handle_message(t, 2, DataKind::Text, &msg("HOST_RESUME", json!({})));
    let word = r.game().snapshot(Role::Host)["currentWord"]["wordId"].as_str().unwrap().to_string();
    r.handle_message(t, 2, DataKind::Text, &msg("WORD_SWIPED", json!({"wordId": word, "action": "guessed"})));
    let out = sends(&mut r);
    assert!(of(&out, 2).iter().any(|v| v["type"] == "WORD_REVEALED"), "host scope follows the promotion");
    assert!(of(&out, 1).iter().all(|v| v["type"] != "WORD_REVEALED"));
    // The old host comes back as a player.
    r.connect(t, 30, "host", "1.0").unwrap();
    let hello = of(&sends(&mut r), 30);
    assert_eq!(hello[0]["payload"]["role"], "player");
    assert!(hello[0]["payload"]["snapshot"].get("currentWord").is_none());
}

#[test]
fn unanswered_acks_end_in_a_connection_warning() {
    let t0 = Instant::now();
    let (mut r, now) = round_running_acked(t0, false);
    // Nobody acknowledged ROUND_STARTED: two resends 2 s apart, then a warning at 6 s.
    let until = now + 6 * S;
    let mut all = Vec::new();
    let mut t = now;
    while let Some(at) = r.poll_timeout().filter(|at| *at <= until) {
        t = at;
        r.handle_timeout(t);
        all.extend(sends(&mut r));
    }
    let warnings: Vec<_> = of(&all, 1).into_iter().filter(|v| v["type"] == "CONNECTION_WARNING").collect();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0]["payload"]["attempts"], 3);
    assert!(warnings[0]["payload"]["ackId"].as_str().unwrap().starts_with("ack_"));
    assert_eq!(r.summary()["degradedConnections"], 3);
    r.handle_message(t, 1, DataKind::Text, &msg("ACK", json!({"ackId": "ack_999"})));
    let counted: Vec<_> = std::iter::from_fn(|| r.poll_output()).filter(|o| *o == RoomOutput::Count(RoomCount::UnmatchedAck)).collect();
    assert_eq!(counted.len(), 1);
}

#[test]
fn heartbeat_checksum_mismatch_gets_a_snapshot() {
    let t0 = Instant::now();
    let (mut r, now) = round_running(t0);
    let good = json!({"stateVersion": r.game().state_version(), "stateChecksum": r.game().checksum()});
    r.handle_message(now, 2, DataKind::Text, &msg("HEARTBEAT", good));
    assert!(sends(&mut r).is_empty());
    let stale = json!({"stateVersion": r.game().state_version(), "stateChecksum": "00000000"});
    r.handle_message(now, 2, DataKind::Text, &msg("HEARTBEAT", stale));
    let out = sends(&mut r);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1["type"], "STATE_SNAPSHOT");
    assert_eq!(out[0].1["payload"]["stateChecksum"], r.game().checksum());
    assert!(out[0].1["payload"]["gameState"].get("currentWord").is_none(), "players never get the word");
}

#[test]
fn leave_room_ends_the_leavers_fan_out_and_connection() {
    let t0 = Instant::now();
    let mut r = room_of_three(t0, "1.0");
    sends(&mut r);
    r.handle_message(t0, 2, DataKind::Text, &msg("LEAVE_ROOM", json!({})));
    let out: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
    let to_leaver: Vec<_> = out.iter().filter(|o| matches!(o, RoomOutput::Send(2, _) | RoomOutput::Close(2, ..))).collect();
    assert_eq!(to_leaver.len(), 2, "its PLAYER_LEFT, then the close");
    assert!(matches!(to_leaver[1], RoomOutput::Close(2, 1000, _)));
    r.handle_message(t0, 0, DataKind::Text, &msg("START_TEAM_SETUP", json!({})));
    assert!(sends(&mut r).iter().all(|(c, _)| *c != 2), "no longer in the fan-out");
}

#[test]
fn reconnect_refusals() {
    let t0 = Instant::now();
    let mut r = room_of_three(t0, "1.0");
    sends(&mut r);
    r.handle_message(t0, 1, DataKind::Text, &msg("RECONNECT", json!({"lastSeqId": 999})));
    assert_eq!(sends(&mut r)[0].1["payload"]["code"], "INVALID_MESSAGE");
    r.handle_message(t0, 1, DataKind::Text, &msg("RECONNECT", json!({})));
    assert_eq!(sends(&mut r)[0].1["payload"]["code"], "MISSING_FIELD");
    // First connection ever: nothing to recover, the state is confirmed.
    r.handle_message(t0, 1, DataKind::Text, &msg("RECONNECT", json!({"lastSeqId": 1})));
    assert_eq!(sends(&mut r)[0].1["type"], "STATE_SNAPSHOT");
}

#[test]
fn an_operator_kicks_a_player_with_or_without_a_ban_and_closes_the_room() {
    let t0 = Instant::now();
    let mut r = room_of_three(t0, "1.0");
    while r.poll_output().is_some() {}
    assert_eq!(r.head_count(), (3, 3));
    let detail = r.admin_detail();
    assert_eq!(detail["members"].as_array().unwrap().len(), 3);
    assert!(detail["members"].as_array().unwrap().iter().all(|m| m["connected"] == true && m["degraded"] == false));
    assert!(detail["game"].get("currentWord").is_none());
    assert_eq!(r.admin_kick(t0, "host", false), Err(KickRefused::Host));
    assert_eq!(r.admin_kick(t0, "nobody", true), Err(KickRefused::NotFound));
    // Without a ban: p1's connection is closed with 4004, its seat kept (it may reconnect).
    r.admin_kick(t0, "p1", false).unwrap();
    let closes: Vec<(u32, u16)> =
        std::iter::from_fn(|| r.poll_output()).filter_map(|o| if let RoomOutput::Close(c, code, _) = o { Some((c, code)) } else { None }).collect();
    assert_eq!(closes, [(1, crate::ws::close_code::KICKED)]);
    assert_eq!((r.role_of("p1"), r.head_count()), (Some(Role::Player), (3, 2)));
    // With a ban: p2 is closed and loses its seat (PLAYER_LEFT, reason kicked).
    r.admin_kick(t0, "p2", true).unwrap();
    let left: Vec<Value> = sends(&mut r).into_iter().map(|(_, v)| v).filter(|v| v["type"] == "PLAYER_LEFT").collect();
    assert!(left.iter().all(|v| v["payload"]["reason"] == "kicked" && v["payload"]["playerId"] == "p2") && !left.is_empty());
    assert_eq!(r.role_of("p2"), None);
    r.admin_close(t0);
    let closed: Vec<Value> = sends(&mut r).into_iter().map(|(_, v)| v).filter(|v| v["type"] == "ROOM_CLOSED").collect();
    assert_eq!(closed[0]["payload"]["reason"], "admin");
    assert!(r.is_closed());
}
