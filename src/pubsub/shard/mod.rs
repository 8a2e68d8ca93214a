//! One shard's part of `/pubsub`, sans-IO: the local members of rooms (to hand frames to), the
//! rooms and users this shard owns, and the messages between shards.
//!
//! A connection's commands go to the owner of their room or user as [`ShardMessage`]s, in the
//! order issued; the owner answers with frames for the shards of the members concerned, once per
//! shard. Every input is a method; what the runtime must do comes out of [`PubSubShard::poll_output`]:
//! a message for another shard, a frame for a local connection, a connection to close. A message
//! for this shard is handled at once, so one shard runs the same code as many.

use std::collections::VecDeque;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;

use super::app::{frame, Command, Conn};
use super::message::{member_data, MessageId, Outgoing};
use super::rooms::{members_data, presence_data, ConnRef, Member, OwnedRooms, Users};
use crate::cluster::pubsub::{Cast, Topic};
use crate::rooms::{owner_shard_of, RoomId};

/// What one shard sends another.
#[derive(Debug, Clone)]
pub enum ShardMessage {
    /// To a room's owner: `member` joins `room`, answered `joined` with `id`.
    Join {
        /// The room.
        room: RoomId,
        /// Who joins.
        member: Member,
        /// The id of the `joined` reply.
        id: Option<MessageId>,
    },
    /// To a room's owner: `conn` leaves `room`; answered `left` with `id` when `answer`.
    Leave {
        /// The room.
        room: RoomId,
        /// Who leaves.
        conn: ConnRef,
        /// The id of the `left` reply.
        id: Option<MessageId>,
        /// Whether `left` is sent (not for a connection that is gone).
        answer: bool,
    },
    /// To a room's owner: `conn` asks for its members.
    Presence {
        /// The room.
        room: RoomId,
        /// Who asks.
        conn: ConnRef,
        /// The id of the `presence` reply.
        id: Option<MessageId>,
    },
    /// To a room's owner: `frame` to every member but `exclude`.
    Publish {
        /// The room.
        room: RoomId,
        /// The encoded message.
        frame: Bytes,
        /// Not to this connection.
        exclude: Option<ConnRef>,
    },
    /// To a user's owner: `user` connected through `conn`, called `label`.
    Online {
        /// The user.
        user: Arc<str>,
        /// The connection.
        conn: ConnRef,
        /// Its connection id.
        label: Arc<str>,
    },
    /// To a user's owner: that connection is gone.
    Offline {
        /// The user.
        user: Arc<str>,
        /// The connection.
        conn: ConnRef,
    },
    /// To a user's owner: `frame` to every connection of `user`.
    ToUser {
        /// The user.
        user: Arc<str>,
        /// The encoded message.
        frame: Bytes,
    },
    /// To a user's owner: close every connection of `user`.
    DisconnectUser {
        /// The user.
        user: Arc<str>,
        /// The close code.
        code: u16,
    },
    /// To a member's shard: the room has `conn`; `frame` is its `joined` reply.
    Joined {
        /// The room.
        room: RoomId,
        /// The member.
        conn: ConnRef,
        /// The reply.
        frame: Bytes,
    },
    /// To a member's shard: `frame` to its members of `room` but `exclude`.
    Deliver {
        /// The room.
        room: RoomId,
        /// The encoded message.
        frame: Bytes,
        /// Not to this connection.
        exclude: Option<ConnRef>,
    },
    /// To a connection's shard: `frame` to it.
    ToConn {
        /// The connection.
        conn: ConnRef,
        /// The encoded message.
        frame: Bytes,
    },
    /// To a connection's shard: close it with `code`.
    Close {
        /// The connection.
        conn: ConnRef,
        /// The close code.
        code: u16,
    },
    /// To a room's owner: an operator kicked `user` (with `ban`, it stays out).
    Kick {
        /// The room.
        room: RoomId,
        /// The user.
        user: Arc<str>,
        /// Keep it out.
        ban: bool,
    },
    /// To a member's shard: the room refused `conn` (banned); `frame` is the error.
    JoinRefused {
        /// The room.
        room: RoomId,
        /// The connection.
        conn: ConnRef,
        /// The error reply.
        frame: Bytes,
    },
}

/// What the runtime must do.
#[derive(Debug)]
pub enum Output {
    /// Send `message` to shard `shard`.
    ToShard(usize, ShardMessage),
    /// Queue `frame` on a local connection (dropped if the connection is gone).
    Send(ConnRef, Bytes),
    /// `conn` is in `room` now, if it still wants to be (it may have left meanwhile: then it
    /// only gets `frame`, its `joined` reply): add it to the room's local members with
    /// [`PubSubShard::add_local`], then queue `frame`.
    Joined(ConnRef, RoomId, Bytes),
    /// The room refused `conn` (its user is banned): it is not in the room; queue `frame`.
    JoinRefused(ConnRef, RoomId, Bytes),
    /// Close a local connection with `code`.
    Close(ConnRef, u16),
    /// Rooms this shard owns changed by this much (the `rooms` gauge).
    Rooms(i64),
    /// With other instances: hand this to the instances of the room or user.
    Cast(Cast),
    /// With other instances: start hearing what other instances send the room or user.
    Subscribe(Topic),
    /// Stop hearing it.
    Unsubscribe(Topic),
    /// With other instances: this instance's connection `conn` is in `room`, shown as `member`.
    PresenceSet {
        /// The room.
        room: RoomId,
        /// The connection id.
        conn: Arc<str>,
        /// Its presence object (JSON).
        member: String,
    },
    /// It left.
    PresenceRemove {
        /// The room.
        room: RoomId,
        /// The connection id.
        conn: Arc<str>,
    },
    /// Report to the app's backend: webhook type, room, the room's event number (from 1 while
    /// it has members) and data (a JSON object).
    Webhook(&'static str, RoomId, u64, String),
    /// Ask the app's backend about a message of local connection `conn`; the answer goes to its
    /// session.
    Proxy(ConnRef, super::ProxyCall),
    /// With other instances: answer `conn` with `room`'s members on every instance (see
    /// [`presence_reply`]).
    PresenceQuery {
        /// The room.
        room: RoomId,
        /// Who asked.
        conn: ConnRef,
        /// The id of the reply.
        id: Option<MessageId>,
    },
}

/// The `presence` reply to a query with `id`, listing `members` (JSON objects).
pub fn presence_reply(room: &RoomId, id: Option<&MessageId>, members: Vec<String>) -> Bytes {
    let data = members_data(members.into_iter());
    frame(&Outgoing { event: "presence", room: Some(room.as_str()), data: Some(&data), id, ..Outgoing::default() })
}

/// One shard's `/pubsub` state.
#[derive(Debug)]
pub struct PubSubShard {
    index: usize,
    shards: usize,
    /// The members of rooms on this shard (whoever owns the rooms).
    local: AHashMap<RoomId, Vec<ConnRef>>,
    owned: OwnedRooms,
    users: Users,
    /// Whether other instances share the rooms and users (through Redis).
    clustered: bool,
    /// Event numbers of the owned rooms, when webhooks are on.
    webhooks: Option<AHashMap<RoomId, u64>>,
    /// Users an operator banned from owned rooms (kept while the process runs).
    banned: AHashMap<RoomId, ahash::AHashSet<Arc<str>>>,
    outputs: VecDeque<Output>,
}

impl PubSubShard {
    /// Shard `index` of `shards`; `clustered` when other instances share the rooms and users.
    pub fn new(index: usize, shards: usize, clustered: bool) -> Self {
        PubSubShard {
            index,
            shards,
            local: AHashMap::new(),
            owned: OwnedRooms::default(),
            users: Users::default(),
            clustered,
            webhooks: None,
            banned: AHashMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The same, reporting its rooms' lifecycle as webhook events (`room.occupied`,
    /// `member.joined`, `member.left`, `room.vacated`).
    pub fn with_webhooks(mut self, on: bool) -> Self {
        self.webhooks = on.then(AHashMap::new);
        self
    }

    fn webhook(&mut self, kind: &'static str, room: &RoomId, data: String) {
        let Some(seqs) = self.webhooks.as_mut() else { return };
        let seq = seqs.entry(room.clone()).or_insert(0);
        *seq = seq.saturating_add(1);
        let seq = *seq;
        if kind == "room.vacated" {
            seqs.remove(room);
        }
        self.outputs.push_back(Output::Webhook(kind, room.clone(), seq, data));
    }

    /// With other instances, hands `cast` to them.
    fn cast(&mut self, cast: impl FnOnce() -> Cast) {
        if self.clustered {
            self.outputs.push_back(Output::Cast(cast()));
        }
    }

    /// What another instance sent this shard, the owner of its room or user.
    pub fn remote(&mut self, cast: Cast) {
        match cast {
            Cast::Room { room, frame } => self.send_to_room(&room, Bytes::from(frame), None),
            Cast::User { user, frame } => self.handle_message(ShardMessage::ToUser { user, frame: Bytes::from(frame) }),
            Cast::Disconnect { user, code } => self.handle_message(ShardMessage::DisconnectUser { user, code }),
            Cast::Kick { room, user, ban } => self.handle_message(ShardMessage::Kick { room, user, ban }),
        }
    }

    /// An operator kicks `user` from `room` on every instance: its connections in the room are
    /// closed with `code`; with `ban`, the room refuses its joins from now on.
    pub fn kick(&mut self, room: RoomId, user: Arc<str>, ban: bool) {
        self.cast(|| Cast::Kick { room: room.clone(), user: user.clone(), ban });
        self.route(room.owner_shard(self.shards), ShardMessage::Kick { room, user, ban });
    }

    /// The next thing to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// `conn` opened on this shard.
    pub fn connect(&mut self, conn: &Conn) {
        let user = conn.user.clone();
        self.route(owner_shard_of(&user, self.shards), ShardMessage::Online { user, conn: conn.conn, label: conn.label.clone() });
    }

    /// `conn` closed: it leaves `rooms` (the others get `user_left`) and its user forgets it.
    pub fn depart(&mut self, conn: &Conn, rooms: &[RoomId]) {
        for room in rooms {
            self.remove_local(room, conn.conn);
            self.route(room.owner_shard(self.shards), ShardMessage::Leave { room: room.clone(), conn: conn.conn, id: None, answer: false });
        }
        let user = conn.user.clone();
        self.route(owner_shard_of(&user, self.shards), ShardMessage::Offline { user, conn: conn.conn });
    }

    /// Carries out what a handler of `origin` asked for (all but [`Command::SetMeta`], which is
    /// the session's).
    pub fn handle_command(&mut self, origin: &Conn, command: Command) {
        match command {
            Command::Join { room, id } => {
                let member = Member { conn: origin.conn, label: origin.label.clone(), user: origin.user.clone(), meta: origin.meta.clone() };
                self.route(room.owner_shard(self.shards), ShardMessage::Join { room, member, id });
            }
            Command::Leave { room, id } => {
                // Nothing more of the room reaches it from now on.
                self.remove_local(&room, origin.conn);
                self.route(room.owner_shard(self.shards), ShardMessage::Leave { room, conn: origin.conn, id, answer: true });
            }
            Command::Presence { room, id } => self.route(room.owner_shard(self.shards), ShardMessage::Presence { room, conn: origin.conn, id }),
            Command::Publish { room, frame, exclude } => self.publish(room, frame, exclude),
            Command::ToUser { user, frame } => self.send_to_user(user, frame),
            Command::ToConn { conn, frame } => self.route(conn.shard, ShardMessage::ToConn { conn, frame }),
            Command::Reply { frame } => self.outputs.push_back(Output::Send(origin.conn, frame)),
            Command::DisconnectUser { user, code } => self.disconnect_user(user, code),
            Command::Proxy(call) => self.outputs.push_back(Output::Proxy(origin.conn, call)),
            Command::SetMeta { .. } => {}
        }
    }

    /// `frame` to every member of `room` but `exclude` (a publish from a connection or the API),
    /// on every instance.
    pub fn publish(&mut self, room: RoomId, frame: Bytes, exclude: Option<ConnRef>) {
        self.cast(|| Cast::Room { room: room.clone(), frame: frame.to_vec() });
        self.route(room.owner_shard(self.shards), ShardMessage::Publish { room, frame, exclude });
    }

    /// `frame` to every connection of `user`, on every instance.
    pub fn send_to_user(&mut self, user: Arc<str>, frame: Bytes) {
        self.cast(|| Cast::User { user: user.clone(), frame: frame.to_vec() });
        self.route(owner_shard_of(&user, self.shards), ShardMessage::ToUser { user, frame });
    }

    /// Closes every connection of `user` with `code`, on every instance.
    pub fn disconnect_user(&mut self, user: Arc<str>, code: u16) {
        self.cast(|| Cast::Disconnect { user: user.clone(), code });
        self.route(owner_shard_of(&user, self.shards), ShardMessage::DisconnectUser { user, code });
    }

    /// The members of `room` this shard owns, as presence objects (JSON).
    pub fn local_members(&self, room: &RoomId) -> Vec<String> {
        self.owned.get(room).map(|r| r.members().iter().map(Member::presence_json).collect()).unwrap_or_default()
    }

    /// `room`'s presence data (`{"members":[…]}`) on this instance, if this shard owns it.
    pub fn presence(&self, room: &RoomId) -> String {
        self.owned.get(room).map_or_else(|| presence_data(std::iter::empty()), |r| r.presence_data())
    }

    /// Adds `conn` to the local members of `room` (see [`Output::Joined`]).
    pub fn add_local(&mut self, room: &RoomId, conn: ConnRef) {
        let members = self.local.entry(room.clone()).or_default();
        if !members.contains(&conn) {
            members.push(conn);
        }
    }

    fn remove_local(&mut self, room: &RoomId, conn: ConnRef) {
        if let Some(members) = self.local.get_mut(room) {
            members.retain(|c| *c != conn);
            if members.is_empty() {
                self.local.remove(room);
            }
        }
    }

    /// Rooms this shard owns.
    pub fn owned_rooms(&self) -> usize {
        self.owned.len()
    }

    /// The rooms this shard owns, with their members on this instance.
    pub fn owned(&self) -> impl Iterator<Item = (&RoomId, &[Member])> {
        self.owned.iter().map(|(id, room)| (id, room.members()))
    }

    /// Sends `message` to `shard`, or handles it now if that is this shard.
    fn route(&mut self, shard: usize, message: ShardMessage) {
        if shard == self.index {
            self.handle_message(message);
        } else {
            self.outputs.push_back(Output::ToShard(shard, message));
        }
    }

    /// A message from a shard (this one included).
    pub fn handle_message(&mut self, message: ShardMessage) {
        match message {
            ShardMessage::Join { room, member, id } if self.banned.get(&room).is_some_and(|b| b.contains(&member.user)) => {
                let error = super::message::error(super::ErrorCode::Forbidden, "banned from this room", id.as_ref());
                let frame = crate::ws::encode_data(crate::ws::DataKind::Text, &error);
                self.route(member.conn.shard, ShardMessage::JoinRefused { room, conn: member.conn, frame });
            }
            ShardMessage::Join { room, member, id } => {
                let joiner = member.conn;
                let data = member.data();
                let presence = self.clustered.then(|| (member.label.clone(), member.presence_json()));
                let (added, count) = self.owned.join(&room, member);
                if added {
                    if count == 1 {
                        self.webhook("room.occupied", &room, "{}".into());
                    }
                    self.webhook("member.joined", &room, data.clone());
                    if count == 1 {
                        self.outputs.push_back(Output::Rooms(1));
                        if self.clustered {
                            self.outputs.push_back(Output::Subscribe(Topic::Room(room.clone())));
                        }
                    }
                    if let Some((conn, member)) = presence {
                        self.outputs.push_back(Output::PresenceSet { room: room.clone(), conn, member });
                    }
                    let joined = frame(&Outgoing { event: "user_joined", room: Some(room.as_str()), data: Some(&data), ..Outgoing::default() });
                    self.cast(|| Cast::Room { room: room.clone(), frame: joined.to_vec() });
                    self.send_to_room(&room, joined, Some(joiner));
                }
                let members = format!("{{\"members\":{count}}}");
                let reply = frame(&Outgoing { event: "joined", room: Some(room.as_str()), data: Some(&members), id: id.as_ref(), ..Outgoing::default() });
                self.route(joiner.shard, ShardMessage::Joined { room, conn: joiner, frame: reply });
            }
            ShardMessage::Leave { room, conn, id, answer } => {
                if let Some(member) = self.owned.leave(&room, conn) {
                    let emptied = self.owned.get(&room).is_none();
                    self.webhook("member.left", &room, member.data());
                    if emptied {
                        self.webhook("room.vacated", &room, "{}".into());
                    }
                    if emptied {
                        self.outputs.push_back(Output::Rooms(-1));
                    }
                    if self.clustered {
                        self.outputs.push_back(Output::PresenceRemove { room: room.clone(), conn: member.label.clone() });
                        if emptied {
                            self.outputs.push_back(Output::Unsubscribe(Topic::Room(room.clone())));
                        }
                    }
                    let left = frame(&Outgoing { event: "user_left", room: Some(room.as_str()), data: Some(&member.data()), ..Outgoing::default() });
                    self.cast(|| Cast::Room { room: room.clone(), frame: left.to_vec() });
                    self.send_to_room(&room, left, None);
                }
                if answer {
                    let reply = frame(&Outgoing { event: "left", room: Some(room.as_str()), id: id.as_ref(), ..Outgoing::default() });
                    self.route(conn.shard, ShardMessage::ToConn { conn, frame: reply });
                }
            }
            ShardMessage::Presence { room, conn, id } if self.clustered => self.outputs.push_back(Output::PresenceQuery { room, conn, id }),
            ShardMessage::Presence { room, conn, id } => {
                let data = self.presence(&room);
                let reply = frame(&Outgoing { event: "presence", room: Some(room.as_str()), data: Some(&data), id: id.as_ref(), ..Outgoing::default() });
                self.route(conn.shard, ShardMessage::ToConn { conn, frame: reply });
            }
            ShardMessage::Publish { room, frame, exclude } => self.send_to_room(&room, frame, exclude),
            ShardMessage::Online { user, conn, label } => {
                // Sent by the user's owner once it knows the connection: a direct sent after the
                // client saw `connected` reaches it.
                let data = member_data(&user, &label);
                let connected = frame(&Outgoing { event: "connected", data: Some(&data), ..Outgoing::default() });
                if self.users.online(user.clone(), conn) && self.clustered {
                    self.outputs.push_back(Output::Subscribe(Topic::User(user)));
                }
                self.route(conn.shard, ShardMessage::ToConn { conn, frame: connected });
            }
            ShardMessage::Offline { user, conn } => {
                if self.users.offline(&user, conn) && self.clustered {
                    self.outputs.push_back(Output::Unsubscribe(Topic::User(user)));
                }
            }
            ShardMessage::ToUser { user, frame } => {
                for conn in self.users.conns(&user).to_vec() {
                    self.route(conn.shard, ShardMessage::ToConn { conn, frame: frame.clone() });
                }
            }
            ShardMessage::DisconnectUser { user, code } => {
                for conn in self.users.conns(&user).to_vec() {
                    self.route(conn.shard, ShardMessage::Close { conn, code });
                }
            }
            ShardMessage::Joined { room, conn, frame } => self.outputs.push_back(Output::Joined(conn, room, frame)),
            ShardMessage::JoinRefused { room, conn, frame } => self.outputs.push_back(Output::JoinRefused(conn, room, frame)),
            ShardMessage::Kick { room, user, ban } => {
                if ban {
                    self.banned.entry(room.clone()).or_default().insert(user.clone());
                }
                let kicked: Vec<ConnRef> =
                    self.owned.get(&room).map(|r| r.members().iter().filter(|m| m.user == user).map(|m| m.conn).collect()).unwrap_or_default();
                for conn in kicked {
                    self.route(conn.shard, ShardMessage::Close { conn, code: crate::ws::close_code::KICKED });
                }
            }
            ShardMessage::Deliver { room, frame, exclude } => {
                for conn in self.local.get(&room).into_iter().flatten() {
                    if Some(*conn) != exclude {
                        self.outputs.push_back(Output::Send(*conn, frame.clone()));
                    }
                }
            }
            ShardMessage::ToConn { conn, frame } => self.outputs.push_back(Output::Send(conn, frame)),
            ShardMessage::Close { conn, code } => self.outputs.push_back(Output::Close(conn, code)),
        }
    }

    /// On the owner: `frame` to every shard with members of `room`, once each.
    fn send_to_room(&mut self, room: &RoomId, frame: Bytes, exclude: Option<ConnRef>) {
        let Some(shards) = self.owned.get(room).map(|r| r.shards().collect::<Vec<_>>()) else { return };
        for shard in shards {
            self.route(shard, ShardMessage::Deliver { room: room.clone(), frame: frame.clone(), exclude });
        }
    }
}

#[cfg(test)]
mod tests;
