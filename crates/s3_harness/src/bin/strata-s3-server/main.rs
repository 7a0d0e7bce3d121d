//! `strata-s3-server`: the S3-compatible server Strata's tests and benchmarks start
//! on loopback. The S3 protocol, with SigV4 signature checks against one access key,
//! is the `s3s` crate's (the protocol layer of s3s-fs and RustFS); objects live in a
//! directory (see `store.rs`). It answers the operations Strata's client uses, keys of
//! any length S3 allows, and `If-None-Match: *` atomically.
//!
//! ```text
//! strata-s3-server --listen 127.0.0.1:9000 --root DIR
//! ```
//! with the keys in `STRATA_S3_ACCESS_KEY` and `STRATA_S3_SECRET_KEY`, so that they
//! do not show in a process listing.

mod service;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

#[derive(Debug, Parser)]
#[command(about = "S3-compatible test server on a local directory")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Directory holding the buckets (each a subdirectory).
    #[arg(long)]
    root: PathBuf,
    #[arg(long, env = "STRATA_S3_ACCESS_KEY", hide_env_values = true)]
    access_key: String,
    #[arg(long, env = "STRATA_S3_SECRET_KEY", hide_env_values = true)]
    secret_key: String,
}

fn main() {
    let args = Args::parse();
    if let Err(error) = run(args) {
        eprintln!("strata-s3-server: {error:#}");
        std::process::exit(1);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn run(args: Args) -> anyhow::Result<()> {
    let store = store::Store::new(args.root.clone())
        .with_context(|| format!("opening {}", args.root.display()))?;
    let service = {
        let mut builder = S3ServiceBuilder::new(service::Service::new(store));
        builder.set_auth(SimpleAuth::from_single(args.access_key, args.secret_key));
        builder.build()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        // A failed accept (the peer gone, descriptors short) is that connection's
        // problem, not the server's.
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let connection = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
