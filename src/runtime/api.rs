//! The room API on the owner shard: create, join, summarize rooms; list word packs. With
//! `--redis`, where a room lives ([`place_room`]: here, loaded from Redis, or on the instance
//! holding its lease) and the calls an edge makes to that instance ([`call_owner`],
//! [`answer_call`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::json;

use super::shard::Shard;
use super::state::Acting;
use crate::api::{parse_join, CreateRoom};
use crate::auth::Claims;
use crate::cluster::{Call, Forward};
use crate::config::ServeConfig;
use crate::game::{GameConfig, Role};
use crate::http::{Request, Response, Status};
use crate::metrics::Refusal;
use crate::protocol::ErrorCode;
use crate::rooms::{GameRoom, ReconnectWindows, RoomId, RoomPolicy};
use crate::session::{AckPolicy, EventLogConfig, PresenceConfig, Rate};
use crate::store::{Answer, RoomSnapshot};

/// Room ids: 6 characters without look-alikes (no I, L, O, 0, 1).
const ROOM_ID_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const ROOM_ID_LEN: usize = 6;

pub(crate) fn unix_now() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn not_found() -> Response {
    Response::error(Status::NotFound, ErrorCode::RoomNotFound.as_str(), "no such room")
}

/// `GET /word-packs`.
pub(crate) fn word_packs(shard: &Shard) -> Response {
    let packs: Vec<_> = shard.shared.packs.iter().map(|p| json!({"id": p.id, "name": p.name, "wordCount": p.words.len()})).collect();
    Response::json(Status::Ok, &json!({ "wordPacks": packs }))
}

/// `GET /rooms/{id}`.
pub(crate) fn room_summary(shard: &Shard, room: &RoomId) -> Response {
    let summary = shard.state.borrow_mut().with_game(shard.metrics(), Instant::now(), room, |r| r.summary());
    summary.map_or_else(not_found, |s| Response::json(Status::Ok, &s))
}

/// The request's Host header (what the URLs handed to clients are built on).
pub(crate) fn host_of(shard: &Shard, request: &Request) -> String {
    request.header("host").map_or_else(|| shard.shared.config.listen.to_string(), str::to_string)
}

/// The base URLs clients use to reach this server, from the request's Host header.
fn urls(host: &str, room: &RoomId, token: &str) -> (String, String) {
    let ws = format!("ws://{host}/ws?roomId={}&token={token}", room.as_str());
    let join = format!("http://{host}/rooms/{}/players", room.as_str());
    (ws, join)
}

fn sign(shard: &Shard, room: &RoomId, actor_id: &str, role: Role) -> String {
    // Rounded up: a token is valid for at least the TTL, never a truncated second less.
    let expires_unix = (unix_now() + shard.shared.config.token_ttl).as_millis().div_ceil(1000) as u64;
    shard.shared.tokens.sign(&Claims { room_id: room.as_str().to_string(), actor_id: actor_id.to_string(), role, expires_unix })
}

fn new_actor_id(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// A fresh room id owned by this shard (so the room is created where it will live).
fn new_room_id(shard: &Shard) -> RoomId {
    let mut rng = rand::rng();
    loop {
        let id: String = (0..ROOM_ID_LEN).map(|_| ROOM_ID_ALPHABET.get(rng.random_range(0..ROOM_ID_ALPHABET.len())).map_or('A', |&b| b as char)).collect();
        if let Some(room) = RoomId::parse(&id) {
            if room.owner_shard(shard.shards) == shard.index && !shard.state.borrow().has_game(&room) {
                return room;
            }
        }
    }
}

fn room_exists() -> Response {
    Response::error(Status::Conflict, "ROOM_EXISTS", "a room with this id exists")
}

/// `POST /rooms[?roomId=R]`: a fresh id owned by this shard, or the chosen one (already
/// routed to its owner shard) unless a room has it (`409 ROOM_EXISTS`). With `--redis` the
/// room's lease is taken first: an id another instance holds is taken too.
pub(crate) async fn create_room(shard: &Shard, request: &Request, chosen: Option<&RoomId>, body: &[u8]) -> Response {
    if chosen.is_some_and(|room| shard.state.borrow().has_game(room)) {
        return room_exists();
    }
    let limit = shard.shared.config.max_rooms_per_shard;
    if shard.state.borrow().game_count() >= limit {
        let message = format!("this server holds its limit of {limit} game rooms per shard; retry later");
        return Response::error(Status::ServiceUnavailable, "SERVER_FULL", &message).header("Retry-After", "5");
    }
    let pack_ids: Vec<&str> = shard.shared.packs.iter().map(|p| p.id.as_str()).collect();
    let spec = match CreateRoom::parse(body, shard.shared.config.min_round_duration, &pack_ids) {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    let Some(pack) = shard.shared.packs.iter().find(|p| p.id == spec.word_pack_id).map(Arc::clone) else {
        return Response::error(Status::InternalError, ErrorCode::InternalError.as_str(), "word pack vanished");
    };
    let mut room_id = chosen.cloned().unwrap_or_else(|| new_room_id(shard));
    let mut leased_at = Instant::now();
    if let Some(store) = &shard.shared.store {
        loop {
            leased_at = Instant::now();
            match wait_for(store.acquire_lease(room_id.as_str())).await {
                Err(why) => return store_unavailable(why).1,
                Ok(Some(holder)) if holder == store.instance_id() => break,
                Ok(_) if chosen.is_some() => return room_exists(),
                // A random id another instance holds: draw again.
                Ok(_) => room_id = new_room_id(shard),
            }
        }
        if shard.state.borrow().has_game(&room_id) {
            return room_exists();
        }
    }
    let host_id = new_actor_id("host");
    let config = GameConfig {
        max_players: spec.max_players,
        num_teams: spec.num_teams,
        rounds: spec.rounds,
        round_duration: spec.round_duration,
        countdown: shard.shared.config.countdown,
        score_review: shard.shared.config.score_review,
        pack,
        seed: rand::rng().random(),
    };
    let policy = room_policy(&shard.shared.config);
    let now = Instant::now();
    let room = GameRoom::new(room_id.clone(), &host_id, &spec.host_name, config, policy, now, unix_now().as_millis() as i64);
    shard.state.borrow_mut().create_game(shard.metrics(), now, room, leased_at);
    let token = sign(shard, &room_id, &host_id, Role::Host);
    let (ws_url, join_url) = urls(&host_of(shard, request), &room_id, &token);
    Response::json(
        Status::Created,
        &json!({
            "roomId": room_id.as_str(), "hostId": host_id, "hostToken": token, "wsUrl": ws_url, "joinUrl": join_url,
        }),
    )
}

/// `/health`: the server's summary and the store's state (`redis`: `up`, `down` or `disabled`).
pub(crate) fn health(shard: &Shard, now: Instant) -> serde_json::Value {
    let mut health = shard.shared.metrics.health(now);
    if let Some(reason) = shard.shared.lost_shard.get() {
        crate::protocol::set_field(&mut health, "status", "failing");
        crate::protocol::set_field(&mut health, "reason", reason.as_str());
    }
    if let Some(bus) = &shard.shared.bus {
        crate::protocol::set_field(&mut health, "instanceId", bus.instance_id());
        crate::protocol::set_field(&mut health, "instances", bus.instances());
        crate::protocol::set_field(&mut health, "cluster", if bus.is_up() { "up" } else { "down" });
    }
    match &shard.shared.store {
        None => crate::protocol::set_field(&mut health, "redis", "disabled"),
        Some(store) => {
            let status = store.status();
            crate::protocol::set_field(&mut health, "redis", if status.up { "up" } else { "down" });
            crate::protocol::set_field(&mut health, "redisQueueDepth", status.queue_depth);
            crate::protocol::set_field(&mut health, "redisLagMs", status.lag_ms);
        }
    }
    health
}

/// How long a request waits for Redis, or for another instance's answer.
const STORE_WAIT: Duration = Duration::from_secs(3);

/// Where a room lives.
pub(crate) enum Placement {
    /// Here (or nowhere: the caller answers 404).
    Here,
    /// On the instance holding its lease; an edge forwards to it.
    Elsewhere(Arc<str>),
}

fn store_unavailable(why: String) -> (Refusal, Response) {
    let response = Response::error(Status::ServiceUnavailable, "STORE_UNAVAILABLE", &format!("the room store cannot answer: {why}"));
    (Refusal::Overloaded, response.header("Retry-After", "1"))
}

/// Waits for the store's answer, up to [`STORE_WAIT`].
async fn wait_for<T>(answer: Answer<T>) -> Result<T, String> {
    match glommio::timer::timeout(STORE_WAIT, async { Ok(answer.recv_async().await) }).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) | Err(_) => Err("no answer in time".to_string()),
    }
}

/// With `--redis`, a room that is not in memory is looked up in Redis, and its lease decides.
/// Held by another live instance: the room is there (from the moment it was created, before
/// its first snapshot is written). Held by an instance whose heartbeat is gone: `503` until the
/// lease runs out and the room can be taken over. Free (its owner died, or Redis restarted) or
/// ours, and stored: the lease is taken and the room rebuilt here from its snapshot (after a
/// crash, a restart, or a takeover). The request waits; the shard does not.
pub(crate) async fn place_room(shard: &Shard, room: &RoomId) -> Result<Placement, (Refusal, Response)> {
    let Some(store) = &shard.shared.store else { return Ok(Placement::Here) };
    if shard.state.borrow().has_game(room) || shard.state.borrow().is_deleting(room) {
        // Live here, or closed here a moment ago (its key is about to go): nothing to load.
        return Ok(Placement::Here);
    }
    let holder = wait_for(store.lease_holder(room.as_str())).await.map_err(store_unavailable)?;
    if let Some(holder) = holder.filter(|h| h != store.instance_id()) {
        return elsewhere(store, room, holder).await;
    }
    let Some(text) = wait_for(store.load(room.as_str())).await.map_err(store_unavailable)? else { return Ok(Placement::Here) };
    let snapshot = match RoomSnapshot::decode(&text) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::warn!(room = room.as_str(), error = %e, "stored room cannot be read; treating it as gone");
            return Ok(Placement::Here);
        }
    };
    let leased_at = Instant::now();
    match wait_for(store.acquire_lease(room.as_str())).await.map_err(store_unavailable)? {
        Some(holder) if holder == store.instance_id() => {}
        Some(holder) => return elsewhere(store, room, holder).await,
        None => return Err(store_unavailable("the lease vanished; retry".into())),
    }
    let now = Instant::now();
    let recovered = GameRoom::recover(&snapshot, &shard.shared.packs, room_policy(&shard.shared.config), now, unix_now().as_millis() as i64);
    match recovered {
        Ok(recovered) => {
            let mut state = shard.state.borrow_mut();
            // Another request may have recovered it (or the room closed) while this one waited.
            if !state.has_game(room) && !state.is_deleting(room) {
                tracing::info!(room = room.as_str(), state = recovered.game().state().as_str(), "room recovered from redis");
                state.create_game(shard.metrics(), now, recovered, leased_at);
            }
        }
        Err(e) => tracing::warn!(room = room.as_str(), error = %e, "stored room cannot be restored; treating it as gone"),
    }
    Ok(Placement::Here)
}

/// `room`'s lease is `holder`'s: there if that instance lives, moving if not.
async fn elsewhere(store: &crate::store::StoreHandle, room: &RoomId, holder: String) -> Result<Placement, (Refusal, Response)> {
    // Asked of Redis now, not of the cached instance list, which may lag.
    if wait_for(store.instance_heartbeat(&holder)).await.map_err(store_unavailable)?.is_some() {
        return Ok(Placement::Elsewhere(holder.into()));
    }
    let message = format!("room {} is moving: its instance {holder} stopped; it is taken over within the lease TTL", room.as_str());
    let response = Response::error(Status::ServiceUnavailable, "ROOM_MOVING", &message).header("Retry-After", "1");
    Err((Refusal::Overloaded, response))
}

/// Asks `owner`, the instance serving `room`, to answer `call`; its HTTP answer, or `503` if
/// it does not answer in time.
pub(crate) async fn call_owner(shard: &Shard, owner: &str, room: &RoomId, call: Call) -> Response {
    let Some(bus) = &shard.shared.bus else { return Response::new(Status::InternalError) };
    let (tx, rx) = flume::bounded(1);
    let id = shard.calls.borrow_mut().wait(tx);
    bus.forward(owner, &Forward::Request { room: room.clone(), id, call });
    let answered = glommio::timer::timeout(STORE_WAIT, async { Ok(rx.recv_async().await) }).await;
    shard.calls.borrow_mut().forget(id);
    match answered {
        Ok(Ok((status, body))) => Response::new(Status::from_code(status).unwrap_or(Status::InternalError)).body("application/json", body),
        Ok(Err(_)) | Err(_) => {
            let message = format!("instance {owner}, which serves room {}, did not answer in time", room.as_str());
            Response::error(Status::ServiceUnavailable, "OWNER_UNREACHABLE", &message).header("Retry-After", "1")
        }
    }
}

/// The owner's answer to an edge's room API call about `room` (the admin calls are
/// `admin_http::here`'s).
pub(crate) fn answer_call(shard: &Shard, room: &RoomId, call: Call) -> Response {
    if !shard.state.borrow().has_game(room) {
        let response = Response::error(Status::ServiceUnavailable, "ROOM_MOVING", "the room is not served by this instance now; retry");
        return response.header("Retry-After", "1");
    }
    match call {
        Call::Member { actor } => match check_member(shard, room, &actor) {
            Ok(()) => Response::json(Status::Ok, &json!({})),
            Err((_, response)) => response,
        },
        Call::Join { host, body } => join_room(shard, &host, room, &body),
        Call::Summary => room_summary(shard, room),
        // The admin API's (`admin_http::here`), or (the listing) the bus handler's.
        Call::AdminDetail | Call::AdminClose { .. } | Call::AdminKick { .. } | Call::Rows => Response::new(Status::NotFound),
    }
}

/// The session policies every game room runs with.
fn room_policy(config: &ServeConfig) -> RoomPolicy {
    let rate = config.client_message_rate;
    RoomPolicy {
        webhooks: config.webhook_url.is_some(),
        idle_timeout: config.room_idle_timeout,
        messages_per_sec: Rate::with_double_burst(rate),
        acks: AckPolicy { timeout: config.ack_timeout, max_retries: config.ack_retries },
        presence: PresenceConfig {
            grace: config.disconnect_grace,
            warning: config.disconnect_warning,
            remove: config.disconnect_remove,
            host_pause_after: config.host_pause_after,
            host_promote_after: config.host_promote_after,
        },
        event_log: EventLogConfig { retention: config.event_log_retention(), max_events: config.event_log_max_events },
        max_lifetime: config.room_max_lifetime,
        reconnect: ReconnectWindows {
            player_backfill: config.reconnect_backfill_window,
            host_backfill: config.host_backfill_window,
            snapshot: config.reconnect_snapshot_window,
        },
        ..RoomPolicy::default()
    }
}

/// `POST /rooms/{id}/players` (`host`: the request's Host header).
pub(crate) fn join_room(shard: &Shard, host: &str, room: &RoomId, body: &[u8]) -> Response {
    let name = match parse_join(body) {
        Ok(name) => name,
        Err(response) => return response,
    };
    let player_id = new_actor_id("player");
    if let Some(moving) = fenced(shard, room) {
        return moving;
    }
    let joined =
        shard.state.borrow_mut().with_game_for(shard.metrics(), Instant::now(), room, Acting::Actor(&player_id), |r| r.join(Instant::now(), &player_id, &name));
    match joined {
        None => not_found(),
        Some(Err(rejection)) => {
            let status = match rejection.code {
                ErrorCode::RoomFull => Status::Conflict,
                ErrorCode::RoomNotFound => Status::NotFound,
                _ => Status::BadRequest,
            };
            Response::error(status, rejection.code.as_str(), &rejection.message)
        }
        Some(Ok(role)) => {
            let token = sign(shard, room, &player_id, role);
            let (ws_url, _) = urls(host, room, &token);
            Response::json(Status::Created, &json!({"playerId": player_id, "token": token, "role": role.as_str(), "wsUrl": ws_url}))
        }
    }
}

/// `503 ROOM_MOVING` if `room`'s lease ran out here: the room is given up at once (its
/// clients told to reconnect) instead of acting past its lease.
fn fenced(shard: &Shard, room: &RoomId) -> Option<Response> {
    let mut state = shard.state.borrow_mut();
    if !state.has_game(room) || !state.fence_if_expired(shard.metrics(), Instant::now(), room) {
        return None;
    }
    let response = Response::error(Status::ServiceUnavailable, "ROOM_MOVING", "the room's lease ran out on this instance; retry");
    Some(response.header("Retry-After", "1"))
}

/// Before upgrading a game connection: the room must exist here and `actor_id` be in it.
pub(crate) fn check_member(shard: &Shard, room: &RoomId, actor_id: &str) -> Result<(), (Refusal, Response)> {
    if let Some(moving) = fenced(shard, room) {
        return Err((Refusal::Overloaded, moving));
    }
    let role = shard.state.borrow_mut().with_game_for(shard.metrics(), Instant::now(), room, Acting::Actor(actor_id), |r| r.role_of(actor_id));
    match role {
        None => Err((Refusal::NotFound, not_found())),
        Some(None) => Err((Refusal::Unauthorized, Response::error(Status::Unauthorized, "UNAUTHORIZED", "not a member of this room"))),
        Some(Some(_)) => Ok(()),
    }
}
