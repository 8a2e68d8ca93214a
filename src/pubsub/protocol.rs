//! The built-in `/pubsub` protocol, written as handlers on the public API ([`super::Ctx`]), so an
//! application can override one event and still call these for the others (or for the same
//! event after its own checks).

use super::app::{Conn, Ctx};
use super::message::{Message, Request};
use super::ErrorCode;

/// `{"event":"join","room":R}`: `FORBIDDEN` if the token does not admit the room,
/// `TOO_MANY_ROOMS` past the limit; else `joined` once the room has the connection.
pub fn join(ctx: &mut Ctx<'_>, conn: &Conn, message: &Message<'_>) {
    let Request::Join { room } = &message.request else { return route(ctx, conn, message) };
    let id = message.id.as_ref();
    if !conn.may_join(room) {
        return ctx.error(ErrorCode::Forbidden, "the token does not admit this room", id);
    }
    if let Err(code) = ctx.join(room, id) {
        ctx.error(code, "too many rooms on this connection; leave one first", id);
    }
}

/// `{"event":"leave","room":R}`: `left`, or `NOT_IN_ROOM`.
pub fn leave(ctx: &mut Ctx<'_>, conn: &Conn, message: &Message<'_>) {
    let Request::Leave { room } = &message.request else { return route(ctx, conn, message) };
    let id = message.id.as_ref();
    if let Err(code) = ctx.leave(room, id) {
        ctx.error(code, "not in this room", id);
    }
}

/// `{"event":"presence","room":R}`: the room's members, or `FORBIDDEN`.
pub fn presence(ctx: &mut Ctx<'_>, conn: &Conn, message: &Message<'_>) {
    let Request::Presence { room } = &message.request else { return route(ctx, conn, message) };
    let id = message.id.as_ref();
    if !conn.may_join(room) {
        return ctx.error(ErrorCode::Forbidden, "the token does not admit this room", id);
    }
    ctx.presence(room, id);
}

/// Any other event: with `room`, published to every member, sender included (`NOT_IN_ROOM` if
/// the sender is not one); with `to`, sent to every connection of that user.
pub fn route(ctx: &mut Ctx<'_>, conn: &Conn, message: &Message<'_>) {
    match &message.request {
        Request::Publish { room, event, data } => {
            if !ctx.is_member(room) {
                return ctx.error(ErrorCode::NotInRoom, "join the room before publishing to it", message.id.as_ref());
            }
            ctx.broadcast(room, event, data, Some(conn.user()), None);
        }
        Request::Direct { to, event, data } => ctx.send_to_user(to, event, data, Some(conn.user())),
        Request::Join { .. } => join(ctx, conn, message),
        Request::Leave { .. } => leave(ctx, conn, message),
        Request::Presence { .. } => presence(ctx, conn, message),
    }
}
