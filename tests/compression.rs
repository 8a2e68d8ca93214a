//! permessage-deflate over real sockets: negotiation, compressed echo both ways, a room's
//! broadcast compressed once for all its compressed members while plain members get the plain
//! frame, the inflate bomb, RSV1 misuse, and `--compression false`.

mod common;

use std::io::Write;

use common::{RawClient, Server};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// What a client sends: raw deflate, sync flush, the 4-byte tail removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, flate2::FlushCompress::Sync).unwrap();
    out.truncate(out.len() - 4);
    out
}

fn inflate(body: &[u8]) -> Vec<u8> {
    let mut input = body.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    flate2::Decompress::new(false).decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync).unwrap();
    out
}

/// The next data frame (pings skipped).
fn next_data(c: &mut RawClient) -> (u8, Vec<u8>) {
    loop {
        let (first, payload) = c.read_frame().unwrap().expect("a frame");
        if first & 0x0f != 0x9 {
            return (first, payload);
        }
    }
}

#[test]
fn echo_negotiates_and_compresses_both_ways() {
    let server = Server::start(&[]);
    let (mut c, head) = RawClient::connect_with_headers(&server, "/echo", OFFER).unwrap();
    // Asked of the client even though it offered to keep its context (RFC 7692 §7.1.1.2).
    assert!(head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"), "{head}");
    let text = "the quick brown fox jumps over the lazy dog; ".repeat(40);
    c.send(0xC1, &deflate(text.as_bytes())).unwrap();
    let (first, payload) = next_data(&mut c);
    assert_eq!(first, 0xC1, "a compressed text frame back");
    assert!(payload.len() < text.len() / 4);
    assert_eq!(inflate(&payload), text.as_bytes());
    // Small messages go plain, in either direction.
    c.send(0x81, b"tiny").unwrap();
    assert_eq!(next_data(&mut c), (0x81, b"tiny".to_vec()));
    assert!(
        server.metric("partyflow_compression_messages_compressed_total", "shard=\"0\"")
            + server.metric("partyflow_compression_messages_compressed_total", "shard=\"1\"")
            >= 1.0
    );
}

#[test]
fn a_broadcast_is_compressed_once_and_plain_members_get_the_plain_frame() {
    let server = Server::start(&["--shards", "1"]);
    let mut compressed: Vec<RawClient> = (0..3).map(|_| RawClient::connect_with_headers(&server, "/relay?room=r", OFFER).unwrap().0).collect();
    let mut plain = RawClient::connect(&server, "/relay?room=r").unwrap();
    let message = "{\"cursor\":{\"x\":10,\"y\":20},\"color\":\"#ff8800\"},".repeat(30);
    let before = server.metric("partyflow_compression_messages_compressed_total", "shard=\"0\"");
    plain.send(0x81, message.as_bytes()).unwrap();
    for c in &mut compressed {
        let (first, payload) = next_data(c);
        assert_eq!(first, 0xC1);
        assert_eq!(inflate(&payload), message.as_bytes());
    }
    assert_eq!(next_data(&mut plain), (0x81, message.as_bytes().to_vec()));
    assert_eq!(server.metric("partyflow_compression_messages_compressed_total", "shard=\"0\"") - before, 1.0, "once for three members");
}

#[test]
fn an_inflate_bomb_is_closed_with_1009_and_rsv1_misuse_with_1002() {
    let server = Server::start(&["--max-message-bytes", "65536"]);
    let (mut c, _) = RawClient::connect_with_headers(&server, "/echo", OFFER).unwrap();
    let bomb = deflate(&vec![b'a'; 16 << 20]);
    assert!(bomb.len() < 64 * 1024);
    c.send(0xC1, &bomb).unwrap();
    assert_eq!(c.expect_close().unwrap(), 1009);
    // RSV1 without negotiating, and on a control frame of a compressed connection.
    let mut c = RawClient::connect(&server, "/echo").unwrap();
    c.send(0xC1, &deflate(b"hello")).unwrap();
    assert_eq!(c.expect_close().unwrap(), 1002);
    let (mut c, _) = RawClient::connect_with_headers(&server, "/echo", OFFER).unwrap();
    c.send(0xC9, b"").unwrap();
    assert_eq!(c.expect_close().unwrap(), 1002);
}

#[test]
fn compression_off_declines_and_a_malformed_offer_is_400() {
    let off = Server::start(&["--compression", "false"]);
    let (_c, head) = RawClient::connect_with_headers(&off, "/echo", OFFER).unwrap();
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    let on = Server::start(&[]);
    let mut stream = std::net::TcpStream::connect(on.addr).unwrap();
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; x=\"a b\"\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}
