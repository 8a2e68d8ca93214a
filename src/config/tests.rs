use super::*;

#[test]
fn the_library_defaults_are_the_flag_defaults() {
    let built_in = ServeConfig::default();
    built_in.validate().unwrap();
    if std::env::vars().all(|(key, _)| !key.starts_with("PARTYFLOW_")) {
        assert_eq!(format!("{:?}", ServeConfig::load(["partyflow"]).unwrap()), format!("{built_in:?}"));
    }
    assert_eq!((built_in.listen.to_string().as_str(), built_in.max_message_bytes, built_in.shards), ("127.0.0.1:8080", 65536, None));
}

#[test]
fn the_backfill_log_keeps_what_the_reconnect_windows_read_unless_told() {
    let default = ServeConfig::load(["partyflow"]).unwrap();
    assert_eq!(default.event_log_retention(), Duration::from_secs(30));
    let longer = ServeConfig::load(["partyflow", "--host-backfill-window", "45s", "--reconnect-snapshot-window", "90s"]).unwrap();
    assert_eq!(longer.event_log_retention(), Duration::from_secs(90));
    let told = ServeConfig::load(["partyflow", "--event-log-retention", "2m"]).unwrap();
    assert_eq!(told.event_log_retention(), Duration::from_secs(120));
}

#[test]
fn defaults_and_subcommand() {
    let a = ServeConfig::load(["partyflow"]).unwrap();
    assert_eq!(a.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(a.max_message_bytes, 65536);
    assert_eq!(a.ping_interval, Duration::from_secs(10));
    let b = ServeConfig::load(["partyflow", "serve", "--shards", "3"]).unwrap();
    assert_eq!(b.shards, Some(3));
}

#[test]
fn file_fills_in_but_flags_win() {
    let dir = std::env::temp_dir().join(format!("partyflow-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, "ping-interval = \"3s\"\nmax-message-bytes = 100\nallowed-origin = [\"a\", \"b\"]\n").unwrap();
    let p = path.to_str().unwrap();
    let c = ServeConfig::load(["partyflow", "--config", p, "--max-message-bytes", "7"]).unwrap();
    assert_eq!(c.ping_interval, Duration::from_secs(3));
    assert_eq!(c.max_message_bytes, 7);
    assert_eq!(c.allowed_origin, vec!["a", "b"]);
    std::fs::write(&path, "no-such-thing = 1\n").unwrap();
    assert!(matches!(ServeConfig::load(["partyflow", "--config", p]), Err(ConfigError::Invalid { .. })));
    let err = ServeConfig::load(["partyflow", "--disconnect-grace", "20s"]).unwrap_err();
    assert!(err.to_string().contains("--disconnect-grace (20s) must not exceed --disconnect-warning"), "{err}");
    let err = ServeConfig::load(["partyflow", "--redis", "redis://127.0.0.1:6379/0"]).unwrap_err();
    assert!(err.to_string().contains("--redis needs --secret"), "{err}");
    for (flag, value) in [
        ("--min-round-duration", "301s"),
        ("--ping-interval", "0s"),
        ("--token-ttl", "1000years"),
        ("--client-message-rate", "NaN"),
        ("--connection-byte-rate", "0"),
        ("--max-message-bytes", "0"),
        ("--shards", "0"),
    ] {
        let err = ServeConfig::load(["partyflow", flag, value]).unwrap_err();
        assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
    }
    let err = ServeConfig::load(["partyflow", "--ack-timeout", "0s"]).unwrap_err();
    assert!(err.to_string().contains("--ack-timeout"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
