//! Heartbeats and graceful shutdown of the real server.

mod common;

use std::time::{Duration, Instant};

use common::{connect, RawClient, Server};
use tungstenite::Message;

#[test]
fn silent_peer_is_pinged_then_closed_after_the_pong_timeout() {
    let server = Server::start(&["--shards", "1", "--ping-interval", "200ms", "--pong-timeout", "700ms"]);
    let mut silent = RawClient::connect(&server, "/echo").unwrap();
    let started = Instant::now();
    let (first, payload) = silent.read_frame().unwrap().unwrap();
    assert_eq!((first, payload.len()), (0x89, 0), "expected an empty ping");
    assert_eq!(silent.expect_close().unwrap(), 1001);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(600) && waited < Duration::from_secs(5), "{waited:?}");
    silent.expect_eof().unwrap();
    assert_eq!(server.metric("partyflow_heartbeat_timeouts_total", ""), 1.0);
}

#[test]
fn peer_that_answers_pings_stays_connected() {
    // A generous pong timeout: a loaded CI machine may starve this client for a while.
    let server = Server::start(&["--shards", "1", "--ping-interval", "100ms", "--pong-timeout", "2s"]);
    let mut ws = connect(&server, "/echo");
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let until = Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("connection lost: {e}"),
        }
        let _ = ws.flush();
    }
    assert!(pings >= 5, "only {pings} pings");
    ws.send(Message::text("still here")).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => break assert_eq!(t.as_str(), "still here"),
            Ok(Message::Ping(_)) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(server.metric("partyflow_heartbeat_timeouts_total", ""), 0.0);
}

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_zero() {
    let mut server = Server::start(&["--shards", "2", "--shutdown-grace", "3s"]);
    let mut clients: Vec<_> = (0..6).map(|i| connect(&server, &format!("/relay?room=r{}", i % 3))).collect();
    clients.push(connect(&server, "/echo"));
    server.wait_connections(7);
    server.signal(libc::SIGTERM);
    for ws in &mut clients {
        let frame = loop {
            match ws.read() {
                Ok(Message::Close(frame)) => break frame,
                Ok(Message::Ping(_)) => continue,
                other => panic!("expected close, got {other:?}"),
            }
        };
        assert_eq!(u16::from(frame.unwrap().code), 1001);
        // tungstenite answers the close; the server then ends the connection.
        loop {
            match ws.read() {
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("{e}"),
                Ok(_) => {}
            }
        }
    }
    let status = server.wait_exit(Duration::from_secs(5)).expect("server did not exit");
    assert!(status.success(), "{status:?}");
}

#[test]
fn shutdown_does_not_wait_past_the_grace_for_a_peer_that_never_answers() {
    let mut server = Server::start(&["--shards", "1", "--shutdown-grace", "500ms"]);
    let mut mute = RawClient::connect(&server, "/echo").unwrap();
    server.wait_connections(1);
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5)).expect("server did not exit");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(mute.expect_close().unwrap(), 1001);
}

/// `--log-format json`: every line is one JSON object; a room's life is logged at info with its
/// id and the reason it closed, each connection at debug.
#[test]
fn json_logs_carry_room_lifecycle_and_connections() {
    let server = Server::start(&["--shards", "2", "--log", "debug", "--log-format", "json"]);
    let (room, host_id, host_token) = common::game::create_room(&server, serde_json::json!({}));
    let mut host = common::game::GameClient::connect(&server, &room, &host_id, &host_token).unwrap();
    host.recv_until("CONNECTED").unwrap();
    host.send("ROOM_CLOSE", serde_json::json!({}));
    host.recv_until("ROOM_CLOSED").unwrap();
    drop(host);
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines: Vec<serde_json::Value> = server.log().iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
        if lines.iter().any(|v| v["message"] == "connection closed") {
            break lines;
        }
        assert!(Instant::now() < deadline, "no 'connection closed' line: {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let find = |message: &str| lines.iter().find(|v| v["message"] == message).unwrap_or_else(|| panic!("no {message:?} line"));
    let opened = find("room opened");
    assert_eq!((opened["level"].as_str(), opened["room"].as_str()), (Some("INFO"), Some(room.as_str())));
    let closed = find("room closed");
    assert_eq!((closed["room"].as_str(), closed["reason"].as_str()), (Some(room.as_str()), Some("closed by host")));
    assert_eq!(find("connection opened")["level"], "DEBUG");
    assert!(lines.iter().all(|v| v["timestamp"].is_string() && v["target"].is_string()));
}
