//! The admin API's listing (`GET /api/rooms`): one row per room of any kind, the query that
//! filters and pages them, and the bodies of close and kick. Plain data: the runtime gathers
//! rows from every shard (and instance) and this module decides the page.

use serde::{Deserialize, Serialize};

/// One room in the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRow {
    /// The room id.
    pub id: String,
    /// `game`, `pubsub` or `relay`.
    pub kind: String,
    /// A game's state (`LOBBY`, `ROUND_ACTIVE`, …); `open` for the other kinds.
    pub state: String,
    /// Seated players (game) or members (on this instance, for the other kinds).
    pub members: usize,
    /// Open connections.
    pub connected: usize,
    /// When it was created (Unix ms), where known.
    pub created: Option<i64>,
    /// The instance serving it.
    pub instance: String,
    /// Its shard there.
    pub shard: usize,
}

impl RoomRow {
    /// The order rows are listed in, and what a cursor names.
    fn key(&self) -> String {
        format!("{},{},{}", self.id, self.kind, self.instance)
    }
}

/// Most rows in one page, and the default.
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// `?kind=&state=&cursor=&limit=`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Only rooms of this kind.
    pub kind: Option<String>,
    /// Only rooms in this state (case-insensitive).
    pub state: Option<String>,
    /// The previous page's `next`.
    pub cursor: Option<String>,
    /// Rows per page (1-1000, default 100).
    pub limit: usize,
}

impl ListQuery {
    /// Parses the query string; the error names the bad parameter.
    pub fn parse(query: &str) -> Result<ListQuery, String> {
        let mut q = ListQuery { limit: DEFAULT_LIMIT, ..ListQuery::default() };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value);
            match name {
                "kind" if ["game", "pubsub", "relay"].contains(&value.as_str()) => q.kind = Some(value),
                "kind" => return Err("kind is game, pubsub or relay".into()),
                "state" => q.state = Some(value.to_ascii_uppercase()).filter(|s| !s.is_empty()),
                "cursor" => q.cursor = Some(value).filter(|c| !c.is_empty()),
                "limit" => q.limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or("limit is 1-1000")?,
                _ => {}
            }
        }
        Ok(q)
    }
}

/// `%XX` and `+` decoded (invalid escapes kept as they are).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The page of `rows` the query asks for, and the cursor of the next page (if there is one).
pub fn page(mut rows: Vec<RoomRow>, query: &ListQuery) -> (Vec<RoomRow>, Option<String>) {
    rows.retain(|r| query.kind.as_ref().is_none_or(|k| *k == r.kind) && query.state.as_ref().is_none_or(|s| s.eq_ignore_ascii_case(&r.state)));
    rows.sort_by_key(RoomRow::key);
    if let Some(cursor) = &query.cursor {
        rows.retain(|r| r.key().as_str() > cursor.as_str());
    }
    let next = (rows.len() > query.limit).then(|| rows.get(query.limit - 1).map(RoomRow::key)).flatten();
    rows.truncate(query.limit);
    (rows, next)
}

/// `POST /api/rooms/{id}/close`.
#[derive(Debug, Default, Deserialize)]
pub struct CloseBody {
    /// Why (logged).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/rooms/{id}/kick`: a game room's `playerId`, or a `/pubsub` `user`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KickBody {
    /// A game room's player.
    #[serde(default)]
    pub player_id: Option<String>,
    /// A `/pubsub` user.
    #[serde(default)]
    pub user: Option<String>,
    /// Also keep it out of the room.
    #[serde(default)]
    pub ban: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, kind: &str, state: &str) -> RoomRow {
        RoomRow { id: id.into(), kind: kind.into(), state: state.into(), members: 1, connected: 1, created: None, instance: "i:1".into(), shard: 0 }
    }

    #[test]
    fn rooms_are_filtered_sorted_and_paged_with_a_cursor() {
        let rows = vec![row("c", "game", "LOBBY"), row("a", "pubsub", "open"), row("b", "game", "ROUND_ACTIVE"), row("d", "game", "LOBBY")];
        let q = ListQuery::parse("limit=2").unwrap();
        let (first, next) = page(rows.clone(), &q);
        assert_eq!(first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let q = ListQuery { cursor: next, ..q };
        let (second, next) = page(rows.clone(), &q);
        assert_eq!((second.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), next), (vec!["c", "d"], None));
        let (games, _) = page(rows.clone(), &ListQuery::parse("kind=game&state=lobby").unwrap());
        assert_eq!(games.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["c", "d"]);
        assert!(ListQuery::parse("kind=chat").is_err() && ListQuery::parse("limit=0").is_err() && ListQuery::parse("limit=5000").is_err());
        assert_eq!(ListQuery::parse("cursor=a%2Cgame%2Ci%3A1").unwrap().cursor.as_deref(), Some("a,game,i:1"));
    }
}
