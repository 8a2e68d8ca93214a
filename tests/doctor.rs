//! `partyflow doctor` on this very machine: it reports the host's real limits, its exit code
//! follows its worst finding, and a configuration the host cannot carry is a failure.

use std::process::Command;

fn doctor(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_partyflow")).arg("doctor").args(args).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap())
}

fn nofile_hard() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_max
}

/// The worst level printed, as doctor's exit code.
fn worst(text: &str) -> i32 {
    let levels: Vec<&str> = text.lines().skip(2).map_while(|l| l.split_whitespace().next()).collect();
    assert!(levels.len() >= 10, "{text}");
    assert!(levels.iter().all(|l| ["ok", "warn", "FAIL", "fix:"].contains(l)), "{text}");
    if levels.contains(&"FAIL") {
        2
    } else if levels.contains(&"warn") {
        1
    } else {
        0
    }
}

#[test]
fn reports_this_host_and_exits_with_its_worst_finding() {
    let (code, text) = doctor(&[]);
    assert_eq!(code, worst(&text), "{text}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(text.contains(&format!("kernel                 {}", release.trim())), "{text}");
    assert!(text.contains(&format!("hard limit {}", nofile_hard())), "{text}");
    assert!(text.trim_end().ends_with(&format!("(exit {code})")), "{text}");
}

#[test]
fn a_configuration_the_host_cannot_carry_fails() {
    // More connections than the open-file limit can hold: accepts would fail before the cap.
    let too_many = nofile_hard().to_string();
    let (code, text) = doctor(&["--max-connections", &too_many]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("FAIL  open files") && text.contains("fix: LimitNOFILE="), "{text}");
    // An invalid flag is refused before any check, naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_partyflow")).args(["doctor", "--ping-interval", "0s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ping-interval"));
}
