//! Subprotocol negotiation (RFC 6455 §4.1, §4.2.2), and the token a client may offer there
//! instead of in the URL. Browsers cannot put an `Authorization` header on a WebSocket, and a
//! `?token=` ends up in every proxy's access log; `new WebSocket(url, ["partyflow.v1",
//! "partyflow.token.<token>"])` keeps it in a header. The token element is never echoed: the
//! server answers with the endpoint's protocol only.

/// The game protocol (`/ws`).
pub const GAME: &str = "partyflow.v1";
/// The rooms and pub/sub protocol (`/pubsub`).
pub const PUBSUB: &str = "partyflow.pubsub.v1";
/// The prefix of the element that carries a token.
const TOKEN_PREFIX: &str = "partyflow.token.";

/// What the client's `Sec-WebSocket-Protocol` offered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offered {
    /// The protocol to answer with: the endpoint's own, when the client offered it. `None`: no
    /// `Sec-WebSocket-Protocol` in the answer (§4.2.2: none of the offered ones is spoken here).
    pub selected: Option<&'static str>,
    /// The token offered as `partyflow.token.<token>`.
    pub token: Option<String>,
}

/// A `Sec-WebSocket-Protocol` header the server refuses with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubprotocolError {
    /// Not a comma-separated list of tokens (§4.1: non-empty, visible characters, no separators).
    #[error("Sec-WebSocket-Protocol must be a comma-separated list of tokens")]
    Malformed,
    /// The same protocol twice (§4.1: the elements must be unique).
    #[error("Sec-WebSocket-Protocol lists a protocol twice")]
    Repeated,
    /// Two `partyflow.token.*` elements.
    #[error("Sec-WebSocket-Protocol carries more than one token")]
    TwoTokens,
}

/// Reads every `Sec-WebSocket-Protocol` value of the request (`values`, in order) for an
/// endpoint speaking `spoken` (none for `/relay` and `/echo`).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>, spoken: Option<&'static str>) -> Result<Offered, SubprotocolError> {
    let mut offered = Offered::default();
    let mut seen: Vec<&str> = Vec::new();
    for value in values {
        // A header present with no element at all breaks `1#token`; empty elements inside a
        // list are skipped, as RFC 9110 §5.6.1 asks of recipients.
        let mut elements = value.split(',').map(|e| e.trim_matches([' ', '\t'])).filter(|e| !e.is_empty()).peekable();
        if elements.peek().is_none() {
            return Err(SubprotocolError::Malformed);
        }
        for element in elements {
            if !element.bytes().all(is_tchar) {
                return Err(SubprotocolError::Malformed);
            }
            if seen.contains(&element) {
                return Err(SubprotocolError::Repeated);
            }
            seen.push(element);
            if let Some(token) = element.strip_prefix(TOKEN_PREFIX) {
                if offered.token.replace(token.to_string()).is_some() {
                    return Err(SubprotocolError::TwoTokens);
                }
            } else if spoken == Some(element) {
                offered.selected = spoken;
            }
        }
    }
    Ok(offered)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoints_protocol_is_selected_and_the_token_taken_not_echoed() {
        let offered = negotiate(["partyflow.v1, partyflow.token.abc.DEF-_9"], Some(GAME)).unwrap();
        assert_eq!(offered, Offered { selected: Some(GAME), token: Some("abc.DEF-_9".into()) });
        // Over two headers, in any order, with other protocols beside.
        let offered = negotiate(["chat, partyflow.token.t", "partyflow.pubsub.v1"], Some(PUBSUB)).unwrap();
        assert_eq!(offered, Offered { selected: Some(PUBSUB), token: Some("t".into()) });
    }

    #[test]
    fn protocols_not_spoken_here_are_not_selected() {
        assert_eq!(negotiate(["chat, superchat"], Some(GAME)).unwrap(), Offered::default());
        // Another endpoint's protocol, or any on /relay and /echo.
        assert_eq!(negotiate(["partyflow.pubsub.v1"], Some(GAME)).unwrap().selected, None);
        assert_eq!(negotiate(["partyflow.v1"], None).unwrap().selected, None);
        // A token alone: taken, nothing to answer with.
        assert_eq!(negotiate(["partyflow.token.x"], Some(GAME)).unwrap(), Offered { selected: None, token: Some("x".into()) });
        assert_eq!(negotiate([], Some(GAME)).unwrap(), Offered::default());
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in ["", " , ", "partyflow v1", "partyflow.v1; q=1", "a/b", "\"quoted\"", "caf\u{e9}", "a,(b)"] {
            assert_eq!(negotiate([bad], Some(GAME)), Err(SubprotocolError::Malformed), "{bad:?}");
        }
        assert_eq!(negotiate(["a, b", "a"], Some(GAME)), Err(SubprotocolError::Repeated));
        assert_eq!(negotiate(["partyflow.token.a, partyflow.token.b"], Some(GAME)), Err(SubprotocolError::TwoTokens));
        // Empty elements inside a list are skipped.
        assert_eq!(negotiate(["partyflow.v1,, chat"], Some(GAME)).unwrap().selected, Some(GAME));
    }
}
