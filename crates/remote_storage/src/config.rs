//! Where objects go, as a URL: `file:///absolute/path` for a local directory,
//! `s3://bucket[/prefix][?endpoint=http://host:port&region=REGION&path_style=true|false]`
//! for S3. Credentials are never part of the URL: they come from the standard AWS
//! provider chain (environment, shared files, instance metadata) unless the daemon's
//! configuration file sets [`S3Config::access_key_id`] and
//! [`S3Config::secret_access_key`].

use std::fmt;
use std::path::PathBuf;

use crate::error::RemoteError;

/// Region used when the URL names none (MinIO and most S3-compatible servers accept
/// any).
pub const DEFAULT_REGION: &str = "us-east-1";

#[derive(Clone, PartialEq, Eq)]
pub enum RemoteStorageConfig {
    Local { root: PathBuf },
    S3(S3Config),
}

#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Prepended to every object name; empty or ending in `/`.
    pub prefix: String,
    /// `None`: AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which MinIO and most
    /// S3-compatible servers need. Defaults to true when an endpoint is given.
    pub path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl RemoteStorageConfig {
    pub fn parse_url(url: &str) -> Result<RemoteStorageConfig, RemoteError> {
        let bad = |reason: &str| RemoteError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path (file:///srv/strata)",
                ));
            }
            if path.contains('?') || path.contains('#') {
                return Err(bad("a file:// URL takes no query or fragment"));
            }
            return Ok(RemoteStorageConfig::Local {
                root: PathBuf::from(path),
            });
        }
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected file:///path or s3://bucket/prefix"))?;
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if !valid_bucket(bucket) {
            return Err(bad(
                "bucket names are 3 to 63 lowercase letters, digits, '.' and '-'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..")
            || prefix.contains("//")
            || prefix.chars().any(|c| c.is_control() || c == '\\')
        {
            return Err(bad("the prefix must be plain path segments"));
        }
        let mut config = S3Config {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: None,
            region: DEFAULT_REGION.to_string(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
        };
        let mut path_style = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("query parameters are key=value"))?;
            match key {
                "endpoint" => {
                    if !(value.starts_with("http://") || value.starts_with("https://")) {
                        return Err(bad("endpoint must start with http:// or https://"));
                    }
                    config.endpoint = Some(value.trim_end_matches('/').to_string());
                }
                "region" if !value.is_empty() => config.region = value.to_string(),
                "path_style" => {
                    path_style = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("path_style is true or false")),
                    })
                }
                _ => {
                    return Err(bad(&format!(
                        "unknown parameter {key:?} (endpoint, region, path_style)"
                    )))
                }
            }
        }
        config.path_style = path_style.unwrap_or(config.endpoint.is_some());
        Ok(RemoteStorageConfig::S3(config))
    }
}

fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
}

/// The URL form, without credentials.
impl fmt::Display for RemoteStorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteStorageConfig::Local { root } => write!(f, "file://{}", root.display()),
            RemoteStorageConfig::S3(s3) => write!(f, "{s3}"),
        }
    }
}

impl fmt::Display for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)?;
        match &self.endpoint {
            Some(endpoint) => write!(f, " at {endpoint}"),
            None => write!(f, " in {}", self.region),
        }
    }
}

/// Credentials are left out, so a config can be logged.
impl fmt::Debug for RemoteStorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        assert_eq!(
            RemoteStorageConfig::parse_url("file:///srv/strata").unwrap(),
            RemoteStorageConfig::Local {
                root: PathBuf::from("/srv/strata")
            }
        );
        let RemoteStorageConfig::S3(s3) = RemoteStorageConfig::parse_url(
            "s3://my-bucket/a/b/?endpoint=http://127.0.0.1:9000/&region=eu-west-1",
        )
        .unwrap() else {
            panic!("not S3")
        };
        assert_eq!(s3.bucket, "my-bucket");
        assert_eq!(s3.prefix, "a/b/");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region, "eu-west-1");
        assert!(s3.path_style);
        let RemoteStorageConfig::S3(aws) = RemoteStorageConfig::parse_url("s3://bkt").unwrap()
        else {
            panic!("not S3")
        };
        assert_eq!((aws.prefix.as_str(), aws.path_style), ("", false));
        assert_eq!(aws.region, DEFAULT_REGION);
        for bad in [
            "",
            "/srv/strata",
            "file://relative",
            "file:///x?y",
            "s3://",
            "s3://UPPER",
            "s3://ab",
            "s3://bucket/../x",
            "s3://bucket?endpoint=ftp://x",
            "s3://bucket?color=red",
            "s3://bucket?path_style=maybe",
            "s3://bucket?endpoint",
            "gs://bucket",
        ] {
            let error = RemoteStorageConfig::parse_url(bad).unwrap_err();
            assert!(
                error.to_string().contains("invalid object store URL"),
                "{bad}: {error}"
            );
        }
    }
}
