//! partyflow-loadgen: drives a partyflow server with WebSocket clients and reports what they
//! saw, so a host's capacity can be decided from numbers.
//!
//! One single-threaded Tokio runtime per `--threads` (one core each, pinned when there are
//! several), so the other cores are left to the server; each thread drives its share of the
//! rooms and the results are merged.

mod deflate;
mod html;
mod net;
mod party;
mod pubsub;
mod relay;
mod report;
mod sampler;
mod soak;
mod stats;
mod window;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use report::{Gates, Report, ServerUsage};
use stats::Stats;

/// Load generator for the partyflow server.
#[derive(Debug, Parser)]
#[command(name = "partyflow-loadgen", version)]
struct Cli {
    /// The server's base URL; WebSocket URLs are derived from it. Repeat it for several
    /// instances: relay members, and each game room's host and players, are spread over them
    /// in turn (a game room is created on one and reached through the others).
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: Vec<String>,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    duration: Duration,
    /// Load applied before measuring starts (not counted).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    warmup: Duration,
    /// New connections (and API calls) per second while setting up.
    #[arg(long, default_value_t = 1000.0, global = true)]
    connect_rate: f64,
    /// Loopback source addresses to spread connections over (127.0.0.1, .2, …). Default: enough
    /// that each holds at most half the server's default --max-connections-per-ip, and at least 8.
    #[arg(long, global = true)]
    source_ips: Option<usize>,
    /// PID of a local server: its CPU and memory are read from /proc. Otherwise /metrics is
    /// scraped.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Write the full results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    /// Write a self-contained HTML report (latency histogram and over time) to this file.
    #[arg(long, global = true)]
    html: Option<std::path::PathBuf>,
    /// Fail (exit 1) if p95 latency exceeds this many ms.
    #[arg(long, global = true)]
    slo_p95_ms: Option<f64>,
    /// Fail if p99 latency exceeds this many ms.
    #[arg(long, global = true)]
    slo_p99_ms: Option<f64>,
    /// Fail if errors per message exceed this fraction.
    #[arg(long, global = true)]
    max_error_rate: Option<f64>,
    /// Fail if more than this many messages were lost, duplicated or reordered.
    #[arg(long, global = true)]
    max_lost: Option<u64>,
    /// Client threads, each with its own runtime and its share of the rooms, pinned to the
    /// CPUs this process may use in turn (`taskset -c 2-3 partyflow-loadgen --threads 2`), so one
    /// client core is never the bottleneck of a capacity test.
    #[arg(long, default_value_t = 1, global = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Offer permessage-deflate on every WebSocket (the server then compresses what it sends
    /// above its --compression-min-bytes; the clients send plain).
    #[arg(long, global = true)]
    compression: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
enum Scenario {
    /// Create rooms through the API and play the real game (host swipes, players join teams).
    Party(party::PartyArgs),
    /// R rooms of M members on /relay; one publisher per room at a fixed rate.
    Relay(relay::RelayArgs),
    /// R rooms of M members on /pubsub (each member in one or more rooms); publishers per room
    /// at a fixed rate, and optionally directs to users.
    Pubsub(pubsub::PubSubArgs),
    /// Steady party load, then drop a fraction of all connections at once and reconnect them.
    Storm(party::StormArgs),
    /// Party rooms with churn for a long time (drops, reconnects, leaves, joins, rooms closed and
    /// replaced), sampling the server's memory, connections, rooms and the errors seen.
    Soak(soak::SoakArgs),
}

impl Scenario {
    /// The most WebSocket connections the scenario holds at once.
    fn connections(&self) -> usize {
        match self {
            Scenario::Party(a) => a.rooms * (a.players + 1),
            Scenario::Storm(a) => a.party.rooms * (a.party.players + 1),
            Scenario::Relay(a) => a.rooms * a.members,
            Scenario::Pubsub(a) => a.connections(),
            // A leaving player's connection may still be closing when its replacement connects.
            Scenario::Soak(a) => a.party.rooms * (a.party.players + 2),
        }
    }
}

/// Loopback source addresses for `connections` to one server: each address holds at most half
/// the server's default per-address cap (room for reconnections and API calls beside them).
fn default_source_ips(connections: usize) -> usize {
    connections.div_ceil(partyflow::config::DEFAULT_MAX_CONNECTIONS_PER_IP / 2).clamp(8, 250)
}

/// Which rooms one client thread drives: those whose number is `index` modulo `count`.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    pub index: usize,
    pub count: usize,
}

impl Share {
    pub fn owns(&self, room: usize) -> bool {
        room % self.count.max(1) == self.index
    }
}

/// What every scenario needs from the driver.
pub struct RunContext {
    /// This thread's rooms.
    pub share: Share,
    /// The first (or only) `--url`: API calls, metrics and every non-relay scenario.
    pub target: Rc<net::Target>,
    /// Every `--url`, in order.
    pub targets: Vec<Rc<net::Target>>,
    pub pacer: Pacer,
    pub stats: Rc<RefCell<Stats>>,
    /// Shown in the progress line; `stopping` ends resource sampling.
    pub phase: Rc<RefCell<String>>,
    pub warmup: Duration,
    pub duration: Duration,
    /// The measured window shared with the other client threads.
    pub window: Arc<window::Window>,
}

impl RunContext {
    /// Opens the measured window, together with every other client thread.
    pub async fn start_measuring(&self) -> anyhow::Result<Instant> {
        self.window.all_here().await?;
        let now = Instant::now();
        self.stats.borrow_mut().start_measuring(now);
        *self.phase.borrow_mut() = "measuring".into();
        Ok(now)
    }

    /// Closes the measured window, then waits for every other thread to close theirs: only
    /// then may the clients be torn down.
    pub async fn stop_measuring(&self) -> anyhow::Result<()> {
        self.stats.borrow_mut().stop_measuring();
        *self.phase.borrow_mut() = "stopping".into();
        self.window.all_here().await
    }
}

type ScenarioFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

/// Paces connection setup at a fixed rate.
pub struct Pacer {
    interval: Duration,
    next: Cell<tokio::time::Instant>,
}

impl Pacer {
    fn new(per_sec: f64) -> Pacer {
        Pacer { interval: Duration::from_secs_f64(1.0 / per_sec.max(0.001)), next: Cell::new(tokio::time::Instant::now()) }
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        let slot = self.next.get().max(tokio::time::Instant::now());
        self.next.set(slot + self.interval);
        tokio::time::sleep_until(slot).await;
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("partyflow-loadgen: {err:#}");
            std::process::exit(2);
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match &cli.scenario {
        Scenario::Relay(a) => a.validate()?,
        Scenario::Pubsub(a) => a.validate()?,
        Scenario::Soak(a) => a.validate()?,
        Scenario::Party(_) | Scenario::Storm(_) => {}
    }
    net::ensure_open_files(cli.scenario.connections())?;
    let threads = usize::from(cli.threads);
    let cpus = partyflow::runtime::limits::allowed_cpus().unwrap_or_default();
    let window = Arc::new(window::Window::new(threads));
    // The server's memory before this run's first connection: what each connection adds is
    // measured against it.
    let rss_before_kib = cli.server_pid.and_then(|pid| sampler::sample(&pid.to_string())).map(|s| s.rss_kib);
    let started = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let (cli, cpu, window) = (&cli, cpus.get(index % cpus.len().max(1)).copied(), window.clone());
                scope.spawn(move || {
                    if threads > 1 {
                        pin_to(cpu);
                    }
                    let result = drive(cli, Share { index, count: threads }, window.clone());
                    if result.is_err() {
                        window.abandon();
                    }
                    result
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))).collect::<Vec<_>>()
    });
    let mut stats = Stats::default();
    let mut observed = None;
    for result in started {
        let (thread_stats, usage) = result?;
        stats.absorb(thread_stats);
        observed = observed.or(usage);
    }
    let (measured, mut server, loadgen_cpu) = observed.ok_or_else(|| anyhow::anyhow!("the first client thread measured nothing"))?;
    server.rss_before_kib = rss_before_kib;
    let scenario = match cli.scenario {
        Scenario::Party(_) => "party",
        Scenario::Storm(_) => "storm",
        Scenario::Relay(_) => "relay",
        Scenario::Pubsub(_) => "pubsub",
        Scenario::Soak(_) => "soak",
    };
    let command = command_line(std::env::args());
    let report = Report { scenario, command, measured: measured.min(cli.duration), stats, server: Some(server), loadgen_cpu_share: loadgen_cpu, threads };
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    if let Some(path) = &cli.html {
        std::fs::write(path, report.html())?;
    }
    let max_rss_growth = if let Scenario::Soak(a) = &cli.scenario { a.max_rss_growth_kib_per_min } else { None };
    let gates = Gates { p95_ms: cli.slo_p95_ms, p99_ms: cli.slo_p99_ms, max_error_rate: cli.max_error_rate, max_lost: cli.max_lost, max_rss_growth };
    let violations = report.violations(&gates);
    for v in &violations {
        println!("SLO VIOLATED: {v}");
    }
    if violations.is_empty() {
        println!("gates: passed");
    }
    Ok(if violations.is_empty() { 0 } else { 1 })
}

/// What the first thread observed of the server and of the load generator: the measured
/// window, the server's usage and the load generator's CPU share (all threads).
type Observed = (Duration, ServerUsage, f64);

/// One client thread: its own runtime driving its share of the rooms. The first thread also
/// shows progress and samples the server.
fn drive(cli: &Cli, share: Share, window: Arc<window::Window>) -> anyhow::Result<(Stats, Option<Observed>)> {
    let source_ips = cli.source_ips.unwrap_or_else(|| default_source_ips(cli.scenario.connections().div_ceil(cli.url.len().max(1))));
    let targets = cli.url.iter().map(|url| net::Target::parse(url, source_ips, cli.compression).map(Rc::new)).collect::<anyhow::Result<Vec<_>>>()?;
    let target = targets.first().cloned().ok_or_else(|| anyhow::anyhow!("--url is required"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let stats = Rc::new(RefCell::new(Stats::default()));
    let phase = Rc::new(RefCell::new("starting".to_string()));
    let ctx = Rc::new(RunContext {
        share,
        target: target.clone(),
        targets,
        pacer: Pacer::new(cli.connect_rate / share.count as f64),
        stats: stats.clone(),
        phase: phase.clone(),
        warmup: cli.warmup,
        duration: cli.duration,
        window,
    });
    let server_pid = cli.server_pid.map(|p| p.to_string());
    let work: ScenarioFuture = match cli.scenario.clone() {
        Scenario::Party(a) => Box::pin(party::run(ctx, a, None)),
        Scenario::Storm(a) => Box::pin(party::run(ctx, a.party, Some(a.drop_fraction))),
        Scenario::Relay(a) => Box::pin(relay::run(ctx, a)),
        Scenario::Pubsub(a) => Box::pin(pubsub::run(ctx, a)),
        Scenario::Soak(a) => Box::pin(soak::run(ctx, a, server_pid.clone())),
    };
    let first = share.index == 0;
    let observed = local.block_on(&runtime, async {
        let lag = tokio::task::spawn_local(measure_scheduling_lag(stats.clone()));
        let progress = first.then(|| tokio::task::spawn_local(show_progress(stats.clone(), phase.clone())));
        let watcher = first.then(|| tokio::task::spawn_local(watch_resources(stats.clone(), phase.clone(), server_pid, target.clone())));
        let result = work.await;
        *phase.borrow_mut() = "stopping".into();
        lag.abort();
        if let Some(progress) = progress {
            progress.abort();
        }
        // A scenario that failed (before measuring, maybe) has nothing for the watcher to sample.
        if let Err(failed) = result {
            if let Some(watcher) = watcher {
                watcher.abort();
            }
            return Err(failed);
        }
        match watcher {
            Some(watcher) => Ok(Some(watcher.await?)),
            None => Ok(None),
        }
    })?;
    let stats = std::mem::take(&mut *stats.borrow_mut());
    Ok((stats, observed))
}

/// How late a 10 ms timer of this thread's runtime fires, recorded while measuring.
async fn measure_scheduling_lag(stats: Rc<RefCell<Stats>>) {
    const PERIOD: Duration = Duration::from_millis(10);
    loop {
        let due = Instant::now() + PERIOD;
        tokio::time::sleep(PERIOD).await;
        let late = Instant::now().saturating_duration_since(due);
        stats.borrow_mut().record_scheduling_lag(late.as_micros() as u64);
    }
}

/// Pins the calling thread to `cpu` (nothing if none).
fn pin_to(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    // SAFETY: the set is zeroed, then one CPU is set; sched_setaffinity(0) applies to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("partyflow-loadgen: cannot pin a client thread to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
}

/// Samples the server (from /proc with `--server-pid`, else its /metrics) and this process when
/// measuring starts and when it ends; returns the measured window, the server's usage and the
/// load generator's CPU share.
async fn watch_resources(
    stats: Rc<RefCell<Stats>>,
    phase: Rc<RefCell<String>>,
    server_pid: Option<String>,
    target: Rc<net::Target>,
) -> (Duration, ServerUsage, f64) {
    while !stats.borrow().has_started() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scrape = |target: Rc<net::Target>| async move { target.get_text("/metrics").await.map(|(_, t)| t).unwrap_or_default() };
    let start = Instant::now();
    let (server_start, self_start) = (server_pid.as_deref().and_then(sampler::sample), sampler::sample("self"));
    let metrics_start = scrape(target.clone()).await;
    while *phase.borrow() != "stopping" {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = Instant::now();
    let (server_end, self_end) = (server_pid.as_deref().and_then(sampler::sample), sampler::sample("self"));
    let metrics_end = scrape(target).await;
    let wall = end.saturating_duration_since(start);
    let out = |text: &str| sampler::metric_total(text, "partyflow_messages_out_total");
    let usage = ServerUsage {
        cpu_share: server_start.zip(server_end).map(|(a, b)| sampler::cpu_share((start, a), (end, b))),
        rss_kib: server_end.map(|s| s.rss_kib),
        peak_rss_kib: server_end.map(|s| s.peak_rss_kib),
        rss_before_kib: None,
        messages_out_per_sec: out(&metrics_start).zip(out(&metrics_end)).map(|(a, b)| (b - a) / wall.as_secs_f64().max(1e-9)),
        latency: report::SERVER_LATENCIES
            .iter()
            .map(|(family, _)| sampler::Buckets::read(&metrics_end, family).since(&sampler::Buckets::read(&metrics_start, family)))
            .collect(),
    };
    let loadgen = self_start.zip(self_end).map_or(0.0, |(a, b)| sampler::cpu_share((start, a), (end, b)));
    (wall, usage, loadgen)
}

/// A live progress line: phase, connections, deliveries per second, current p95, errors.
async fn show_progress(stats: Rc<RefCell<Stats>>, phase: Rc<RefCell<String>>) {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let mut s = stats.borrow_mut();
        s.close_second(Instant::now());
        let (rate, p95) = s.last_second().map_or((0, 0.0), |l| (l.delivered, l.p95_ms));
        bar.set_message(format!("{:10} connections {:6}  delivered {rate:7}/s  p95 {p95:8.3} ms  errors {}", phase.borrow(), s.connections, s.error_count()));
        bar.tick();
    }
}

/// The command line for the report, absolute paths cut to their file names: reports are kept in
/// the repository and must not name the directories of the machine that ran them.
fn command_line(args: impl Iterator<Item = String>) -> String {
    let file_name = |arg: String| {
        let path = std::path::Path::new(&arg);
        match path.file_name().filter(|_| path.is_absolute()) {
            Some(name) => name.to_string_lossy().into_owned(),
            None => arg,
        }
    };
    args.map(file_name).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::command_line;

    #[test]
    fn absolute_paths_are_cut_to_file_names() {
        let args = ["/opt/build/release/partyflow-loadgen", "--url", "http://127.0.0.1:9000", "--json", "/srv/runs/party.json", "party"];
        assert_eq!(command_line(args.into_iter().map(String::from)), "partyflow-loadgen --url http://127.0.0.1:9000 --json party.json party");
    }
}
