//! Cost of accepting a WebSocket: parsing a browser-sized request head and checking the upgrade.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use partyflow::http::{parse_head, Route};
use partyflow::ws::validate_upgrade;

const REQUEST: &[u8] =
    b"GET /ws?roomId=ABC234&token=v1.ABC234.player_8c1d2e3f4a5b.player.1900000000.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ&version=1.0 HTTP/1.1\r\n\
Host: play.example.com\r\nConnection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Upgrade: websocket\r\nOrigin: https://play.example.com\r\nSec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn bench(c: &mut Criterion) {
    let origins = vec!["https://play.example.com".to_string()];
    c.bench_function("parse_route_validate_upgrade", |b| {
        b.iter(|| {
            let (req, _) = parse_head(black_box(REQUEST), 8192).unwrap().unwrap();
            let route = Route::parse(&req.target).unwrap();
            black_box(route);
            validate_upgrade(&req, &origins).unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
