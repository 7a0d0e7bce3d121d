//! Compiles every `proto/*.proto` of the workspace into Rust (messages, tonic clients and
//! servers). protoc comes from `$PROTOC` when set, else the system's `protoc`
//! (`apt-get install protobuf-compiler`; `scripts/install-deps.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary reused from another checkout must not
    // look for the protos there.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?;
    let proto_dir = Path::new(&manifest_dir).join("../../proto");
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
