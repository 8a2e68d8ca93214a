//! Test harness: the real `partyflow` binary on an ephemeral loopback port; the clients that
//! talk to it are the `partyflow-client` crate's (tungstenite for well-behaved peers, raw
//! frames for bad ones), with the shorthands tests use.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Not every test uses every client.
#[allow(unused_imports)]
pub use partyflow_client::{raw::MASK, RawClient};
use tungstenite::protocol::WebSocketConfig;

/// A running server process, stopped (SIGTERM, then SIGKILL after a grace) on drop.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `partyflow` with `args` on 127.0.0.1:0 and waits until it listens.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_partyflow"))
            .args(["--listen", "127.0.0.1:0"])
            .args(if args.contains(&"--log") { &[][..] } else { &["--log", "info"][..] })
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn partyflow");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("partyflow listening on ").nth(1) {
                    // Text or JSON lines: the address runs up to the first other character.
                    let addr: SocketAddr = rest.split(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c))).next().unwrap().parse().unwrap();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("server did not start; log: {:?}", log.lock().unwrap())
        });
        Server { addr, child, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// GET `path` and return (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let raw = http_raw(self.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        parse_response(&raw)
    }

    /// The value of metric `name` with exactly these labels, summed over shards when `labels`
    /// omits the shard.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| series.split('{').next() == Some(name) && labels.split(',').filter(|s| !s.is_empty()).all(|lab| series.contains(lab)))
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .sum()
    }

    /// Polls `/health` until `connections` equals `n` (the count is updated as connections end).
    pub fn wait_connections(&self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = self.get("/health");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["connections"] == n {
                return;
            }
            assert!(Instant::now() < deadline, "connections stayed at {} (wanted {n})", v["connections"]);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl partyflow_client::ServerAddr for Server {
    fn server_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_gently(&mut self.child);
    }
}

/// Stops a process of ours as an operator would: SIGTERM, then a wait for its own clean exit
/// (which is when a coverage build writes its profile); SIGKILL only after a grace.
pub fn stop_gently(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `request` as it is and reads until the server closes.
pub fn http_raw(addr: SocketAddr, request: &str) -> String {
    String::from_utf8_lossy(&partyflow_client::http::exchange(&addr, request.as_bytes()).expect("HTTP exchange")).into_owned()
}

/// (status, body) of a response read whole; (0, "") when it holds no valid head.
pub fn parse_response(raw: &str) -> (u16, String) {
    partyflow_client::http::Response::parse(raw.as_bytes()).map_or((0, String::new()), |r| (r.status, r.text()))
}

pub type Client = tungstenite::WebSocket<TcpStream>;

/// A well-behaved WebSocket client.
pub fn connect(server: &Server, path: &str) -> Client {
    connect_with(server, path, WebSocketConfig::default())
}

pub fn connect_with(server: &Server, path: &str, config: WebSocketConfig) -> Client {
    partyflow_client::websocket(server, path, config).expect("handshake")
}

/// A connection to the server from the loopback address `ip` (each address of 127.0.0.0/8
/// has its own per-address allowances).
pub fn tcp_from(server: &Server, ip: [u8; 4]) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    s.connect(&server.addr.into()).unwrap();
    let s = TcpStream::from(s);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

pub mod game;
pub mod pubsub;
pub mod receiver;
pub mod redis;
