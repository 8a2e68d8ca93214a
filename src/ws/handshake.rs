//! Server side of the opening handshake (RFC 6455 §4.2), checked strictly.

use tungstenite::handshake::derive_accept_key;

use crate::http::{Request, Response, Status};

/// Why an upgrade request was refused; each maps to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A method other than GET.
    #[error("WebSocket endpoints accept GET only")]
    MethodNotAllowed,
    /// HTTP/1.0, or no Host header.
    #[error("the upgrade needs HTTP/1.1 with a Host header")]
    BadRequest,
    /// A plain GET without `Upgrade: websocket`.
    #[error("this endpoint speaks WebSocket only")]
    UpgradeRequired,
    /// `Upgrade: websocket` without `Connection: Upgrade`.
    #[error("Connection header must contain Upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` other than 13.
    #[error("unsupported Sec-WebSocket-Version; this server speaks 13")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing or not 16 bytes in base64.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    BadKey,
    /// An `Origin` not on the allow-list.
    #[error("origin not allowed")]
    OriginNotAllowed,
}

impl HandshakeError {
    /// The response that reports this refusal.
    pub fn response(self) -> Response {
        let (status, code) = match self {
            HandshakeError::MethodNotAllowed => (Status::MethodNotAllowed, "METHOD_NOT_ALLOWED"),
            HandshakeError::UpgradeRequired => (Status::UpgradeRequired, "UPGRADE_REQUIRED"),
            HandshakeError::UnsupportedVersion => (Status::UpgradeRequired, "UNSUPPORTED_VERSION"),
            HandshakeError::OriginNotAllowed => (Status::Forbidden, "ORIGIN_NOT_ALLOWED"),
            HandshakeError::BadRequest | HandshakeError::MissingConnectionUpgrade | HandshakeError::BadKey => (Status::BadRequest, "BAD_HANDSHAKE"),
        };
        let response = Response::error(status, code, &self.to_string());
        match self {
            HandshakeError::MethodNotAllowed => response.header("Allow", "GET"),
            HandshakeError::UpgradeRequired | HandshakeError::UnsupportedVersion => {
                response.header("Upgrade", "websocket").header("Sec-WebSocket-Version", "13")
            }
            _ => response,
        }
    }
}

/// Checks an upgrade request and returns the `Sec-WebSocket-Accept` value to answer with.
///
/// An empty `allowed_origins` accepts every origin; otherwise a request with an `Origin` header
/// must match one entry exactly (clients that send no Origin, i.e. non-browsers, pass).
pub fn validate_upgrade(req: &Request, allowed_origins: &[String]) -> Result<String, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if !req.header_has_token("upgrade", "websocket") {
        return Err(HandshakeError::UpgradeRequired);
    }
    if req.minor_version < 1 || req.header("host").is_none() {
        return Err(HandshakeError::BadRequest);
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = req.header("sec-websocket-key").ok_or(HandshakeError::BadKey)?;
    if !is_base64_of_16_bytes(key) {
        return Err(HandshakeError::BadKey);
    }
    if let (false, Some(origin)) = (allowed_origins.is_empty(), req.header("origin")) {
        if !allowed_origins.iter().any(|o| o == origin) {
            return Err(HandshakeError::OriginNotAllowed);
        }
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// The 101 response completing the handshake, with the extension and the subprotocol agreed,
/// if any.
pub fn accept_response(accept_key: &str, extensions: Option<&str>, protocol: Option<&str>) -> Response {
    let mut response =
        Response::new(Status::SwitchingProtocols).header("Upgrade", "websocket").header("Connection", "Upgrade").header("Sec-WebSocket-Accept", accept_key);
    if let Some(agreed) = extensions {
        response = response.header("Sec-WebSocket-Extensions", agreed);
    }
    if let Some(protocol) = protocol {
        response = response.header("Sec-WebSocket-Protocol", protocol);
    }
    response
}

/// 16 bytes in base64 are 22 significant characters followed by `==`.
fn is_base64_of_16_bytes(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24 && key.ends_with("==") && bytes.iter().take(22).all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn req(extra: &str) -> Request {
        let raw = format!("GET /echo HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        parse_head(raw.as_bytes(), 4096).unwrap().unwrap().0
    }

    const GOOD: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn rfc_example_key() {
        assert_eq!(validate_upgrade(&req(GOOD), &[]).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refusals() {
        assert_eq!(validate_upgrade(&req(""), &[]), Err(HandshakeError::UpgradeRequired));
        let v12 = GOOD.replace("Version: 13", "Version: 12");
        assert_eq!(validate_upgrade(&req(&v12), &[]), Err(HandshakeError::UnsupportedVersion));
        let bad_key = GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(validate_upgrade(&req(&bad_key), &[]), Err(HandshakeError::BadKey));
        let no_conn = GOOD.replace("Connection: Upgrade", "Connection: keep-alive");
        assert_eq!(validate_upgrade(&req(&no_conn), &[]), Err(HandshakeError::MissingConnectionUpgrade));
        let allowed = vec!["https://good.example".to_string()];
        let evil = format!("{GOOD}Origin: https://evil.example\r\n");
        assert_eq!(validate_upgrade(&req(&evil), &allowed), Err(HandshakeError::OriginNotAllowed));
        let good = format!("{GOOD}Origin: https://good.example\r\n");
        assert!(validate_upgrade(&req(&good), &allowed).is_ok());
        assert_eq!(HandshakeError::UnsupportedVersion.response().status(), Status::UpgradeRequired);
    }
}
