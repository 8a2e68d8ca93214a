//! Room relay over real sockets: exact delivery across shards, and slow consumers cut off
//! without holding up their room.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{connect, RawClient, Server};
use tungstenite::Message;

const ROOMS: usize = 8;
const MEMBERS: usize = 4;
const PER_SENDER: usize = 40;

/// Every member of every room receives every message of its room exactly once, in each sender's
/// order, with text kept text and binary kept binary, and nothing from other rooms; the rooms
/// live on both shards and clients arrive on whichever shard the kernel picks.
#[test]
fn relay_delivery_is_exact_across_shards() {
    let server = Arc::new(Server::start(&["--shards", "2"]));
    let ready = Arc::new(Barrier::new(ROOMS * MEMBERS + 1));
    let go = Arc::new(Barrier::new(ROOMS * MEMBERS + 1));
    let mut threads = Vec::new();
    for room in 0..ROOMS {
        for member in 0..MEMBERS {
            let (server, ready, go) = (server.clone(), ready.clone(), go.clone());
            threads.push(std::thread::spawn(move || {
                let mut ws = connect(&server, &format!("/relay?room=room-{room}"));
                ready.wait();
                go.wait();
                for seq in 0..PER_SENDER {
                    let body = format!("{room}:{member}:{seq}");
                    let msg = if seq % 2 == 0 { Message::text(body) } else { Message::binary(body.into_bytes()) };
                    ws.send(msg).unwrap();
                }
                let mut next: HashMap<usize, usize> = HashMap::new();
                for _ in 0..MEMBERS * PER_SENDER {
                    let (text, is_text) = match ws.read().unwrap() {
                        Message::Text(t) => (t.to_string(), true),
                        Message::Binary(b) => (String::from_utf8(b.to_vec()).unwrap(), false),
                        other => panic!("unexpected {other:?}"),
                    };
                    let parts: Vec<usize> = text.split(':').map(|p| p.parse().unwrap()).collect();
                    assert_eq!(parts[0], room, "message from another room");
                    let expected = next.entry(parts[1]).or_default();
                    assert_eq!(parts[2], *expected, "sender {} out of order or duplicated", parts[1]);
                    assert_eq!(is_text, parts[2].is_multiple_of(2), "message kind changed in transit");
                    *expected += 1;
                }
                assert!(next.values().all(|&n| n == PER_SENDER));
                ws
            }));
        }
    }
    ready.wait();
    server.wait_connections((ROOMS * MEMBERS) as i64);
    assert!(server.metric("partyflow_rooms", "shard=\"0\"") >= 1.0, "no room on shard 0");
    assert!(server.metric("partyflow_rooms", "shard=\"1\"") >= 1.0, "no room on shard 1");
    assert_eq!(server.metric("partyflow_rooms", ""), ROOMS as f64);
    assert!(server.metric("partyflow_handoffs_sent_total", "") >= 1.0, "no connection crossed shards");
    go.wait();
    let clients: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let delivered = server.metric("partyflow_messages_out_total", "");
    assert_eq!(delivered, (ROOMS * MEMBERS * MEMBERS * PER_SENDER) as f64);
    drop(clients);
    server.wait_connections(0);
    assert_eq!(server.metric("partyflow_rooms", ""), 0.0);
}

/// A member that stops reading is closed with 1008 once its queue passes the limit, while the
/// member that keeps reading receives every message.
#[test]
fn slow_consumer_is_disconnected_and_the_room_keeps_going() {
    // The publisher sends as fast as the fast member reads: no byte rate limit in the way.
    let server = Arc::new(Server::start(&["--shards", "1", "--max-outbound-bytes", "262144", "--connection-byte-rate", "1073741824"]));
    const COUNT: usize = 600;
    const SIZE: usize = 32 * 1024;
    let mut slow = RawClient::connect(&server, "/relay?room=slow").unwrap();
    let mut fast = connect(&server, "/relay?room=slow");
    let mut publisher = RawClient::connect(&server, "/relay?room=slow").unwrap();
    server.wait_connections(3);
    // The fast member acknowledges each message to the publisher, so it never falls behind
    // (however loaded the machine), while the slow member never reads.
    let (received, acked) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for i in 0..COUNT {
            match fast.read().unwrap() {
                Message::Binary(b) => assert_eq!(b.len(), SIZE, "message {i}"),
                other => panic!("unexpected {other:?}"),
            }
            received.send(()).unwrap();
        }
    });
    let started = Instant::now();
    let payload = vec![7u8; SIZE];
    let publish = |publisher: &mut RawClient| {
        publisher.send(0x82, &payload).unwrap();
        let (first, body) = publisher.read_frame().unwrap().unwrap();
        assert_eq!((first, body.len()), (0x82, SIZE));
        acked.recv_timeout(Duration::from_secs(10)).expect("the fast member stopped receiving");
    };
    let mut sent = 0;
    while sent < COUNT {
        publish(&mut publisher);
        sent += 1;
        if server.metric("partyflow_slow_consumer_disconnects_total", "") >= 1.0 {
            break;
        }
    }
    assert_eq!(server.metric("partyflow_slow_consumer_disconnects_total", ""), 1.0, "slow reader never cut off");
    // The slow member finds queued data, then the 1008 close, then the end of the connection.
    let code = loop {
        let (first, payload) = slow.read_frame().unwrap().expect("close frame before EOF");
        if first == 0x88 {
            break u16::from_be_bytes([payload[0], payload[1]]);
        }
        assert_eq!(first, 0x82);
    };
    assert_eq!(code, 1008);
    // The rest of the room goes on.
    while sent < COUNT {
        publish(&mut publisher);
        sent += 1;
    }
    reader.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
}
