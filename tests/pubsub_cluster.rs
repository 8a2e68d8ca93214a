//! `/pubsub` across two instances sharing a real `redis-server`: a room with members on both,
//! delivered in order message by message from senders on either side, `user_joined`, presence
//! that spans the cluster (and forgets a dead instance), directs to every connection of a user,
//! and the server API acting cluster-wide.

mod common;

use std::time::{Duration, Instant};

use common::game::get_json;
use common::pubsub::{api, token_for, PubSubClient};
use common::redis::Redis;
use common::Server;
use serde_json::{json, Value};

const SECRET: &str = "pubsub-cluster-secret-0123";
const API_KEY: &str = "pubsub-cluster-api-key-01";

fn instance(redis: &Redis, id: &str) -> Server {
    let url = redis.url();
    Server::start(&["--shards", "2", "--secret", "s", "--redis", &url, "--instance-id", id, "--pubsub-secret", SECRET, "--api-key", API_KEY])
}

fn client(server: &Server, user: &str) -> PubSubClient {
    PubSubClient::connect(server, Some(&token_for(SECRET, user))).unwrap()
}

/// Sends `event` probes from `from` (to a room, or to a user) until `to` hears one: instances
/// subscribe asynchronously, so the test waits on messages, not on a clock. Each direction
/// has its own event name, so that a client's own probes are not taken for the other side's.
fn until_heard(from: &mut PubSubClient, to: &mut PubSubClient, target: Value, event: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0.. {
        assert!(Instant::now() < deadline, "{event} probes never crossed");
        let mut probe = target.clone();
        probe["event"] = json!(event);
        probe["data"] = json!(n);
        from.send(probe);
        if !to.silent_for(Duration::from_millis(200)).unwrap() {
            let heard = to.seen.last().unwrap().clone();
            if heard["event"] == event {
                // Drain the rest of the probes, then forget them all.
                while !to.silent_for(Duration::from_millis(300)).unwrap() {}
                for c in [&mut *from, &mut *to] {
                    c.seen.retain(|v| v["event"] != event);
                }
                return;
            }
        }
    }
}

fn users(members: &Value) -> Vec<String> {
    let mut users: Vec<String> = members.as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap().to_string()).collect();
    users.sort();
    users
}

#[test]
fn rooms_presence_directs_and_the_api_span_two_instances() {
    let redis = Redis::start();
    let a = instance(&redis, "ps-a");
    let b = instance(&redis, "ps-b");
    let (mut ann, mut bob_a) = (client(&a, "ann"), client(&a, "bob"));
    let (mut cid, mut bob_b) = (client(&b, "cid"), client(&b, "bob"));
    for c in [&mut ann, &mut bob_a, &mut cid] {
        c.join("lobby").unwrap();
    }
    until_heard(&mut cid, &mut ann, json!({"room": "lobby"}), "probe-b");
    until_heard(&mut ann, &mut cid, json!({"room": "lobby"}), "probe-a");

    // Both instances hear the room now: a join on one reaches members on the other.
    let mut dee = client(&b, "dee");
    dee.join("lobby").unwrap();
    assert_eq!(ann.recv_event("user_joined").unwrap()["data"]["user"], "dee");
    // Interleaved senders on both instances: every member gets each sender's messages in order.
    for n in 0..100 {
        ann.send(json!({"event": "chat", "room": "lobby", "data": {"from": "ann", "n": n}}));
        cid.send(json!({"event": "chat", "room": "lobby", "data": {"from": "cid", "n": n}}));
    }
    for (name, c) in [("ann", &mut ann), ("bob_a", &mut bob_a), ("cid", &mut cid), ("dee", &mut dee)] {
        let mut next = std::collections::HashMap::from([("ann", 0), ("cid", 0)]);
        while next.values().any(|n| *n < 100) {
            let m = c.recv_event("chat").unwrap();
            let sender = m["data"]["from"].as_str().unwrap();
            assert_eq!(m["from"], sender, "{name}: from is the sender's user");
            let expected = next.get_mut(sender).unwrap();
            assert_eq!(m["data"]["n"], *expected, "{name}: {sender}'s messages out of order");
            *expected += 1;
        }
    }

    // Presence lists the members of both instances, once both list each other as live.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_json(&a, "/health").1["instances"].as_array().map_or(0, Vec::len) < 2 {
        assert!(Instant::now() < deadline, "instance a never saw b");
        std::thread::sleep(Duration::from_millis(100));
    }
    ann.send(json!({"event": "presence", "room": "lobby", "id": "p"}));
    let presence = ann.recv_event("presence").unwrap();
    assert_eq!((users(&presence["data"]["members"]), &presence["id"]), (vec!["ann".into(), "bob".into(), "cid".into(), "dee".into()], &json!("p")));
    let (status, listed) = api(&b, "GET", "/api/rooms/lobby/presence", Some(API_KEY), "");
    assert_eq!((status, users(&listed["members"])), (200, vec!["ann".into(), "bob".into(), "cid".into(), "dee".into()]));

    // One Redis command per publish, whatever the number of members and instances.
    let mut conn = redis.conn();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn).unwrap();
    for n in 0..50 {
        ann.send(json!({"event": "count", "room": "lobby", "data": n}));
    }
    for c in [&mut cid, &mut dee] {
        for n in 0..50 {
            assert_eq!(c.recv_event("count").unwrap()["data"], n);
        }
    }
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn).unwrap();
    let publishes = stats.lines().find_map(|l| l.strip_prefix("cmdstat_publish:calls=")).and_then(|l| l.split(',').next()).unwrap();
    assert_eq!(publishes, "50", "{stats}");

    // A direct reaches the user's connections on both instances.
    until_heard(&mut cid, &mut bob_a, json!({"to": "bob"}), "dm-probe");
    bob_b.seen.clear();
    while !bob_b.silent_for(Duration::from_millis(300)).unwrap() {}
    cid.send(json!({"event": "dm", "to": "bob", "data": "psst"}));
    for c in [&mut bob_a, &mut bob_b] {
        assert_eq!(c.recv_event("dm").unwrap(), json!({"event": "dm", "from": "cid", "data": "psst"}));
    }
    // The API of either instance acts on both.
    let body = json!({"room": "lobby", "event": "news", "data": 1}).to_string();
    assert_eq!(api(&a, "POST", "/api/publish", Some(API_KEY), &body).0, 200);
    for c in [&mut ann, &mut cid, &mut dee] {
        assert_eq!(c.recv_event("news").unwrap(), json!({"event": "news", "room": "lobby", "data": 1}));
    }
    let body = json!({"to": "ann", "event": "notice", "data": "hi"}).to_string();
    assert_eq!(api(&b, "POST", "/api/send", Some(API_KEY), &body).0, 200);
    assert_eq!(ann.recv_event("notice").unwrap(), json!({"event": "notice", "data": "hi"}));
    assert_eq!(api(&b, "POST", "/api/disconnect", Some(API_KEY), r#"{"user":"bob"}"#).0, 200);
    for c in [&mut bob_a, &mut bob_b] {
        while c.recv().is_some() {}
        assert_eq!(c.closed, Some(4003));
    }
    assert_eq!(ann.recv_event("user_left").unwrap()["data"]["user"], "bob");

    // A dead instance's members leave the cluster's presence (its hashes are no longer read).
    b.signal(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, listed) = api(&a, "GET", "/api/rooms/lobby/presence", Some(API_KEY), "");
        if users(&listed["members"]) == ["ann"] {
            break;
        }
        assert!(Instant::now() < deadline, "the dead instance's members stayed: {listed}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
