//! What a room's events become: each numbered, encoded once per protocol version among its
//! recipients, one send per entitled member (clones of one frame), the frame kept in the log and
//! on the ACK list when the event asks for one; and the `ERROR` answering a bad message.

use super::*;

/// Whether a member of `role` (`actor`) is entitled to an event of `scope`, live or
/// backfilled. The role is the actor's role now: a demoted host gets no host-only history.
pub(super) fn entitled(role: Option<Role>, actor: &str, scope: &Scope) -> bool {
    match scope {
        Scope::All => true,
        Scope::Host => role == Some(Role::Host),
        Scope::Players => role == Some(Role::Player),
        Scope::Actor(id) => actor == id,
    }
}

impl<C: Copy + PartialEq> GameRoom<C> {
    /// Turns the game's events into sends, encoding each once per version among recipients,
    /// and logs each for backfill.
    pub(super) fn drain_game(&mut self, now: Instant) {
        while let Some(event) = self.game.poll_output() {
            self.sequence += 1;
            if self.policy.webhooks {
                let game = &self.game;
                if let Some((kind, data)) = crate::webhooks::game::webhook_of(event.kind, &event.payload, || game.snapshot(Role::Host)) {
                    self.webhook_seq += 1;
                    self.outputs.push_back(RoomOutput::Webhook(kind, self.webhook_seq, data));
                }
            }
            self.deliver(now, event);
        }
        if self.game.is_closed() {
            for m in &self.members {
                self.outputs.push_back(RoomOutput::Close(m.conn, ws::close_code::NORMAL, "room closed".into()));
            }
            self.members.clear();
        }
    }

    pub(super) fn deliver(&mut self, now: Instant, event: Event) {
        let ack_id = event.requires_ack.then(|| format!("ack_{}", self.sequence));
        // One encoding per protocol version among the recipients (nearly always one).
        let mut plan: Vec<(usize, Bytes)> = Vec::with_capacity(self.members.len());
        let mut encoded: Vec<(&str, Bytes)> = Vec::with_capacity(1);
        for (i, member) in self.members.iter().enumerate() {
            if !entitled(self.game.role_of(&member.actor_id), &member.actor_id, &event.scope) {
                continue;
            }
            let frame = match encoded.iter().find(|(v, _)| *v == member.version) {
                Some((_, frame)) => frame.clone(),
                None => {
                    let frame = self.frame(event.kind, &event.scope, &event.payload, &member.version, Some(self.sequence), ack_id.as_deref(), now);
                    encoded.push((&member.version, frame.clone()));
                    frame
                }
            };
            plan.push((i, frame));
        }
        // The log keeps the first encoding (or makes one in the server's version when nobody
        // entitled is connected: exactly the events a returning actor will ask for).
        let (version, frame) = match encoded.first() {
            Some((v, f)) => (v.to_string(), f.clone()),
            None => {
                let v = SERVER_VERSION.to_string();
                let f = self.frame(event.kind, &event.scope, &event.payload, &v, Some(self.sequence), ack_id.as_deref(), now);
                (v, f)
            }
        };
        for (i, frame) in plan {
            let Some(member) = self.members.get_mut(i) else { continue };
            if let Some(ack_id) = &ack_id {
                member.acks.track(now, ack_id, frame.clone());
            }
            self.outputs.push_back(RoomOutput::Send(member.conn, frame));
        }
        let logged = LoggedEvent { seq: self.sequence, kind: event.kind, scope: event.scope, at: now, frame, version };
        self.log.push(now, logged);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn frame<P: Serialize + ?Sized>(
        &self,
        kind: &str,
        scope: &Scope,
        payload: &P,
        version: &str,
        sequence_id: Option<u64>,
        ack_id: Option<&str>,
        now: Instant,
    ) -> Bytes {
        let timestamp = self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as i64;
        let msg = ServerMsg {
            kind,
            room_id: self.id.as_str(),
            timestamp,
            version,
            broadcast: scope.as_str(),
            payload,
            sequence_id,
            requires_ack: ack_id.is_some(),
            ack_id,
        };
        ws::encode_data(DataKind::Text, &protocol::encode_server(&msg))
    }

    /// Sends `ERROR` to `conn` unless its error budget is spent.
    pub(super) fn reject(&mut self, now: Instant, conn: C, rejection: Rejection) {
        let Some(member) = self.members.iter_mut().find(|m| m.conn == conn) else { return };
        if !member.errors.try_take(now, self.policy.errors_per_sec) {
            return;
        }
        let version = member.version.clone();
        let frame = self.error_frame(now, &rejection, &version);
        self.outputs.push_back(RoomOutput::Send(conn, frame));
    }

    pub(super) fn reject_and_close(&mut self, now: Instant, conn: C, version: &str, rejection: Rejection, code: u16) {
        let frame = self.error_frame(now, &rejection, version);
        self.outputs.push_back(RoomOutput::Send(conn, frame));
        self.outputs.push_back(RoomOutput::Close(conn, code, rejection.message));
        self.disconnect(now, conn);
    }

    pub(super) fn error_frame(&self, now: Instant, rejection: &Rejection, version: &str) -> Bytes {
        let payload = json!({"code": rejection.code.as_str(), "message": rejection.message});
        self.frame("ERROR", &Scope::Actor(String::new()), &payload, version, None, None, now)
    }
}
