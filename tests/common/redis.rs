//! A real `redis-server` on a free loopback port, stopped on drop. `scripts/test-all.sh`
//! installs it (Debian package `redis-server`) when missing.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_on(free_port())
    }

    /// Starts an empty, non-persisting Redis on `port`.
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test-all.sh, or apt-get install redis-server");
        let redis = Redis { port, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.try_conn().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        let mut conn = redis::Client::open(self.url()).ok()?.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
        redis::cmd("PING").query::<String>(&mut conn).ok()?;
        Some(conn)
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("redis is up")
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    /// Polls `key` until `ok` holds for its value (or its absence), up to 10 s.
    pub fn wait_for(&self, key: &str, ok: impl Fn(Option<&serde_json::Value>) -> bool) -> Option<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.get(key).map(|v| serde_json::from_str::<serde_json::Value>(&v).unwrap());
            if ok(value.as_ref()) {
                return value;
            }
            assert!(Instant::now() < deadline, "{key} never satisfied the condition; last value {value:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (its data is gone: it never saves).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
