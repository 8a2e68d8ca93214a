//! The HTTP/1.1 side of the port, sans-IO: request heads in, response bytes out.
//!
//! Every connection starts as HTTP. The head is parsed with `httparse` under a size limit; the
//! runtime reads until [`parse_head`] says the head is complete, then routes it.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

pub mod cors;
mod response;
mod route;

pub use response::{Response, Status};
pub use route::{ApiCall, Route, RouteError};

/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// A parsed request head. Header names keep their case; look them up with [`Request::header`].
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Minor HTTP version: 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Headers in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// The first header named `name` (case-insensitive) as text, if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok()).map(str::trim)
    }

    /// Whether the comma-separated header `name` contains `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Why a request's message framing was refused (RFC 9112 §6.3: an ambiguous length is how
/// requests are smuggled past a proxy, so anything but one plain length is an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A `Transfer-Encoding` header: this server reads bodies by `Content-Length` only (501).
    #[error("Transfer-Encoding is not supported; send the body with Content-Length")]
    TransferEncoding,
    /// `Content-Length` that is not digits, or given more than once (400).
    #[error("{0}")]
    ContentLength(&'static str),
}

impl Request {
    /// The body length the head announces: `0` without `Content-Length`; refuses any
    /// `Transfer-Encoding`, non-digit lengths (`+5`, `-1`, `0x10`, empty), lengths that overflow,
    /// and more than one `Content-Length` value, in several headers or a list, even equal ones
    /// (RFC 9110 §8.6 lets a server refuse them; a proxy in front may have read another one).
    pub fn body_length(&self) -> Result<usize, FramingError> {
        if self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")) {
            return Err(FramingError::TransferEncoding);
        }
        let mut length = None;
        for (_, value) in self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
            let text = std::str::from_utf8(value).map_err(|_| FramingError::ContentLength("Content-Length is not text"))?;
            for item in text.split(',').map(str::trim) {
                if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(FramingError::ContentLength("Content-Length must be digits only"));
                }
                let n: usize = item.parse().map_err(|_| FramingError::ContentLength("Content-Length is too large"))?;
                if length.replace(n).is_some() {
                    return Err(FramingError::ContentLength("Content-Length given more than once"));
                }
            }
        }
        Ok(length.unwrap_or(0))
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not a well-formed HTTP/1.x request.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Head larger than the limit, or too many headers.
    #[error("request head too large")]
    TooLarge,
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(Some((request, head_len)))` once the blank line has arrived, `Ok(None)` while more
/// bytes may complete it within `max_head_bytes`, and an error otherwise.
pub fn parse_head(buf: &[u8], max_head_bytes: usize) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(malformed_reason(e))),
    };
    let httparse::Status::Complete(head_len) = status else {
        return if buf.len() >= max_head_bytes { Err(HeadError::TooLarge) } else { Ok(None) };
    };
    if head_len > max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let headers = req.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
    Ok(Some((Request { method: method.to_string(), target: target.to_string(), minor_version, headers }, head_len)))
}

fn malformed_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_head_and_reports_its_length() {
        let raw = b"GET /relay?room=a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\r\nEXTRA";
        let (req, len) = parse_head(raw, 1024).unwrap().unwrap();
        assert_eq!(&raw[len..], b"EXTRA");
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/relay?room=a");
        assert_eq!(req.header("host"), Some("x"));
        assert!(req.header_has_token("connection", "upgrade"));
    }

    fn head(raw: &str) -> Request {
        parse_head(raw.as_bytes(), 4096).unwrap().unwrap().0
    }

    #[test]
    fn framing_is_one_plain_length_or_an_error() {
        assert_eq!(head("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n").body_length(), Ok(12));
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").body_length(), Ok(0));
        for bad in ["5\r\nContent-Length: 6", "5\r\ncontent-length: 5", "5, 5", "+5", "-1", "0x10", "", "5, 6", "99999999999999999999999"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert!(matches!(head(&raw).body_length(), Err(FramingError::ContentLength(_))), "{bad:?}");
        }
        for te in ["chunked", "gzip, chunked", "identity"] {
            let raw = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\nContent-Length: 3\r\n\r\n");
            assert_eq!(head(&raw).body_length(), Err(FramingError::TransferEncoding), "{te}");
        }
        // A folded (obs-fold) header line is malformed.
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 1024), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn partial_then_limits() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost:", 1024).unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(parse_head(big.as_bytes(), 1024).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..70).map(|i| format!("H{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(raw.as_bytes(), 1 << 20).unwrap_err(), HeadError::TooLarge);
        assert!(matches!(parse_head(b"\x01\x02 / HTTP/1.1\r\n\r\n", 1024), Err(HeadError::Malformed(_))));
    }
}
