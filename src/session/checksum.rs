//! The state checksum clients send in `HEARTBEAT` to detect a desync (seed 002 §3.5).
//!
//! It must be computable by any client from what it already holds, so it covers only the
//! critical fields every role sees: the state, its version, the host and the team scores.
//! The canonical text is `STATE|stateVersion|hostId|team_1:score,team_2:score,...` (teams in id
//! order, no spaces), hashed with 32-bit FNV-1a and written as 8 lowercase hex digits.

/// The checksum of the canonical text built from these fields.
pub fn state_checksum(state: &str, state_version: u64, host_id: &str, scores: &[(String, i64)]) -> String {
    let mut text = format!("{state}|{state_version}|{host_id}|");
    for (i, (team, score)) in scores.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("{team}:{score}"));
    }
    format!("{:08x}", fnv1a_32(text.as_bytes()))
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // FNV-1a reference vectors.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        let scores = vec![("team_1".to_string(), 14), ("team_2".to_string(), 12)];
        let sum = state_checksum("ROUND_ACTIVE", 148, "host_1", &scores);
        assert_eq!(sum, format!("{:08x}", fnv1a_32(b"ROUND_ACTIVE|148|host_1|team_1:14,team_2:12")));
        assert_ne!(sum, state_checksum("ROUND_ACTIVE", 149, "host_1", &scores));
    }
}
