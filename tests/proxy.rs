//! The `/pubsub` proxy against a real HTTP backend on loopback: connect, join and publish are
//! allowed, refused, changed or time out as the backend answers; one connection's messages keep
//! their order while its call is pending, and a slow call holds no other connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pubsub::{token_for, PubSubClient};
use common::Server;
use partyflow::webhooks::verify;
use serde_json::{json, Value};

const SECRET: &str = "proxy-test-secret-0123456";
const JWT_SECRET: &str = "pubsub-test-secret-0123456";

/// What the backend answers: status, body, and how long it waits first.
type Decide = dyn Fn(&str, &Value) -> (u16, Value, Duration) + Send + Sync;

/// An app backend: checks each call's signature, records (path, body), answers as `decide` says.
struct Backend {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Backend {
    fn start(decide: impl Fn(&str, &Value) -> (u16, Value, Duration) + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let decide: Arc<Decide> = Arc::new(decide);
        let sink = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (sink, decide) = (sink.clone(), decide.clone());
                std::thread::spawn(move || loop {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = first.split(' ').nth(1).unwrap_or("").to_string();
                    let (mut length, mut timestamp, mut signature) = (0usize, 0u64, String::new());
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(": ") {
                            match name.to_ascii_lowercase().as_str() {
                                "content-length" => length = value.parse().unwrap(),
                                "partyflow-timestamp" => timestamp = value.parse().unwrap(),
                                "partyflow-signature" => signature = value.to_string(),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    assert!(verify(SECRET, timestamp, &body, &signature), "a proxy call with a bad signature");
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    sink.lock().unwrap().push((path.clone(), body.clone()));
                    let (status, answer, wait) = decide(&path, &body);
                    std::thread::sleep(wait);
                    let answer = answer.to_string();
                    if write!(stream, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}", answer.len()).is_err() {
                        return;
                    }
                });
            }
        });
        Backend { addr, calls }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn calls_to(&self, path: &str) -> Vec<Value> {
        self.calls.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect()
    }
}

fn server(backend: &Backend, extra: &[&str]) -> Server {
    let (connect, join, publish) = (backend.url("/connect"), backend.url("/join"), backend.url("/publish"));
    let mut args = vec!["--webhook-secret", SECRET, "--proxy-connect-url", &connect, "--proxy-join-url", &join, "--proxy-publish-url", &publish];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// The raw answer to a `/pubsub` upgrade.
fn upgrade(server: &Server, query: &str) -> (u16, String) {
    let raw = common::http_raw(
        server.addr,
        &format!("GET /pubsub{query} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    );
    common::parse_response(&raw)
}

#[test]
fn connect_is_decided_by_the_backend_and_a_token_is_verified_first() {
    let backend = Backend::start(|_, body| match body["token"]["sub"].as_str() {
        Some("banned") => (403, json!({"error": {"code": "BANNED", "message": "not you"}}), Duration::ZERO),
        Some("slow") => (200, json!({"user": "slow"}), Duration::from_secs(3)),
        Some(sub) => (200, json!({"user": format!("backend-{sub}"), "meta": {"plan": "gold"}, "rooms": ["lobby"]}), Duration::ZERO),
        None => (200, json!({"user": "anonymous-by-backend"}), Duration::ZERO),
    });
    let server = server(&backend, &["--pubsub-secret", JWT_SECRET, "--proxy-timeout", "1s"]);
    // No token: the backend names the user.
    let anon = PubSubClient::connect(&server, None).unwrap();
    assert_eq!(anon.user, "anonymous-by-backend");
    // A token: verified, its claims passed on; the backend's answer decides user, meta, rooms.
    let mut ann = PubSubClient::connect(&server, Some(&token_for(JWT_SECRET, "ann"))).unwrap();
    assert_eq!(ann.user, "backend-ann");
    let call = backend.calls_to("/connect").into_iter().find(|c| c["token"]["sub"] == "ann").unwrap();
    assert_eq!(call["conn"].as_str(), Some(ann.conn.as_str()), "the backend is told the connection's id");
    assert!(call["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(call["headers"].is_object());
    ann.send(json!({"event": "join", "room": "elsewhere", "id": 1}));
    assert_eq!(ann.recv_event("error").unwrap()["data"]["code"], "FORBIDDEN", "rooms from the backend's answer");
    // A forged token is 401 before the backend is asked; a refusal is 403 with its body; a
    // backend slower than --proxy-timeout is 503.
    let before = backend.calls_to("/connect").len();
    assert_eq!(upgrade(&server, "?token=forged").0, 401);
    assert_eq!(backend.calls_to("/connect").len(), before);
    let (status, body) = upgrade(&server, &format!("?token={}", token_for(JWT_SECRET, "banned")));
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()), (403, json!({"error": {"code": "BANNED", "message": "not you"}})));
    let started = Instant::now();
    let (status, body) = upgrade(&server, &format!("?token={}", token_for(JWT_SECRET, "slow")));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("PROXY_UNAVAILABLE"));
    assert!(started.elapsed() < Duration::from_secs(3), "answered at the timeout, not when the backend finished");
}

#[test]
fn join_and_publish_are_allowed_refused_replaced_or_unavailable() {
    let backend = Backend::start(|path, body| match (path, body["room"].as_str(), body["data"]["text"].as_str()) {
        ("/connect", ..) => (200, json!({"user": body["headers"]["user-agent"].as_str().unwrap_or("someone")}), Duration::ZERO),
        ("/join", Some("vip"), _) => (403, json!({"error": {"message": "members only"}}), Duration::ZERO),
        ("/join", Some("stuck"), _) => (200, json!({}), Duration::from_secs(3)),
        ("/join", ..) => (200, json!({}), Duration::ZERO),
        ("/publish", _, Some("darn")) => (200, json!({"data": {"text": "d**n"}}), Duration::ZERO),
        ("/publish", _, Some("spam")) => (200, json!({"error": {"code": "SPAM", "message": "no ads"}}), Duration::ZERO),
        ("/publish", _, Some("stuck")) => (200, json!({}), Duration::from_secs(3)),
        _ => (200, json!({}), Duration::ZERO),
    });
    let server = server(&backend, &["--proxy-timeout", "1s"]);
    let mut a = PubSubClient::connect(&server, None).unwrap();
    let mut b = PubSubClient::connect(&server, None).unwrap();
    a.join("lobby").unwrap();
    b.join("lobby").unwrap();
    assert_eq!(backend.calls_to("/join")[0]["room"], "lobby");
    a.send(json!({"event": "join", "room": "vip", "id": "v"}));
    let refused = a.recv_event("error").unwrap();
    assert_eq!((refused["id"].as_str(), &refused["data"]), (Some("v"), &json!({"code": "FORBIDDEN", "message": "members only"})));
    a.send(json!({"event": "join", "room": "stuck", "id": "s"}));
    let unavailable = a.recv_event("error").unwrap();
    assert_eq!((unavailable["id"].as_str(), unavailable["data"]["code"].as_str()), (Some("s"), Some("PROXY_UNAVAILABLE")));
    // Publishes: unchanged, replaced, refused with the backend's error, unavailable.
    a.send(json!({"event": "chat", "room": "lobby", "data": {"text": "hello"}, "id": 1}));
    assert_eq!(b.recv_event("chat").unwrap()["data"], json!({"text": "hello"}));
    let call = backend.calls_to("/publish").pop().unwrap();
    assert_eq!((call["user"].as_str(), call["conn"].as_str(), call["event"].as_str()), (Some(a.user.as_str()), Some(a.conn.as_str()), Some("chat")));
    a.send(json!({"event": "chat", "room": "lobby", "data": {"text": "darn"}, "id": 2}));
    assert_eq!(b.recv_event("chat").unwrap()["data"], json!({"text": "d**n"}));
    a.send(json!({"event": "chat", "room": "lobby", "data": {"text": "spam"}, "id": 3}));
    let error = a.recv_event("error").unwrap();
    assert_eq!((error["id"].as_i64(), &error["data"]), (Some(3), &json!({"code": "SPAM", "message": "no ads"})));
    a.send(json!({"event": "chat", "room": "lobby", "data": {"text": "stuck"}, "id": 4}));
    let error = a.recv_event("error").unwrap();
    assert_eq!((error["id"].as_i64(), error["data"]["code"].as_str()), (Some(4), Some("PROXY_UNAVAILABLE")));
    // Nothing refused reached the other member.
    a.send(json!({"event": "chat", "room": "lobby", "data": {"text": "last"}, "id": 5}));
    assert_eq!(b.recv_event("chat").unwrap()["data"]["text"], "last");
    let texts: Vec<&str> = b.seen.iter().filter(|m| m["event"] == "chat").map(|m| m["data"]["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello", "d**n", "last"]);
    assert!(server.metric("partyflow_proxy_calls_failed_total", "") >= 2.0);
}

#[test]
fn a_connection_keeps_its_order_while_a_call_is_pending_and_others_do_not_wait() {
    // The backend holds its answer to "slow" messages until the test opens the gate: no timing
    // luck decides the order.
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let held = gate.clone();
    let backend = Backend::start(move |path, body| match (path, body["data"].as_str()) {
        ("/connect", _) => (200, json!({"user": body["conn"]}), Duration::ZERO),
        ("/publish", Some(text)) if text.starts_with("slow") => {
            let (open, opened) = &*held;
            let guard = opened.wait_timeout_while(open.lock().unwrap(), Duration::from_secs(30), |open| !*open).unwrap().0;
            assert!(*guard, "the gate was never opened");
            (200, json!({}), Duration::ZERO)
        }
        _ => (200, json!({}), Duration::ZERO),
    });
    let server = server(&backend, &[]);
    let mut a = PubSubClient::connect(&server, None).unwrap();
    let mut c = PubSubClient::connect(&server, None).unwrap();
    let mut watcher = PubSubClient::connect(&server, None).unwrap();
    for client in [&mut a, &mut c, &mut watcher] {
        client.join("room").unwrap();
    }
    a.send(json!({"event": "say", "room": "room", "data": "slow-1"}));
    a.send(json!({"event": "say", "room": "room", "data": "fast-2"}));
    a.send(json!({"event": "leave", "room": "room", "id": "bye"}));
    // Another connection's publish goes through while a's first call is held.
    c.send(json!({"event": "say", "room": "room", "data": "from-c"}));
    assert_eq!(watcher.recv_event("say").unwrap()["data"], "from-c", "c did not wait for a's call");
    let (open, opened) = &*gate;
    *open.lock().unwrap() = true;
    opened.notify_all();
    let said: Vec<String> = (0..2).map(|_| watcher.recv_event("say").unwrap()["data"].as_str().unwrap().to_string()).collect();
    assert_eq!(said, ["slow-1", "fast-2"], "a's messages kept their order");
    // a's leave waited behind its publishes too.
    assert_eq!(a.recv_event("left").unwrap()["id"], "bye");
}

#[test]
fn proxy_flags_are_checked_at_start_up() {
    for (args, says) in [
        (vec!["--proxy-join-url", "http://127.0.0.1:9/j"], "--proxy-join-url needs --webhook-secret"),
        (vec!["--proxy-connect-url", "ftp://x", "--webhook-secret", SECRET], "--proxy-connect-url must be an http:// or https:// URL"),
        (
            vec!["--proxy-publish-url", "http://127.0.0.1:9/p", "--webhook-secret", SECRET, "--proxy-timeout", "0s"],
            "--proxy-timeout must be between 1ms and 60s",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_partyflow")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
