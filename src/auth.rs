//! Server-issued identity tokens: HMAC-SHA256 over room, actor, role and expiry.
//!
//! A token is `v1.<roomId>.<actorId>.<role>.<expiresUnix>.<signature>`; room and actor ids never
//! contain dots. The WebSocket upgrade accepts only a valid token for the requested room, and the
//! actor's identity comes from it, never from a field the client typed.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::game::Role;

type HmacSha256 = Hmac<Sha256>;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The room it admits to.
    pub room_id: String,
    /// Who the bearer is.
    pub actor_id: String,
    /// The role at issue time.
    pub role: Role,
    /// Unix seconds after which it is refused.
    pub expires_unix: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match (forged, or signed with another secret).
    #[error("invalid token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

/// The signing key, shared by every shard.
#[derive(Clone)]
pub struct TokenKey {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key derived from a configured secret (instances with the same secret share tokens).
    pub fn from_secret(secret: &str) -> Self {
        TokenKey { key: Sha256::digest(secret.as_bytes()).into() }
    }

    /// A key from 32 random bytes.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        TokenKey { key }
    }

    fn mac(&self, body: &str) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(body.as_bytes());
        mac
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let body = format!("v1.{}.{}.{}.{}", claims.room_id, claims.actor_id, claims.role.as_str(), claims.expires_unix);
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&body).finalize().into_bytes());
        format!("{body}.{signature}")
    }

    /// Checks `token` at `now_unix` and returns its claims.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        let (body, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        self.mac(body).verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;
        let mut parts = body.split('.');
        let (Some("v1"), Some(room), Some(actor), Some(role), Some(exp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let role = Role::parse(role).ok_or(TokenError::Malformed)?;
        let expires_unix: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        if now_unix >= expires_unix {
            return Err(TokenError::Expired);
        }
        Ok(Claims { room_id: room.to_string(), actor_id: actor.to_string(), role, expires_unix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims { room_id: "ABC234".into(), actor_id: "player_1".into(), role: Role::Player, expires_unix: 1000 }
    }

    #[test]
    fn round_trip_and_refusals() {
        let key = TokenKey::from_secret("s3cret");
        let token = key.sign(&claims());
        assert_eq!(key.verify(&token, 999).unwrap(), claims());
        assert_eq!(key.verify(&token, 1000), Err(TokenError::Expired));
        assert_eq!(TokenKey::from_secret("other").verify(&token, 0), Err(TokenError::BadSignature));
        let forged = token.replace("player_1", "host_1");
        assert_eq!(key.verify(&forged, 0), Err(TokenError::BadSignature));
        let promoted = token.replace(".player.", ".host.");
        assert_eq!(key.verify(&promoted, 0), Err(TokenError::BadSignature));
        assert_eq!(key.verify("garbage", 0), Err(TokenError::Malformed));
        assert_eq!(key.verify("v1.a.b.player.9.AAAA", 0), Err(TokenError::BadSignature));
    }
}
