//! permessage-deflate negotiation (RFC 7692 §5, §7.1), server side, sans-IO: the client's
//! `Sec-WebSocket-Extensions` offers in, the one accepted (with the response header) out.
//!
//! The server always answers `server_no_context_takeover`, so that a broadcast is compressed
//! once and the same compressed frame serves every member that negotiated compression (no
//! per-connection compressor state), and `client_no_context_takeover`, offered or not (§7.1.1.2
//! lets a server ask it): each client message then inflates on its own, so a connection holds no
//! inflater between messages (a shard's connections share one) instead of ~20 KiB each
//! (perf/RESULTS.md). Any `client_max_window_bits` is accepted (the inflater uses the largest
//! window, which reads any smaller one). An offer it cannot honour is declined and the next one
//! considered.

/// What was agreed for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// The server compresses with at most this window (8-15; 15 unless the client asked less).
    pub server_max_window_bits: u8,
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub response: String,
}

/// A header that breaks the extension grammar (RFC 6455 §9.1): the handshake fails with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Sec-WebSocket-Extensions header: {0}")]
pub struct Malformed(pub &'static str);

/// Smallest server window this server compresses with. zlib cannot make 8-bit windows (it
/// silently uses 9), so an offer asking for 8 is declined rather than answered wrongly.
const MIN_SERVER_WINDOW: u8 = 9;

/// The first acceptable permessage-deflate offer among the values of every
/// `Sec-WebSocket-Extensions` header (in order); `Ok(None)` when none is.
pub fn negotiate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Result<Option<Agreed>, Malformed> {
    let mut offers = Vec::new();
    for value in headers {
        offers.extend(parse(value)?);
    }
    Ok(offers.into_iter().filter(|(name, _)| name.eq_ignore_ascii_case("permessage-deflate")).find_map(|(_, params)| accept(&params)))
}

/// One extension offer: its name and parameters (values unquoted).
type Offer = (String, Vec<(String, Option<String>)>);

/// `ext (; param (= value)?)* (, ext …)*` with tokens and quoted strings.
fn parse(value: &str) -> Result<Vec<Offer>, Malformed> {
    let mut offers = Vec::new();
    for item in value.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().map(str::trim).unwrap_or_default();
        if name.is_empty() {
            // Empty list elements are allowed by the list grammar (`a, , b`); a lone empty
            // header is not an offer.
            if item.trim().is_empty() {
                continue;
            }
            return Err(Malformed("an extension without a name"));
        }
        if !is_token(name) {
            return Err(Malformed("an extension name that is not a token"));
        }
        let mut params = Vec::new();
        for param in parts {
            let (key, val) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
                None => (param.trim(), None),
            };
            if !is_token(key) {
                return Err(Malformed("a parameter name that is not a token"));
            }
            params.push((key.to_ascii_lowercase(), val));
        }
        offers.push((name.to_string(), params));
    }
    Ok(offers)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// A token, or a quoted string whose content is a token (RFC 6455 §9.1).
fn unquote(v: &str) -> Result<String, Malformed> {
    let inner = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or(Malformed("an unterminated quoted value"))?,
        None => v,
    };
    if is_token(inner) {
        Ok(inner.to_string())
    } else {
        Err(Malformed("a parameter value that is not a token"))
    }
}

/// `8`-`15` without leading zeros or signs.
fn window_bits(v: &str) -> Option<u8> {
    let bits: u8 = v.parse().ok().filter(|_| !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit()))?;
    (8..=15).contains(&bits).then_some(bits)
}

/// The agreement for one offer, or `None` to decline it (unknown or repeated parameter, bad
/// value, or a window this server cannot honour).
fn accept(params: &[(String, Option<String>)]) -> Option<Agreed> {
    let mut seen: Vec<&str> = Vec::new();
    let mut server_bits = 15u8;
    for (key, value) in params {
        if seen.contains(&key.as_str()) {
            return None;
        }
        seen.push(key);
        match (key.as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) => {}
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => server_bits = window_bits(v)?,
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
    }
    if server_bits < MIN_SERVER_WINDOW {
        return None;
    }
    let mut response = String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if server_bits < 15 {
        response.push_str(&format!("; server_max_window_bits={server_bits}"));
    }
    Some(Agreed { server_max_window_bits: server_bits, response })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(headers: &[&str]) -> Option<String> {
        negotiate(headers.iter().copied()).unwrap().map(|a| a.response)
    }

    #[test]
    fn what_browsers_and_libraries_offer_is_accepted_without_server_context() {
        // Chrome and Firefox keep their context unless asked: the answer asks.
        assert_eq!(
            agreed(&["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(
            agreed(&["permessage-deflate; client_no_context_takeover; server_no_context_takeover"]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(
            agreed(&["permessage-deflate; server_max_window_bits=\"10\""]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
        );
        assert_eq!(agreed(&[]), None);
        assert_eq!(agreed(&["x-webkit-deflate-frame"]), None);
    }

    #[test]
    fn offers_it_cannot_honour_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert_eq!(agreed(&[bad]), None, "{bad}");
            let with_fallback = format!("{bad}, permessage-deflate");
            assert_eq!(agreed(&[&with_fallback]).as_deref(), Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"), "{bad}");
        }
        // Offers may also come in several headers.
        assert_eq!(
            agreed(&["permessage-deflate; foo", "permessage-deflate; server_max_window_bits=12"]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12")
        );
    }

    #[test]
    fn a_header_that_breaks_the_grammar_is_refused() {
        for bad in ["permessage-deflate; server_max_window_bits=\"10", "; x", "per message", "permessage-deflate; a b", "permessage-deflate; x=\"a b\""] {
            assert!(negotiate([bad]).is_err(), "{bad}");
        }
    }
}
