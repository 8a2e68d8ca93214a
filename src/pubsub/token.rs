//! `/pubsub` identity: standard JWTs signed HS256 with `--pubsub-secret`, so that an app's own
//! backend, in any language, can mint them with its usual JWT library.
//!
//! Claims: `sub` (the user id, required), `exp` (seconds since the epoch, checked when present),
//! `rooms` (room names the token admits, a trailing `*` matching a prefix; absent: any room) and
//! `meta` (an object shown in presence). Verification and signing are the `jsonwebtoken` crate's;
//! only HS256 is accepted (no `none`, no algorithm chosen by the token).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::message::MAX_USER_LEN;
use crate::rooms::RoomId;

/// Which rooms a connection may join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPatterns {
    /// `None`: any room.
    patterns: Option<Vec<String>>,
}

impl RoomPatterns {
    /// Every room.
    pub fn any() -> Self {
        RoomPatterns { patterns: None }
    }

    /// The rooms these patterns name: exact names, or prefixes ending in `*`.
    pub fn only(patterns: Vec<String>) -> Self {
        RoomPatterns { patterns: Some(patterns) }
    }

    /// Whether `room` is allowed.
    pub fn allows(&self, room: &RoomId) -> bool {
        let Some(patterns) = &self.patterns else { return true };
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => room.as_str().starts_with(prefix),
            None => p == room.as_str(),
        })
    }

    /// The patterns, `None` for any room.
    pub fn patterns(&self) -> Option<&[String]> {
        self.patterns.as_deref()
    }
}

/// What a verified token (or the connect proxy) grants a connection.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The user id.
    pub user: Arc<str>,
    /// The rooms it may join.
    pub rooms: RoomPatterns,
    /// Shown beside it in presence (a JSON object), if any.
    pub meta: Option<Arc<RawValue>>,
}

/// The claims of a `/pubsub` token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Allowed rooms (a trailing `*` is a prefix); absent: any room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Shown in presence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Box<RawValue>>,
}

impl Claims {
    /// What the claims admit.
    pub fn into_grant(self) -> Grant {
        Grant { user: self.sub.into(), rooms: self.rooms.map_or_else(RoomPatterns::any, RoomPatterns::only), meta: self.meta.map(Arc::from) }
    }
}

/// Why a token was refused (the `401` message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token in `?token=` or `Authorization: Bearer`.
    #[error("a token is required (Sec-WebSocket-Protocol partyflow.token.<jwt>, Authorization: Bearer or ?token=)")]
    Missing,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, algorithm, encoding or claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The HS256 key of `--pubsub-secret`.
#[derive(Clone)]
pub struct TokenKey {
    decoding: DecodingKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// The key for `secret` (an error for an empty one).
    pub fn new(secret: &str) -> Result<Self, String> {
        let decoding = DecodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
        let encoding = EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
        Ok(TokenKey { decoding, encoding })
    }

    /// Verifies `token`; `now_unix` is the wall clock in seconds.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Grant, TokenError> {
        self.verify_claims(token, now_unix).map(Claims::into_grant)
    }

    /// Verifies `token` and answers its claims (checked as [`TokenKey::verify`] does).
    pub fn verify_claims(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is honoured when present, checked here against the caller's clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| TokenError::Invalid(e.to_string()))?.claims;
        if claims.exp.is_some_and(|exp| now_unix >= exp) {
            return Err(TokenError::Expired);
        }
        if claims.sub.is_empty() || claims.sub.len() > MAX_USER_LEN {
            return Err(TokenError::Invalid(format!("sub must be 1-{MAX_USER_LEN} characters")));
        }
        if claims.meta.as_ref().is_some_and(|m| !m.get().trim_start().starts_with('{')) {
            return Err(TokenError::Invalid("meta must be an object".into()));
        }
        Ok(claims)
    }

    /// Signs `claims` (for `partyflow token` and tests).
    pub fn sign(&self, claims: &Claims) -> String {
        // HS256 over serializable claims cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }
}

/// A token for `args` (`partyflow token`), valid from `now` for `args.ttl`.
pub fn mint(args: &crate::config::TokenArgs, now: std::time::SystemTime) -> Result<String, String> {
    let key = TokenKey::new(&args.pubsub_secret)?;
    if args.sub.is_empty() || args.sub.len() > MAX_USER_LEN {
        return Err(format!("--sub must be 1-{MAX_USER_LEN} characters"));
    }
    if let Some(bad) = args.rooms.iter().find(|p| RoomId::parse(p.strip_suffix('*').unwrap_or(p)).is_none() && *p != "*") {
        return Err(format!("--rooms: {bad:?} is not a room id or a prefix of one followed by *"));
    }
    let meta = match &args.meta {
        None => None,
        Some(text) => match RawValue::from_string(text.clone()) {
            Ok(meta) if meta.get().trim_start().starts_with('{') => Some(meta),
            _ => return Err("--meta must be a JSON object".into()),
        },
    };
    let now = now.duration_since(std::time::UNIX_EPOCH).map_err(|_| "the clock is before 1970")?;
    let exp = now.checked_add(args.ttl).ok_or("--ttl is too long")?.as_secs();
    let rooms = (!args.rooms.is_empty()).then(|| args.rooms.clone());
    Ok(key.sign(&Claims { sub: args.sub.clone(), exp: Some(exp), rooms, meta }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp: Option<u64>, rooms: Option<Vec<&str>>) -> Claims {
        Claims { sub: sub.into(), exp, rooms: rooms.map(|r| r.into_iter().map(String::from).collect()), meta: None }
    }

    #[test]
    fn signed_tokens_verify_and_carry_their_grant() {
        let key = TokenKey::new("s3cret").unwrap();
        let mut c = claims("ann", Some(2_000), Some(vec!["chat-*", "lobby"]));
        c.meta = Some(RawValue::from_string(r#"{"name":"Ann"}"#.into()).unwrap());
        let grant = key.verify(&key.sign(&c), 1_000).unwrap();
        assert_eq!(&*grant.user, "ann");
        assert_eq!(grant.meta.unwrap().get(), r#"{"name":"Ann"}"#);
        let room = |r: &str| RoomId::parse(r).unwrap();
        assert!(grant.rooms.allows(&room("chat-1")) && grant.rooms.allows(&room("lobby")));
        assert!(!grant.rooms.allows(&room("lobby2")) && !grant.rooms.allows(&room("chat")));
        assert!(key.verify(&key.sign(&claims("bob", None, None)), 1_000).unwrap().rooms.allows(&room("anything")));
    }

    #[test]
    fn minted_tokens_carry_the_flags() {
        let args = crate::config::TokenArgs {
            sub: "ann".into(),
            rooms: vec!["chat-*".into(), "lobby".into()],
            ttl: std::time::Duration::from_secs(60),
            meta: Some(r#"{"name":"Ann"}"#.into()),
            pubsub_secret: "a-secret-of-16-chars".into(),
        };
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let key = TokenKey::new(&args.pubsub_secret).unwrap();
        let grant = key.verify(&mint(&args, now).unwrap(), 1_059).unwrap();
        assert_eq!(
            (&*grant.user, grant.rooms.patterns().unwrap(), grant.meta.unwrap().get()),
            ("ann", &["chat-*".to_string(), "lobby".into()][..], r#"{"name":"Ann"}"#)
        );
        assert_eq!(key.verify(&mint(&args, now).unwrap(), 1_060).unwrap_err(), TokenError::Expired);
        assert!(mint(&crate::config::TokenArgs { meta: Some("[1]".into()), ..args.clone() }, now).is_err());
        assert!(mint(&crate::config::TokenArgs { rooms: vec!["bad room".into()], ..args.clone() }, now).is_err());
        assert!(mint(&crate::config::TokenArgs { sub: String::new(), ..args }, now).is_err());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let key = TokenKey::new("s3cret").unwrap();
        assert_eq!(key.verify(&key.sign(&claims("ann", Some(1_000), None)), 1_000).unwrap_err(), TokenError::Expired);
        let other = TokenKey::new("other").unwrap().sign(&claims("ann", None, None));
        assert!(matches!(key.verify(&other, 1_000), Err(TokenError::Invalid(_))));
        assert!(matches!(key.verify("not.a.jwt", 1_000), Err(TokenError::Invalid(_))));
        assert!(matches!(key.verify(&key.sign(&claims("", None, None)), 1_000), Err(TokenError::Invalid(_))));
        // alg "none", signature stripped.
        let token = key.sign(&claims("ann", None, None));
        let mut parts = token.split('.');
        let none = format!("{}.{}.", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", parts.nth(1).unwrap());
        assert!(matches!(key.verify(&none, 1_000), Err(TokenError::Invalid(_))));
        let mut c = claims("ann", None, None);
        c.meta = Some(RawValue::from_string("[1]".into()).unwrap());
        assert!(matches!(key.verify(&key.sign(&c), 1_000), Err(TokenError::Invalid(_))));
    }
}
