//! PROTOCOL.md §13 cannot drift from the server: every `pubsub` transcript in it is played
//! against a real server, each line sent or expected exactly (`"<conn>"` matching any
//! connection id).

mod common;

use std::collections::HashMap;

use common::pubsub::{api, token_for, PubSubClient};
use common::{http_raw, parse_response, Server};
use partyflow::pubsub::{Claims, TokenKey};
use serde_json::Value;

const SECRET: &str = "protocol-doc-secret-0123";
const API_KEY: &str = "protocol-doc-api-key-0123";

fn transcripts() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md")).unwrap();
    doc.split("```pubsub\n").skip(1).map(|rest| rest.split("```").next().unwrap().to_string()).collect()
}

/// Whether `got` is `want`, a `"<conn>"` string in `want` matching any string.
fn matches(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::String(w), Value::String(_)) if w == "<conn>" => true,
        (Value::Object(w), Value::Object(g)) => w.len() == g.len() && w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| matches(v, gv))),
        (Value::Array(w), Value::Array(g)) => w.len() == g.len() && w.iter().zip(g).all(|(a, b)| matches(a, b)),
        _ => want == got,
    }
}

/// An HTTP call of a transcript: `METHOD PATH [BODY]`, with the API key or without credentials.
fn http(server: &Server, line: &str, key: Option<&str>) -> (u16, Value) {
    let mut parts = line.splitn(3, ' ');
    let (method, path, body) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
    if path == "/pubsub" {
        let raw = http_raw(server.addr, "GET /pubsub HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let (status, body) = parse_response(&raw);
        return (status, serde_json::from_str(&body).unwrap_or(Value::Null));
    }
    api(server, method, path, key, body)
}

fn play(transcript: &str) {
    let mut flags = vec!["--shards", "2", "--pubsub-secret", SECRET, "--api-key", API_KEY];
    let mut rooms: HashMap<String, Vec<String>> = HashMap::new();
    for line in transcript.lines() {
        if let Some(server) = line.strip_prefix("# server: ") {
            flags.extend(server.split(' '));
        }
        if let Some(token) = line.strip_prefix("# token ") {
            let (who, patterns) = token.split_once(": rooms ").unwrap();
            rooms.insert(who.to_string(), patterns.split(',').map(String::from).collect());
        }
    }
    let server = Server::start(&flags);
    // Every client of the transcript connects first, in order of appearance.
    let mut clients: HashMap<String, PubSubClient> = HashMap::new();
    for line in transcript.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name = line.split(' ').next().unwrap();
        if name != "api" && name != "anon" && !clients.contains_key(name) {
            let token = match rooms.get(name) {
                Some(patterns) => TokenKey::new(SECRET).unwrap().sign(&Claims { sub: name.into(), exp: None, rooms: Some(patterns.clone()), meta: None }),
                None => token_for(SECRET, name),
            };
            clients.insert(name.to_string(), PubSubClient::connect(&server, Some(&token)).unwrap());
        }
    }
    let mut last_http: Option<(u16, Value)> = None;
    for line in transcript.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (who, rest) = line.split_once(' ').unwrap();
        let (arrow, text) = rest.split_at(rest.find(' ').unwrap());
        let text = text.trim_start();
        match (who, arrow) {
            ("api" | "anon", "→") => last_http = Some(http(&server, text, (who == "api").then_some(API_KEY))),
            ("api" | "anon", "←") => {
                let (status, body) = text.split_once(' ').unwrap();
                let got = last_http.take().expect("a call before its answer");
                let want: Value = serde_json::from_str(body).unwrap();
                assert!(got.0 == status.parse::<u16>().unwrap() && matches(&want, &got.1), "{line}\n got {got:?}");
            }
            (name, "→") => clients.get_mut(name).unwrap().send_text(text),
            (name, "←") => {
                let client = clients.get_mut(name).unwrap();
                let got = client.recv().unwrap_or_else(|| panic!("{name} was closed; expected {text}"));
                let want: Value = serde_json::from_str(text).unwrap();
                assert!(matches(&want, &got), "{line}\n got {got}");
            }
            _ => panic!("not a transcript line: {line}"),
        }
    }
}

#[test]
fn every_pubsub_transcript_in_the_protocol_is_what_the_server_does() {
    let all = transcripts();
    assert!(all.len() >= 6, "the /pubsub chapter lost its transcripts");
    for transcript in all {
        play(&transcript);
    }
}

#[test]
fn every_error_code_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md")).unwrap();
    let chapter = doc.split_once("## 13. `/pubsub`").unwrap().1;
    for code in partyflow::pubsub::ErrorCode::ALL {
        assert!(chapter.contains(&format!("| `{}` |", code.as_str())), "{} is not in PROTOCOL.md §13", code.as_str());
    }
}
