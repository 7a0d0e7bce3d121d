//! A real S3-compatible server for tests: `strata-s3-server` (this crate's binary),
//! which speaks the S3 protocol over HTTP through the `s3s` crate and checks SigV4
//! signatures against the access key it is started with. Not a mock: requests go
//! through the same `aws-sdk-s3` client, signing and HTTP stack as against AWS or
//! MinIO, to a separate process on a loopback socket.
//!
//! `cargo build --bins` puts the binary next to the test executables' directory;
//! `STRATA_S3_SERVER` names another one.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use remote_storage::config::{S3Config, DEFAULT_REGION};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    access_key: String,
    secret_key: String,
    root: tempfile::TempDir,
}

/// Where the binary is: `STRATA_S3_SERVER`, else cargo's target directory of the
/// running executable (`target/<profile>/`, or its parent for one in `deps/`).
pub fn binary() -> Result<PathBuf, String> {
    const NAME: &str = "strata-s3-server";
    if let Some(path) = std::env::var_os("STRATA_S3_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(NAME))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "{NAME} not found next to {}: run `cargo build --bins` (or set STRATA_S3_SERVER)",
                exe.display()
            )
        })
}

/// 128 random bits as hex, so that no two servers share keys and a request signed
/// with the wrong secret is refused. Falls back to the clock where `/dev/urandom`
/// cannot be read (distinct per call, which is all the tests need).
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl S3Server {
    /// Starts a server on a free loopback port with fresh keys and an empty root.
    pub fn start() -> Result<S3Server, String> {
        let binary = binary()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let root = tempfile::tempdir().map_err(|e| format!("temporary root: {e}"))?;
        let key = random_hex();
        let mut server = S3Server {
            child: None,
            binary,
            port,
            access_key: format!("strata{}", &key[..12]),
            secret_key: key,
            root,
        };
        server.restart()?;
        Ok(server)
    }

    /// Starts the server again (same port, keys and data) after [`S3Server::stop`];
    /// returns once it accepts connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let child = Command::new(&self.binary)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--root")
            .arg(self.root.path())
            .env("STRATA_S3_ACCESS_KEY", &self.access_key)
            .env("STRATA_S3_SECRET_KEY", &self.secret_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "strata-s3-server did not listen on port {} in time",
                    self.port
                ));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Kills the server (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The server keeps a bucket as a directory of its root.
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        std::fs::create_dir_all(self.root.path().join(name))
            .map_err(|e| format!("creating bucket {name}: {e}"))
    }

    /// `s3://bucket/prefix?endpoint=…` for this server.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3://{bucket}/{prefix}?endpoint={}", self.endpoint())
    }

    /// A config for `bucket`/`prefix` carrying this server's keys (what
    /// `parse_url(&self.url(bucket, prefix))` gives, plus the credentials).
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        let prefix = prefix.trim_matches('/');
        S3Config {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: Some(self.endpoint()),
            region: DEFAULT_REGION.to_string(),
            path_style: true,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
        }
    }

    /// The standard AWS variables a child daemon reads its credentials from.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", DEFAULT_REGION.to_string()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
