//! Several instances behind one Redis: run this twice on two ports with the same `REDIS_URL`;
//! a room's members may connect to either, and publishes, directs, presence and the server API
//! span both.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example with-redis -- 127.0.0.1:9001 a
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example with-redis -- 127.0.0.1:9002 b
//! ```

use partyflow::config::ServeConfig;
use partyflow::Server;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9001".into()).parse()?;
    let instance = args.next().unwrap_or_else(|| "a".into());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = ServeConfig { instance_id: Some(instance), ..ServeConfig::default() };
    let server = Server::builder()
        .config(config)
        .listen(listen)
        .redis(redis)
        // Tokens must verify on every instance: one shared secret.
        .secret(std::env::var("SECRET").unwrap_or_else(|_| "example-shared-secret".into()))
        .build()?;
    println!("listening on {}", server.local_addr());
    server.run()
}
