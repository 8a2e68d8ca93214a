//! The fuzz targets on a stable toolchain: each target's body (`fuzz/targets.rs`, shared with
//! `cargo fuzz`) runs over its seed corpus (`fuzz/seeds/<target>/`) and then over random
//! mutations of it (bit flips, insertions, deletions, truncations, splices of two seeds) for
//! `PARTYFLOW_FUZZ_SECONDS` per target (default 3). A panic fails the test and prints the input
//! in hex, to be added to the seeds once fixed. Seeded by `PARTYFLOW_FUZZ_SEED` (default: the
//! clock; printed) so a failure can be replayed.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut seeds: Vec<Vec<u8>> =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|entry| std::fs::read(entry.unwrap().path()).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.push(Vec::new());
    seeds
}

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=8) {
        let len = input.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let interesting = [0u8, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'\n', b'\r', b'.', b'0', b'9', 126, 127];
                input.insert(i, interesting[rng.random_range(0..interesting.len())]);
            }
            3 if len > 0 => {
                let start = rng.random_range(0..len);
                let end = (start + rng.random_range(1..=16)).min(len);
                input.drain(start..end);
            }
            4 => input.truncate(rng.random_range(0..=len)),
            5 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let at = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                let start = rng.random_range(0..len);
                let end = (start + rng.random_range(1..=32)).min(len);
                let chunk = input[start..end].to_vec();
                let at = rng.random_range(0..=input.len());
                input.splice(at..at, chunk.iter().copied().cycle().take(chunk.len() * rng.random_range(1..=64)));
            }
            _ => {}
        }
    }
    input
}

fn run(target: &str) {
    let (_, body) = targets::TARGETS.iter().find(|(name, _)| *name == target).expect("a target of that name");
    let seconds: u64 = std::env::var("PARTYFLOW_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::var("PARTYFLOW_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    let corpus = seeds(target);
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    let mut inputs = corpus.clone().into_iter();
    loop {
        let input = match inputs.next() {
            Some(seed_input) => seed_input,
            None if Instant::now() < deadline => mutate(&mut rng, &corpus),
            None => break,
        };
        if let Err(panic) = std::panic::catch_unwind(|| body(&input)) {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{target} panicked ({panic:?}) after {runs} runs (PARTYFLOW_FUZZ_SEED={seed}) on input {hex}");
        }
        runs += 1;
    }
    eprintln!("{target}: {runs} inputs in {seconds} s, no panic (PARTYFLOW_FUZZ_SEED={seed})");
}

#[test]
fn http_request() {
    run("http_request");
}

#[test]
fn ws_frames() {
    run("ws_frames");
}

#[test]
fn ws_inflate() {
    run("ws_inflate");
}

#[test]
fn game_message() {
    run("game_message");
}

#[test]
fn token() {
    run("token");
}

#[test]
fn cluster_messages() {
    run("cluster_messages");
}

#[test]
fn snapshot() {
    run("snapshot");
}

#[test]
fn room_session() {
    run("room_session");
}

#[test]
fn pubsub_message() {
    run("pubsub_message");
}
