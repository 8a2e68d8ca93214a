//! The settings checked together (a flag that makes no sense with another is refused at
//! start-up, naming it), and the values in force where a flag defaults to a computed one.

use std::time::Duration;

use super::{ServeConfig, MIN_AVERAGE_FRAGMENT_BYTES};

impl ServeConfig {
    /// How long a game room keeps its events: --event-log-retention, else the longest span any
    /// reconnect reads back (a returning host's backfill, a player's snapshot summary).
    pub fn event_log_retention(&self) -> Duration {
        self.event_log_retention.unwrap_or(self.host_backfill_window.max(self.reconnect_snapshot_window))
    }

    /// Checks that the session settings make sense together; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let durations = [
            ("--event-log-retention", self.event_log_retention()),
            ("--reconnect-backfill-window", self.reconnect_backfill_window),
            ("--host-backfill-window", self.host_backfill_window),
            ("--reconnect-snapshot-window", self.reconnect_snapshot_window),
            ("--disconnect-grace", self.disconnect_grace),
            ("--disconnect-warning", self.disconnect_warning),
            ("--disconnect-remove", self.disconnect_remove),
            ("--host-pause-after", self.host_pause_after),
            ("--host-promote-after", self.host_promote_after),
            ("--ack-timeout", self.ack_timeout),
            ("--ping-interval", self.ping_interval),
            ("--pong-timeout", self.pong_timeout),
            ("--request-timeout", self.request_timeout),
            ("--room-idle-timeout", self.room_idle_timeout),
            ("--score-review", self.score_review),
            ("--min-round-duration", self.min_round_duration),
        ];
        for (flag, value) in durations {
            if value.is_zero() || value > DAY {
                return Err(format!("{flag} must be between 1ms and 24h (got {})", humantime::format_duration(value)));
            }
        }
        // Longer spans: a year at most, so no deadline computed from them can overflow.
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        for (flag, value) in [("--token-ttl", self.token_ttl), ("--shutdown-grace", self.shutdown_grace), ("--room-max-lifetime", self.room_max_lifetime)] {
            if value.is_zero() || value > YEAR {
                return Err(format!("{flag} must be between 1ms and 365 days (got {})", humantime::format_duration(value)));
            }
        }
        if self.idle_connection_timeout > YEAR {
            return Err(format!("--idle-connection-timeout must be at most 365 days, or 0 (got {})", humantime::format_duration(self.idle_connection_timeout)));
        }
        if self.min_round_duration > Duration::from_secs(300) {
            return Err(format!("--min-round-duration must be at most 300s, the longest round (got {})", humantime::format_duration(self.min_round_duration)));
        }
        if self.countdown > 60 {
            return Err(format!("--countdown must be at most 60 ticks (got {})", self.countdown));
        }
        for (flag, rate) in [
            ("--client-message-rate", self.client_message_rate),
            ("--connection-message-rate", self.connection_message_rate),
            ("--pings-per-sec", self.pings_per_sec),
            ("--api-rate-per-ip", self.api_rate_per_ip),
        ] {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
                return Err(format!("{flag} must be above 0 and at most 1000000 (got {rate})"));
            }
        }
        if !(1024..=1 << 40).contains(&self.connection_byte_rate) {
            return Err(format!("--connection-byte-rate must be between 1024 and 1099511627776 bytes per second (got {})", self.connection_byte_rate));
        }
        let sizes = [
            ("--max-message-bytes", self.max_message_bytes, 1 << 30),
            ("--max-outbound-bytes", self.max_outbound_bytes, 1 << 30),
            ("--max-request-head-bytes", self.max_request_head_bytes, 1 << 20),
            ("--max-body-bytes", self.max_body_bytes, 1 << 24),
            ("--max-pending-connections", self.max_pending_connections, 1 << 24),
            ("--max-pending-per-ip", self.max_pending_per_ip, 1 << 24),
            ("--max-fragments", self.effective_max_fragments(), 1 << 24),
            ("--max-connections-per-ip", self.max_connections_per_ip, 1 << 24),
            ("--max-rooms-per-shard", self.max_rooms_per_shard, 1 << 24),
            ("--pubsub-max-rooms-per-connection", self.pubsub_max_rooms_per_connection, 100_000),
        ];
        for (flag, value, max) in sizes {
            if !(1..=max).contains(&value) {
                return Err(format!("{flag} must be 1..={max} (got {value})"));
            }
        }
        if self.shards.is_some_and(|n| !(1..=1024).contains(&n)) {
            return Err(format!("--shards must be 1..=1024 (got {})", self.shards.unwrap_or(0)));
        }
        if !(1..=100_000).contains(&self.event_log_max_events) {
            return Err(format!("--event-log-max-events must be 1..=100000 (got {})", self.event_log_max_events));
        }
        for (flag, secret) in [("--pubsub-secret", &self.pubsub_secret), ("--api-key", &self.api_key)] {
            if secret.as_ref().is_some_and(|s| s.len() < 16) {
                return Err(format!("{flag} must be at least 16 characters (a short secret can be guessed)"));
            }
        }
        match (&self.webhook_url, &self.webhook_secret) {
            (Some(url), _) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(format!("--webhook-url must be an http:// or https:// URL (got {url:?})"));
            }
            (Some(_), None) => return Err("--webhook-url needs --webhook-secret: the receiver must be able to check where events come from".into()),
            (_, Some(secret)) if secret.len() < 16 => return Err("--webhook-secret must be at least 16 characters (a short secret can be guessed)".into()),
            _ => {}
        }
        for (flag, url) in
            [("--proxy-connect-url", &self.proxy_connect_url), ("--proxy-join-url", &self.proxy_join_url), ("--proxy-publish-url", &self.proxy_publish_url)]
        {
            let Some(url) = url else { continue };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{flag} must be an http:// or https:// URL (got {url:?})"));
            }
            if self.webhook_secret.is_none() {
                return Err(format!("{flag} needs --webhook-secret: it signs the proxy requests, so the backend can check where they come from"));
            }
        }
        if self.proxy_timeout.is_zero() || self.proxy_timeout > Duration::from_secs(60) {
            return Err(format!("--proxy-timeout must be between 1ms and 60s (got {})", humantime::format_duration(self.proxy_timeout)));
        }
        if !(1..=10_000).contains(&self.webhook_batch) || !(1..=10_000_000).contains(&self.webhook_queue) {
            return Err(format!("--webhook-batch must be 1..=10000 and --webhook-queue 1..=10000000 (got {} and {})", self.webhook_batch, self.webhook_queue));
        }
        if self.webhook_timeout.is_zero() || self.webhook_timeout > Duration::from_secs(300) {
            return Err(format!("--webhook-timeout must be between 1ms and 5m (got {})", humantime::format_duration(self.webhook_timeout)));
        }
        if self.webhook_max_age < Duration::from_secs(1) || self.webhook_max_age > Duration::from_secs(30 * 24 * 3600) {
            return Err(format!("--webhook-max-age must be between 1s and 30 days (got {})", humantime::format_duration(self.webhook_max_age)));
        }
        if self.redis.is_some() && self.secret.is_none() {
            return Err("--redis needs --secret: with a random per-process key, no token issued before a restart would be accepted after it, so recovered rooms could not be rejoined".into());
        }
        if let Some(id) = &self.instance_id {
            let valid = (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
            if !valid {
                return Err(format!("--instance-id must be 1-128 characters of [A-Za-z0-9._:-] (got {id:?})"));
            }
        }
        if self.persist_interval.is_zero() || self.persist_interval > Duration::from_secs(60) {
            return Err(format!("--persist-interval must be between 1ms and 60s (got {})", humantime::format_duration(self.persist_interval)));
        }
        if self.room_lease_ttl < Duration::from_secs(1) || self.room_lease_ttl > Duration::from_secs(600) {
            return Err(format!("--room-lease-ttl must be between 1s and 10m (got {})", humantime::format_duration(self.room_lease_ttl)));
        }
        if self.persist_ttl < Duration::from_secs(1) || self.persist_ttl > Duration::from_secs(30 * 24 * 3600) {
            return Err(format!("--persist-ttl must be between 1s and 30 days (got {})", humantime::format_duration(self.persist_ttl)));
        }
        if !(1..=1_000_000).contains(&self.persist_queue) {
            return Err(format!("--persist-queue must be 1..=1000000 (got {})", self.persist_queue));
        }
        if self.ack_retries > 10 {
            return Err(format!("--ack-retries must be at most 10 (got {})", self.ack_retries));
        }
        let ordered = [
            ("--disconnect-grace", self.disconnect_grace, "--disconnect-warning", self.disconnect_warning),
            ("--disconnect-warning", self.disconnect_warning, "--disconnect-remove", self.disconnect_remove),
            ("--reconnect-backfill-window", self.reconnect_backfill_window, "--reconnect-snapshot-window", self.reconnect_snapshot_window),
            ("--host-pause-after", self.host_pause_after, "--host-promote-after", self.host_promote_after),
        ];
        for (a, va, b, vb) in ordered {
            if va > vb {
                return Err(format!("{a} ({}) must not exceed {b} ({})", humantime::format_duration(va), humantime::format_duration(vb)));
            }
        }
        Ok(())
    }

    /// The fragment cap in force: the flag, or one frame per 64 bytes of the message limit (at
    /// least 1024).
    pub fn effective_max_fragments(&self) -> usize {
        self.max_fragments.unwrap_or_else(|| self.max_message_bytes.div_ceil(MIN_AVERAGE_FRAGMENT_BYTES).max(1024))
    }

    /// The connection cap in force: the flag, or what the open-file limit allows.
    pub fn effective_max_connections(&self, open_file_limit: u64) -> usize {
        self.max_connections.unwrap_or_else(|| open_file_limit.saturating_sub(256).max(1) as usize)
    }
}
