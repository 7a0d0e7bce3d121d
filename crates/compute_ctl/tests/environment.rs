//! `STRATA_COMPUTE_CTL_<FLAG>` variables: each sets its flag, a flag given on the command
//! line wins over its variable, and a variable no flag reads is a one-line error naming
//! it (a misspelt override must not silently leave a setting at its default).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const TENANT: &str = "0123456789abcdef0123456789abcdef";
const TIMELINE: &str = "fedcba9876543210fedcba9876543210";

fn compute_ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_compute_ctl"))
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn variables_set_flags_and_unknown_ones_are_errors() {
    // Every setting but the tenant from the environment; the tenant's variable is
    // invalid, the flag given wins. Port 1 on loopback refuses at once, so the run gets
    // as far as asking the safekeepers: no argument was missing or invalid.
    let out = compute_ctl(
        &["sync-safekeepers", "--tenant", TENANT],
        &[
            ("STRATA_COMPUTE_CTL_TENANT", "not-an-id"),
            ("STRATA_COMPUTE_CTL_TIMELINE", TIMELINE),
            ("STRATA_COMPUTE_CTL_SAFEKEEPERS", "127.0.0.1:1"),
            ("STRATA_COMPUTE_CTL_ELECTION_TIMEOUT_SECS", "1"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no safekeeper answered") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );

    let out = compute_ctl(
        &[
            "sync-safekeepers",
            "--tenant",
            TENANT,
            "--timeline",
            TIMELINE,
            "--safekeepers",
            "127.0.0.1:1",
        ],
        &[("STRATA_COMPUTE_CTL_SAFEKEEPER", "127.0.0.1:2")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "compute_ctl: unknown environment variable STRATA_COMPUTE_CTL_SAFEKEEPER "
        ),
        "{stderr}"
    );
}
