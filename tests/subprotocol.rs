//! Subprotocol negotiation and the token in `Sec-WebSocket-Protocol` (issue 24) over real
//! sockets: `/ws` and `/pubsub` take the token there and answer with their protocol only;
//! protocols the endpoint does not speak are not echoed; malformed headers, a bad token and a
//! token given twice are refused; and the server's log (at debug) never holds a token, whether
//! it came in the URL or in the header.

mod common;

use serde_json::json;

use common::game::{create_room, join};
use common::pubsub::token_for;
use common::{http_raw, parse_response, RawClient, Server};

const SECRET: &str = "subprotocol-test-secret-0123456789";

fn upgrade(server: &Server, path: &str, headers: &str) -> String {
    http_raw(
        server.addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        ),
    )
}

/// The next text message's JSON (pings skipped).
fn next_json(c: &mut RawClient) -> serde_json::Value {
    loop {
        let (first, payload) = c.read_frame().unwrap().expect("a frame");
        if first & 0x0f == 0x1 {
            return serde_json::from_slice(&payload).unwrap();
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

#[test]
fn game_and_pubsub_tokens_travel_in_the_protocol_header_and_stay_out_of_answers_and_logs() {
    let server = Server::start(&["--log", "debug", "--pubsub-secret", SECRET]);
    let (room, host_id, host_token) = create_room(&server, json!({}));
    let (_, player_token, _) = join(&server, &room, "Pia");

    // The game: token in the header, the protocol answered, the token nowhere in the answer.
    let (mut host, head) = RawClient::connect_with_headers(
        &server,
        &format!("/ws?roomId={room}&version=1.0"),
        &format!("Sec-WebSocket-Protocol: chat, partyflow.v1, partyflow.token.{host_token}\r\n"),
    )
    .unwrap();
    assert_eq!(header(&head, "Sec-WebSocket-Protocol"), Some("partyflow.v1"), "{head}");
    assert!(!head.contains(&host_token), "{head}");
    let connected = next_json(&mut host);
    assert_eq!((connected["type"].as_str(), connected["payload"]["actorId"].as_str()), (Some("CONNECTED"), Some(host_id.as_str())));

    // The token in the URL still works; offering only protocols not spoken here gets no header.
    let (mut player, head) =
        RawClient::connect_with_headers(&server, &format!("/ws?roomId={room}&token={player_token}&version=1.0"), "Sec-WebSocket-Protocol: chat\r\n").unwrap();
    assert_eq!(header(&head, "Sec-WebSocket-Protocol"), None, "{head}");
    assert_eq!(next_json(&mut player)["type"], "CONNECTED");

    // /pubsub with its JWT in the header, in two header lines.
    let jwt = token_for(SECRET, "ulla");
    let (mut pubsub, head) = RawClient::connect_with_headers(
        &server,
        "/pubsub",
        &format!("Sec-WebSocket-Protocol: partyflow.token.{jwt}\r\nSec-WebSocket-Protocol: partyflow.pubsub.v1\r\n"),
    )
    .unwrap();
    assert_eq!(header(&head, "Sec-WebSocket-Protocol"), Some("partyflow.pubsub.v1"), "{head}");
    let connected = next_json(&mut pubsub);
    assert_eq!((connected["event"].as_str(), connected["data"]["user"].as_str()), (Some("connected"), Some("ulla")));
    // /relay speaks no subprotocol: nothing is selected.
    let (_relay, head) = RawClient::connect_with_headers(&server, "/relay?room=r", "Sec-WebSocket-Protocol: partyflow.v1\r\n").unwrap();
    assert_eq!(header(&head, "Sec-WebSocket-Protocol"), None, "{head}");

    // Refusals: a bad token in the header is 401; malformed lists, a repeated protocol, two
    // tokens, and a token both in the URL and in the header are 400.
    let (status, body) =
        parse_response(&upgrade(&server, &format!("/ws?roomId={room}"), "Sec-WebSocket-Protocol: partyflow.v1, partyflow.token.forged.token\r\n"));
    assert_eq!(status, 401, "{body}");
    for bad in ["partyflow v1", "partyflow.v1; q=1", "", "partyflow.v1, partyflow.v1", "partyflow.token.a, partyflow.token.b"] {
        let (status, body) = parse_response(&upgrade(&server, &format!("/ws?roomId={room}"), &format!("Sec-WebSocket-Protocol: {bad}\r\n")));
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body.contains("BAD_HANDSHAKE"), "{body}");
    }
    let (status, body) = parse_response(&upgrade(
        &server,
        &format!("/ws?roomId={room}&token={player_token}"),
        &format!("Sec-WebSocket-Protocol: partyflow.v1, partyflow.token.{player_token}\r\n"),
    ));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("send it once"), "{body}");

    // Nothing logged at debug holds a token, wherever it came from.
    let log = server.log().join("\n");
    assert!(log.contains("request refused"), "the debug log was captured");
    for token in [&host_token, &player_token, &jwt] {
        assert!(!log.contains(token.as_str()), "a token in the log: {log}");
    }
}
