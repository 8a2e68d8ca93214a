//! An idiomatic Rust relay, the comparison point for partyflow: tokio + tokio-tungstenite,
//! rooms as a map of per-room broadcast channels, one task per connection direction.
//! `reference-relay ADDR` serves `/relay?room=R` with the same semantics as partyflow's.
// tungstenite's handshake callback returns its (large) error response type; that is its API.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9300".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("reference-relay listening on {addr}");
    let rooms: Rooms = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, rooms.clone()));
    }
}

async fn serve(stream: tokio::net::TcpStream, rooms: Rooms) {
    let mut room = None;
    let callback = |req: &Request, resp: Response| {
        room = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("room=")).map(String::from));
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
    let Some(room) = room else { return };
    let tx = rooms.lock().unwrap().entry(room).or_insert_with(|| broadcast::channel(1024).0).clone();
    let mut rx = tx.subscribe();
    let (mut sink, mut source) = ws.split();
    let forward = tokio::spawn(async move {
        while let Ok(msg) = rx.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        if msg.is_text() || msg.is_binary() {
            let _ = tx.send(msg);
        } else if msg.is_close() {
            break;
        }
    }
    forward.abort();
}
