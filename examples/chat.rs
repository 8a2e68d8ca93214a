//! A chat: rooms and presence from the built-in protocol, and two events of its own:
//! - `say` (to a room): checked (member, 1-500 characters of text) and broadcast to every member
//!   with the sender's user id and the server's clock;
//! - `typing` (to a room): to every other member, not back to the sender.
//!
//! On connecting, a user is told who it is; on leaving, nothing more is needed (the server
//! sends `user_left` to the rooms it was in).
//!
//! ```text
//! cargo run --example chat -- 127.0.0.1:8080
//! {"event":"join","room":"general"}
//! {"event":"say","room":"general","data":"hello"}
//! {"event":"presence","room":"general"}
//! ```

use partyflow::pubsub::{Conn, Ctx, ErrorCode, Message};
use partyflow::Server;
use serde_json::json;
use serde_json::value::RawValue;

/// The longest line a user may say.
const MAX_SAY_CHARS: usize = 500;

fn raw(value: serde_json::Value) -> Box<RawValue> {
    // A serde_json::Value always serializes to valid JSON.
    RawValue::from_string(value.to_string()).expect("JSON")
}

fn say(ctx: &mut Ctx<'_>, conn: &Conn, msg: &Message<'_>) {
    let (Some(room), Some(data)) = (msg.room(), msg.data()) else {
        return ctx.error(ErrorCode::InvalidMessage, "say takes a room", msg.id.as_ref());
    };
    if !ctx.is_member(room) {
        return ctx.error(ErrorCode::NotInRoom, "join the room first", msg.id.as_ref());
    }
    let text = serde_json::from_str::<String>(data.get()).unwrap_or_default();
    if text.trim().is_empty() || text.chars().count() > MAX_SAY_CHARS {
        return ctx.error(ErrorCode::InvalidMessage, "say takes 1-500 characters of text", msg.id.as_ref());
    }
    let at = std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_millis() as u64);
    ctx.broadcast(room, "say", &raw(json!({ "text": text, "at": at })), Some(conn.user()), None);
}

fn typing(ctx: &mut Ctx<'_>, conn: &Conn, msg: &Message<'_>) {
    if let Some(room) = msg.room().filter(|room| ctx.is_member(room)) {
        ctx.broadcast(room, "typing", &raw(json!(true)), Some(conn.user()), Some(conn.conn_ref()));
    }
}

fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into()).parse()?;
    let server = Server::builder()
        .listen(listen)
        .on_connect(|ctx: &mut Ctx<'_>, conn: &Conn| ctx.reply("welcome", None, Some(&raw(json!({ "user": conn.user() }))), None))
        .on_message("say", say)
        .on_message("typing", typing)
        .build()?;
    println!("listening on {}", server.local_addr());
    server.run()
}
