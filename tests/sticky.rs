//! Sticky routing by room: the shipped `tuning/nginx.conf` (its ports replaced) in front of
//! three real instances. Rooms created through it with a chosen id live on exactly one instance,
//! and every later request for the room (summary, join, WebSocket) reaches that instance.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_raw, parse_response, Server};
use serde_json::{json, Value};
use tungstenite::Message;

struct Nginx {
    addr: SocketAddr,
    child: Child,
    _dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx(upstreams: &[SocketAddr]) -> Nginx {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/nginx.conf")).unwrap();
    for (i, addr) in upstreams.iter().enumerate() {
        conf = conf.replace(&format!("127.0.0.1:808{}", i + 1), &addr.to_string());
    }
    conf = conf.replace("listen 127.0.0.1:8080;", &format!("listen 127.0.0.1:{port};"));
    let dir = std::env::temp_dir().join(format!("partyflow-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args(["-p", dir.to_str().unwrap(), "-c", "nginx.conf"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is not installed: run scripts/test-all.sh, or apt-get install nginx-light");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx { addr, child, _dir: dir }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let raw = http_raw(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    );
    let (status, text) = parse_response(&raw);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn rooms_created_through_the_proxy_live_and_play_on_one_instance() {
    let instances: Vec<Server> = (0..3).map(|_| Server::start(&["--shards", "2"])).collect();
    let proxy = nginx(&instances.iter().map(|s| s.addr).collect::<Vec<_>>());
    let mut homes = vec![0; instances.len()];
    for i in 0..12 {
        let room = format!("STICKY{i:02}");
        let (status, created) = request(proxy.addr, "POST", &format!("/rooms?roomId={room}"), Some(&json!({"hostName": "H"})));
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["roomId"], room.as_str());
        // The room exists on exactly one instance...
        let on: Vec<usize> = (0..instances.len()).filter(|&k| request(instances[k].addr, "GET", &format!("/rooms/{room}"), None).0 == 200).collect();
        assert_eq!(on.len(), 1, "{room} on {on:?}");
        homes[on[0]] += 1;
        // ...and everything naming it reaches that instance through the proxy.
        assert_eq!(request(proxy.addr, "GET", &format!("/rooms/{room}"), None).0, 200);
        let (status, joined) = request(proxy.addr, "POST", &format!("/rooms/{room}/players"), Some(&json!({"playerName": "P"})));
        assert_eq!(status, 201, "{joined}");
        let token = created["hostToken"].as_str().unwrap();
        let url = format!("ws://{}/ws?roomId={room}&token={token}", proxy.addr);
        let stream = TcpStream::connect(proxy.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut ws, _) = tungstenite::client(url, stream).expect("upgrade through the proxy");
        let hello: Value = match ws.read().unwrap() {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(hello["type"], "CONNECTED");
        assert_eq!(hello["payload"]["snapshot"]["participants"].as_array().unwrap().len(), 2, "the player joined the same room");
        let (status, again) = request(proxy.addr, "POST", &format!("/rooms?roomId={room}"), Some(&json!({"hostName": "H"})));
        assert_eq!((status, again["error"]["code"].as_str()), (409, Some("ROOM_EXISTS")));
    }
    assert!(homes.iter().filter(|n| **n > 0).count() >= 2, "rooms spread over the instances: {homes:?}");
}
