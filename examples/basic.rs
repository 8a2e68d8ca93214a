//! The smallest embedding: the built-in `/pubsub` protocol (join, leave, presence, publish,
//! direct) plus one event of the application's own, `echo`, answered to its sender.
//!
//! ```text
//! cargo run --example basic -- 127.0.0.1:8080
//! websocat ws://127.0.0.1:8080/pubsub
//! {"event":"join","room":"lobby","id":1}
//! {"event":"hello","room":"lobby","data":"hi all"}
//! {"event":"echo","to":"me","data":{"any":"json"},"id":2}
//! ```
//!
//! Without `--pubsub-secret` every connection is its own user (for development).

use partyflow::pubsub::{Conn, Ctx, Message};
use partyflow::Server;

fn main() -> anyhow::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into()).parse()?;
    let server = Server::builder()
        .listen(listen)
        // A custom event: whatever it carries (`room` or `to`), this handler decides.
        .on_message("echo", |ctx: &mut Ctx<'_>, _conn: &Conn, msg: &Message<'_>| {
            ctx.reply("echo", None, msg.data(), msg.id.as_ref());
        })
        .build()?;
    println!("listening on {}", server.local_addr());
    server.run()
}
