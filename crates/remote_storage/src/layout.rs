//! Object names. Under the store's root (a directory, or a bucket and prefix):
//!
//! ```text
//! tenants/<tenant>/generations/<generation>                    an attachment's claim
//! tenants/<tenant>/timelines/<timeline>/<layer file>-<generation>
//! tenants/<tenant>/timelines/<timeline>/index-<generation>.json
//! tenants/<tenant>/timelines/<timeline>/wal/<WAL segment file name>
//! ```
//!
//! A generation is eight lowercase hex digits, so names sort in generation order.

use std::fmt;

use strata_ids::{TenantId, TenantTimelineId};

use crate::error::RemoteError;

/// Longest object name (S3's limit on keys, prefix included, is 1,024 bytes).
pub const MAX_PATH_LEN: usize = 900;

/// An object name relative to the store's root: `/`-separated segments, none empty,
/// `.` or `..`, printable ASCII only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemotePath(String);

impl RemotePath {
    pub fn new(name: &str) -> Result<RemotePath, RemoteError> {
        let bad = |reason: &str| RemoteError::InvalidPath {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty() || name.len() > MAX_PATH_LEN {
            return Err(bad("length must be 1 to 900 bytes"));
        }
        if !name.chars().all(|c| c.is_ascii_graphic() && c != '\\') {
            return Err(bad("only printable ASCII other than '\\'"));
        }
        if name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad("segments must be non-empty and not '.' or '..'"));
        }
        Ok(RemotePath(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The generation of a tenant's attachment to a pageserver. Every object a pageserver
/// writes carries its generation, so an older attachment that is still running (a
/// split brain) never overwrites a newer one's objects, and an attach reads the newest
/// index whose generation is not above its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u32);

impl Generation {
    pub const FIRST: Generation = Generation(1);

    pub fn next(self) -> Option<Generation> {
        self.0.checked_add(1).map(Generation)
    }

    fn parse(hex: &str) -> Option<Generation> {
        (hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| u32::from_str_radix(hex, 16).ok().map(Generation))
            .flatten()
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

pub fn tenant_prefix(tenant: TenantId) -> String {
    format!("tenants/{tenant}/")
}

pub fn timeline_prefix(id: TenantTimelineId) -> String {
    format!("tenants/{}/timelines/{}/", id.tenant_id, id.timeline_id)
}

pub fn generations_prefix(tenant: TenantId) -> String {
    format!("{}generations/", tenant_prefix(tenant))
}

pub fn generation_claim_path(tenant: TenantId, generation: Generation) -> RemotePath {
    path(format!("{}{generation}", generations_prefix(tenant)))
}

pub fn layer_path(id: TenantTimelineId, layer: &str, generation: Generation) -> RemotePath {
    path(format!("{}{layer}-{generation}", timeline_prefix(id)))
}

pub fn index_path(id: TenantTimelineId, generation: Generation) -> RemotePath {
    path(format!("{}index-{generation}.json", timeline_prefix(id)))
}

pub fn wal_prefix(id: TenantTimelineId) -> String {
    format!("{}wal/", timeline_prefix(id))
}

pub fn wal_segment_path(id: TenantTimelineId, segment: &str) -> RemotePath {
    path(format!("{}{segment}", wal_prefix(id)))
}

/// The generation of `generations/<generation>`, from its last segment.
pub fn parse_generation_claim(file_name: &str) -> Option<Generation> {
    Generation::parse(file_name)
}

/// The generation of `index-<generation>.json`, from its last segment.
pub fn parse_index_name(file_name: &str) -> Option<Generation> {
    Generation::parse(file_name.strip_prefix("index-")?.strip_suffix(".json")?)
}

/// The layer file name and generation of `<layer>-<generation>`, from its last
/// segment. The caller checks that the layer name is one.
pub fn parse_layer_object(file_name: &str) -> Option<(&str, Generation)> {
    let (layer, generation) = file_name.rsplit_once('-')?;
    Some((layer, Generation::parse(generation)?))
}

/// Names built here from ids, layer names and generations are valid by construction;
/// a layer or segment name that is not (it comes from a listing) is refused where it
/// is parsed, so this cannot fail on what reaches it.
fn path(name: String) -> RemotePath {
    debug_assert!(RemotePath::new(&name).is_ok(), "{name}");
    RemotePath(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ids::TimelineId;

    #[test]
    fn names_round_trip_and_sort_by_generation() {
        let id = TenantTimelineId {
            tenant_id: TenantId(0xab),
            timeline_id: TimelineId(0xcd),
        };
        let layer = "delta__00-FF__0000000001000028-0000000001000100";
        let g = Generation(0x1f);
        let p = layer_path(id, layer, g);
        assert!(p.as_str().starts_with(&timeline_prefix(id)));
        assert_eq!(parse_layer_object(p.file_name()), Some((layer, g)));
        assert_eq!(parse_index_name(index_path(id, g).file_name()), Some(g));
        assert_eq!(
            parse_generation_claim(generation_claim_path(id.tenant_id, g).file_name()),
            Some(g)
        );
        assert!(index_path(id, Generation(9)) < index_path(id, Generation(10)));
        assert_eq!(parse_index_name("index-0000000G.json"), None);
        assert_eq!(parse_index_name("index-1.json"), None);
        assert_eq!(parse_layer_object("layer-ABCDEF01"), None);
        assert!(RemotePath::new(p.as_str()).is_ok());
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a b", "a\\b", "é"] {
            assert!(RemotePath::new(bad).is_err(), "{bad:?}");
        }
        assert!(RemotePath::new(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
        assert_eq!(RemotePath::new("x/y/z").unwrap().file_name(), "z");
    }
}
