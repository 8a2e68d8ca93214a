//! HTTP/1.1 for the room API: requests written whole, responses read until the server closes
//! (it answers each request on its own connection). The formatting and parsing are sans-IO, so
//! an async client can use them; [`request`] and [`exchange`] do the blocking I/O.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::{Error, ServerAddr, READ_TIMEOUT};

/// A request's bytes: `method path`, `Host`, the given header lines, and `body` with its length.
pub fn format_request(method: &str, path: &str, host: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A response: its status, head (status line and headers, as text) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// Parses a whole response (as read until the server closed). `None` when the bytes hold no
    /// complete, valid head.
    pub fn parse(raw: &[u8]) -> Option<Response> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = parsed.parse(raw).ok()? else { return None };
        let status = parsed.code?;
        let head = String::from_utf8_lossy(raw.get(..head_len)?).into_owned();
        Some(Response { status, head, body: raw.get(head_len..)?.to_vec() })
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).filter_map(|line| line.split_once(':')).find(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// `Ok(self)` when the status is `expected`; otherwise the status and body as the error.
    pub fn expect(self, expected: u16) -> Result<Response, Error> {
        if self.status == expected {
            Ok(self)
        } else {
            Err(Error::Status { status: self.status, body: self.text() })
        }
    }
}

/// Sends `request` as it is (well-formed or not) and returns every byte the server sent until
/// it closed the connection (or the read timed out).
pub fn exchange(server: &impl ServerAddr, request: &[u8]) -> Result<Vec<u8>, Error> {
    let mut stream = TcpStream::connect(server.server_addr())?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.write_all(request)?;
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        // A server that resets after answering (it refused the rest) still answered.
        Err(_) if !out.is_empty() => Ok(out),
        Err(e) => Err(e.into()),
    }
}

/// One request: `method path` with `headers` and `body`; the parsed response, whatever its status.
pub fn request(server: &impl ServerAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, Error> {
    let host = server.server_addr().to_string();
    let raw = exchange(server, &format_request(method, path, &host, headers, body))?;
    Response::parse(&raw).ok_or_else(|| Error::Protocol(format!("{method} {path}: no HTTP response ({} bytes)", raw.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_its_headers_and_length() {
        let bytes = format_request("POST", "/rooms", "h:1", &[("Authorization", "Bearer k")], b"{}");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "POST /rooms HTTP/1.1\r\nHost: h:1\r\nConnection: close\r\nAuthorization: Bearer k\r\nContent-Length: 2\r\n\r\n{}"
        );
        let get = String::from_utf8(format_request("GET", "/health", "h", &[], b"")).unwrap();
        assert!(!get.contains("Content-Length"), "{get}");
    }

    #[test]
    fn a_response_is_parsed_or_refused() {
        let r = Response::parse(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!((r.status, r.header("content-type"), r.json()["a"].as_u64()), (201, Some("application/json"), Some(1)));
        assert!(r.clone().expect(200).is_err());
        assert!(r.expect(201).is_ok());
        assert!(Response::parse(b"HTTP/1.1 200 OK\r\nX: y\r\n").is_none(), "an unfinished head");
        assert!(Response::parse(b"").is_none());
    }
}
