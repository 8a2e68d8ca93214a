//! Cross-origin access to the room API, for browsers running a client hosted elsewhere: only the
//! origins of `--allowed-origin` get the `Access-Control-Allow-*` headers (others get none, so
//! their browsers refuse to hand the answer over); preflight `OPTIONS` requests are answered.
//! The server API (`/api/…`) is for an app's backend and gets no CORS, as `/metrics` does not.

use super::{Request, Response, Route, Status};

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Whether browsers on other origins may call `route`.
pub fn applies(route: &Route) -> bool {
    matches!(route, Route::Rooms(_) | Route::Room(_) | Route::RoomPlayers(_) | Route::WordPacks | Route::Health)
}

/// The request's `Origin` when it is one of `allowed` and `route` takes cross-origin calls.
pub fn allowed_origin<'a>(request: &'a Request, route: &Route, allowed: &[String]) -> Option<&'a str> {
    let origin = request.header("origin")?;
    (applies(route) && allowed.iter().any(|a| a == origin)).then_some(origin)
}

/// The answer to a preflight `OPTIONS` for `route`: `204`, with the CORS headers for an allowed
/// origin asking for the route's method, without them otherwise.
pub fn preflight(request: &Request, route: &Route, allowed: &[String]) -> Response {
    let method = route.method();
    let response = Response::new(Status::NoContent).header("Allow", format!("{method}, OPTIONS")).header("Vary", "Origin");
    let asks = request.header("access-control-request-method");
    match allowed_origin(request, route, allowed) {
        Some(origin) if asks.is_none_or(|m| m == method) => response
            .header("Access-Control-Allow-Origin", origin)
            .header("Access-Control-Allow-Methods", format!("{method}, OPTIONS"))
            .header("Access-Control-Allow-Headers", "Content-Type")
            .header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
        _ => response,
    }
}

/// `response` with the CORS headers for `origin` (from [`allowed_origin`]), if any.
pub fn decorate(response: Response, origin: Option<&str>) -> Response {
    match origin {
        Some(origin) => response.header("Access-Control-Allow-Origin", origin).header("Vary", "Origin"),
        None => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn request(head: &str) -> Request {
        parse_head(head.as_bytes(), 8192).unwrap().unwrap().0
    }

    fn header<'a>(bytes: &'a str, name: &str) -> Option<&'a str> {
        bytes.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
    }

    #[test]
    fn allowed_origins_get_the_headers_and_others_none() {
        let allowed = vec!["https://game.example".to_string()];
        let route = Route::Rooms(None);
        let ask = |origin: &str, method: &str| {
            let r = request(&format!("OPTIONS /rooms HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n\r\n"));
            String::from_utf8(preflight(&r, &route, &allowed).to_bytes()).unwrap()
        };
        let ok = ask("https://game.example", "POST");
        assert!(ok.starts_with("HTTP/1.1 204"));
        assert_eq!(header(&ok, "Access-Control-Allow-Origin"), Some("https://game.example"));
        assert_eq!(header(&ok, "Access-Control-Allow-Methods"), Some("POST, OPTIONS"));
        assert_eq!(header(&ask("https://evil.example", "POST"), "Access-Control-Allow-Origin"), None);
        assert_eq!(header(&ask("https://game.example", "DELETE"), "Access-Control-Allow-Origin"), None);
        let get = request("GET /metrics HTTP/1.1\r\nOrigin: https://game.example\r\n\r\n");
        assert_eq!(allowed_origin(&get, &Route::Metrics, &allowed), None, "not the room API");
        let plain = String::from_utf8(decorate(Response::new(Status::Ok), allowed_origin(&get, &Route::WordPacks, &allowed)).to_bytes()).unwrap();
        assert_eq!(header(&plain, "Access-Control-Allow-Origin"), Some("https://game.example"));
    }
}
