//! The reference web client (`web/`) and the JavaScript SDK (`clients/js/partyflow.js`),
//! compiled into the binary and served at `GET /` (no files to deploy, no CDN), with headers
//! that keep the page to its own origin.

/// A file of the web client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its `Cache-Control`: the page is revalidated every time, the rest kept for a few minutes
    /// (a new server version may change them).
    pub cache_control: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

/// What the page may load: only itself (scripts, styles, the WebSocket to this server); no
/// inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const PAGE: Asset = Asset { content_type: "text/html; charset=utf-8", cache_control: "no-cache", body: include_bytes!("../web/index.html") };
const APP: Asset = Asset { content_type: "text/javascript; charset=utf-8", cache_control: "public, max-age=300", body: include_bytes!("../web/app.js") };
const STYLE: Asset = Asset { content_type: "text/css; charset=utf-8", cache_control: "public, max-age=300", body: include_bytes!("../web/style.css") };
const ICON: Asset = Asset { content_type: "image/svg+xml", cache_control: "public, max-age=300", body: include_bytes!("../web/favicon.svg") };
const SDK: Asset =
    Asset { content_type: "text/javascript; charset=utf-8", cache_control: "public, max-age=300", body: include_bytes!("../clients/js/partyflow.js") };

const ADMIN_PAGE: Asset = Asset { content_type: "text/html; charset=utf-8", cache_control: "no-cache", body: include_bytes!("../web/admin/index.html") };
const ADMIN_APP: Asset = Asset { content_type: "text/javascript; charset=utf-8", cache_control: "no-cache", body: include_bytes!("../web/admin/admin.js") };
const ADMIN_STYLE: Asset = Asset { content_type: "text/css; charset=utf-8", cache_control: "no-cache", body: include_bytes!("../web/admin/admin.css") };

/// The admin page's file at `path`, if it is one (`--admin-page`).
pub fn admin_asset(path: &str) -> Option<Asset> {
    match path {
        "/admin" => Some(ADMIN_PAGE),
        "/admin.js" => Some(ADMIN_APP),
        "/admin.css" => Some(ADMIN_STYLE),
        _ => None,
    }
}

/// The asset at `path`, if it is one.
pub fn asset(path: &str) -> Option<Asset> {
    match path {
        "/" | "/index.html" => Some(PAGE),
        "/app.js" => Some(APP),
        "/style.css" => Some(STYLE),
        "/partyflow.js" => Some(SDK),
        "/favicon.svg" | "/favicon.ico" => Some(ICON),
        _ => None,
    }
}

/// Bytes of the whole page (page, script, style and SDK), as served.
pub fn page_bytes() -> usize {
    [PAGE, APP, STYLE, SDK, ICON].iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_what_is_served() {
        let page = std::str::from_utf8(asset("/").unwrap().body).unwrap();
        for path in ["/app.js", "/style.css", "/favicon.svg"] {
            assert!(page.contains(&format!("\"{path}\"")), "{path} is not referenced");
            assert!(asset(path).is_some());
        }
        let app = std::str::from_utf8(APP.body).unwrap();
        assert!(app.contains("from \"/partyflow.js\""));
        // A strict policy: nothing inline in the page.
        assert!(!page.contains("<script>") && !page.contains("style=") && !page.contains("onclick"));
        assert!(asset("/nope").is_none());
        let admin = std::str::from_utf8(admin_asset("/admin").unwrap().body).unwrap();
        for path in ["/admin.js", "/admin.css"] {
            assert!(admin.contains(&format!("\"{path}\"")) && admin_asset(path).is_some(), "{path}");
        }
        assert!(!admin.contains("<script>") && !admin.contains("style=") && !admin.contains("onclick"));
        for testid in ["admin-key", "admin-login", "close-room"] {
            assert!(admin.contains(&format!("data-testid=\"{testid}\"")), "{testid}");
        }
        assert!(page_bytes() > 10_000);
    }
}
