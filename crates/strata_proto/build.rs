//! Compiles every `proto/*.proto` of the workspace into Rust (messages, tonic clients and
//! servers). protoc comes from `$PROTOC` when set, else the system's `protoc`
//! (`apt-get install protobuf-compiler`; `scripts/install-deps.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&proto_dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    // Sorted so that the generated code does not depend on directory order.
    protos.sort();
    // A new .proto file must trigger a rebuild, not only changes to known ones.
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-env-changed=PROTOC");

    // prost-build would also fail without protoc, but with a message that does not say
    // how to get one.
    let protoc = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    if Command::new(&protoc).arg("--version").output().is_err() {
        return Err(format!(
            "cannot run protoc ({}): install it (apt-get install protobuf-compiler, or \
             scripts/install-deps.sh) or set PROTOC to its path",
            Path::new(&protoc).display()
        )
        .into());
    }

    tonic_prost_build::configure().compile_protos(&protos, &[proto_dir])?;
    Ok(())
}
