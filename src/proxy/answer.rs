//! What the backend's answers mean.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Reply;
use crate::pubsub::message::MAX_USER_LEN;
use crate::pubsub::{Grant, ProxyAnswer, RoomPatterns};

/// A connect call's outcome.
#[derive(Debug)]
pub enum Admission {
    /// `200 {"user", "meta"?, "rooms"?}`: the connection is this user.
    Admit(Grant),
    /// `403`: the upgrade is refused with the backend's body.
    Refuse(Vec<u8>),
    /// Anything else: `503`.
    Unavailable(String),
}

#[derive(Deserialize)]
struct ConnectOk {
    user: String,
    #[serde(default)]
    meta: Option<Box<RawValue>>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

/// A connect call's answer.
pub fn connect_answer(reply: Reply) -> Admission {
    match reply {
        Reply::Answered(200, body) => match serde_json::from_slice::<ConnectOk>(&body) {
            Ok(ok) if !ok.user.is_empty() && ok.user.len() <= MAX_USER_LEN && ok.meta.as_ref().is_none_or(|m| m.get().trim_start().starts_with('{')) => {
                Admission::Admit(Grant {
                    user: ok.user.into(),
                    rooms: ok.rooms.map_or_else(RoomPatterns::any, RoomPatterns::only),
                    meta: ok.meta.map(Arc::from),
                })
            }
            _ => Admission::Unavailable("the backend's 200 is not {\"user\": 1-128 characters, \"meta\"?: object, \"rooms\"?: [...]}".into()),
        },
        Reply::Answered(403, body) => Admission::Refuse(body),
        Reply::Answered(status, _) => Admission::Unavailable(format!("the backend answered {status}")),
        Reply::Failed(why) => Admission::Unavailable(why),
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Decision {
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

/// A code the client may see: the backend's if it is 1-64 of `[A-Z0-9_]`, else `REFUSED`.
fn code(given: Option<String>) -> String {
    given
        .filter(|c| (1..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
        .unwrap_or_else(|| "REFUSED".into())
}

fn message(error: Option<ErrorBody>) -> (Option<String>, String) {
    let (code, message) = error.map_or((None, None), |e| (e.code, e.message));
    (code, message.unwrap_or_else(|| "refused by the app's backend".into()).chars().take(256).collect())
}

/// A join call's answer: `200` allows, `403` refuses.
pub fn join_answer(reply: Reply) -> ProxyAnswer {
    match reply {
        Reply::Answered(200, _) => ProxyAnswer::Allow,
        Reply::Answered(403, body) => {
            let error = serde_json::from_slice::<Decision>(&body).ok().and_then(|d| d.error);
            let (_, message) = message(error);
            ProxyAnswer::Refuse { code: "FORBIDDEN".into(), message }
        }
        _ => ProxyAnswer::Unavailable,
    }
}

/// A publish call's answer: `200 {}` allows, `200 {"data": D}` replaces, `200 {"error": {...}}`
/// refuses.
pub fn publish_answer(reply: Reply) -> ProxyAnswer {
    let Reply::Answered(200, body) = reply else { return ProxyAnswer::Unavailable };
    let decision = if body.iter().all(u8::is_ascii_whitespace) { Ok(Decision { data: None, error: None }) } else { serde_json::from_slice::<Decision>(&body) };
    match decision {
        Ok(Decision { error: Some(error), .. }) => {
            let (given, message) = message(Some(error));
            ProxyAnswer::Refuse { code: code(given), message }
        }
        Ok(Decision { data: Some(data), .. }) => ProxyAnswer::Replace(Arc::from(data)),
        Ok(_) => ProxyAnswer::Allow,
        Err(_) => ProxyAnswer::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Reply {
        Reply::Answered(200, body.as_bytes().to_vec())
    }

    #[test]
    fn answers_mean_what_the_protocol_says() {
        match connect_answer(ok(r#"{"user":"ann","meta":{"n":1},"rooms":["a*"]}"#)) {
            Admission::Admit(g) => assert!(
                &*g.user == "ann" && g.rooms.allows(&crate::rooms::RoomId::parse("ab").unwrap()) && !g.rooms.allows(&crate::rooms::RoomId::parse("b").unwrap())
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(connect_answer(Reply::Answered(403, b"{\"error\":{}}".to_vec())), Admission::Refuse(b) if b == b"{\"error\":{}}"));
        assert!(matches!(connect_answer(ok(r#"{"user":""}"#)), Admission::Unavailable(_)));
        assert!(matches!(connect_answer(ok(r#"{"user":"a","meta":[1]}"#)), Admission::Unavailable(_)));
        assert!(matches!(connect_answer(Reply::Answered(500, vec![])), Admission::Unavailable(_)));
        assert!(matches!(join_answer(ok("{}")), ProxyAnswer::Allow));
        assert!(
            matches!(join_answer(Reply::Answered(403, br#"{"error":{"message":"members only"}}"#.to_vec())), ProxyAnswer::Refuse { code, message } if code == "FORBIDDEN" && message == "members only")
        );
        assert!(matches!(join_answer(Reply::Failed("timeout".into())), ProxyAnswer::Unavailable));
        assert!(matches!(publish_answer(ok("{}")), ProxyAnswer::Allow));
        assert!(matches!(publish_answer(ok("")), ProxyAnswer::Allow));
        assert!(matches!(publish_answer(ok(r#"{"data":{"t":"***"}}"#)), ProxyAnswer::Replace(d) if d.get() == r#"{"t":"***"}"#));
        assert!(
            matches!(publish_answer(ok(r#"{"error":{"code":"SPAM","message":"no"}}"#)), ProxyAnswer::Refuse { code, message } if code == "SPAM" && message == "no")
        );
        assert!(matches!(publish_answer(ok(r#"{"error":{"code":"bad code!"}}"#)), ProxyAnswer::Refuse { code, .. } if code == "REFUSED"));
        assert!(matches!(publish_answer(ok("not json")), ProxyAnswer::Unavailable));
        assert!(matches!(publish_answer(Reply::Answered(403, vec![])), ProxyAnswer::Unavailable));
    }
}
