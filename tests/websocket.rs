//! RFC 6455 behaviour of the server over real sockets: echo round trips and every close code.

mod common;

use std::io::Write;

use common::{connect, connect_with, RawClient, Server};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

#[test]
fn echo_round_trips_text_binary_and_empty() {
    let server = Server::start(&["--shards", "2"]);
    let mut ws = connect(&server, "/echo");
    let messages = [
        Message::text("hello"),
        Message::text("ünïcødé ✓"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::text("x".repeat(60_000)),
    ];
    for m in &messages {
        ws.send(m.clone()).unwrap();
    }
    for m in &messages {
        assert_eq!(&ws.read().unwrap(), m);
    }
    ws.close(None).unwrap();
}

#[test]
fn echo_of_a_message_just_under_one_mib_with_a_raised_limit() {
    let server = Server::start(&["--shards", "1", "--max-message-bytes", "1048576"]);
    let config = WebSocketConfig::default().max_message_size(Some(2 << 20)).max_frame_size(Some(2 << 20));
    let mut ws = connect_with(&server, "/echo", config);
    let payload: Vec<u8> = (0..(1 << 20) - 1).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(payload.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(payload));
}

#[test]
fn fragmented_message_with_interleaved_ping_is_reassembled() {
    let server = Server::start(&["--shards", "1"]);
    let mut c = RawClient::connect(&server, "/echo").unwrap();
    c.send(0x01, b"frag").unwrap();
    c.send(0x89, b"ping!").unwrap();
    c.send(0x00, "mé".as_bytes()).unwrap();
    c.send(0x80, b"nted").unwrap();
    assert_eq!(c.read_frame().unwrap().unwrap(), (0x8A, b"ping!".to_vec()), "pong comes first, echoing the ping");
    assert_eq!(c.read_frame().unwrap().unwrap(), (0x81, "fragménted".as_bytes().to_vec()));
}

#[test]
fn close_handshake_echoes_the_code_and_the_server_closes_tcp() {
    let server = Server::start(&["--shards", "1"]);
    let mut c = RawClient::connect(&server, "/echo").unwrap();
    c.send(0x88, &[0x0f, 0xa0, b'b', b'y', b'e']).unwrap();
    assert_eq!(c.expect_close().unwrap(), 4000);
    c.expect_eof().unwrap();
    let mut c = RawClient::connect(&server, "/echo").unwrap();
    c.send(0x88, b"").unwrap();
    assert_eq!(c.expect_close().unwrap(), 1000);
    c.expect_eof().unwrap();
}

/// Each bad frame gets its close code, and the server then ends the connection.
#[test]
fn protocol_violations_get_their_close_codes() {
    let server = Server::start(&["--shards", "1", "--max-message-bytes", "1000"]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", RawClient::frame(0x81, b"hi", false), 1002),
        ("reserved bit", RawClient::frame(0xC1, b"hi", true), 1002),
        ("reserved data opcode", RawClient::frame(0x83, b"", true), 1002),
        ("reserved control opcode", RawClient::frame(0x8B, b"", true), 1002),
        ("fragmented ping", RawClient::frame(0x09, b"", true), 1002),
        ("oversized ping", RawClient::frame(0x89, &[0u8; 126], true), 1002),
        ("continuation without start", RawClient::frame(0x80, b"x", true), 1002),
        ("text inside a fragmented message", [RawClient::frame(0x01, b"a", true), RawClient::frame(0x81, b"b", true)].concat(), 1002),
        ("one-byte close payload", RawClient::frame(0x88, &[1], true), 1002),
        ("forbidden close code 1005", RawClient::frame(0x88, &1005u16.to_be_bytes(), true), 1002),
        ("invalid UTF-8 text", RawClient::frame(0x81, b"\xff\xfe", true), 1007),
        ("invalid UTF-8 close reason", RawClient::frame(0x88, &[0x03, 0xe8, 0xc3], true), 1007),
        ("message over the limit", RawClient::frame(0x82, &[0u8; 1001], true), 1009),
        ("fragments over the limit", [RawClient::frame(0x02, &[0u8; 600], true), RawClient::frame(0x80, &[0u8; 600], true)].concat(), 1009),
    ];
    for (what, bytes, code) in cases {
        let mut c = RawClient::connect(&server, "/echo").unwrap();
        c.send_raw(&bytes).unwrap();
        assert_eq!(c.expect_close().unwrap(), code, "{what}");
        c.expect_eof().unwrap();
    }
    assert!(server.metric("partyflow_close_codes_sent_total", "code=\"1002\"") >= 10.0);
    assert!(server.metric("partyflow_close_codes_sent_total", "code=\"1009\"") >= 2.0);
}

#[test]
fn invalid_utf8_is_refused_before_the_rest_of_a_large_frame_arrives() {
    let server = Server::start(&["--shards", "1"]);
    let mut c = RawClient::connect(&server, "/echo").unwrap();
    let frame = RawClient::frame(0x81, &[b"ok".as_slice(), b"\xed\xa0\x80", &[b'a'; 40_000]].concat(), true);
    // Only the header and the first bytes: the server must not wait for the other 40 kB.
    c.send_raw(&frame[..4 + 4 + 8]).unwrap();
    assert_eq!(c.expect_close().unwrap(), 1007);
}

#[test]
fn oversize_declared_length_is_refused_without_the_payload() {
    let server = Server::start(&["--shards", "1"]);
    let mut c = RawClient::connect(&server, "/echo").unwrap();
    // Declares 1 GiB and sends nothing more.
    let mut header = vec![0x82, 0xff];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&common::MASK);
    c.send_raw(&header).unwrap();
    assert_eq!(c.expect_close().unwrap(), 1009);
}

#[test]
fn floods_are_cut_off_and_ping_floods_go_unanswered() {
    let server = Server::start(&["--shards", "2", "--connection-message-rate", "50", "--pings-per-sec", "5"]);
    // 1,000 messages at once: past the burst (100) the connection is closed with 1008.
    let mut flood = RawClient::connect(&server, "/relay?room=flood").unwrap();
    let frame = RawClient::frame(0x81, b"spam", true);
    flood.send_raw(&frame.repeat(1000)).unwrap();
    // Its own first messages may come back before the close (a relay member hears itself).
    let code = loop {
        let (first, payload) = flood.read_frame().unwrap().expect("a close frame");
        if first & 0x0f == 0x8 {
            break u16::from_be_bytes([payload[0], payload[1]]);
        }
    };
    assert_eq!(code, 1008);
    assert!(server.metric("partyflow_rate_limit_closes_total", "") >= 1.0);
    // 200 pings at once: at most the burst (10) and what the rate adds meanwhile are answered;
    // the echo of a text sent after them marks the end.
    let mut pinger = RawClient::connect(&server, "/echo").unwrap();
    let ping = RawClient::frame(0x89, b"p", true);
    pinger.send_raw(&ping.repeat(200)).unwrap();
    pinger.send(0x81, b"done").unwrap();
    let mut pongs = 0;
    loop {
        let (first, payload) = pinger.read_frame().unwrap().expect("connection open");
        match first & 0x0f {
            0xA => pongs += 1,
            0x1 => {
                assert_eq!(payload, b"done");
                break;
            }
            op => panic!("unexpected opcode {op:#x}"),
        }
    }
    assert!((1..=15).contains(&pongs), "{pongs} pongs for 200 pings");
    assert!(server.metric("partyflow_pings_ignored_total", "") >= 185.0);
}

#[test]
fn a_message_in_more_fragments_than_the_limit_is_refused() {
    let server = Server::start(&["--shards", "1", "--max-fragments", "100"]);
    // 100 frames (1 + 98 empty continuations + a final one) are one message...
    let mut ok = RawClient::connect(&server, "/echo").unwrap();
    let mut bytes = RawClient::frame(0x01, b"a", true);
    bytes.extend(RawClient::frame(0x00, b"", true).repeat(98));
    bytes.extend(RawClient::frame(0x80, b"z", true));
    ok.send_raw(&bytes).unwrap();
    assert_eq!(ok.read_frame().unwrap(), Some((0x81, b"az".to_vec())));
    // ...an endless stream of empty continuations is cut at the 101st frame with 1009.
    let mut endless = RawClient::connect(&server, "/echo").unwrap();
    let mut bytes = RawClient::frame(0x01, b"a", true);
    bytes.extend(RawClient::frame(0x00, b"", true).repeat(100_000));
    endless.send_raw(&bytes).unwrap();
    assert_eq!(endless.expect_close().unwrap(), 1009);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let server = Server::start(&["--shards", "1", "--idle-connection-timeout", "2s"]);
    let mut silent = RawClient::connect(&server, "/relay?room=quiet").unwrap();
    let mut talking = connect(&server, "/relay?room=busy");
    let opened = std::time::Instant::now();
    // The talking member sends every 100 ms, well inside the timeout, for as long as the silent
    // one takes to be closed (answering the server's pings would not count either).
    let closer = std::thread::spawn(move || silent.expect_close().unwrap());
    let mut sent = 0;
    while !closer.is_finished() {
        talking.send(Message::text(format!("keepalive {sent}"))).unwrap();
        sent += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(opened.elapsed() < std::time::Duration::from_secs(20), "the silent member was never closed");
    }
    assert_eq!(closer.join().unwrap(), 1001);
    assert!(opened.elapsed() >= std::time::Duration::from_secs(2), "closed before the timeout");
    // The talking member is still served.
    talking.send(Message::text("still here")).unwrap();
    while talking.read().unwrap() != Message::text("still here") {}
    assert_eq!(server.metric("partyflow_idle_closes_total", ""), 1.0);
}

#[test]
fn the_default_fragment_bound_follows_the_message_limit() {
    // The Autobahn runs' limit: 16 MiB messages, so up to 262,144 frames (64 bytes each on average).
    let server = Server::start(&["--shards", "1", "--max-message-bytes", "16777216"]);
    // Autobahn 9.3.1: 4 MiB of text in 64-byte frames (65,536 of them) is one message.
    let mut ok = RawClient::connect(&server, "/echo").unwrap();
    let chunk = [b'x'; 64];
    let mut bytes = RawClient::frame(0x01, &chunk, true);
    for _ in 1..65_535 {
        bytes.extend(RawClient::frame(0x00, &chunk, true));
    }
    bytes.extend(RawClient::frame(0x80, &chunk, true));
    let mut writer = ok.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&bytes).unwrap());
    let (first, payload) = ok.read_frame().unwrap().unwrap();
    sender.join().unwrap();
    assert_eq!((first, payload.len()), (0x81, 4 << 20));
    // An endless run of empty continuations is still cut off, at the 262,145th frame.
    let mut endless = RawClient::connect(&server, "/echo").unwrap();
    let mut bytes = RawClient::frame(0x01, b"a", true);
    bytes.extend(RawClient::frame(0x00, b"", true).repeat(300_000));
    let mut writer = endless.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    assert_eq!(endless.expect_close().unwrap(), 1009);
    sender.join().unwrap();
    // At the default 64 KiB limit the bound is 1,024 frames.
    let small = Server::start(&["--shards", "1"]);
    let mut endless = RawClient::connect(&small, "/echo").unwrap();
    let mut bytes = RawClient::frame(0x01, b"a", true);
    bytes.extend(RawClient::frame(0x00, b"", true).repeat(1_024));
    endless.send_raw(&bytes).unwrap();
    assert_eq!(endless.expect_close().unwrap(), 1009);
}

#[test]
fn connections_opened_together_are_pinged_at_spread_out_times() {
    // Pinged together, a crowd that arrived at once (after a restart, a network blip) would
    // cost the shard one burst of pings and pongs every interval, holding every other frame up.
    let server = Server::start(&["--shards", "1", "--ping-interval", "2s", "--pong-timeout", "10s"]);
    let mut clients: Vec<RawClient> = (0..100).map(|_| RawClient::connect(&server, "/echo").unwrap()).collect();
    let opened = std::time::Instant::now();
    for c in &clients {
        c.stream.set_nonblocking(true).unwrap();
    }
    let mut first_ping = vec![None; clients.len()];
    while first_ping.iter().any(Option::is_none) {
        assert!(opened.elapsed() < std::time::Duration::from_secs(10), "not every connection was pinged");
        for (c, at) in clients.iter_mut().zip(first_ping.iter_mut()) {
            if at.is_none() && c.try_read_frame().unwrap().is_some_and(|(first, _)| first == 0x89) {
                *at = Some(opened.elapsed());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let times: Vec<_> = first_ping.into_iter().flatten().collect();
    let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    // Each first ping falls at a random point of the interval's second half (1-2 s here).
    assert!(*first >= std::time::Duration::from_millis(900), "first ping after {first:?}");
    assert!(*last - *first >= std::time::Duration::from_millis(600), "100 first pings within {:?}", *last - *first);
}
