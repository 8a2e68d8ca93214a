//! Test harness: the real `partyflow` binary on an ephemeral loopback port, and clients that
//! talk to it over real sockets (tungstenite for well-behaved peers, raw frames for bad ones).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::WebSocket;

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

/// Sends `request` and reads until the server closes.
pub fn http_raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_response(raw: &str) -> (u16, String) {
    let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// A well-behaved WebSocket client.
pub fn connect(server: &Server, path: &str) -> Client {
    connect_with(server, path, WebSocketConfig::default())
}

pub fn connect_with(server: &Server, path: &str, config: WebSocketConfig) -> Client {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // As browsers do: without it a message written right after a pong waits for the server's
    // delayed ACK (Nagle), tens of milliseconds charged to the server.
    stream.set_nodelay(true).unwrap();
    let (ws, response) = tungstenite::client::client_with_config(server.url(path), MaybeTlsStream::Plain(stream), Some(config)).expect("handshake");
    assert_eq!(response.status(), 101);
    ws
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

/// A hand-driven WebSocket client for sending frames no library would send.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

impl RawClient {
    pub fn connect(server: &Server, path: &str) -> RawClient {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self::upgrade(stream, path)
    }

    /// Upgrades an open connection to the server.
    pub fn upgrade(stream: TcpStream, path: &str) -> RawClient {
        Self::upgrade_with(stream, path, "").0
    }

    /// Connects with extra request header lines (each ending in CRLF); also the 101's head.
    pub fn connect_with_headers(server: &Server, path: &str, headers: &str) -> (RawClient, String) {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self::upgrade_with(stream, path, headers)
    }

    fn upgrade_with(mut stream: TcpStream, path: &str, headers: &str) -> (RawClient, String) {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        (RawClient { stream, buf: Vec::new() }, head)
    }

    /// Encodes a client frame with the given first byte; `masked` false makes it illegal.
    pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        partyflow::ws::encode_client_frame(first, payload, masked.then_some(MASK))
    }

    pub fn send(&mut self, first: u8, payload: &[u8]) {
        self.stream.write_all(&Self::frame(first, payload, true)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one server frame: (first byte, payload). `None` on EOF.
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10),
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
                if len != usize::MAX && self.buf.len() >= at + len {
                    let first = self.buf[0];
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((first, payload));
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads one server frame if a whole one is already there or arrives without blocking (the
    /// stream must be non-blocking); `None` otherwise.
    pub fn try_read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        if self.buf.len() < 2 || self.buf[1] & 0x7f >= 126 || self.buf.len() < 2 + (self.buf[1] & 0x7f) as usize {
            return None;
        }
        let len = (self.buf[1] & 0x7f) as usize;
        let frame = (self.buf[0], self.buf[2..2 + len].to_vec());
        self.buf.drain(..2 + len);
        Some(frame)
    }

    /// Reads frames until a close frame, skipping pings; returns its status code.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            let (first, payload) = self.read_frame().expect("connection ended without a close frame");
            match first & 0x0f {
                0x9 => continue,
                0x8 => {
                    assert_eq!(first, 0x88);
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
                op => panic!("expected close, got opcode {op:#x} ({} bytes)", payload.len()),
            }
        }
    }

    /// After a close: the server must end the TCP connection.
    pub fn expect_eof(&mut self) {
        while let Some((first, _)) = self.read_frame() {
            assert_eq!(first & 0x0f, 0x9, "unexpected frame after close: {first:#x}");
        }
    }
}

pub mod game;
pub mod pubsub;
pub mod receiver;
pub mod redis;
