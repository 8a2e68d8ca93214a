//! Shards of one or more instances joined by their messages, driven by hand.

use std::collections::BTreeMap;
use std::time::Instant;

use super::*;
use crate::metrics::Metrics;
use crate::pubsub::session::Session;
use crate::pubsub::{Handlers, RoomPatterns};
use crate::ws::{frame_payload, DataKind};

/// Three shards and their sessions, messages between shards carried in order: a simulated
/// process, no sockets.
struct Sim {
    shards: Vec<PubSubShard>,
    sessions: BTreeMap<usize, Session>,
    /// What each connection received, as JSON.
    got: BTreeMap<usize, Vec<serde_json::Value>>,
    /// Connections the shards were told to close, with the code.
    closed: Vec<(usize, u16)>,
    /// What the shards asked of the other instances, in order.
    to_cluster: Vec<(usize, Output)>,
    metrics: Metrics,
    now: Instant,
}

impl Sim {
    fn new(shards: usize) -> Sim {
        Sim::with(shards, false)
    }

    fn with(shards: usize, clustered: bool) -> Sim {
        let now = Instant::now();
        Sim {
            shards: (0..shards).map(|i| PubSubShard::new(i, shards, clustered)).collect(),
            sessions: BTreeMap::new(),
            got: BTreeMap::new(),
            closed: Vec::new(),
            to_cluster: Vec::new(),
            metrics: Metrics::new(shards, now),
            now,
        }
    }

    /// Connection `key` (its own serial) of `user` on `shard`.
    fn open(&mut self, key: usize, shard: usize, user: &str) {
        let conn = Conn {
            conn: ConnRef { shard, key, serial: key as u64 },
            label: format!("c{key}").into(),
            user: user.into(),
            meta: None,
            allowed: RoomPatterns::any(),
        };
        self.shards[shard].connect(&conn);
        self.sessions.insert(key, Session::new(conn, self.now, 100, 1000.0));
        self.settle();
        let connected = self.take(key);
        assert_eq!(connected, vec![serde_json::json!({"event": "connected", "data": {"user": user, "conn": format!("c{key}")}})]);
    }

    fn close(&mut self, key: usize) {
        let session = self.sessions.remove(&key).unwrap();
        self.shards[session.conn.conn.shard].depart(&session.conn, &session.rooms);
        self.settle();
    }

    fn send(&mut self, key: usize, text: &str) {
        let session = self.sessions.get_mut(&key).unwrap();
        let mut commands = Vec::new();
        session.handle_message(self.now, DataKind::Text, text.as_bytes(), &Handlers::default(), &self.metrics, &mut commands);
        let (shard, conn) = (session.conn.conn.shard, session.conn.clone());
        for c in commands {
            self.shards[shard].handle_command(&conn, c);
        }
        self.settle();
    }

    /// Carries every output until nothing is left (each shard's messages in order).
    fn settle(&mut self) {
        loop {
            let mut progress = false;
            for i in 0..self.shards.len() {
                while let Some(out) = self.shards[i].poll_output() {
                    progress = true;
                    match out {
                        Output::ToShard(to, message) => self.shards[to].handle_message(message),
                        Output::Send(conn, frame) => self.deliver(conn, &frame),
                        Output::Joined(conn, room, frame) => {
                            if self.sessions.get(&conn.key).is_some_and(|s| s.rooms.contains(&room)) {
                                self.shards[i].add_local(&room, conn);
                            }
                            self.deliver(conn, &frame);
                        }
                        Output::JoinRefused(conn, room, frame) => {
                            if let Some(s) = self.sessions.get_mut(&conn.key) {
                                s.rooms.retain(|r| *r != room);
                            }
                            self.deliver(conn, &frame);
                        }
                        Output::Close(conn, code) => self.closed.push((conn.key, code)),
                        Output::Rooms(_) => {}
                        other => self.to_cluster.push((i, other)),
                    }
                }
            }
            if !progress {
                return;
            }
        }
    }

    fn deliver(&mut self, conn: ConnRef, frame: &Bytes) {
        if self.sessions.get(&conn.key).is_some_and(|s| s.conn.conn == conn) {
            self.got.entry(conn.key).or_default().push(serde_json::from_slice(frame_payload(frame)).unwrap());
        }
    }

    fn take(&mut self, key: usize) -> Vec<serde_json::Value> {
        self.got.remove(&key).unwrap_or_default()
    }
}

#[test]
fn members_on_three_shards_join_publish_and_leave_in_order() {
    let mut sim = Sim::new(3);
    for (key, shard, user) in [(1, 0, "ann"), (2, 1, "bob"), (3, 2, "cid"), (4, 2, "dee")] {
        sim.open(key, shard, user);
    }
    for key in 1..=4 {
        sim.send(key, r#"{"event":"join","room":"lobby","id":1}"#);
    }
    assert_eq!(sim.take(4), vec![serde_json::json!({"event": "joined", "room": "lobby", "data": {"members": 4}, "id": 1})]);
    // Ann was answered, then saw the three others arrive, in order.
    let ann = sim.take(1);
    assert_eq!(ann[0], serde_json::json!({"event": "joined", "room": "lobby", "data": {"members": 1}, "id": 1}));
    let users: Vec<&str> = ann.iter().filter(|v| v["event"] == "user_joined").map(|v| v["data"]["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["bob", "cid", "dee"]);
    assert_eq!(ann[1]["data"]["conn"], "c2");
    sim.send(1, r#"{"event":"presence","room":"lobby","id":"p"}"#);
    let presence = sim.take(1);
    assert_eq!((presence[0]["event"].as_str(), presence[0]["id"].as_str()), (Some("presence"), Some("p")));
    assert_eq!(presence[0]["data"]["members"].as_array().unwrap().len(), 4);
    sim.take(2);
    sim.take(3);
    for n in 0..5 {
        sim.send(2, &format!(r#"{{"event":"chat","room":"lobby","data":{n}}}"#));
    }
    // Everyone, the sender included, got the five in order, once.
    for key in 1..=4 {
        let chats: Vec<i64> = sim.take(key).iter().filter(|v| v["event"] == "chat").map(|v| v["data"].as_i64().unwrap()).collect();
        assert_eq!(chats, [0, 1, 2, 3, 4], "conn {key}");
    }
    sim.send(3, r#"{"event":"leave","room":"lobby","id":7}"#);
    assert_eq!(sim.take(3), vec![serde_json::json!({"event": "left", "room": "lobby", "id": 7})]);
    assert_eq!(sim.take(4), vec![serde_json::json!({"event": "user_left", "room": "lobby", "data": {"user": "cid", "conn": "c3"}})]);
    sim.close(4);
    let seen: Vec<String> = sim.take(1).iter().map(|v| format!("{} {}", v["event"], v["data"]["user"])).collect();
    assert_eq!(seen, ["\"user_left\" \"cid\"", "\"user_left\" \"dee\""]);
    sim.send(2, r#"{"event":"chat","room":"lobby","data":"after"}"#);
    assert!(sim.take(3).is_empty() && sim.take(4).is_empty());
    assert_eq!(sim.take(1).len(), 1);
}

#[test]
fn directs_reach_every_connection_of_a_user_and_disconnects_close_them() {
    let mut sim = Sim::new(3);
    sim.open(1, 0, "ann");
    sim.open(2, 1, "bob");
    sim.open(3, 2, "bob");
    sim.send(1, r#"{"event":"dm","to":"bob","data":{"t":"hi"}}"#);
    sim.send(1, r#"{"event":"dm","to":"nobody","data":1}"#);
    for key in [2, 3] {
        assert_eq!(sim.take(key), vec![serde_json::json!({"event": "dm", "from": "ann", "data": {"t": "hi"}})]);
    }
    assert!(sim.take(1).is_empty());
    // From any shard: the user's owner tells each connection's shard.
    sim.shards[0].disconnect_user("bob".into(), 4003);
    sim.settle();
    sim.closed.sort();
    assert_eq!(sim.closed, [(2, 4003), (3, 4003)]);
    sim.close(2);
    sim.send(1, r#"{"event":"dm","to":"bob","data":2}"#);
    assert!(sim.take(2).is_empty());
    assert_eq!(sim.take(3).len(), 1);
}

/// Instances of [`Sim`] joined by a simulated Redis: channels per topic, presence hashes per
/// room and instance.
struct Cluster {
    instances: Vec<Sim>,
    subscribed: Vec<std::collections::BTreeSet<Topic>>,
    presence: BTreeMap<(RoomId, usize), BTreeMap<String, String>>,
}

impl Cluster {
    fn new(instances: usize, shards: usize) -> Cluster {
        Cluster {
            instances: (0..instances).map(|_| Sim::with(shards, true)).collect(),
            subscribed: vec![Default::default(); instances],
            presence: BTreeMap::new(),
        }
    }

    fn open(&mut self, instance: usize, key: usize, shard: usize, user: &str) {
        self.instances[instance].open(key, shard, user);
        self.settle();
    }

    fn send(&mut self, instance: usize, key: usize, text: &str) {
        self.instances[instance].send(key, text);
        self.settle();
    }

    fn close(&mut self, instance: usize, key: usize) {
        self.instances[instance].close(key);
        self.settle();
    }

    /// Carries what instances ask of Redis until nothing is left.
    fn settle(&mut self) {
        loop {
            let mut progress = false;
            for from in 0..self.instances.len() {
                let outputs = std::mem::take(&mut self.instances[from].to_cluster);
                for (_, output) in outputs {
                    progress = true;
                    self.carry(from, output);
                }
            }
            if !progress {
                return;
            }
        }
    }

    fn carry(&mut self, from: usize, output: Output) {
        match output {
            Output::Cast(cast) => {
                let topic = match &cast {
                    Cast::Room { room, .. } | Cast::Kick { room, .. } => Topic::Room(room.clone()),
                    Cast::User { user, .. } | Cast::Disconnect { user, .. } => Topic::User(user.clone()),
                };
                for to in (0..self.instances.len()).filter(|to| *to != from && self.subscribed[*to].contains(&topic)) {
                    let sim = &mut self.instances[to];
                    let owner = match &topic {
                        Topic::Room(room) => room.owner_shard(sim.shards.len()),
                        Topic::User(user) => owner_shard_of(user, sim.shards.len()),
                    };
                    sim.shards[owner].remote(cast.clone());
                    sim.settle();
                }
            }
            Output::Subscribe(topic) => {
                self.subscribed[from].insert(topic);
            }
            Output::Unsubscribe(topic) => {
                self.subscribed[from].remove(&topic);
            }
            Output::PresenceSet { room, conn, member } => {
                self.presence.entry((room, from)).or_default().insert(conn.to_string(), member);
            }
            Output::PresenceRemove { room, conn } => {
                if let Some(members) = self.presence.get_mut(&(room, from)) {
                    members.remove(&*conn);
                }
            }
            Output::PresenceQuery { room, conn, id } => {
                let members = self.presence.iter().filter(|((r, _), _)| *r == room).flat_map(|(_, m)| m.values().cloned()).collect();
                let frame = presence_reply(&room, id.as_ref(), members);
                self.instances[from].deliver(conn, &frame);
            }
            other => unreachable!("not for the cluster: {other:?}"),
        }
    }
}

#[test]
fn rooms_users_and_presence_span_instances() {
    let mut c = Cluster::new(2, 2);
    c.open(0, 1, 0, "ann");
    c.open(0, 2, 1, "bob");
    c.open(1, 1, 1, "cid");
    c.open(1, 2, 0, "bob");
    for (instance, key) in [(0, 1), (0, 2), (1, 1)] {
        c.send(instance, key, r#"{"event":"join","room":"lobby"}"#);
    }
    // Ann saw bob join on her instance and cid on the other.
    let ann: Vec<String> = c.instances[0].take(1).iter().filter(|v| v["event"] == "user_joined").map(|v| v["data"]["user"].to_string()).collect();
    assert_eq!(ann, ["\"bob\"", "\"cid\""]);
    for n in 0..3 {
        c.send(1, 1, &format!(r#"{{"event":"chat","room":"lobby","data":{n}}}"#));
    }
    for (instance, key) in [(0, 1), (0, 2), (1, 1)] {
        let chats: Vec<i64> = c.instances[instance].take(key).iter().filter(|v| v["event"] == "chat").map(|v| v["data"].as_i64().unwrap()).collect();
        assert_eq!(chats, [0, 1, 2], "instance {instance} conn {key}");
    }
    assert!(c.instances[1].take(2).is_empty(), "bob's connection on instance 1 is not in the room");
    c.send(1, 1, r#"{"event":"presence","room":"lobby","id":9}"#);
    let presence = c.instances[1].take(1);
    let mut users: Vec<&str> = presence[0]["data"]["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    users.sort();
    assert_eq!((users, presence[0]["id"].as_i64()), (vec!["ann", "bob", "cid"], Some(9)));
    // A direct reaches the user's connections on both instances; a disconnect closes them.
    c.send(1, 1, r#"{"event":"dm","to":"bob","data":"psst"}"#);
    assert_eq!(c.instances[0].take(2), vec![serde_json::json!({"event": "dm", "from": "cid", "data": "psst"})]);
    assert_eq!(c.instances[1].take(2), vec![serde_json::json!({"event": "dm", "from": "cid", "data": "psst"})]);
    c.instances[0].shards[1].disconnect_user("bob".into(), 4003);
    c.instances[0].settle();
    c.settle();
    assert_eq!((&c.instances[0].closed[..], &c.instances[1].closed[..]), (&[(2, 4003)][..], &[(2, 4003)][..]));
    // The last local member out unsubscribes its instance and clears its presence.
    c.close(1, 1);
    assert_eq!(c.instances[0].take(1), vec![serde_json::json!({"event": "user_left", "room": "lobby", "data": {"user": "cid", "conn": "c1"}})]);
    assert!(!c.subscribed[1].contains(&Topic::Room(RoomId::parse("lobby").unwrap())));
    assert!(c.presence.get(&(RoomId::parse("lobby").unwrap(), 1)).is_none_or(BTreeMap::is_empty));
}

#[test]
fn a_kick_closes_the_users_connections_in_the_room_on_every_instance_and_a_ban_keeps_it_out() {
    let mut c = Cluster::new(2, 2);
    c.open(0, 1, 0, "ann");
    c.open(1, 1, 1, "eve");
    c.open(1, 2, 0, "eve");
    for (instance, key) in [(0, 1), (1, 1)] {
        c.send(instance, key, r#"{"event":"join","room":"lobby"}"#);
    }
    c.instances[1].take(2);
    // Kicked from instance 0's side with a ban: eve's connection in the room (on instance 1)
    // closes; her other connection, not in the room, stays.
    c.instances[0].shards[1].kick(RoomId::parse("lobby").unwrap(), "eve".into(), true);
    c.instances[0].settle();
    c.settle();
    assert_eq!(&c.instances[1].closed[..], &[(1, crate::ws::close_code::KICKED)][..]);
    // Banned on both instances: a join from her other connection is refused and leaves her
    // out of the room (a publish there is NOT_IN_ROOM).
    c.send(1, 2, r#"{"event":"join","room":"lobby","id":3}"#);
    let refused = c.instances[1].take(2);
    assert_eq!(refused[0]["data"]["code"], "FORBIDDEN");
    assert_eq!(refused[0]["id"], 3);
    c.send(1, 2, r#"{"event":"chat","room":"lobby","data":1}"#);
    assert_eq!(c.instances[1].take(2)[0]["data"]["code"], "NOT_IN_ROOM");
    assert!(c.instances[0].take(1).iter().all(|v| v["event"] != "chat"));
}
