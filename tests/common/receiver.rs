//! A webhook receiver on loopback: checks each request's signature, answers as told, records
//! the events of the requests it acknowledged (200) and the ids of every event it was offered.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use partyflow::webhooks::verify;
use serde_json::Value;

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Status(u16),
    /// Reads the request and never answers (until the server's timeout).
    Hang,
}

pub struct Receiver {
    pub addr: SocketAddr,
    /// Events of the requests answered 200, in arrival order.
    pub events: Arc<Mutex<Vec<Value>>>,
    /// Every event id offered, answered or not.
    pub offered: Arc<Mutex<BTreeSet<String>>>,
    pub requests: Arc<Mutex<usize>>,
    /// While set, every request is answered 500.
    pub refusing: Arc<AtomicBool>,
}

impl Receiver {
    /// Answers its first requests as `script` says, then 200; `secret` checks the signatures.
    pub fn start(secret: &'static str, script: Vec<Answer>) -> Receiver {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), secret, script)
    }

    pub fn start_on(listener: TcpListener, secret: &'static str, script: Vec<Answer>) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver { addr, events: Arc::default(), offered: Arc::default(), requests: Arc::default(), refusing: Arc::new(AtomicBool::new(false)) };
        let script = Arc::new(Mutex::new(script.into_iter()));
        let (sink, offered, count, refusing) = (receiver.events.clone(), receiver.offered.clone(), receiver.requests.clone(), receiver.refusing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (sink, offered, count, script, refusing) = (sink.clone(), offered.clone(), count.clone(), script.clone(), refusing.clone());
                std::thread::spawn(move || loop {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let (mut length, mut timestamp, mut signature) = (0usize, 0u64, String::new());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(": ") {
                            match name.to_ascii_lowercase().as_str() {
                                "content-length" => length = value.parse().unwrap(),
                                "partyflow-timestamp" => timestamp = value.parse().unwrap(),
                                "partyflow-signature" => signature = value.to_string(),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    assert!(verify(secret, timestamp, &body, &signature), "a request with a bad signature");
                    let batch: Value = serde_json::from_slice(&body).unwrap();
                    let events = batch["events"].as_array().cloned().unwrap_or_default();
                    offered.lock().unwrap().extend(events.iter().map(|e| e["id"].as_str().unwrap().to_string()));
                    *count.lock().unwrap() += 1;
                    let answer =
                        if refusing.load(Ordering::SeqCst) { Answer::Status(500) } else { script.lock().unwrap().next().unwrap_or(Answer::Status(200)) };
                    match answer {
                        Answer::Hang => {
                            std::thread::sleep(Duration::from_secs(60));
                            return;
                        }
                        Answer::Status(status) => {
                            if status == 200 {
                                sink.lock().unwrap().extend(events);
                            }
                            // Keep-alive, as a real receiver: the next request may come on it.
                            if write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Waits until an event of `kind` arrived; returns every event so far.
    pub fn until(&self, kind: &str, limit: Duration) -> Vec<Value> {
        self.until_all(limit, |events| events.iter().any(|e| e["type"] == kind))
    }

    /// Waits until `done` holds for the events received; returns them.
    pub fn until_all(&self, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.events.lock().unwrap().clone();
            if done(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "not there within {limit:?}; got {events:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ids of the events received.
    pub fn received_ids(&self) -> BTreeSet<String> {
        self.events.lock().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
    }
}
