//! Connections from the load generator: source-address spreading, and the room API and
//! WebSocket handshakes over tokio (their requests and answers are `partyflow_client`'s).

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::WebSocketStream;

use partyflow_client::deflate::OFFER;
use partyflow_client::{handshake, http};

use crate::deflate::Inflating;
use crate::stats::Stats;

/// A game client's WebSocket: tokio-tungstenite over a socket that inflates compressed frames.
pub type GameSocket = WebSocketStream<Inflating<TcpStream>>;

/// The longest an HTTP request to the server may take.
const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The server under test and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
    /// Loopback source addresses to spread connections over (empty: let the kernel choose).
    sources: Vec<IpAddr>,
    /// WebSockets offer permessage-deflate.
    compression: bool,
    /// The next connection's source address (an index into `sources`).
    next_source: std::cell::Cell<usize>,
}

impl Target {
    /// Parses `http://host:port`; for a loopback server, spreads over `source_ips` addresses of
    /// 127.0.0.0/8 so that many connections do not exhaust one address's ephemeral ports.
    /// With `compression`, WebSockets offer permessage-deflate.
    pub fn parse(url: &str, source_ips: usize, compression: bool) -> anyhow::Result<Target> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("--url must start with http://"))?;
        let host = rest.trim_end_matches('/').to_string();
        let addr = host.to_socket_addrs().with_context(|| format!("cannot resolve {host}"))?.next().ok_or_else(|| anyhow!("{host} has no address"))?;
        let sources = if addr.ip().is_loopback() && addr.is_ipv4() {
            (0..source_ips.max(1)).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 250) as u8))).collect()
        } else {
            Vec::new()
        };
        Ok(Target { host, addr, sources, compression, next_source: std::cell::Cell::new(0) })
    }

    async fn tcp(&self) -> std::io::Result<TcpStream> {
        let socket = if self.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // Each connection takes the next address in turn: a burst of connections (every room's
        // n-th member at once) spreads over all of them, as no address's cap of connections
        // still sending their request must be met by a load test.
        let turn = self.next_source.get();
        self.next_source.set(turn.wrapping_add(1));
        if let Some(ip) = self.sources.get(turn % self.sources.len().max(1)) {
            socket.bind(SocketAddr::new(*ip, 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// POSTs `body` to `path`; returns status and JSON.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.request("POST", path, Some(body)).await
    }

    /// GETs `path`; returns status and the body as text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let (status, body) = self.raw("GET", path, None).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let (status, body) = self.raw(method, path, body).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    async fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Vec<u8>)> {
        // A server that never answers must not hang the run (its report is what is needed then).
        tokio::time::timeout(HTTP_TIMEOUT, self.raw_unbounded(method, path, body))
            .await
            .map_err(|_| anyhow!("{method} {path}: no answer within {HTTP_TIMEOUT:?}"))?
    }

    async fn raw_unbounded(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Vec<u8>)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = self.tcp().await?;
        stream.write_all(&http::format_request(method, path, &self.host, &[("Content-Type", "application/json")], body.as_bytes())).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let response = http::Response::parse(&response).ok_or_else(|| anyhow!("{method} {path}: no HTTP response"))?;
        Ok((response.status, response.body))
    }

    /// Opens a WebSocket to `path` (bytes received are counted in `stats`); returns it and the
    /// handshake time in µs.
    pub async fn websocket(&self, path: &str, stats: &Rc<RefCell<Stats>>) -> anyhow::Result<(GameSocket, u64)> {
        let started = Instant::now();
        let stream = Inflating::new(self.tcp().await?, self.compression, stats.clone());
        let mut request = format!("ws://{}{path}", self.host).into_client_request()?;
        if self.compression {
            request.headers_mut().insert("Sec-WebSocket-Extensions", OFFER.parse()?);
        }
        let (ws, _) = tokio_tungstenite::client_async(request, stream).await.map_err(|e| match e {
            // The server's reason (a cap, a moving room) is in the body.
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                anyhow!("upgrade refused with {}: {}", response.status(), String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()))
            }
            e => e.into(),
        })?;
        Ok((ws, started.elapsed().as_micros() as u64))
    }
}

/// Opens a WebSocket to `path` by hand and returns the raw stream after the 101, for clients
/// that read server frames themselves (cheaper than a full WebSocket library per message).
pub async fn raw_websocket(target: &Target, path: &str) -> anyhow::Result<(TcpStream, Vec<u8>, u64)> {
    let started = Instant::now();
    let mut stream = target.tcp().await?;
    let extensions = if target.compression { format!("Sec-WebSocket-Extensions: {OFFER}\r\n") } else { String::new() };
    stream.write_all(handshake::request(path, &target.host, &extensions).as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_len = loop {
        if let Some(answer) = handshake::read_answer(&buf) {
            break answer?;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("server closed during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            bail!("handshake response too large");
        }
    };
    let rest = buf.split_off(head_len);
    Ok((stream, rest, started.elapsed().as_micros() as u64))
}

/// Unix time in µs (the server stamps events in Unix ms).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Raises the open-file limit to its hard limit; fails clearly if it cannot hold `connections`.
pub fn ensure_open_files(connections: usize) -> anyhow::Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let need = connections as u64 + 64;
    if lim.rlim_cur < need {
        bail!(
            "{connections} connections need about {need} open files, but this process may open {} (hard limit {}); \
             raise it (`ulimit -n`) or run fewer rooms",
            lim.rlim_cur,
            lim.rlim_max
        );
    }
    Ok(())
}
