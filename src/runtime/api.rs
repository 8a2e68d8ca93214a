//! The room API on the owner shard: create, join, summarize rooms; list word packs.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::json;

use super::shard::Shard;
use crate::api::{parse_join, CreateRoom};
use crate::auth::Claims;
use crate::config::ServeConfig;
use crate::game::{GameConfig, Role};
use crate::http::{Request, Response, Status};
use crate::metrics::Refusal;
use crate::protocol::ErrorCode;
use crate::rooms::{GameRoom, ReconnectWindows, RoomId, RoomPolicy};
use crate::session::{AckPolicy, EventLogConfig, PresenceConfig};
use crate::store::RoomSnapshot;

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

/// The base URLs clients use to reach this server, from the request's Host header.
fn urls(shard: &Shard, request: &Request, room: &RoomId, token: &str) -> (String, String) {
    let host = request.header("host").map_or_else(|| shard.shared.config.listen.to_string(), str::to_string);
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
        let id: String = (0..ROOM_ID_LEN).map(|_| ROOM_ID_ALPHABET[rng.random_range(0..ROOM_ID_ALPHABET.len())] as char).collect();
        if let Some(room) = RoomId::parse(&id) {
            if room.owner_shard(shard.shards) == shard.index && !shard.state.borrow().has_game(&room) {
                return room;
            }
        }
    }
}

/// `POST /rooms[?roomId=R]`: a fresh id owned by this shard, or the chosen one (already
/// routed to its owner shard) unless a room has it (`409 ROOM_EXISTS`).
pub(crate) fn create_room(shard: &Shard, request: &Request, chosen: Option<&RoomId>, body: &[u8]) -> Response {
    if chosen.is_some_and(|room| shard.state.borrow().has_game(room)) {
        return Response::error(Status::Conflict, "ROOM_EXISTS", "a room with this id exists");
    }
    let pack_ids: Vec<&str> = shard.shared.packs.iter().map(|p| p.id.as_str()).collect();
    let spec = match CreateRoom::parse(body, shard.shared.config.min_round_duration, &pack_ids) {
        Ok(spec) => spec,
        Err(response) => return response,
    };
    let Some(pack) = shard.shared.packs.iter().find(|p| p.id == spec.word_pack_id).map(Arc::clone) else {
        return Response::error(Status::InternalError, ErrorCode::InternalError.as_str(), "word pack vanished");
    };
    let room_id = chosen.cloned().unwrap_or_else(|| new_room_id(shard));
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
    shard.state.borrow_mut().create_game(shard.metrics(), now, room);
    let token = sign(shard, &room_id, &host_id, Role::Host);
    let (ws_url, join_url) = urls(shard, request, &room_id, &token);
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
    if let Some(bus) = &shard.shared.bus {
        health["instanceId"] = bus.instance_id().into();
        health["instances"] = bus.instances().into();
        health["cluster"] = if bus.is_up() { "up" } else { "down" }.into();
    }
    match &shard.shared.store {
        None => health["redis"] = "disabled".into(),
        Some(store) => {
            let status = store.status();
            health["redis"] = if status.up { "up" } else { "down" }.into();
            health["redisQueueDepth"] = status.queue_depth.into();
            health["redisLagMs"] = status.lag_ms.into();
        }
    }
    health
}

/// How long a request waits for its room to be loaded from Redis.
const RECOVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// With `--redis`, a room that is not in memory is looked up in Redis and, if found, rebuilt
/// here (after a crash or restart). The request waits; the shard does not. `Err`: the store
/// could not answer (`503`, retry), or the room belongs to another live instance (`421`: its
/// snapshot names an instance whose heartbeat is live; it is taken over once that expires).
pub(crate) async fn recover_room(shard: &Shard, room: &RoomId) -> Result<(), (Refusal, Response)> {
    let Some(store) = &shard.shared.store else { return Ok(()) };
    if shard.state.borrow().has_game(room) || shard.state.borrow().is_deleting(room) {
        // Live here, or closed here a moment ago (its key is about to go): nothing to load.
        return Ok(());
    }
    let unavailable = |why: String| {
        let response = Response::error(Status::ServiceUnavailable, "STORE_UNAVAILABLE", &format!("the room store cannot answer: {why}"));
        (Refusal::Overloaded, response.header("Retry-After", "1"))
    };
    let ask = |answer: flume::Receiver<Result<Option<String>, crate::store::StoreError>>| async move {
        match glommio::timer::timeout(RECOVERY_WAIT, async { Ok(answer.recv_async().await) }).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(_)) | Err(_) => Err("no answer in time".to_string()),
        }
    };
    let loaded = ask(store.load(room.as_str())).await.map_err(unavailable)?;
    let Some(text) = loaded else { return Ok(()) };
    let snapshot = match RoomSnapshot::decode(&text) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::warn!(room = room.as_str(), error = %e, "stored room cannot be read; treating it as gone");
            return Ok(());
        }
    };
    if let (Some(owner), Some(bus)) = (&snapshot.instance, &shard.shared.bus) {
        // Asked of Redis now, not of the cached instance list, which may not list it yet.
        let alive = owner != bus.instance_id() && ask(store.instance_heartbeat(owner)).await.map_err(unavailable)?.is_some();
        if alive {
            let message = format!("room {} lives on instance {owner}", room.as_str());
            let response = Response::error(Status::MisdirectedRequest, "ROOM_ON_ANOTHER_INSTANCE", &message).header("Retry-After", "1");
            return Err((Refusal::NotFound, response));
        }
    }
    let now = Instant::now();
    let recovered = GameRoom::recover(&snapshot, &shard.shared.packs, room_policy(&shard.shared.config), now, unix_now().as_millis() as i64);
    match recovered {
        Ok(recovered) => {
            let mut state = shard.state.borrow_mut();
            // Another request may have recovered it (or the room closed) while this one waited.
            if !state.has_game(room) && !state.is_deleting(room) {
                tracing::info!(room = room.as_str(), state = recovered.game().state().as_str(), "room recovered from redis");
                state.create_game(shard.metrics(), now, recovered);
            }
        }
        Err(e) => tracing::warn!(room = room.as_str(), error = %e, "stored room cannot be restored; treating it as gone"),
    }
    Ok(())
}

/// The session policies every game room runs with.
fn room_policy(config: &ServeConfig) -> RoomPolicy {
    let rate = config.client_message_rate;
    RoomPolicy {
        idle_timeout: config.room_idle_timeout,
        messages_per_sec: (rate, 2.0 * rate),
        acks: AckPolicy { timeout: config.ack_timeout, max_retries: config.ack_retries },
        presence: PresenceConfig {
            grace: config.disconnect_grace,
            warning: config.disconnect_warning,
            remove: config.disconnect_remove,
            host_pause_after: config.host_pause_after,
            host_promote_after: config.host_promote_after,
        },
        event_log: EventLogConfig { retention: config.event_log_retention, max_events: config.event_log_max_events },
        reconnect: ReconnectWindows {
            player_backfill: config.reconnect_backfill_window,
            host_backfill: config.host_backfill_window,
            snapshot: config.reconnect_snapshot_window,
        },
        ..RoomPolicy::default()
    }
}

/// `POST /rooms/{id}/players`.
pub(crate) fn join_room(shard: &Shard, request: &Request, room: &RoomId, body: &[u8]) -> Response {
    let name = match parse_join(body) {
        Ok(name) => name,
        Err(response) => return response,
    };
    let player_id = new_actor_id("player");
    let joined = shard.state.borrow_mut().with_game(shard.metrics(), Instant::now(), room, |r| r.join(Instant::now(), &player_id, &name));
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
            let (ws_url, _) = urls(shard, request, room, &token);
            Response::json(Status::Created, &json!({"playerId": player_id, "token": token, "role": role.as_str(), "wsUrl": ws_url}))
        }
    }
}

/// Before upgrading a game connection: the room must exist here and `actor_id` be in it.
pub(crate) fn check_member(shard: &Shard, room: &RoomId, actor_id: &str) -> Result<(), (Refusal, Response)> {
    let role = shard.state.borrow_mut().with_game(shard.metrics(), Instant::now(), room, |r| r.role_of(actor_id));
    match role {
        None => Err((Refusal::NotFound, not_found())),
        Some(None) => Err((Refusal::Unauthorized, Response::error(Status::Unauthorized, "UNAUTHORIZED", "not a member of this room"))),
        Some(Some(_)) => Ok(()),
    }
}
