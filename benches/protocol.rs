//! Envelope parsing and serialization on the game's real messages, simd-json against
//! serde_json, so each choice stays justified by numbers. `parse_client` is the server's full
//! parse (simd-json plus the envelope checks); the serde_json line parses to a bare `Value` and
//! is a lower bound. Serialization compares the two libraries on the same struct.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use partyflow::protocol::{encode_server, parse_client, ServerMsg};
use serde_json::{json, Value};

const CLIENT: &[(&str, &str)] = &[
    (
        "WORD_SWIPED",
        r#"{"type":"WORD_SWIPED","roomId":"ABC234","actorId":"host_3f9a1c2b7d4e","timestamp":1707695253000,"version":"1.0","payload":{"wordId":"word_42","action":"guessed","swipeDurationMs":2800}}"#,
    ),
    (
        "ACK",
        r#"{"type":"ACK","roomId":"ABC234","actorId":"player_8c1d2e3f4a5b","timestamp":1707695250100,"version":"1.0","payload":{"ackId":"ack_17","status":"received"}}"#,
    ),
];

fn bench(c: &mut Criterion) {
    let mut parse = c.benchmark_group("parse_client");
    for (name, text) in CLIENT {
        parse.bench_function(format!("simd_json/{name}"), |b| b.iter(|| parse_client(black_box(text.as_bytes()))));
        parse.bench_function(format!("serde_json/{name}"), |b| b.iter(|| serde_json::from_slice::<Value>(black_box(text.as_bytes()))));
    }
    parse.finish();
    let payloads = [
        ("TIMER_TICK", json!({"remainingSeconds": 56, "state": "ROUND_ACTIVE", "stateVersion": 6})),
        (
            "ROUND_ENDED",
            json!({"reason": "timer_expired", "roundNumber": 1, "turnNumber": 1, "teamId": "team_1", "wordsGuessed": 18, "wordsSkipped": 3, "pointsEarned": 18, "averageTimePerWord": 2.9, "state": "ROUND_ENDED", "stateVersion": 9}),
        ),
    ];
    let mut ser = c.benchmark_group("serialize_server");
    for (kind, payload) in &payloads {
        let msg = ServerMsg {
            kind,
            room_id: "ABC234",
            timestamp: 1707695254000,
            version: "1.0",
            broadcast: "all",
            payload,
            sequence_id: Some(20),
            requires_ack: false,
            ack_id: None,
        };
        ser.bench_function(format!("simd_json/{kind}"), |b| b.iter(|| simd_json::to_vec(black_box(&msg))));
        ser.bench_function(format!("serde_json/{kind}"), |b| b.iter(|| encode_server(black_box(&msg))));
    }
    ser.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
