//! The admin API (under the server API's key): `GET /api/rooms` lists every room of the
//! cluster, `GET /api/rooms/{id}` shows one, `POST /api/rooms/{id}/close` closes a game room and
//! `POST /api/rooms/{id}/kick` removes a game room's player or a `/pubsub` room's user. A room's
//! requests reach its owner shard here (handed off by room id) and its owner instance through
//! the cluster's calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::api::{self, Placement};
use super::mesh::ShardMsg;
use super::shard::Shard;
use crate::admin::{self, CloseBody, KickBody, ListQuery, RoomRow};
use crate::cluster::Call;
use crate::http::{ApiCall, Response, Status};
use crate::rooms::{KickRefused, RoomId};

/// How long the listing waits for the other shards' rows.
const ROWS_WAIT: Duration = Duration::from_secs(2);

/// Answers an authorized admin call.
pub(crate) async fn answer(shard: &Shard, call: &ApiCall, body: &[u8]) -> Response {
    match call {
        ApiCall::ListRooms(query) => list(shard, query).await,
        ApiCall::RoomDetail(room) => on_owner(shard, room, Call::AdminDetail).await,
        ApiCall::CloseRoom(room) => on_owner(shard, room, Call::AdminClose { body: body.to_vec() }).await,
        ApiCall::Kick(room) => on_owner(shard, room, Call::AdminKick { body: body.to_vec() }).await,
        _ => Response::new(Status::NotFound),
    }
}

/// Every room of this instance: this shard's rows and the other shards'.
pub(crate) async fn local_rows(shard: &Shard) -> Vec<RoomRow> {
    let mut rows = shard.state.borrow().admin_rows(&shard.shared.instance_id);
    let (tx, rx) = flume::unbounded();
    let peers: Vec<usize> = (0..shard.shards).filter(|p| *p != shard.index).collect();
    for peer in &peers {
        shard.mesh_out.push(*peer, ShardMsg::Rows(tx.clone()));
    }
    drop(tx);
    let gathering = async {
        while let Ok(more) = rx.recv_async().await {
            rows.extend(more);
        }
        Ok(())
    };
    // A shard that does not answer in time is left out rather than holding the request.
    let _ = glommio::timer::timeout(ROWS_WAIT, gathering).await;
    rows
}

/// `GET /api/rooms`: this instance's rooms and, with Redis, every live instance's.
async fn list(shard: &Shard, query: &str) -> Response {
    let query = match ListQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return Response::error(Status::BadRequest, "BAD_REQUEST", &e),
    };
    let mut rows = local_rows(shard).await;
    let mut unreachable = Vec::new();
    if let Some(bus) = &shard.shared.bus {
        // The listing call names no room; the placeholder only satisfies the message format.
        let anywhere = RoomId::parse("_admin").unwrap_or_else(|| unreachable!("a valid constant room id"));
        for other in bus.instances().into_iter().filter(|i| *i != bus.instance_id()) {
            let answer = api::call_owner(shard, &other, &anywhere, Call::Rows).await;
            match serde_json::from_slice::<Vec<RoomRow>>(answer.body_bytes()) {
                Ok(more) if answer.status() == Status::Ok => rows.extend(more),
                _ => unreachable.push(other),
            }
        }
    }
    let (rooms, next) = admin::page(rows, &query);
    Response::json(Status::Ok, &json!({"rooms": rooms, "next": next, "unreachable": unreachable}))
}

/// Runs `call` where `room` lives: here (this is its owner shard), or on the instance holding
/// its lease.
async fn on_owner(shard: &Shard, room: &RoomId, call: Call) -> Response {
    match api::place_room(shard, room).await {
        Err((_, response)) => response,
        Ok(Placement::Elsewhere(owner)) => api::call_owner(shard, &owner, room, call).await,
        Ok(Placement::Here) => here(shard, room, call),
    }
}

/// The admin calls on the room's owner shard (also what another instance's call runs).
pub(crate) fn here(shard: &Shard, room: &RoomId, call: Call) -> Response {
    let now = Instant::now();
    let m = shard.metrics();
    let is_game = shard.state.borrow().has_game(room);
    match call {
        Call::AdminDetail => detail(shard, room),
        Call::AdminClose { body } => {
            let reason = serde_json::from_slice::<CloseBody>(&body).ok().and_then(|b| b.reason).unwrap_or_default();
            if !is_game {
                return not_a_game(shard, room, "only game rooms are closed; a /pubsub room ends when its last member leaves (kick its users)");
            }
            shard.state.borrow_mut().with_game(m, now, room, |r| r.admin_close(now));
            m.admin_closes.add(1);
            tracing::info!(room = room.as_str(), reason = reason.chars().take(200).collect::<String>(), "admin closed a room");
            Response::json(Status::Ok, &json!({"closed": room.as_str()}))
        }
        Call::AdminKick { body } => {
            let Ok(kick) = serde_json::from_slice::<KickBody>(&body) else {
                return Response::error(Status::BadRequest, "BAD_REQUEST", "the body is {\"playerId\": P} or {\"user\": U}, with \"ban\": true|false");
            };
            kick_in(shard, room, is_game, kick)
        }
        _ => Response::new(Status::NotFound),
    }
}

fn kick_in(shard: &Shard, room: &RoomId, is_game: bool, kick: KickBody) -> Response {
    let (now, m) = (Instant::now(), shard.metrics());
    match (kick.player_id, kick.user) {
        (Some(player), None) if is_game => {
            let kicked = shard.state.borrow_mut().with_game(m, now, room, |r| r.admin_kick(now, &player, kick.ban));
            match kicked {
                Some(Ok(())) => {
                    m.admin_kicks.add(1);
                    tracing::info!(room = room.as_str(), player = player.as_str(), ban = kick.ban, "admin kicked a player");
                    Response::json(Status::Ok, &json!({"kicked": player, "ban": kick.ban}))
                }
                Some(Err(KickRefused::Host)) => Response::error(Status::Conflict, "HOST", "the host cannot be kicked; close the room instead"),
                Some(Err(KickRefused::NotFound)) | None => Response::error(Status::NotFound, "PLAYER_NOT_FOUND", "no such player in this room"),
            }
        }
        (None, Some(user)) if !is_game && (1..=crate::pubsub::message::MAX_USER_LEN).contains(&user.len()) => {
            shard.state.borrow_mut().pubsub_kick(m, now, room.clone(), Arc::from(user.as_str()), kick.ban);
            m.admin_kicks.add(1);
            tracing::info!(room = room.as_str(), user = user.as_str(), ban = kick.ban, "admin kicked a /pubsub user");
            Response::json(Status::Ok, &json!({"kicked": user, "ban": kick.ban}))
        }
        (Some(_), None) => not_a_game(shard, room, "playerId names a game room's player; /pubsub rooms kick a user"),
        (None, Some(_)) if is_game => Response::error(Status::BadRequest, "BAD_REQUEST", "a game room kicks a playerId, not a user"),
        _ => Response::error(Status::BadRequest, "BAD_REQUEST", "give one of playerId (game room) and user (/pubsub room, 1-128 characters)"),
    }
}

/// `404` when there is no such room at all, else `409` with `why`.
fn not_a_game(shard: &Shard, room: &RoomId, why: &str) -> Response {
    if shard.state.borrow().admin_pubsub_members(room).is_some() {
        return Response::error(Status::Conflict, "NOT_A_GAME_ROOM", why);
    }
    Response::error(Status::NotFound, "ROOM_NOT_FOUND", "no such room")
}

/// A room's detail: a game's members and state, or a `/pubsub` room's members here.
fn detail(shard: &Shard, room: &RoomId) -> Response {
    let (now, m) = (Instant::now(), shard.metrics());
    let place = json!({"instance": &*shard.shared.instance_id, "shard": shard.index});
    let found = shard.state.borrow_mut().with_game(m, now, room, |r| r.admin_detail());
    let found = found.or_else(|| {
        shard.state.borrow().admin_pubsub_members(room).map(|members| json!({"id": room.as_str(), "kind": "pubsub", "state": "open", "members": members}))
    });
    match found {
        Some(mut detail) => {
            if let (Some(d), Some(p)) = (detail.as_object_mut(), place.as_object()) {
                d.extend(p.clone());
            }
            Response::json(Status::Ok, &detail)
        }
        None => Response::error(Status::NotFound, "ROOM_NOT_FOUND", "no such game or /pubsub room"),
    }
}
