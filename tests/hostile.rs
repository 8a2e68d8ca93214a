//! The hostile-client suite: the attacks SECURITY.md answers, one after another over real
//! sockets against one server, each checked for its documented answer while a healthy game room
//! and a healthy relay room are measured the whole time: every probe of theirs must be answered,
//! in order, and each attack's window must hold enough of them (a shard stalled by an attack
//! would starve them). How fast they stay is measured, not asserted: the per-attack table is
//! printed and SECURITY.md records a run. Attackers use their own loopback addresses (127.0.0.x), so
//! per-address limits meet the attack, not the healthy rooms on 127.0.0.1
//! (`cargo test --release --test hostile -- --nocapture` prints the table).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::game::{started_game, GameClient};
use common::{connect, parse_response, tcp_from, RawClient, Server};
use hdrhistogram::Histogram;
use serde_json::json;
use tungstenite::Message;

/// Each attack is measured for at least this long, so every percentile rests on enough probes.
const MIN_WINDOW: Duration = Duration::from_millis(1500);
/// The fewest probes per healthy room in one attack's window: at one every 20-30 ms plus the
/// round trip, a window holds dozens unless something held the healthy rooms up for a second.
const MIN_PROBES: u64 = 10;

const FLAGS: &[&str] = &[
    "--shards",
    "2",
    "--countdown",
    "1",
    "--request-timeout",
    "1s",
    "--ping-interval",
    "1s",
    "--pong-timeout",
    "2s",
    "--max-outbound-bytes",
    "262144",
    "--api-rate-per-ip",
    "20",
    // 8 MiB/s, bursts of 16 MiB: the slow-reader attack needs megabytes to fill the kernel's
    // buffers first; the byte flood sends more than the burst.
    "--connection-byte-rate",
    "8388608",
];

/// Round trips (µs) of the healthy rooms since the last [`Bystanders::take`].
struct Samples {
    game: Histogram<u64>,
    relay: Histogram<u64>,
}

impl Samples {
    fn new() -> Samples {
        Samples { game: Histogram::new(3).unwrap(), relay: Histogram::new(3).unwrap() }
    }
}

/// The healthy rooms: a game in its first turn whose host and players take turns sending a
/// `HEARTBEAT` that the room answers with a `STATE_SNAPSHOT`, and a relay room where one member's
/// message is timed until the other member receives it.
struct Bystanders {
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Bystanders {
    fn start(server: &Server) -> Bystanders {
        let samples = Arc::new(Mutex::new(Samples::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (_, (host, _), players) = started_game(server, 2, json!({"rounds": 1, "roundDurationSec": 300}));
        let mut game: Vec<GameClient> = std::iter::once(host).chain(players.into_iter().map(|(c, _)| c)).collect();
        let (game_samples, game_stop) = (samples.clone(), stop.clone());
        let game_thread = std::thread::spawn(move || {
            // Every 30 ms, each client in turn: at most ~11 messages a second per connection,
            // well inside --client-message-rate.
            for turn in 0.. {
                if game_stop.load(Ordering::Relaxed) {
                    break;
                }
                let client = &mut game[turn % 3];
                let sent = Instant::now();
                client.send("HEARTBEAT", json!({"stateVersion": 0}));
                loop {
                    let v = client.recv().unwrap_or_else(|| panic!("the healthy game closed {}: {:?}", client.actor, client.seen.last()));
                    assert_ne!(v["type"], "ERROR", "{v}");
                    if v["type"] == "STATE_SNAPSHOT" {
                        break;
                    }
                }
                game_samples.lock().unwrap().game.record(sent.elapsed().as_micros() as u64).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let mut a = connect(server, "/relay?room=healthy");
        let mut b = connect(server, "/relay?room=healthy");
        let (relay_samples, relay_stop) = (samples.clone(), stop.clone());
        let relay_thread = std::thread::spawn(move || {
            for n in 0u64.. {
                if relay_stop.load(Ordering::Relaxed) {
                    break;
                }
                let probe = Message::text(format!("probe {n}"));
                let sent = Instant::now();
                a.send(probe.clone()).unwrap();
                // tungstenite answers the server's pings itself; only text is relayed here.
                while b.read().expect("the healthy relay member b was closed") != probe {}
                relay_samples.lock().unwrap().relay.record(sent.elapsed().as_micros() as u64).unwrap();
                // A member hears itself too.
                while a.read().expect("the healthy relay member a was closed") != probe {}
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Bystanders { samples, stop, threads: vec![game_thread, relay_thread] }
    }

    /// The samples since the last call.
    fn take(&self) -> Samples {
        std::mem::replace(&mut *self.samples.lock().unwrap(), Samples::new())
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// One request on a fresh connection from `ip`; the raw answer (empty if the server closed
/// without one).
fn request_from(server: &Server, ip: [u8; 4], raw: &[u8]) -> String {
    let mut s = tcp_from(server, ip);
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(raw: &str) -> u16 {
    parse_response(raw).0
}

/// Sends `bytes` on a new `/echo` connection (the server may close it half-way) and returns
/// the close code it answers with.
fn close_code_for(server: &Server, bytes: &[u8]) -> u16 {
    let mut c = RawClient::upgrade(tcp_from(server, [127, 0, 0, 10]), "/echo").unwrap();
    let mut writer = c.stream.try_clone().unwrap();
    let bytes = bytes.to_vec();
    // Written from another thread: the server stops reading once it has decided.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let code = c.expect_close().unwrap();
    c.expect_eof().unwrap();
    sender.join().unwrap();
    code
}

fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    RawClient::frame(first, payload, true)
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

type Attack = fn(&Server);

/// Each attack, and the assertions that it got its documented answer.
fn attacks() -> Vec<(&'static str, Attack)> {
    vec![
        ("unmasked frame", |s| assert_eq!(close_code_for(s, &RawClient::frame(0x81, b"hi", false)), 1002)),
        ("reserved bits", |s| assert_eq!(close_code_for(s, &frame(0xC1, b"hi")), 1002)),
        ("reserved opcodes", |s| {
            assert_eq!(close_code_for(s, &frame(0x83, b"")), 1002);
            assert_eq!(close_code_for(s, &frame(0x8B, b"")), 1002);
        }),
        ("control frame over 125 bytes or fragmented", |s| {
            assert_eq!(close_code_for(s, &frame(0x89, &[0u8; 126])), 1002);
            assert_eq!(close_code_for(s, &frame(0x09, b"")), 1002);
        }),
        ("invalid UTF-8 split across fragments", |s| {
            // "é" is c3 a9: the first fragment ends inside it, the second does not finish it.
            let bytes = [frame(0x01, b"caf\xc3"), frame(0x80, b"(")].concat();
            assert_eq!(close_code_for(s, &bytes), 1007);
        }),
        ("64-bit length with the top bit set", |s| {
            let mut header = vec![0x82, 0xff];
            header.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
            header.extend_from_slice(&common::MASK);
            assert_eq!(close_code_for(s, &header), 1002);
        }),
        ("length over the limit, payload never sent", |s| {
            // 1 GiB declared, nothing more: refused from the header, nothing buffered.
            let mut header = vec![0x82, 0xff];
            header.extend_from_slice(&(1u64 << 30).to_be_bytes());
            header.extend_from_slice(&common::MASK);
            assert_eq!(close_code_for(s, &header), 1009);
        }),
        ("100,000 one-byte fragments", |s| {
            let mut bytes = frame(0x01, b"a");
            bytes.extend(frame(0x00, b"a").repeat(99_999));
            assert_eq!(close_code_for(s, &bytes), 1009);
        }),
        ("100,000 empty fragments", |s| {
            // Only the fragment bound (1,024 frames at the 64 KiB message limit) stops it.
            let mut bytes = frame(0x01, b"");
            bytes.extend(frame(0x00, b"").repeat(99_999));
            assert_eq!(close_code_for(s, &bytes), 1009);
        }),
        ("ping flood", |s| {
            let mut c = RawClient::upgrade(tcp_from(s, [127, 0, 0, 11]), "/echo").unwrap();
            c.send_raw(&[frame(0x89, b"p").repeat(10_000), frame(0x81, b"done")].concat()).unwrap();
            let started = Instant::now();
            let mut pongs = 0;
            loop {
                let (first, payload) = c.read_frame().unwrap().expect("connection open");
                match first & 0x0f {
                    0xA => pongs += 1,
                    0x1 => break assert_eq!(payload, b"done"),
                    op => panic!("unexpected opcode {op:#x}"),
                }
            }
            // The burst (twice --pings-per-sec) and what the rate adds meanwhile.
            let allowed = 20 + (10.0 * started.elapsed().as_secs_f64()).ceil() as usize;
            assert!((1..=allowed).contains(&pongs), "{pongs} pongs for 10,000 pings");
        }),
        ("message flood", |s| {
            let mut c = RawClient::upgrade(tcp_from(s, [127, 0, 0, 12]), "/relay?room=flood").unwrap();
            let mut writer = c.stream.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                let _ = writer.write_all(&frame(0x81, b"spam").repeat(20_000));
            });
            // Its first messages come back (a member hears itself), then 1008.
            let code = loop {
                let (first, payload) = c.read_frame().unwrap().expect("a close frame");
                if first & 0x0f == 0x8 {
                    break u16::from_be_bytes([payload[0], payload[1]]);
                }
            };
            assert_eq!(code, 1008);
            sender.join().unwrap();
        }),
        ("byte flood: 60 KiB messages at full speed", |s| {
            // Well under the message rate, far over --connection-byte-rate (8 MiB/s, 16 MiB burst).
            // On a game connection, which answers an oversized message with a small ERROR (at
            // most five a second): on /echo the 60 KiB echoes would race the slow-consumer limit
            // (--max-outbound-bytes 256 KiB) whenever this client's reads fell behind.
            let room = common::game::create_room(s, json!({})).0;
            let (_, token, _) = common::game::join(s, &room, "Flood");
            let mut c = RawClient::upgrade(tcp_from(s, [127, 0, 0, 22]), &format!("/ws?roomId={room}&token={token}&version=1.0")).unwrap();
            let mut writer = c.stream.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                let _ = writer.write_all(&frame(0x81, &[b'x'; 60 * 1024]).repeat(600));
            });
            let reason = loop {
                let (first, payload) = c.read_frame().unwrap().expect("a close frame");
                if first & 0x0f == 0x8 {
                    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
                    break String::from_utf8_lossy(&payload[2..]).into_owned();
                }
            };
            assert_eq!(reason, "byte rate limit exceeded");
            sender.join().unwrap();
        }),
        ("a client that never reads", |s| {
            // A small receive window so the server's queue, not the kernel, holds the backlog.
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 13], 0)).into()).unwrap();
            sock.connect(&s.addr.into()).unwrap();
            let stream = TcpStream::from(sock);
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut sink = RawClient::upgrade(stream, "/relay?room=sink").unwrap();
            let mut publisher = RawClient::upgrade(tcp_from(s, [127, 0, 0, 13]), "/relay?room=sink").unwrap();
            let payload = vec![7u8; 32 * 1024];
            let before = s.metric("partyflow_slow_consumer_disconnects_total", "");
            for sent in 0.. {
                assert!(sent < 2000, "the member that never reads was never cut off");
                publisher.send(0x82, &payload).unwrap();
                assert_eq!(publisher.read_frame().unwrap().map(|(f, p)| (f, p.len())), Some((0x82, payload.len())));
                if s.metric("partyflow_slow_consumer_disconnects_total", "") > before {
                    break;
                }
            }
            let code = loop {
                let (first, body) = sink.read_frame().unwrap().expect("a close frame after the queued data");
                if first == 0x88 {
                    break u16::from_be_bytes([body[0], body[1]]);
                }
            };
            assert_eq!(code, 1008);
        }),
        ("3,000 idle connections from one address", |s| {
            let upgrade = format!("GET /echo HTTP/1.1\r\nHost: t\r\n{UPGRADE}\r\n");
            let mut open = Vec::new();
            let (mut accepted, mut refused) = (0, 0);
            for _ in 0..3000 {
                let mut c = tcp_from(s, [127, 0, 0, 14]);
                c.write_all(upgrade.as_bytes()).unwrap();
                let mut head = [0u8; 12];
                c.read_exact(&mut head).unwrap();
                match &head {
                    b"HTTP/1.1 101" => accepted += 1,
                    b"HTTP/1.1 503" => refused += 1,
                    other => panic!("{}", String::from_utf8_lossy(other)),
                }
                open.push(c);
            }
            // The default --max-connections-per-ip, 1,000.
            assert_eq!((accepted, refused), (1000, 2000));
        }),
        ("half-open TCP (a peer that went silent)", |s| {
            // Upgraded, then nothing: no pong, no read. Closed after ping interval + pong timeout.
            let mut c = RawClient::upgrade(tcp_from(s, [127, 0, 0, 15]), "/echo").unwrap();
            let started = Instant::now();
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(c.expect_close().unwrap(), 1001);
            assert!(started.elapsed() < Duration::from_secs(8));
        }),
        ("garbage before the handshake", |s| {
            let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n";
            assert_eq!(status(&request_from(s, [127, 0, 0, 16], tls_hello)), 400);
            assert_eq!(status(&request_from(s, [127, 0, 0, 16], &[0u8; 9000])), 400);
        }),
        ("slowloris heads", |s| {
            // 100 connections from one address trickling a head: the first 64 (--max-pending-per-ip)
            // are held until --request-timeout and answered 408, the rest 503 at once.
            let conns: Vec<TcpStream> = (0..100).map(|_| tcp_from(s, [127, 0, 0, 17])).collect();
            let started = Instant::now();
            let handles: Vec<_> = conns
                .into_iter()
                .map(|mut c| {
                    std::thread::spawn(move || {
                        c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                        let mut out = Vec::new();
                        for byte in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                            if c.write_all(&[*byte]).is_err() {
                                // Answered and closed already: the answer is still to be read.
                                break;
                            }
                            match c.read_to_end(&mut out) {
                                Ok(_) => break,
                                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                                Err(_) => break,
                            }
                        }
                        if out.is_empty() {
                            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            let _ = c.read_to_end(&mut out);
                        }
                        status(&String::from_utf8_lossy(&out))
                    })
                })
                .collect();
            let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let count = |code: u16| statuses.iter().filter(|s| **s == code).count();
            // At most 64 held until the timeout; the rest refused at once. A refused client that
            // had already sent a byte may see the refusal as a reset (0) instead of the 503.
            assert!((1..=64).contains(&count(408)), "{statuses:?}");
            assert_eq!(count(408) + count(503) + count(0), 100, "{statuses:?}");
            assert!(count(503) >= 1, "{statuses:?}");
            assert!(started.elapsed() < Duration::from_secs(8), "held past the request timeout");
        }),
        ("slowloris body", |s| {
            let mut c = tcp_from(s, [127, 0, 0, 18]);
            c.write_all(b"POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"ho").unwrap();
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            assert_eq!(status(&out), 408, "{out}");
        }),
        ("request smuggling", |s| {
            let body = r#"{"hostName":"Eve"}"#;
            let n = body.len();
            let cases = [
                (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nContent-Length: {}\r\n\r\n{body}", n + 1), 400),
                (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}"), 400),
                (format!("POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n{body}"), 405),
                (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"), 501),
                (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{body}\r\n0\r\n\r\n"), 501),
                (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: -{n}\r\n\r\n{body}"), 400),
                (format!("GET /echo HTTP/1.1\r\nHost: t\r\n{UPGRADE}Content-Length: 5\r\n\r\nhello"), 400),
                ("GET /health HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n".to_string(), 400),
            ];
            for (raw, want) in cases {
                let answer = request_from(s, [127, 0, 0, 19], raw.as_bytes());
                assert_eq!(status(&answer), want, "{raw:?}: {answer}");
                // One answer, then the connection is closed: nothing smuggled behind it.
                assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
            }
        }),
        ("room-creation flood", |s| {
            let body = r#"{"hostName":"Eve"}"#;
            let create = format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let started = Instant::now();
            let answers: Vec<String> = (0..500).map(|_| request_from(s, [127, 0, 0, 20], create.as_bytes())).collect();
            let created = answers.iter().filter(|a| status(a) == 201).count();
            // --api-rate-per-ip 20 in bursts of 40, for the whole process (two shards).
            let allowed = 40 + (20.0 * started.elapsed().as_secs_f64()).ceil() as usize;
            assert!(created >= 1 && created <= allowed, "{created} rooms created (allowed {allowed})");
            let refused: Vec<_> = answers.iter().filter(|a| status(a) != 201).collect();
            assert!(refused.iter().all(|a| status(a) == 429 && a.contains("Retry-After: ")), "{:?}", refused.first());
        }),
        ("seat-squatting flood", |s| {
            let room = common::game::create_room(s, json!({})).0;
            let join = format!("POST /rooms/{room}/players HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n{{\"playerName\":\"Eve\"}}");
            let statuses: Vec<u16> = (0..300).map(|_| status(&request_from(s, [127, 0, 0, 21], join.as_bytes()))).collect();
            // Ten seats; then ROOM_FULL until the address is rate limited.
            assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 10, "{statuses:?}");
            assert!(statuses.iter().all(|s| [201, 409, 429].contains(s)), "{statuses:?}");
            assert!(statuses.contains(&429), "{statuses:?}");
        }),
    ]
}

#[test]
fn every_attack_gets_its_answer_while_healthy_rooms_keep_being_served() {
    let server = Server::start(FLAGS);
    let bystanders = Bystanders::start(&server);
    std::thread::sleep(Duration::from_millis(500));
    let mut report = vec![format!("{:<45} {:>21} {:>21}", "attack", "game p50/p99/max ms", "relay p50/p99/max ms")];
    let _ = bystanders.take();
    for (name, attack) in attacks() {
        let started = Instant::now();
        attack(&server);
        if let Some(rest) = MIN_WINDOW.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        let Samples { game, relay } = bystanders.take();
        assert!(
            game.len() >= MIN_PROBES && relay.len() >= MIN_PROBES,
            "{name}: the healthy rooms were held up ({} game, {} relay probes answered)",
            game.len(),
            relay.len()
        );
        let ms = |us: u64| us as f64 / 1000.0;
        let row = |h: &Histogram<u64>| format!("{:.2}/{:.2}/{:.2}", ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)), ms(h.max()));
        report.push(format!("{name:<45} {:>21} {:>21}", row(&game), row(&relay)));
    }
    bystanders.finish();
    let report = report.join("\n");
    println!("{report}");
    // Nothing was contained by luck: no panic anywhere, and the server still answers.
    assert_eq!(server.metric("partyflow_room_panics_total", ""), 0.0);
    assert_eq!(server.metric("partyflow_connection_panics_total", ""), 0.0);
    assert_eq!(server.get("/health").0, 200);
}
