//! Notifications: users connect with a token the app's backend minted (HS256 JWT, `sub` = the
//! user id), and the backend pushes to them through the server API.
//!
//! ```text
//! PUBSUB_SECRET=… API_KEY=… cargo run --example notifications -- 127.0.0.1:8080
//! # a client:  ws://127.0.0.1:8080/pubsub?token=<JWT with sub "ann">
//! # the backend:
//! curl -H "Authorization: Bearer $API_KEY" -d '{"to":"ann","event":"notice","data":{"text":"Your order shipped"}}' \
//!      http://127.0.0.1:8080/api/send
//! curl -H "Authorization: Bearer $API_KEY" -d '{"room":"all","event":"notice","data":"Maintenance at 22:00"}' \
//!      http://127.0.0.1:8080/api/publish
//! ```
//!
//! Every connection joins the room `all` on connecting (for announcements) and may send
//! nothing but `presence`: notifications flow from the backend only.

use partyflow::pubsub::{Conn, Ctx, ErrorCode, Message};
use partyflow::rooms::RoomId;
use partyflow::Server;

fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into()).parse()?;
    let secret = std::env::var("PUBSUB_SECRET").map_err(|_| anyhow::anyhow!("set PUBSUB_SECRET (at least 16 characters)"))?;
    let api_key = std::env::var("API_KEY").map_err(|_| anyhow::anyhow!("set API_KEY (at least 16 characters)"))?;
    let all = RoomId::parse("all").expect("a valid room id");
    let read_only = |ctx: &mut Ctx<'_>, _conn: &Conn, msg: &Message<'_>| ctx.error(ErrorCode::Forbidden, "notifications come from the server", msg.id.as_ref());
    let server = Server::builder()
        .listen(listen)
        .pubsub_secret(secret)
        .api_key(api_key)
        .on_connect(move |ctx: &mut Ctx<'_>, _conn: &Conn| {
            // A fresh connection is in no room, so this cannot exceed the room limit.
            let _ = ctx.join(&all, None);
        })
        .on_message("join", read_only)
        .on_message("leave", read_only)
        // Publishes and directs: every event without a handler of its own.
        .on_other(read_only)
        .build()?;
    println!("listening on {}", server.local_addr());
    server.run()
}
