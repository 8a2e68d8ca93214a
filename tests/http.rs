//! The HTTP side of the port: health, metrics, and every refusal before an upgrade.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{connect, http_raw, parse_response, tcp_from, Server};

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

fn request(server: &Server, head: &str) -> (u16, String) {
    parse_response(&http_raw(server.addr, head))
}

#[test]
fn health_reports_shards_connections_and_rooms() {
    let server = Server::start(&["--shards", "2"]);
    let _a = connect(&server, "/relay?room=one");
    let _b = connect(&server, "/relay?room=two");
    let _c = connect(&server, "/echo");
    server.wait_connections(3);
    let (status, body) = server.get("/health");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], partyflow::VERSION);
    assert_eq!(v["shards"], 2);
    assert_eq!(v["rooms"], 2);
    assert!(v["uptimeSec"].is_u64());
}

/// `--version` (and `/health`) name the git commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_partyflow")).arg("--version").output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), format!("partyflow {}", partyflow::VERSION));
    let git = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    match git {
        Ok(git) if git.status.success() => {
            let commit = String::from_utf8(git.stdout).unwrap();
            assert!(printed.contains(&format!("({})", commit.trim())), "{printed} is not built from {commit}");
        }
        // Built from a source archive: the commit must have come from PARTYFLOW_GIT_COMMIT.
        _ => assert!(!printed.contains("(unknown)") || std::env::var("PARTYFLOW_GIT_COMMIT").is_err(), "{printed}"),
    }
}

#[test]
fn metrics_are_prometheus_text_with_per_shard_series() {
    let server = Server::start(&["--shards", "2"]);
    let mut ws = connect(&server, "/echo");
    ws.send(tungstenite::Message::text("hi")).unwrap();
    ws.read().unwrap();
    let raw = http_raw(server.addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(raw.contains("Content-Type: text/plain; version=0.0.4"));
    for family in [
        "partyflow_connections",
        "partyflow_rooms",
        "partyflow_frames_in_total",
        "partyflow_frames_out_total",
        "partyflow_messages_in_total",
        "partyflow_messages_out_total",
        "partyflow_bytes_in_total",
        "partyflow_bytes_out_total",
        "partyflow_handshakes_ok_total",
        "partyflow_handshakes_failed_total",
        "partyflow_slow_consumer_disconnects_total",
        "partyflow_close_codes_sent_total",
    ] {
        assert!(raw.contains(&format!("# TYPE {family} ")), "missing {family}");
        assert!(raw.contains(&format!("{family}{{shard=\"1\"")), "no shard 1 series for {family}");
    }
    assert_eq!(server.metric("partyflow_messages_in_total", ""), 1.0);
    assert_eq!(server.metric("partyflow_handshakes_ok_total", ""), 1.0);
    assert!(server.metric("partyflow_bytes_out_total", "") >= 4.0);
}

/// The server's latency histograms fill as rooms tick and frames go out, their buckets are
/// cumulative, and the whole exposition passes `promtool check metrics` (installed by the test
/// command; `PARTYFLOW_REQUIRE_TOOLS=1` makes its absence a failure).
#[test]
fn metrics_pass_promtool_and_carry_latency_histograms() {
    let server = Server::start(&["--shards", "1", "--countdown", "1"]);
    let (_room, (mut host, _), _players) = common::game::started_game(&server, 2, serde_json::json!({}));
    host.recv_until("TIMER_TICK").unwrap();
    let families = ["partyflow_room_timer_lateness_seconds", "partyflow_outbound_queue_delay_seconds", "partyflow_read_handling_seconds"];
    // Shards publish their recordings about once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while families.iter().any(|f| server.metric(&format!("{f}_count"), "") < 1.0) {
        assert!(Instant::now() < deadline, "histograms stayed empty: {}", server.get("/metrics").1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, text) = server.get("/metrics");
    for family in families {
        assert!(text.contains(&format!("# TYPE {family} histogram")), "{family}");
        let buckets: Vec<f64> =
            text.lines().filter(|l| l.starts_with(&format!("{family}_bucket{{shard=\"0\""))).map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap()).collect();
        assert!(buckets.len() > 10 && buckets.windows(2).all(|w| w[0] <= w[1]), "{family}: {buckets:?}");
        // The +Inf bucket is the count, in the same scrape.
        let count = text.lines().find_map(|l| l.strip_prefix(&format!("{family}_count{{shard=\"0\"}} "))).unwrap();
        assert_eq!(buckets.last().copied(), Some(count.parse::<f64>().unwrap()), "{family}");
    }
    let health: serde_json::Value = serde_json::from_str(&server.get("/health").1).unwrap();
    assert!(health["latencyMs"]["roomTimerLateness"]["count"].as_u64().unwrap() >= 1, "{health}");
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut promtool) => {
            promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = promtool.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
        }
        Err(e) => {
            assert!(std::env::var("PARTYFLOW_REQUIRE_TOOLS").is_err(), "promtool is required: {e}");
            eprintln!("promtool not installed: exposition checked without it");
        }
    }
}

#[test]
fn refusals_have_the_right_status_and_are_counted() {
    let server = Server::start(&["--shards", "1", "--allowed-origin", "https://good.example"]);
    let cases: Vec<(String, u16, &str)> = vec![
        ("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n".into(), 404, "not_found"),
        ("POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".into(), 405, "method_not_allowed"),
        // The method decides before the body: a wrong one is 405 whatever it carries.
        ("POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello".into(), 405, "method_not_allowed"),
        ("GET /rooms HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 405, "method_not_allowed"),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\n{UPGRADE}Content-Length: 5\r\n\r\nhello"), 405, "method_not_allowed"),
        ("GET /echo HTTP/1.1\r\nHost: t\r\n\r\n".into(), 426, "upgrade_required"),
        (format!("GET /echo HTTP/1.1\r\nHost: t\r\n{}\r\n", UPGRADE.replace("Version: 13", "Version: 8")), 426, "upgrade_required"),
        (format!("POST /echo HTTP/1.1\r\nHost: t\r\n{UPGRADE}\r\n"), 405, "method_not_allowed"),
        ("GARBAGE\r\n\r\n".into(), 400, "bad_request"),
        (format!("GET /relay HTTP/1.1\r\nHost: t\r\n{UPGRADE}\r\n"), 400, "bad_request"),
        (format!("GET /relay?room=bad%20id HTTP/1.1\r\nHost: t\r\n{UPGRADE}\r\n"), 400, "bad_request"),
        (format!("GET /relay?room={} HTTP/1.1\r\nHost: t\r\n{UPGRADE}\r\n", "r".repeat(65)), 400, "bad_request"),
        (format!("GET /echo HTTP/1.1\r\nHost: t\r\n{}\r\n", UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")), 400, "bad_request"),
        (format!("GET /echo HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n{UPGRADE}\r\n"), 403, "forbidden"),
        (format!("GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)), 431, "header_too_large"),
    ];
    for (head, status, reason) in cases {
        let before = server.metric("partyflow_handshakes_failed_total", &format!("reason=\"{reason}\""));
        let (got, body) = request(&server, &head);
        assert_eq!(got, status, "{}", head.lines().next().unwrap());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"]["code"].is_string(), "{body}");
        let after = server.metric("partyflow_handshakes_failed_total", &format!("reason=\"{reason}\""));
        assert_eq!(after, before + 1.0, "{reason} not counted");
    }
    for (head, allow) in [("POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", "GET"), ("GET /rooms HTTP/1.1\r\nHost: t\r\n\r\n", "POST")] {
        let raw = http_raw(server.addr, head);
        assert!(raw.contains(&format!("Allow: {allow}\r\n")), "405 must say which method to use: {raw}");
    }
    let raw = http_raw(server.addr, "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(raw.contains("Sec-WebSocket-Version: 13"), "426 must say which version to use");
    let good = format!("GET /echo HTTP/1.1\r\nHost: t\r\nOrigin: https://good.example\r\n{UPGRADE}\r\n");
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(good.as_bytes()).unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 101");
}

#[test]
fn slow_request_head_is_cut_off_with_408() {
    let server = Server::start(&["--shards", "1", "--request-timeout", "300ms"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    let started = Instant::now();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.metric("partyflow_handshakes_failed_total", "reason=\"timeout\""), 1.0);
}

#[test]
fn connection_caps_answer_503_before_the_upgrade() {
    let server = Server::start(&["--shards", "2", "--max-connections", "3", "--max-connections-per-ip", "2"]);
    let _a = connect(&server, "/echo");
    let _b = connect(&server, "/echo");
    let upgrade = format!("GET /echo HTTP/1.1\r\nHost: t\r\n{UPGRADE}\r\n");
    let (status, body) = request(&server, &upgrade);
    assert_eq!(status, 503, "per-IP cap");
    assert!(body.contains("TOO_MANY_CONNECTIONS_FROM_ADDRESS"));
    // Another loopback address has its own per-IP allowance, but the total cap is 3.
    let _c = tungstenite::client::client(server.url("/echo"), tcp_from(&server, [127, 0, 0, 2])).unwrap();
    let mut s = tcp_from(&server, [127, 0, 0, 3]);
    s.write_all(upgrade.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 503"), "total cap: {out}");
    assert!(out.contains("SERVER_FULL"));
    drop(_a);
    server.wait_connections(2);
    // A place in the total is free again (from a fresh address: 127.0.0.1's /health probes
    // count against its own two places until the server has closed them).
    let _d = tungstenite::client::client(server.url("/echo"), tcp_from(&server, [127, 0, 0, 4])).unwrap();
}

#[test]
fn ambiguous_framing_and_unexpected_bodies_are_refused() {
    let server = Server::start(&["--shards", "2"]);
    let body = r#"{"hostName":"Hana"}"#;
    let n = body.len();
    let cases = [
        (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nContent-Length: {}\r\n\r\n{body}", n + 1), 400, "more than once"),
        // Equal lengths too: a proxy in front may have framed the request by another header.
        (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}"), 400, "more than once"),
        (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {n}, {n}\r\n\r\n{body}"), 400, "more than once"),
        (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: +{n}\r\n\r\n{body}"), 400, "digits"),
        (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{body}\r\n0\r\n\r\n"), 501, "Transfer-Encoding"),
        (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"), 501, "Transfer-Encoding"),
        (format!("GET /echo HTTP/1.1\r\nHost: t\r\n{UPGRADE}Content-Length: 5\r\n\r\nhello"), 400, "no body"),
        ("GET /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(), 501, "Transfer-Encoding"),
        ("GET /health HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n".to_string(), 400, "malformed"),
        (format!("POST /rooms HTTP/1.1\r\nHost: t\r\nExpect: something\r\nContent-Length: {n}\r\n\r\n{body}"), 417, "100-continue"),
    ];
    for (raw, status, says) in cases {
        let (got, text) = request(&server, &raw);
        assert_eq!(got, status, "{raw:?}: {text}");
        assert!(text.contains(says), "{raw:?}: {text}");
    }
    // Expect: 100-continue is answered before the body is sent.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("POST /rooms HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {n}\r\n\r\n").as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.starts_with("HTTP/1.1 201"), "{rest}");
}

#[test]
fn room_requests_over_the_per_address_rate_get_429() {
    let server = Server::start(&["--shards", "1", "--api-rate-per-ip", "5"]);
    let body = r#"{"hostName":"Hana"}"#;
    let create = format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let statuses: Vec<u16> = (0..20).map(|_| request(&server, &create).0).collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert!((10..=12).contains(&created), "a burst of twice the rate, then refusals: {statuses:?}");
    let raw = http_raw(server.addr, &create);
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.contains("Retry-After: 1") && raw.contains("RATE_LIMITED"), "{raw}");
    assert!(server.metric("partyflow_handshakes_failed_total", "reason=\"rate_limited\"") >= 8.0);
    // Reads are not limited.
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn the_room_api_rate_is_per_address_for_the_whole_process_whatever_the_shards() {
    // Four shards: counted per shard, the address would get four bursts.
    let server = Server::start(&["--shards", "4", "--api-rate-per-ip", "5"]);
    let body = r#"{"hostName":"Hana"}"#;
    // Rooms under chosen ids are created on their owner shards, spread over all four.
    let started = Instant::now();
    let statuses: Vec<u16> = (0..40)
        .map(|i| request(&server, &format!("POST /rooms?roomId=RATE{i:04} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())).0)
        .collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    // One burst of twice the rate, and what refills while the requests run, for the process.
    let allowed = 10 + (5.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!((10..=allowed).contains(&created), "{created} created (allowed {allowed}): {statuses:?}");
    assert!(statuses.iter().all(|s| [201, 429].contains(s)), "{statuses:?}");
    // Another address has its own allowance.
    let mut s = tcp_from(&server, [127, 0, 0, 9]);
    s.write_all(format!("POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
}

#[test]
fn an_address_holds_a_thousand_connections_by_default_pending_and_upgraded_together() {
    let server = Server::start(&["--shards", "2"]);
    let ip = [127, 0, 0, 23];
    let upgrade = format!("GET /echo HTTP/1.1\r\nHost: t\r\n{UPGRADE}\r\n");
    // 990 upgraded connections and 10 that never finish their request: the address's 1,000.
    let mut held = Vec::new();
    for _ in 0..990 {
        let mut c = tcp_from(&server, ip);
        c.write_all(upgrade.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
        held.push(c);
    }
    for _ in 0..10 {
        let mut c = tcp_from(&server, ip);
        c.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
        held.push(c);
    }
    // The pending ones are counted once the server has accepted them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let mut c = tcp_from(&server, ip);
        c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut raw = String::new();
        let _ = c.read_to_string(&mut raw);
        if !raw.is_empty() {
            break raw;
        }
        assert!(Instant::now() < deadline, "the 1,001st connection was never refused");
    };
    // Refused at once, before it sent a byte.
    let (status, body) = parse_response(&refusal);
    assert_eq!(status, 503, "{refusal}");
    assert!(body.contains("TOO_MANY_CONNECTIONS_FROM_ADDRESS"), "{body}");
    // Another address is not affected.
    let mut other = tcp_from(&server, [127, 0, 0, 24]);
    other.write_all(upgrade.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    other.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    // A place comes back when a connection ends.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = tcp_from(&server, ip);
        c.write_all(upgrade.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        if &head == b"HTTP/1.1 101" {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_still_sending_their_request_are_capped_per_address() {
    let server = Server::start(&["--shards", "2", "--max-pending-per-ip", "3", "--request-timeout", "60s"]);
    // Three connections that never finish their request head hold every place of 127.0.0.1.
    let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    for s in &mut idle {
        s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    }
    // The next one is answered 503 at once, before it sends anything.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        if !raw.is_empty() {
            let (status, body) = parse_response(&raw);
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("TOO_MANY_PENDING_FROM_ADDRESS"), "{body}");
            break;
        }
        // Not answered: the three were not all accepted yet (this probe's place goes with it).
        assert!(Instant::now() < deadline, "never capped");
    }
    // Once one of them finishes its request, its place is free again.
    idle[0].write_all(b"Host: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    idle[0].read_to_string(&mut answer).unwrap();
    assert_eq!(parse_response(&answer).0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while request(&server, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").0 != 200 {
        assert!(Instant::now() < deadline, "the place was never given back");
        std::thread::sleep(Duration::from_millis(20));
    }
    // (/metrics needs a place too: polled, as places come back when the server sees a close.)
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("partyflow_handshakes_failed_total", "reason=\"overloaded\"") < 1.0 {
        assert!(Instant::now() < deadline, "the refusals were not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_room_api_answers_browsers_on_allowed_origins_only() {
    let server = Server::start(&["--allowed-origin", "https://game.example"]);
    let header = |raw: &str, name: &str| raw.lines().find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_string()));
    let preflight = |origin: &str, path: &str| {
        http_raw(server.addr, &format!("OPTIONS {path} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n"))
    };
    let ok = preflight("https://game.example", "/rooms");
    assert!(ok.starts_with("HTTP/1.1 204"), "{ok}");
    assert_eq!(header(&ok, "Access-Control-Allow-Origin").as_deref(), Some("https://game.example"));
    assert_eq!(header(&ok, "Access-Control-Allow-Methods").as_deref(), Some("POST, OPTIONS"));
    assert_eq!(header(&ok, "Access-Control-Allow-Headers").as_deref(), Some("Content-Type"));
    let other = preflight("https://evil.example", "/rooms");
    assert!(other.starts_with("HTTP/1.1 204") && header(&other, "Access-Control-Allow-Origin").is_none(), "{other}");
    // The real calls: the allowed origin can read the answer (errors included), others cannot.
    let body = r#"{"hostName":"Hana"}"#;
    let create = |origin: &str| {
        http_raw(
            server.addr,
            &format!("POST /rooms HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        )
    };
    let created = create("https://game.example");
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    assert_eq!(header(&created, "Access-Control-Allow-Origin").as_deref(), Some("https://game.example"));
    assert!(header(&create("https://evil.example"), "Access-Control-Allow-Origin").is_none());
    let missing = http_raw(server.addr, "GET /rooms/NOSUCH HTTP/1.1\r\nHost: t\r\nOrigin: https://game.example\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404") && header(&missing, "Access-Control-Allow-Origin").is_some(), "{missing}");
    // Not the room API: no CORS, and OPTIONS is a wrong method there.
    let metrics = http_raw(server.addr, "GET /metrics HTTP/1.1\r\nHost: t\r\nOrigin: https://game.example\r\n\r\n");
    assert!(header(&metrics, "Access-Control-Allow-Origin").is_none());
    assert!(preflight("https://game.example", "/metrics").starts_with("HTTP/1.1 405"));
}

#[test]
fn the_web_client_is_served_with_a_strict_policy_unless_turned_off() {
    let server = Server::start(&[]);
    let header = |raw: &str, name: &str| raw.lines().find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_string()));
    for (path, content_type, cache) in [
        ("/", "text/html; charset=utf-8", "no-cache"),
        ("/app.js", "text/javascript; charset=utf-8", "public, max-age=300"),
        ("/partyflow.js", "text/javascript; charset=utf-8", "public, max-age=300"),
        ("/style.css", "text/css; charset=utf-8", "public, max-age=300"),
    ] {
        let raw = http_raw(server.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert!(raw.starts_with("HTTP/1.1 200"), "{path}: {raw}");
        assert_eq!(header(&raw, "Content-Type").as_deref(), Some(content_type), "{path}");
        assert_eq!(header(&raw, "Cache-Control").as_deref(), Some(cache), "{path}");
        assert!(header(&raw, "Content-Security-Policy").is_some_and(|csp| csp.starts_with("default-src 'none'")), "{path}");
        assert_eq!(header(&raw, "X-Content-Type-Options").as_deref(), Some("nosniff"));
    }
    let off = Server::start(&["--web-client", "false"]);
    assert!(http_raw(off.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http_raw(off.addr, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n").starts_with("HTTP/1.1 200"));
}
