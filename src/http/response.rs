//! Plain HTTP responses: always `Connection: close`, body length known up front.

use std::fmt::Write as _;

/// Status codes the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200
    Ok,
    /// 201
    Created,
    /// 204
    NoContent,
    /// 101
    SwitchingProtocols,
    /// 400
    BadRequest,
    /// 401
    Unauthorized,
    /// 403
    Forbidden,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 408
    RequestTimeout,
    /// 409
    Conflict,
    /// 413
    PayloadTooLarge,
    /// 417
    ExpectationFailed,
    /// 429
    TooManyRequests,
    /// 426
    UpgradeRequired,
    /// 431
    HeaderFieldsTooLarge,
    /// 500
    InternalError,
    /// 501
    NotImplemented,
    /// 503
    ServiceUnavailable,
}

impl Status {
    const ALL: [Status; 19] = [
        Status::Ok,
        Status::Created,
        Status::NoContent,
        Status::SwitchingProtocols,
        Status::BadRequest,
        Status::Unauthorized,
        Status::Forbidden,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::RequestTimeout,
        Status::Conflict,
        Status::PayloadTooLarge,
        Status::ExpectationFailed,
        Status::TooManyRequests,
        Status::UpgradeRequired,
        Status::HeaderFieldsTooLarge,
        Status::InternalError,
        Status::NotImplemented,
        Status::ServiceUnavailable,
    ];

    /// The status with numeric `code`, if the server uses it.
    pub fn from_code(code: u16) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::Created => 201,
            Status::NoContent => 204,
            Status::Unauthorized => 401,
            Status::Conflict => 409,
            Status::PayloadTooLarge => 413,
            Status::ExpectationFailed => 417,
            Status::TooManyRequests => 429,
            Status::NotImplemented => 501,
            Status::SwitchingProtocols => 101,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::UpgradeRequired => 426,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalError => 500,
            Status::ServiceUnavailable => 503,
        }
    }

    /// Reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Created => "Created",
            Status::NoContent => "No Content",
            Status::Unauthorized => "Unauthorized",
            Status::Conflict => "Conflict",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::ExpectationFailed => "Expectation Failed",
            Status::TooManyRequests => "Too Many Requests",
            Status::NotImplemented => "Not Implemented",
            Status::SwitchingProtocols => "Switching Protocols",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// A response under construction.
#[derive(Debug, Clone)]
pub struct Response {
    status: Status,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: Status) -> Self {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// A JSON body.
    pub fn json(status: Status, body: &serde_json::Value) -> Self {
        Response::new(status).body("application/json", body.to_string().into_bytes())
    }

    /// The error shape every endpoint uses: `{"error":{"code","message"}}`.
    pub fn error(status: Status, code: &str, message: &str) -> Self {
        Response::json(status, &serde_json::json!({"error": {"code": code, "message": message}}))
    }

    /// Sets the body and its content type.
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers.push(("Content-Type", content_type.to_string()));
        self.body = body;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Serializes head and body. A 101 keeps the connection; everything else closes it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status.code(), self.status.reason());
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if self.status != Status::SwitchingProtocols {
            let _ = write!(head, "Content-Length: {}\r\nConnection: close\r\n", self.body.len());
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_and_framing() {
        let bytes = Response::error(Status::NotFound, "NOT_FOUND", "no such path").to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "NOT_FOUND");
    }
}
