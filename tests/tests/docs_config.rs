//! docs/configuration.md quotes each daemon's `--print-default-config` verbatim; this
//! fails when a setting is added, renamed or re-documented without the reference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::process::Command;

#[test]
fn configuration_reference_quotes_every_default_config() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let doc = std::fs::read_to_string(doc_path).unwrap();
    let bin_dir = cluster_support::strata_bin().parent().unwrap().to_owned();
    for daemon in ["safekeeper", "pageserver"] {
        let out = Command::new(bin_dir.join(daemon))
            .arg("--print-default-config")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{daemon} --print-default-config failed"
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            doc.contains(&format!("```toml\n{text}```")),
            "docs/configuration.md does not quote `{daemon} --print-default-config`; \
             paste its current output into the reference"
        );
    }
}
