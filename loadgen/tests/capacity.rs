//! The load generator as its users run it: the real `partyflow-loadgen` against the real server on
//! an ephemeral loopback port, every scenario short, its report (text, JSON, HTML) and its gates
//! checked. The server binary is the one `cargo test --workspace` builds beside this one
//! (alone: `cargo build --release -p partyflow` first).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_partyflow-loadgen");

/// The real server, stopped with SIGTERM (then SIGKILL after a grace) when dropped.
struct Server {
    addr: SocketAddr,
    child: Child,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let path = Path::new(LOADGEN).with_file_name("partyflow");
        let mut child = Command::new(&path)
            .args(["--listen", "127.0.0.1:0", "--log", "info"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (cargo test --workspace builds it; alone: cargo build --release -p partyflow)", path.display()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.split("partyflow listening on ").nth(1).map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap()))
            .expect("the server did not say where it listens");
        // Keep reading its log, so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { addr, child }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder for one test's report files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("partyflow-loadgen-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn loadgen(args: &[&str]) -> Output {
    let out = Command::new(LOADGEN).args(args).output().unwrap();
    eprintln!("partyflow-loadgen {}\n{}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_party_run_plays_real_rooms_and_reports_them_in_text_json_and_html() {
    // Every room starts at once (--synchronized) and counts down one second: the measured window
    // (2 s to 5 s) is inside the first round (5 s), where the hosts swipe.
    let server = Server::start(&["--min-round-duration", "1s", "--countdown", "1"]);
    let dir = Scratch::new("party");
    let (report, page) = (dir.path("party.json"), dir.path("party.html"));
    let pid = server.child.id().to_string();
    let out = loadgen(&[
        "--url",
        &server.url(),
        "--server-pid",
        &pid,
        "--warmup",
        "2s",
        "--duration",
        "3s",
        "--json",
        &report,
        "--html",
        &page,
        "--slo-p95-ms",
        "1000",
        "--max-lost",
        "0",
        "--max-error-rate",
        "0",
        "party",
        "--rooms",
        "3",
        "--players",
        "3",
        "--round-duration",
        "5",
        "--swipe-interval",
        "300ms",
        "--synchronized",
    ]);
    assert!(out.status.success(), "the gates should pass");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("scenario party  connections 12"), "3 rooms of a host and 3 players: {text}");

    let r = json(&report);
    assert_eq!(r["scenario"], "party");
    assert_eq!(r["connections"], 12);
    assert!(r["delivered"].as_u64().unwrap() > 0 && r["sent"].as_u64().unwrap() > 0, "{r}");
    assert_eq!((r["lost"].as_u64(), r["duplicated"].as_u64(), r["outOfOrder"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(r["errors"], serde_json::json!({}), "errors by kind");
    assert!(r["latencyMs"]["p95"].as_f64().unwrap() > 0.0);
    assert!(r["latencyByTypeMs"].as_object().unwrap().contains_key("WORD_RESULT"), "{}", r["latencyByTypeMs"]);
    assert!(r["wireBytesPerDelivery"].as_f64().unwrap() > 0.0);
    // --server-pid: the server's CPU and memory read from /proc.
    assert!(r["server"]["rssKiB"].as_u64().unwrap() > 0 && r["server"]["cpuShare"].as_f64().is_some(), "{}", r["server"]);
    // And its memory before the run, which what each connection added is measured against.
    let (before, end) = (r["server"]["rssBeforeKiB"].as_u64().unwrap(), r["server"]["rssKiB"].as_u64().unwrap());
    let added = r["server"]["addedBytesPerConnection"].as_f64().unwrap();
    assert!(before > 0 && (added - (end as f64 - before as f64) * 1024.0 / 12.0).abs() < 1.0, "{}", r["server"]);
    assert!(!r["timeline"].as_array().unwrap().is_empty());

    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("partyflow-loadgen: party"));
    assert!(html.matches("<svg").count() >= 2, "a histogram and a timeline");
}

#[test]
fn a_missed_gate_fails_the_run_and_names_the_gate() {
    let server = Server::start(&[]);
    let out = loadgen(&[
        "--url",
        &server.url(),
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "--slo-p95-ms",
        "0.000001",
        "relay",
        "--rooms",
        "2",
        "--members",
        "3",
        "--rate",
        "20",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("SLO VIOLATED: --slo-p95-ms"), "{said}");
}

#[test]
fn a_compressed_relay_run_inflates_what_it_reads_and_counts_the_bytes_saved() {
    let server = Server::start(&[]);
    let dir = Scratch::new("relay");
    let (plain, compressed) = (dir.path("plain.json"), dir.path("compressed.json"));
    let url = server.url();
    for (report, extra) in [(&plain, None), (&compressed, Some("--compression"))] {
        let mut args = vec!["--url", &url, "--warmup", "1s", "--duration", "2s", "--json", report, "--max-lost", "0", "--max-error-rate", "0"];
        args.extend(extra);
        args.extend(["relay", "--rooms", "2", "--members", "4", "--rate", "20", "--payload", "1024"]);
        assert!(loadgen(&args).status.success());
    }
    let (plain, compressed) = (json(&plain), json(&compressed));
    for r in [&plain, &compressed] {
        assert!(r["delivered"].as_u64().unwrap() > 0);
        assert_eq!(r["lost"], 0);
    }
    // 1 KiB of JSON-like text per message: deflate sends a fraction of it.
    let (plain_bytes, compressed_bytes) = (plain["wireBytesPerDelivery"].as_f64().unwrap(), compressed["wireBytesPerDelivery"].as_f64().unwrap());
    assert!(plain_bytes > 1024.0, "{plain_bytes}");
    assert!(compressed_bytes < plain_bytes / 2.0, "compressed {compressed_bytes} vs plain {plain_bytes} bytes per delivery");
}

#[test]
fn a_pubsub_run_with_signed_users_and_directs_loses_nothing() {
    let secret = "loadgen-test-secret-0123456789";
    let server = Server::start(&["--pubsub-secret", secret]);
    let dir = Scratch::new("pubsub");
    let report = dir.path("pubsub.json");
    let out = loadgen(&[
        "--url",
        &server.url(),
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "--json",
        &report,
        "--max-lost",
        "0",
        "--max-error-rate",
        "0",
        "pubsub",
        "--rooms",
        "4",
        "--members",
        "3",
        "--rooms-per-conn",
        "2",
        "--rate",
        "20",
        "--direct-rate",
        "2",
        "--pubsub-secret",
        secret,
    ]);
    assert!(out.status.success());
    let r = json(&report);
    assert_eq!(r["scenario"], "pubsub");
    assert!(r["delivered"].as_u64().unwrap() > 0);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["errors"], serde_json::json!({}), "errors by kind");

    // Without the server's secret every connection is refused: the run says so and fails.
    let out = loadgen(&[
        "--url",
        &server.url(),
        "--warmup",
        "1s",
        "--duration",
        "1s",
        "pubsub",
        "--rooms",
        "1",
        "--members",
        "2",
        "--pubsub-secret",
        "not-the-servers-secret-000",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "the refusal's status is reported");
}

#[test]
fn a_storm_drops_connections_and_every_one_comes_back_with_its_events() {
    // Every room starts at once (--synchronized), a one-second countdown and a two-second
    // warm-up: the whole measured window is inside the first round (10 s), where the hosts swipe.
    let server = Server::start(&["--min-round-duration", "1s", "--countdown", "1"]);
    let dir = Scratch::new("storm");
    let report = dir.path("storm.json");
    let out = loadgen(&[
        "--url",
        &server.url(),
        "--warmup",
        "2s",
        "--duration",
        "4s",
        "--json",
        &report,
        "--max-lost",
        "0",
        "storm",
        "--rooms",
        "2",
        "--players",
        "4",
        "--round-duration",
        "10",
        "--swipe-interval",
        "300ms",
        "--drop-fraction",
        "0.5",
        "--synchronized",
    ]);
    assert!(out.status.success());
    let r = json(&report);
    let back = &r["reconnects"];
    let reconnected = back["backfill"].as_u64().unwrap() + back["snapshot"].as_u64().unwrap();
    assert!(reconnected >= 5, "half of 10 connections dropped and reconnected: {back}");
    assert_eq!(back["gapsAfterBackfill"], 0);
    assert_eq!(r["lost"], 0);
}

#[test]
fn a_soak_churns_rooms_and_samples_the_servers_memory() {
    let server = Server::start(&["--countdown", "1", "--score-review", "1s", "--min-round-duration", "1s"]);
    let dir = Scratch::new("soak");
    let report = dir.path("soak.json");
    let pid = server.child.id().to_string();
    let out = loadgen(&[
        "--url",
        &server.url(),
        "--server-pid",
        &pid,
        "--warmup",
        "1s",
        "--duration",
        "5s",
        "--json",
        &report,
        "--max-lost",
        "0",
        "soak",
        "--rooms",
        "3",
        "--players",
        "3",
        "--round-duration",
        "2",
        "--swipe-interval",
        "300ms",
        "--synchronized",
        "--room-lifetime",
        "2s",
        "--churn-interval",
        "300ms",
        "--sample-interval",
        "1s",
    ]);
    assert!(out.status.success());
    let soak = &json(&report)["soak"];
    assert!(soak["roomsFinished"].as_u64().unwrap() >= 1, "rooms live 2 s in a 5 s run: {soak}");
    assert!(soak["drops"].as_u64().unwrap() + soak["leaves"].as_u64().unwrap() + soak["joins"].as_u64().unwrap() > 0, "{soak}");
    let samples = soak["samples"].as_array().unwrap();
    assert!(samples.len() >= 3 && samples.iter().all(|s| s["rssKiB"].as_u64().unwrap() > 0), "{soak}");
}

#[test]
fn no_server_at_the_url_is_a_clear_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = loadgen(&["--url", &format!("http://127.0.0.1:{port}"), "--warmup", "1s", "--duration", "1s", "party", "--rooms", "1", "--players", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.to_lowercase().contains("refused"), "{said}");
}
