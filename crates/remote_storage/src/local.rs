//! The local-directory backend: object `a/b/c` is the file `<root>/a/b/c`.
//!
//! Writes go to a temporary file beside the target (`.<name>.<n>.tmp`, never listed),
//! which is fsynced and renamed over the target, then the directory is fsynced: a
//! crash leaves the old object or the new one, never a torn one, and an acknowledged
//! write survives power loss. `put_if_absent` hard-links the temporary file to the
//! target instead of renaming, which fails atomically if the target exists.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::RemoteError;
use crate::layout::RemotePath;
use crate::limits::MAX_GET_BYTES;
use crate::{ObjectMeta, RemoteStorage};

const TMP_SUFFIX: &str = ".tmp";

#[derive(Debug, Clone)]
pub struct LocalFs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Makes temporary names unique among concurrent writers of one object.
    next_tmp: AtomicU64,
}

fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RemoteError {
    let path = path.to_path_buf();
    move |source| RemoteError::Io {
        context,
        path,
        source,
    }
}

impl LocalFs {
    /// The store rooted at `root`, created (durably) if missing.
    pub fn open(root: &Path) -> Result<LocalFs, RemoteError> {
        create_dir_all_durable(root)?;
        Ok(LocalFs {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                next_tmp: AtomicU64::new(0),
            }),
        })
    }

    fn file(&self, path: &RemotePath) -> PathBuf {
        self.inner.root.join(path.as_str())
    }

    fn tmp_for(&self, target: &Path) -> PathBuf {
        let n = self.inner.next_tmp.fetch_add(1, Ordering::Relaxed);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        target.with_file_name(format!(".{name}.{}.{n}{TMP_SUFFIX}", std::process::id()))
    }

    fn not_found(&self, path: &RemotePath) -> RemoteError {
        RemoteError::NotFound {
            store: self.describe(),
            path: path.to_string(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(LocalFs) -> Result<T, RemoteError> + Send + 'static,
    ) -> Result<T, RemoteError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this))
            .await
            .map_err(|e| RemoteError::Io {
                context: "local object store task",
                path: self.inner.root.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// Write a durable temporary file beside `target` with `fill`, then `publish` it.
    fn write_via_tmp(
        &self,
        target: &Path,
        fill: impl FnOnce(&mut File) -> std::io::Result<u64>,
        publish: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
    ) -> Result<u64, RemoteError> {
        let dir = target.parent().unwrap_or(&self.inner.root).to_path_buf();
        create_dir_all_durable(&dir)?;
        let tmp = self.tmp_for(target);
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
            let n = fill(&mut file).map_err(io("write", &tmp))?;
            // The data must be on disk before the name points at it.
            file.sync_all().map_err(io("fsync", &tmp))?;
            publish(&tmp, target).map_err(io("publish", target))?;
            Ok(n)
        })();
        let _ = fs::remove_file(&tmp);
        let n = result?;
        // The new name must survive a crash too.
        sync_dir(&dir)?;
        Ok(n)
    }
}

fn sync_dir(dir: &Path) -> Result<(), RemoteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

fn create_dir_all_durable(dir: &Path) -> Result<(), RemoteError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io("create directory", dir)(e)),
    }
    // The new entry is in the parent: sync it so the directory outlives a crash.
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

fn is_tmp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TMP_SUFFIX)
}

#[async_trait::async_trait]
impl RemoteStorage for LocalFs {
    async fn put(&self, path: &RemotePath, data: Bytes) -> Result<(), RemoteError> {
        let target = self.file(path);
        self.blocking(move |this| {
            this.write_via_tmp(
                &target,
                |f| f.write_all(&data).map(|()| data.len() as u64),
                |tmp, target| fs::rename(tmp, target),
            )
            .map(drop)
        })
        .await
    }

    async fn put_file(&self, path: &RemotePath, src: &Path) -> Result<u64, RemoteError> {
        let target = self.file(path);
        let src = src.to_path_buf();
        self.blocking(move |this| {
            let mut input = File::open(&src).map_err(io("open", &src))?;
            this.write_via_tmp(
                &target,
                |f| std::io::copy(&mut input, f),
                |tmp, target| fs::rename(tmp, target),
            )
        })
        .await
    }

    async fn put_if_absent(&self, path: &RemotePath, data: Bytes) -> Result<bool, RemoteError> {
        let target = self.file(path);
        self.blocking(move |this| {
            let result = this.write_via_tmp(
                &target,
                |f| f.write_all(&data).map(|()| data.len() as u64),
                |tmp, target| fs::hard_link(tmp, target),
            );
            match result {
                Ok(_) => Ok(true),
                Err(RemoteError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn get(&self, path: &RemotePath) -> Result<Bytes, RemoteError> {
        let file = self.file(path);
        let path = path.clone();
        self.blocking(move |this| {
            let mut f = match File::open(&file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(this.not_found(&path))
                }
                Err(e) => return Err(io("open", &file)(e)),
            };
            let len = f.metadata().map_err(io("stat", &file))?.len();
            if len > MAX_GET_BYTES {
                return Err(RemoteError::BadObject {
                    store: this.describe(),
                    path: path.to_string(),
                    reason: format!("{len} bytes is more than a whole get returns"),
                });
            }
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf).map_err(io("read", &file))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn get_range(
        &self,
        path: &RemotePath,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, RemoteError> {
        let file = self.file(path);
        let path = path.clone();
        self.blocking(move |this| {
            let mut f = match File::open(&file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(this.not_found(&path))
                }
                Err(e) => return Err(io("open", &file)(e)),
            };
            let size = f.metadata().map_err(io("stat", &file))?.len();
            if offset.checked_add(len).is_none_or(|end| end > size) || len > MAX_GET_BYTES {
                return Err(RemoteError::BadObject {
                    store: this.describe(),
                    path: path.to_string(),
                    reason: format!("range {offset}+{len} is outside its {size} bytes"),
                });
            }
            f.seek(SeekFrom::Start(offset)).map_err(io("seek", &file))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf).map_err(io("read", &file))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn download_to_file(&self, path: &RemotePath, dest: &Path) -> Result<u64, RemoteError> {
        let file = self.file(path);
        let dest = dest.to_path_buf();
        let path = path.clone();
        self.blocking(move |this| {
            let mut input = match File::open(&file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(this.not_found(&path))
                }
                Err(e) => return Err(io("open", &file)(e)),
            };
            this.write_via_tmp(
                &dest,
                |f| std::io::copy(&mut input, f),
                |tmp, target| fs::rename(tmp, target),
            )
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, RemoteError> {
        let prefix = prefix.to_string();
        self.blocking(move |this| {
            // Only the directory the prefix ends in (and below) can hold matches.
            let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
            let mut out = Vec::new();
            let start = this.inner.root.join(dir_part);
            walk(&this.inner.root, &start, &prefix, &mut out)?;
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, path: &RemotePath) -> Result<(), RemoteError> {
        let file = self.file(path);
        self.blocking(move |_| {
            match fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io("remove", &file)(e)),
            }
            // A deletion the caller was told about stays deleted.
            sync_dir(file.parent().unwrap_or(Path::new("/")))
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.inner.root.display())
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> Result<(), RemoteError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("list", dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io("stat", &path))?;
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let Some(name) = relative.to_str() else {
            continue;
        };
        if file_type.is_dir() {
            let as_dir = format!("{name}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, out)?;
            }
        } else if file_type.is_file()
            && name.starts_with(prefix)
            && !is_tmp(path.file_name().and_then(|n| n.to_str()).unwrap_or(""))
        {
            // Files that are not valid object names were not written through this
            // store; they are not objects.
            if let Ok(object) = RemotePath::new(name) {
                let size = entry.metadata().map_err(io("stat", &path))?.len();
                out.push(ObjectMeta { path: object, size });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RemotePath {
        RemotePath::new(s).unwrap()
    }

    #[tokio::test]
    async fn objects_round_trip_list_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFs::open(&dir.path().join("root")).unwrap();
        store
            .put(&p("a/b/one"), Bytes::from_static(b"hello"))
            .await
            .unwrap();
        store
            .put(&p("a/b/one"), Bytes::from_static(b"world!"))
            .await
            .unwrap();
        store
            .put(&p("a/c"), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(store.get(&p("a/b/one")).await.unwrap(), "world!");
        assert_eq!(store.get_range(&p("a/b/one"), 1, 3).await.unwrap(), "orl");
        assert!(store.get_range(&p("a/b/one"), 4, 3).await.is_err());
        assert!(store.get(&p("a/none")).await.unwrap_err().is_not_found());
        let names = |l: Vec<ObjectMeta>| {
            l.into_iter()
                .map(|o| o.path.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(store.list("a/").await.unwrap()), ["a/b/one", "a/c"]);
        assert_eq!(names(store.list("a/b/o").await.unwrap()), ["a/b/one"]);
        assert_eq!(names(store.list("z").await.unwrap()), Vec::<String>::new());
        assert!(store
            .put_if_absent(&p("a/claim"), Bytes::from_static(b"1"))
            .await
            .unwrap());
        assert!(!store
            .put_if_absent(&p("a/claim"), Bytes::from_static(b"2"))
            .await
            .unwrap());
        assert_eq!(store.get(&p("a/claim")).await.unwrap(), "1");
        let src = dir.path().join("src");
        fs::write(&src, vec![7u8; 100_000]).unwrap();
        assert_eq!(store.put_file(&p("big"), &src).await.unwrap(), 100_000);
        let dest = dir.path().join("dl/big");
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        assert_eq!(
            store.download_to_file(&p("big"), &dest).await.unwrap(),
            100_000
        );
        assert_eq!(fs::read(&dest).unwrap(), vec![7u8; 100_000]);
        store.delete(&p("a/c")).await.unwrap();
        store.delete(&p("a/c")).await.unwrap();
        assert_eq!(
            names(store.list("").await.unwrap()),
            ["a/b/one", "a/claim", "big"]
        );
    }
}
