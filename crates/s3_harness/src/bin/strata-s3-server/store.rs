//! Buckets and objects on a local directory, keyed by a digest of the object key so
//! that any S3 key (up to 1,024 bytes) fits a file name.
//!
//! ```text
//! <root>/<bucket>/objects/<sha256 of key>   header length (u32 LE), header JSON, data
//! <root>/<bucket>/uploads/<upload id>/key   a multipart upload's key
//! <root>/<bucket>/uploads/<upload id>/<n>   part n's data
//! <root>/<bucket>/tmp/                      files being written
//! ```
//!
//! An object is one file, put in place by `rename` (or `link`, which fails when the
//! name exists: the atomic conditional create of `If-None-Match: *`), so a reader sees
//! a whole object or none. Nothing is fsynced: the server outlives its own process
//! being killed (the tests' outages), not the machine's crash.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// S3's limits: keys up to 1,024 bytes, parts numbered 1 to 10,000.
pub const MAX_KEY_LEN: usize = 1024;
pub const MAX_PART_NUMBER: i32 = 10_000;
/// Longest object header (the key and the ETag, as JSON).
const MAX_HEADER_LEN: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("no such key")]
    NoSuchKey,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("the object exists")]
    Exists,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: String,
    etag: String,
}

/// What a listing or a read says of an object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub etag: String,
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Names of temporary files and upload ids, unique within this process; the
    /// process id keeps them apart from a killed predecessor's leftovers.
    counter: AtomicU64,
}

/// A file being written into `tmp/`, with the MD5 of what was written so far.
pub struct Incoming {
    path: PathBuf,
    file: File,
    md5: Md5,
    len: u64,
}

impl Incoming {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(chunk)?;
        self.md5.update(chunk);
        self.len += chunk.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Put in place by rename or link first, or abandoned: either way the
        // temporary name goes.
        let _ = fs::remove_file(&self.path);
    }
}

/// S3's rules, which also keep a bucket name one path segment that stays in the root.
fn valid_bucket_name(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with('.')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn object_file_name(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn not_found(error: io::Error, missing: StoreError) -> StoreError {
    if error.kind() == io::ErrorKind::NotFound {
        missing
    } else {
        StoreError::Io(error)
    }
}

impl Store {
    pub fn new(root: PathBuf) -> Result<Store, StoreError> {
        fs::create_dir_all(&root)?;
        Ok(Store {
            root,
            counter: AtomicU64::new(0),
        })
    }

    fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", std::process::id())
    }

    /// The bucket's directory, which must exist. Bucket names are S3's (lowercase
    /// letters, digits, '.', '-'), so one is never a path of several segments.
    fn bucket(&self, bucket: &str) -> Result<PathBuf, StoreError> {
        let dir = self.root.join(bucket);
        if !valid_bucket_name(bucket) || !dir.is_dir() {
            return Err(StoreError::NoSuchBucket);
        }
        Ok(dir)
    }

    pub fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        if !valid_bucket_name(bucket) {
            return Err(StoreError::Invalid(format!(
                "invalid bucket name {bucket:?}"
            )));
        }
        fs::create_dir_all(self.root.join(bucket))?;
        Ok(())
    }

    fn check_key(key: &str) -> Result<(), StoreError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(StoreError::Invalid(format!(
                "keys are 1 to {MAX_KEY_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// A new temporary file of `bucket`, to fill and then commit.
    pub fn incoming(&self, bucket: &str) -> Result<Incoming, StoreError> {
        let tmp = self.bucket(bucket)?.join("tmp");
        fs::create_dir_all(&tmp)?;
        let path = tmp.join(self.unique());
        // Read back when framed into an object.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Incoming {
            path,
            file,
            md5: Md5::new(),
            len: 0,
        })
    }

    /// Makes `data` the object `key`; with `if_absent`, only when there is none.
    /// Returns the ETag: the MD5 of the data, or `etag` when given (multipart).
    fn commit(
        &self,
        bucket: &str,
        key: &str,
        mut data: Incoming,
        etag: Option<String>,
        if_absent: bool,
    ) -> Result<String, StoreError> {
        Self::check_key(key)?;
        let etag = etag.unwrap_or_else(|| hex(&data.md5.clone().finalize()));
        let header = serde_json::to_vec(&Header {
            key: key.to_string(),
            etag: etag.clone(),
        })
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let header_len = u32::try_from(header.len())
            .ok()
            .filter(|n| *n <= MAX_HEADER_LEN)
            .ok_or_else(|| StoreError::Invalid("object header too long".into()))?;
        // The header goes in front of the data: written to a second file, then the
        // data copied after it (objects here are test-sized).
        let mut framed = self.incoming(bucket)?;
        framed.file.write_all(&header_len.to_le_bytes())?;
        framed.file.write_all(&header)?;
        data.file.flush()?;
        data.file.seek(SeekFrom::Start(0))?;
        io::copy(&mut data.file, &mut framed.file)?;
        framed.file.flush()?;
        let objects = self.bucket(bucket)?.join("objects");
        fs::create_dir_all(&objects)?;
        let target = objects.join(object_file_name(key));
        if if_absent {
            fs::hard_link(&framed.path, &target).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    StoreError::Exists
                } else {
                    StoreError::Io(e)
                }
            })?;
        } else {
            fs::rename(&framed.path, &target)?;
        }
        Ok(etag)
    }

    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        data: Incoming,
        if_absent: bool,
    ) -> Result<String, StoreError> {
        self.commit(bucket, key, data, None, if_absent)
    }

    fn open(&self, path: &Path) -> Result<(File, ObjectInfo, u64), StoreError> {
        let mut file = File::open(path).map_err(|e| not_found(e, StoreError::NoSuchKey))?;
        let meta = file.metadata()?;
        let mut len = [0u8; 4];
        file.read_exact(&mut len)?;
        let header_len = u32::from_le_bytes(len);
        if header_len > MAX_HEADER_LEN || u64::from(header_len) + 4 > meta.len() {
            return Err(StoreError::Invalid(format!(
                "corrupt object file {}",
                path.display()
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)?;
        let header: Header = serde_json::from_slice(&header).map_err(|e| {
            StoreError::Invalid(format!("corrupt object file {}: {e}", path.display()))
        })?;
        let offset = 4 + u64::from(header_len);
        let info = ObjectInfo {
            key: header.key,
            etag: header.etag,
            size: meta.len() - offset,
            modified: meta.modified()?,
        };
        Ok((file, info, offset))
    }

    /// The object and the bytes `range` (end exclusive, within the object) of it.
    pub fn get(
        &self,
        bucket: &str,
        key: &str,
        range: impl FnOnce(u64) -> Result<std::ops::Range<u64>, StoreError>,
    ) -> Result<(ObjectInfo, std::ops::Range<u64>, Vec<u8>), StoreError> {
        let path = self
            .bucket(bucket)?
            .join("objects")
            .join(object_file_name(key));
        let (mut file, info, offset) = self.open(&path)?;
        if info.key != key {
            return Err(StoreError::NoSuchKey);
        }
        let range = range(info.size)?;
        file.seek(SeekFrom::Start(offset + range.start))?;
        let mut data = vec![0u8; (range.end - range.start) as usize];
        file.read_exact(&mut data)?;
        Ok((info, range, data))
    }

    /// Deleting what is not there succeeds, as in S3.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let path = self
            .bucket(bucket)?
            .join("objects")
            .join(object_file_name(key));
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Objects whose key starts with `prefix` and sorts after `after`, in key order,
    /// at most `max`; and whether more follow.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<ObjectInfo>, bool), StoreError> {
        let objects = self.bucket(bucket)?.join("objects");
        let entries = match fs::read_dir(&objects) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
            Err(e) => return Err(e.into()),
        };
        let mut found = Vec::new();
        for entry in entries {
            // An object deleted since the directory was read is simply not listed.
            let info = match self.open(&entry?.path()) {
                Ok((_, info, _)) => info,
                Err(StoreError::NoSuchKey) => continue,
                Err(e) => return Err(e),
            };
            if info.key.starts_with(prefix) && after.is_none_or(|a| info.key.as_str() > a) {
                found.push(info);
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        let truncated = found.len() > max;
        found.truncate(max);
        Ok((found, truncated))
    }

    fn upload_dir(&self, bucket: &str, upload_id: &str) -> Result<PathBuf, StoreError> {
        if upload_id.is_empty()
            || !upload_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(StoreError::NoSuchUpload);
        }
        let dir = self.bucket(bucket)?.join("uploads").join(upload_id);
        if !dir.is_dir() {
            return Err(StoreError::NoSuchUpload);
        }
        Ok(dir)
    }

    pub fn create_upload(&self, bucket: &str, key: &str) -> Result<String, StoreError> {
        Self::check_key(key)?;
        let id = self.unique();
        let dir = self.bucket(bucket)?.join("uploads").join(&id);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("key"), key)?;
        Ok(id)
    }

    fn upload_key(dir: &Path, key: &str) -> Result<(), StoreError> {
        if fs::read_to_string(dir.join("key"))? != key {
            return Err(StoreError::NoSuchUpload);
        }
        Ok(())
    }

    /// Stores part `number` of the upload; returns its ETag (the MD5 of its data).
    pub fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Incoming,
    ) -> Result<String, StoreError> {
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(StoreError::Invalid(format!(
                "part numbers are 1 to {MAX_PART_NUMBER}"
            )));
        }
        let dir = self.upload_dir(bucket, upload_id)?;
        Self::upload_key(&dir, key)?;
        let digest = data.md5.clone().finalize();
        fs::rename(&data.path, dir.join(number.to_string()))?;
        Ok(hex(&digest))
    }

    /// Joins the listed parts, in ascending order with the ETags they were given, into
    /// the object. The ETag is S3's: the MD5 of the parts' MD5s, a dash, their count.
    pub fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
        if_absent: bool,
    ) -> Result<String, StoreError> {
        let dir = self.upload_dir(bucket, upload_id)?;
        Self::upload_key(&dir, key)?;
        if parts.is_empty() || parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(StoreError::Invalid(
                "parts must be listed in ascending order, at least one".into(),
            ));
        }
        let mut object = self.incoming(bucket)?;
        let mut md5s = Md5::new();
        for (number, etag) in parts {
            let mut part = File::open(dir.join(number.to_string())).map_err(|e| {
                not_found(
                    e,
                    StoreError::Invalid(format!("part {number} was not uploaded")),
                )
            })?;
            let mut data = Vec::new();
            part.read_to_end(&mut data)?;
            let digest = Md5::digest(&data);
            if hex(&digest) != etag.trim_matches('"') {
                return Err(StoreError::Invalid(format!(
                    "part {number}: the ETag does not match the part uploaded"
                )));
            }
            md5s.update(digest);
            object.write(&data)?;
        }
        let etag = format!("{}-{}", hex(&md5s.finalize()), parts.len());
        let etag = self.commit(bucket, key, object, Some(etag), if_absent)?;
        fs::remove_dir_all(dir)?;
        Ok(etag)
    }

    pub fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let dir = self.upload_dir(bucket, upload_id)?;
        Self::upload_key(&dir, key)?;
        fs::remove_dir_all(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn incoming(store: &Store, bytes: &[u8]) -> Incoming {
        let mut data = store.incoming("bucket").unwrap();
        data.write(bytes).unwrap();
        data
    }

    fn read(store: &Store, key: &str) -> Vec<u8> {
        store.get("bucket", key, |size| Ok(0..size)).unwrap().2
    }

    #[test]
    fn objects_round_trip_list_in_pages_and_create_once() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_owned()).unwrap();
        assert!(matches!(
            store.incoming("bucket"),
            Err(StoreError::NoSuchBucket)
        ));
        assert!(store.create_bucket("../escape").is_err());
        assert!(!root.path().parent().unwrap().join("escape").exists());
        store.create_bucket("bucket").unwrap();

        let long = "k".repeat(MAX_KEY_LEN);
        for key in ["a/1", "a/2", "a/3", "b/1", long.as_str()] {
            store
                .put("bucket", key, incoming(&store, key.as_bytes()), false)
                .unwrap();
        }
        assert_eq!(read(&store, &long), long.as_bytes());
        let (_, range, bytes) = store.get("bucket", "a/2", |_| Ok(1..3)).unwrap();
        assert_eq!((range, bytes), (1..3, b"/2".to_vec()));
        assert!(matches!(
            store.get("bucket", "a/9", |size| Ok(0..size)),
            Err(StoreError::NoSuchKey)
        ));

        let (page, more) = store.list("bucket", "a/", None, 2).unwrap();
        let keys: Vec<_> = page.iter().map(|o| o.key.as_str()).collect();
        assert_eq!((keys, more), (vec!["a/1", "a/2"], true));
        let (page, more) = store.list("bucket", "a/", Some("a/2"), 2).unwrap();
        let keys: Vec<_> = page.iter().map(|o| o.key.as_str()).collect();
        assert_eq!((keys, more), (vec!["a/3"], false));

        assert!(matches!(
            store.put("bucket", "a/1", incoming(&store, b"again"), true),
            Err(StoreError::Exists)
        ));
        assert_eq!(read(&store, "a/1"), b"a/1");
        store.delete("bucket", "a/1").unwrap();
        store.delete("bucket", "a/1").unwrap();
        assert!(store
            .put("bucket", "a/1", incoming(&store, b"new"), true)
            .is_ok());
        assert_eq!(read(&store, "a/1"), b"new");
        // Nothing is left behind in tmp/.
        assert_eq!(
            fs::read_dir(root.path().join("bucket/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn multipart_uploads_join_parts_in_order_and_check_their_etags() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_owned()).unwrap();
        store.create_bucket("bucket").unwrap();
        let id = store.create_upload("bucket", "big").unwrap();
        let e2 = store
            .put_part("bucket", "big", &id, 2, incoming(&store, b"world"))
            .unwrap();
        let e1 = store
            .put_part("bucket", "big", &id, 1, incoming(&store, b"hello "))
            .unwrap();
        assert!(store
            .put_part("bucket", "big", &id, 0, incoming(&store, b"x"))
            .is_err());
        assert!(store
            .complete_upload(
                "bucket",
                "big",
                &id,
                &[(2, e2.clone()), (1, e1.clone())],
                false
            )
            .is_err());
        assert!(store
            .complete_upload(
                "bucket",
                "big",
                &id,
                &[(1, e2.clone()), (2, e2.clone())],
                false
            )
            .is_err());
        let etag = store
            .complete_upload("bucket", "big", &id, &[(1, e1), (2, e2)], false)
            .unwrap();
        assert!(etag.ends_with("-2"), "{etag}");
        assert_eq!(read(&store, "big"), b"hello world");
        assert!(matches!(
            store.abort_upload("bucket", "big", &id),
            Err(StoreError::NoSuchUpload)
        ));
        assert!(matches!(
            store.abort_upload("bucket", "big", "../x"),
            Err(StoreError::NoSuchUpload)
        ));
    }
}
