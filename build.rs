//! Records the git commit the server is built from (`partyflow --version`, `/health`).
//! `PARTYFLOW_GIT_COMMIT` overrides it (builds from a source archive have no `.git`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PARTYFLOW_GIT_COMMIT");
    // Only paths that exist: a missing one makes cargo rerun this script, and rebuild the crate,
    // on every build (a checkout whose refs were never packed has no packed-refs).
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"].into_iter().filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = std::env::var("PARTYFLOW_GIT_COMMIT")
        .ok()
        .or_else(|| {
            let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PARTYFLOW_GIT_COMMIT={commit}");
}
