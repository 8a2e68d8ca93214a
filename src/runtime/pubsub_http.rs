//! The HTTP side of `/pubsub`: the token checked before the upgrade, and the server API an
//! app's backend calls (`/api/publish`, `/api/send`, `/api/rooms/{room}/presence`,
//! `/api/disconnect`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::shard::Shard;
use crate::cluster::pubsub::PresenceReply;
use crate::http::{ApiCall, Request, Response, Status};
use crate::metrics::Refusal;
use crate::proxy::Admission;
use crate::pubsub::message::{Outgoing, MAX_EVENT_LEN, MAX_USER_LEN};
use crate::pubsub::{Claims, Grant, TokenError};
use crate::rooms::RoomId;
use crate::ws::{self, DataKind};

/// The token of a `/pubsub` upgrade: `?token=`, else `Authorization: Bearer`.
fn bearer(request: &Request) -> Option<&str> {
    request.header("authorization").and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))).map(str::trim)
}

/// Who a `/pubsub` upgrade is: `None` when `/pubsub` runs without tokens (each connection its
/// own user), the verified grant otherwise, or the `401` to answer.
pub(crate) fn grant(shard: &Shard, request: &Request, query_token: Option<&str>) -> Result<Option<Grant>, Response> {
    claims(shard, request, query_token, true).map(|claims| claims.map(Claims::into_grant))
}

/// The verified claims of the upgrade's token (`None`: no key, or no token and none `required`).
fn claims(shard: &Shard, request: &Request, query_token: Option<&str>, required: bool) -> Result<Option<Claims>, Response> {
    let Some(key) = &shard.shared.pubsub_key else { return Ok(None) };
    let unauthorized = |e: TokenError| Response::error(Status::Unauthorized, "UNAUTHORIZED", &e.to_string());
    let Some(token) = query_token.or_else(|| bearer(request)).filter(|t| !t.is_empty()) else {
        return if required { Err(unauthorized(TokenError::Missing)) } else { Ok(None) };
    };
    key.verify_claims(token, super::api::unix_now().as_secs()).map(Some).map_err(unauthorized)
}

/// Who a `/pubsub` upgrade is, asking the app's backend when `--proxy-connect-url` is set (a
/// token is then optional, and verified first when given); with the connection id the backend
/// was told. The refusal to answer otherwise: `401` (token), `403` (the backend's body), `503`.
pub(crate) async fn admit(
    shard: &Shard,
    request: &Request,
    query_token: Option<&str>,
    peer: SocketAddr,
) -> Result<(Option<Grant>, Option<(u64, Arc<str>)>), (Refusal, Response)> {
    let proxy = shard.shared.pubsub.proxy.as_ref().filter(|p| p.decides_connect());
    let Some(proxy) = proxy else {
        return grant(shard, request, query_token).map(|g| (g, None)).map_err(|r| (Refusal::Unauthorized, r));
    };
    let claims = claims(shard, request, query_token, false).map_err(|r| (Refusal::Unauthorized, r))?;
    let token = claims.as_ref().and_then(|c| serde_json::to_value(c).ok());
    let reserved = shard.state.borrow_mut().reserve_pubsub_conn();
    let headers: Vec<(&str, &str)> = crate::proxy::request::PASSED_HEADERS.iter().filter_map(|h| request.header(h).map(|v| (*h, v))).collect();
    let body = crate::proxy::request::connect(&reserved.1, &peer.to_string(), &headers, token);
    let (tx, rx) = flume::bounded(1);
    proxy.connect(body, move |reply| {
        let _ = tx.send(reply);
    });
    // The worker answers within --proxy-timeout (or at once when it cannot call).
    let reply = rx.recv_async().await.unwrap_or_else(|_| crate::proxy::Reply::Failed("the proxy stopped".into()));
    match crate::proxy::connect_answer(reply) {
        Admission::Admit(grant) => Ok((Some(grant), Some(reserved))),
        Admission::Refuse(body) => {
            let body = if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                body
            } else {
                br#"{"error":{"code":"FORBIDDEN","message":"refused by the app's backend"}}"#.to_vec()
            };
            Err((Refusal::Forbidden, Response::new(Status::Forbidden).body("application/json", body)))
        }
        Admission::Unavailable(why) => {
            tracing::warn!(why = why.as_str(), "the connect proxy gave no usable answer; refusing the upgrade with 503");
            Err((Refusal::Overloaded, Response::error(Status::ServiceUnavailable, "PROXY_UNAVAILABLE", "the app's backend did not answer in time")))
        }
    }
}

/// `401` unless the request carries the server API's key; `404` when the API is off.
fn authorize(shard: &Shard, request: &Request) -> Result<(), Response> {
    let Some(key) = &shard.shared.config.api_key else {
        return Err(Response::error(Status::NotFound, "NOT_FOUND", "the server API is off (start the server with --api-key)"));
    };
    match bearer(request) {
        Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => Ok(()),
        _ => Err(Response::error(Status::Unauthorized, "UNAUTHORIZED", "the server API needs Authorization: Bearer <--api-key>")),
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    room: &'a str,
    event: &'a str,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SendBody<'a> {
    to: &'a str,
    event: &'a str,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DisconnectBody<'a> {
    user: &'a str,
}

fn bad_request(message: &str) -> Response {
    Response::error(Status::BadRequest, "BAD_REQUEST", message)
}

fn check_event(event: &str) -> Result<(), Response> {
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(bad_request("event must be 1-64 characters"));
    }
    Ok(())
}

fn check_user(user: &str) -> Result<(), Response> {
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(bad_request("a user id is 1-128 characters"));
    }
    Ok(())
}

fn ok() -> Response {
    Response::json(Status::Ok, &json!({"ok": true}))
}

/// Answers a server API call (the body already read; presence on the room's owner shard).
pub(crate) async fn answer(shard: &Shard, request: &Request, call: &ApiCall, body: &[u8]) -> Response {
    if let Err(refused) = authorize(shard, request) {
        return refused;
    }
    let result = match call {
        ApiCall::ListRooms(_) | ApiCall::RoomDetail(_) | ApiCall::CloseRoom(_) | ApiCall::Kick(_) => Ok(super::admin_http::answer(shard, call, body).await),
        ApiCall::Publish => publish(shard, body),
        ApiCall::Send => send(shard, body),
        ApiCall::Disconnect => disconnect(shard, body),
        ApiCall::Presence(room) => presence(shard, room).await,
    };
    result.unwrap_or_else(|refused| refused)
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(&format!("invalid body: {e}")))
}

/// `POST /api/publish {"room","event","data"}`: to every member, as a publish without `from`.
fn publish(shard: &Shard, body: &[u8]) -> Result<Response, Response> {
    let b: PublishBody<'_> = parse(body)?;
    let room = RoomId::parse(b.room).ok_or_else(|| Response::error(Status::BadRequest, "ROOM_INVALID", "room ids are 1-64 characters of A-Z a-z 0-9 _ -"))?;
    check_event(b.event)?;
    let payload = Outgoing { event: b.event, room: Some(room.as_str()), data: Some(b.data.map_or("null", RawValue::get)), ..Outgoing::default() }.encode();
    shard.state.borrow_mut().api_publish(shard.metrics(), Instant::now(), room, ws::encode_data(DataKind::Text, &payload));
    Ok(ok())
}

/// `POST /api/send {"to","event","data"}`: to every connection of a user.
fn send(shard: &Shard, body: &[u8]) -> Result<Response, Response> {
    let b: SendBody<'_> = parse(body)?;
    check_user(b.to)?;
    check_event(b.event)?;
    let payload = Outgoing { event: b.event, data: Some(b.data.map_or("null", RawValue::get)), ..Outgoing::default() }.encode();
    shard.state.borrow_mut().api_send(shard.metrics(), Instant::now(), Arc::from(b.to), ws::encode_data(DataKind::Text, &payload));
    Ok(ok())
}

/// `POST /api/disconnect {"user"}`: closes every connection of a user (close code 4003).
fn disconnect(shard: &Shard, body: &[u8]) -> Result<Response, Response> {
    let b: DisconnectBody<'_> = parse(body)?;
    check_user(b.user)?;
    shard.state.borrow_mut().api_disconnect(shard.metrics(), Instant::now(), Arc::from(b.user));
    Ok(ok())
}

/// `GET /api/rooms/{room}/presence`: `{"room":R,"members":[…]}` (this is the room's owner
/// shard); with other instances, theirs too (`503` if Redis does not answer in time).
async fn presence(shard: &Shard, room: &RoomId) -> Result<Response, Response> {
    let local = shard.state.borrow().pubsub_members(room);
    let (tx, rx) = flume::bounded(1);
    let reply: PresenceReply = Box::new(move |members| {
        let _ = tx.send(members);
    });
    if let Err(reply) = shard.shared.pubsub_adapter.presence(room.clone(), reply) {
        reply(local);
    }
    let members = match glommio::timer::timeout(PRESENCE_WAIT, async { Ok(rx.recv_async().await) }).await {
        Ok(Ok(members)) => members,
        _ => return Err(Response::error(Status::ServiceUnavailable, "UNAVAILABLE", "the cluster's presence did not answer in time")),
    };
    let members: Vec<Box<RawValue>> = members.into_iter().filter_map(|m| RawValue::from_string(m).ok()).collect();
    Ok(Response::json(Status::Ok, &json!({"room": room.as_str(), "members": members})))
}

/// How long the API waits for the cluster's presence.
const PRESENCE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
