//! The programs in `examples/`, started as built and talked to over sockets as their users would.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pubsub::{api_at, token_for, PubSubClient};
use common::redis::Redis;
use serde_json::json;

/// A running example; stopped when dropped.
struct Example {
    addr: SocketAddr,
    child: Child,
}

impl Example {
    /// Starts example `name` (built by `cargo test` next to this test's binary) with `args` and
    /// `env`, and waits for its "listening on" line.
    fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Example {
        let exe = std::env::current_exe().unwrap();
        let path = exe.parent().and_then(|deps| deps.parent()).unwrap().join("examples").join(name);
        let mut child = Command::new(&path)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (cargo test builds the examples; alone: cargo build --release --examples)", path.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{name} said {line:?}")).parse().unwrap();
        Example { addr, child }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        common::stop_gently(&mut self.child);
    }
}

#[test]
fn basic_runs_the_built_in_protocol_and_its_echo() {
    let server = Example::start("basic", &["127.0.0.1:0"], &[]);
    let (mut a, mut b) = (PubSubClient::connect(&server.addr, None).unwrap(), PubSubClient::connect(&server.addr, None).unwrap());
    a.join("lobby").unwrap();
    b.join("lobby").unwrap();
    b.send(json!({"event": "hello", "room": "lobby", "data": "hi all"}));
    assert_eq!(a.recv_event("hello").unwrap()["data"], "hi all");
    a.send(json!({"event": "echo", "to": "me", "data": {"any": ["json"]}, "id": 2}));
    assert_eq!(a.recv_event("echo").unwrap(), json!({"event": "echo", "data": {"any": ["json"]}, "id": 2}));
}

#[test]
fn chat_says_types_and_lists_who_is_there() {
    let server = Example::start("chat", &["127.0.0.1:0"], &[]);
    let (mut a, mut b) = (PubSubClient::connect(&server.addr, None).unwrap(), PubSubClient::connect(&server.addr, None).unwrap());
    let me = a.recv_event("welcome").unwrap()["data"]["user"].as_str().unwrap().to_string();
    b.recv_event("welcome").unwrap();
    a.join("general").unwrap();
    b.join("general").unwrap();
    a.send(json!({"event": "say", "room": "general", "data": "hello"}));
    for c in [&mut a, &mut b] {
        let said = c.recv_event("say").unwrap();
        assert_eq!((said["from"].as_str(), said["data"]["text"].as_str()), (Some(me.as_str()), Some("hello")));
        assert!(said["data"]["at"].as_u64().unwrap() > 1_600_000_000_000);
    }
    a.send(json!({"event": "typing", "room": "general"}));
    assert_eq!(b.recv_event("typing").unwrap()["from"], me.as_str());
    assert!(a.silent_for(Duration::from_millis(200)).unwrap(), "typing is not sent back to the typist");
    a.send(json!({"event": "say", "room": "general", "data": "x".repeat(501), "id": 5}));
    let refused = a.recv_event("error").unwrap();
    assert_eq!((refused["data"]["code"].as_str(), refused["id"].as_i64()), (Some("INVALID_MESSAGE"), Some(5)));
    a.send(json!({"event": "say", "room": "elsewhere", "data": "hi"}));
    assert_eq!(a.recv_event("error").unwrap()["data"]["code"], "NOT_IN_ROOM");
    b.send(json!({"event": "presence", "room": "general"}));
    assert_eq!(b.recv_event("presence").unwrap()["data"]["members"].as_array().unwrap().len(), 2);
}

#[test]
fn notifications_are_pushed_by_the_backend_and_clients_cannot_publish() {
    const SECRET: &str = "notifications-secret-0123";
    const KEY: &str = "notifications-api-key-0123";
    let server = Example::start("notifications", &["127.0.0.1:0"], &[("PUBSUB_SECRET", SECRET), ("API_KEY", KEY)]);
    let mut ann = PubSubClient::connect(&server.addr, Some(&token_for(SECRET, "ann"))).unwrap();
    let mut bob = PubSubClient::connect(&server.addr, Some(&token_for(SECRET, "bob"))).unwrap();
    // Both are in `all` from the start: ann hears bob arrive, and presence lists both.
    assert_eq!(ann.recv_event("user_joined").unwrap()["data"]["user"], "bob");
    ann.send(json!({"event": "presence", "room": "all"}));
    assert_eq!(ann.recv_event("presence").unwrap()["data"]["members"].as_array().unwrap().len(), 2);
    let body = json!({"to": "ann", "event": "notice", "data": {"text": "Your order shipped"}}).to_string();
    assert_eq!(api_at(server.addr, "POST", "/api/send", Some(KEY), &body).0, 200);
    assert_eq!(ann.recv_event("notice").unwrap(), json!({"event": "notice", "data": {"text": "Your order shipped"}}));
    let body = json!({"room": "all", "event": "notice", "data": "Maintenance at 22:00"}).to_string();
    assert_eq!(api_at(server.addr, "POST", "/api/publish", Some(KEY), &body).0, 200);
    for c in [&mut ann, &mut bob] {
        assert_eq!(c.recv_event("notice").unwrap()["data"], "Maintenance at 22:00");
    }
    bob.send(json!({"event": "notice", "room": "all", "data": "spoof", "id": 1}));
    assert_eq!(bob.recv_event("error").unwrap()["data"]["code"], "FORBIDDEN");
    bob.send(json!({"event": "leave", "room": "all"}));
    assert_eq!(bob.recv_event("error").unwrap()["data"]["code"], "FORBIDDEN");
    assert!(ann.silent_for(Duration::from_millis(200)).unwrap());
    assert_eq!(api_at(server.addr, "POST", "/api/send", None, &body).0, 401);
}

#[test]
fn with_redis_joins_two_instances() {
    let redis = Redis::start();
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str())];
    let (a, b) = (Example::start("with-redis", &["127.0.0.1:0", "a"], &env), Example::start("with-redis", &["127.0.0.1:0", "b"], &env));
    let (mut ann, mut bob) = (PubSubClient::connect(&a.addr, None).unwrap(), PubSubClient::connect(&b.addr, None).unwrap());
    ann.join("lobby").unwrap();
    bob.join("lobby").unwrap();
    // Subscriptions are set up asynchronously: publish until the other instance hears it.
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0.. {
        assert!(Instant::now() < deadline, "the instances never joined");
        bob.send(json!({"event": "probe", "room": "lobby", "data": n}));
        if !ann.silent_for(Duration::from_millis(200)).unwrap() && ann.seen.iter().any(|v| v["event"] == "probe") {
            break;
        }
    }
    ann.send(json!({"event": "chat", "room": "lobby", "data": "across"}));
    assert_eq!(bob.recv_event("chat").unwrap()["data"], "across");
}
