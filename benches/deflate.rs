//! Which deflate for permessage-deflate (issue 19): a broadcast is compressed once, as a whole
//! message, with no context kept (server_no_context_takeover), so every compression starts
//! fresh. flate2 with the zlib-rs backend (streaming, window bits 9-15, also inflates with a
//! kept context for clients that keep theirs) against libdeflater (whole buffers only) on the
//! game's real frames and a 4 KiB relay payload, at levels 1 and 6. Prints sizes once.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use flate2::{Compress, Compression, FlushCompress};

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let snapshot = serde_json::json!({
        "type": "STATE_SNAPSHOT", "roomId": "ABC234", "sequenceId": 412, "timestamp": 1707695253000i64, "version": "1.0",
        "payload": {"state": "ROUND_ACTIVE", "stateVersion": 31, "hostId": "host_3f9a1c2b7d4e",
            "settings": {"maxPlayers": 10, "numTeams": 2, "rounds": 3, "roundDurationSec": 60, "wordPackId": "en-basic"},
            "participants": (0..10).map(|i| serde_json::json!({"id": format!("player_{i:012x}"), "name": format!("Player {i}"), "role": "player", "teamId": format!("team_{}", i % 2 + 1), "avatarColor": "#4a90d9"})).collect::<Vec<_>>(),
            "teams": [{"id": "team_1", "name": "Team Red", "score": 14}, {"id": "team_2", "name": "Team Blue", "score": 11}]}
    });
    vec![
        ("TIMER_TICK_150B", br#"{"type":"TIMER_TICK","roomId":"ABC234","sequenceId":413,"timestamp":1707695254000,"version":"1.0","payload":{"remainingSeconds":56,"state":"ROUND_ACTIVE","stateVersion":31}}"#.to_vec()),
        ("STATE_SNAPSHOT_1.6K", serde_json::to_vec(&snapshot).unwrap_or_default()),
        ("relay_4K_json", serde_json::to_vec(&(0..60).map(|i| serde_json::json!({"x": i, "y": i * 2, "name": "cursor", "color": "#ff8800"})).collect::<Vec<_>>()).unwrap_or_default()),
    ]
}

/// Raw deflate of the whole message with a compressor kept (one per shard) and reset per message
/// (no context taken over), ending with an empty stored block whose 4-byte tail (00 00 ff ff)
/// permessage-deflate drops.
fn flate2_deflate(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> usize {
    c.reset();
    out.clear();
    out.reserve(input.len() + 64);
    let _ = c.compress_vec(input, out, FlushCompress::Sync);
    out.len().saturating_sub(4)
}

fn libdeflate(c: &mut libdeflater::Compressor, input: &[u8], out: &mut Vec<u8>) -> usize {
    out.resize(c.deflate_compress_bound(input.len()), 0);
    c.deflate_compress(input, out).unwrap_or(0)
}

fn flate2_at(level: u32) -> Compress {
    Compress::new_with_window_bits(Compression::new(level), false, 15)
}

fn libdeflate_at(level: i32) -> libdeflater::Compressor {
    libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap_or_default())
}

fn bench(c: &mut Criterion) {
    let mut out = Vec::new();
    for (name, msg) in messages() {
        println!(
            "{name}: {} bytes; flate2 L1 {} L6 {}; libdeflate L1 {} L6 {}",
            msg.len(),
            flate2_deflate(&mut flate2_at(1), &msg, &mut out),
            flate2_deflate(&mut flate2_at(6), &msg, &mut out),
            libdeflate(&mut libdeflate_at(1), &msg, &mut out),
            libdeflate(&mut libdeflate_at(6), &msg, &mut out)
        );
        let mut g = c.benchmark_group(format!("deflate/{name}"));
        for level in [1u32, 6] {
            let (mut f, mut l) = (flate2_at(level), libdeflate_at(level as i32));
            g.bench_function(format!("flate2_zlib_rs_L{level}"), |b| b.iter(|| flate2_deflate(&mut f, black_box(&msg), &mut out)));
            g.bench_function(format!("libdeflater_L{level}"), |b| b.iter(|| libdeflate(&mut l, black_box(&msg), &mut out)));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
