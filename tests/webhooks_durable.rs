//! Durable webhooks (`--redis`): events are kept in a Redis Stream until the receiver
//! acknowledges them. `kill -9` of the server while events are pending, then a restart: every
//! event arrives. Two instances, one killed: the other delivers what it left.

mod common;

use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::redis::Redis;
use common::Server;
use serde_json::json;

const SECRET: &str = "webhook-test-secret-0123";

fn server(redis: &Redis, receiver: &Receiver, instance: &str) -> Server {
    let (url, hooks) = (redis.url(), receiver.url());
    Server::start(&[
        "--redis",
        &url,
        "--secret",
        "durable-webhooks-test-secret",
        "--instance-id",
        instance,
        "--webhook-url",
        &hooks,
        "--webhook-secret",
        SECRET,
        "--webhook-events",
        "room.,player.",
    ])
}

/// Waits until `server` has written `n` events to Redis and tried to deliver them.
fn wait_stored_and_tried(server: &Server, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric("partyflow_webhook_events_stored_total", "") < n || server.metric("partyflow_webhook_requests_failed_total", "") < 1.0 {
        assert!(Instant::now() < deadline, "events not stored and tried; log: {:?}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A room with 4 events (created, 3 players joined) on `server`.
fn room_with_four_events(server: &Server) -> String {
    let (room, _, _) = common::game::create_room(server, json!({"hostName": "Hana"}));
    for name in ["A", "B", "C"] {
        common::game::join(server, &room, name);
    }
    room
}

fn stream_len(redis: &Redis, key: &str) -> i64 {
    redis::cmd("XLEN").arg(key).query(&mut redis.conn()).unwrap()
}

fn exists(redis: &Redis, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(&mut redis.conn()).unwrap()
}

#[test]
fn kill_9_with_events_pending_then_a_restart_delivers_every_event() {
    let redis = Redis::start();
    let receiver = Receiver::start(SECRET, vec![]);
    receiver.refusing.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut first = server(&redis, &receiver, "pf-a");
    let room = room_with_four_events(&first);
    wait_stored_and_tried(&first, 4.0);
    assert_eq!(stream_len(&redis, "partyflow:webhooks:pf-a"), 4, "the events wait in the stream");
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).expect("killed");
    let offered = receiver.offered.lock().unwrap().clone();
    assert_eq!(offered.len(), 4, "the receiver was offered the four events and refused them");

    receiver.refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    let again = server(&redis, &receiver, "pf-a");
    let events = receiver.until_all(Duration::from_secs(20), |events| events.len() >= 4);
    let seqs: Vec<u64> = events.iter().filter(|e| e["roomId"] == room.as_str()).map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "{events:?}");
    assert_eq!(receiver.received_ids(), offered, "every event id offered before the kill arrives");
    // Acknowledged: the stream empties.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_len(&redis, "partyflow:webhooks:pf-a") > 0 {
        assert!(Instant::now() < deadline, "the stream did not empty");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(again.log().iter().any(|l| l.contains("left pending by this instance's previous run")));
    // The room, recovered from Redis by the next join, goes on counting where its written
    // state and events left off: seq 5, no number used twice, none skipped.
    common::game::join(&again, &room, "D");
    let events = receiver.until_all(Duration::from_secs(20), |events| events.len() >= 5);
    let seqs: Vec<u64> = events.iter().filter(|e| e["roomId"] == room.as_str()).map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "{events:?}");
    assert_eq!(events.last().unwrap()["type"], "player.joined");
}

#[test]
fn two_instances_one_killed_the_other_delivers_its_pending_events() {
    let redis = Redis::start();
    let receiver = Receiver::start(SECRET, vec![]);
    receiver.refusing.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut a = server(&redis, &receiver, "pf-a");
    let b = server(&redis, &receiver, "pf-b");
    let room = room_with_four_events(&a);
    wait_stored_and_tried(&a, 4.0);
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(10)).expect("killed");
    let offered = receiver.offered.lock().unwrap().clone();
    receiver.refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    // pf-a's heartbeat runs out (5 s), then pf-b claims its stream.
    let events = receiver.until_all(Duration::from_secs(30), |events| events.len() >= 4);
    let seqs: Vec<u64> = events.iter().filter(|e| e["roomId"] == room.as_str()).map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "{events:?}");
    assert_eq!(receiver.received_ids(), offered);
    assert!(events.iter().all(|e| e["instanceId"] == "pf-a"), "the events keep the instance that emitted them");
    assert_eq!(b.metric("partyflow_webhook_events_claimed_total", ""), 4.0);
    // Drained: the dead instance's stream and its entry in the set are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while exists(&redis, "partyflow:webhooks:pf-a") {
        assert!(Instant::now() < deadline, "the dead stream was not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let members: Vec<String> = redis::cmd("SMEMBERS").arg("partyflow:webhooks:streams").query(&mut redis.conn()).unwrap();
    assert!(!members.contains(&"pf-a".to_string()), "{members:?}");
}
