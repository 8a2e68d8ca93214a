//! The WebSocket upgrade by hand, for clients that read frames themselves: the request (with a
//! fixed key, as no security rests on it) and the check of the server's answer. Sans-IO.

use crate::Error;

/// The request's `Sec-WebSocket-Key` (RFC 6455's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` the server must answer [`KEY`] with.
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An upgrade request for `path`; `extra` are more header lines, each ending in CRLF.
pub fn request(path: &str, host: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Reads the server's answer at the front of `buf`: `None` while its head is incomplete, the
/// head's length once it is a valid 101, an error for anything else (a refusal and its reason).
pub fn read_answer(buf: &[u8]) -> Option<Result<usize, Error>> {
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(buf.get(..head_len)?);
    if !head.starts_with("HTTP/1.1 101") {
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = String::from_utf8_lossy(buf.get(head_len..).unwrap_or_default()).into_owned();
        return Some(Err(Error::Status { status, body }));
    }
    let accepted = head.lines().filter_map(|l| l.split_once(':')).any(|(n, v)| n.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == ACCEPT);
    Some(if accepted { Ok(head_len) } else { Err(Error::Protocol(format!("a 101 without the right Sec-WebSocket-Accept: {head}"))) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_once_its_head_is_complete() {
        let ok = format!("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n\x01\x00");
        assert!(read_answer(&ok.as_bytes()[..20]).is_none());
        assert_eq!(read_answer(ok.as_bytes()).unwrap().unwrap(), ok.len() - 2);
        let refused = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"code\":\"CAP\"}";
        assert!(matches!(read_answer(refused), Some(Err(Error::Status { status: 503, .. }))));
        let wrong = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\r\n";
        assert!(matches!(read_answer(wrong), Some(Err(Error::Protocol(_)))));
        assert!(request("/relay?room=a", "h", "X: 1\r\n").ends_with("Sec-WebSocket-Version: 13\r\nX: 1\r\n\r\n"));
    }
}
