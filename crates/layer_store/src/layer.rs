//! One layer of the layer map: whether its file is on local disk, bringing it back
//! through the [`LayerFetcher`] when a read needs it, evicting it, and its index, loaded
//! on first use and then kept in memory.
//!
//! Residency is a small state machine under the layer's mutex:
//!
//! ```text
//! Local(index not loaded) --read--> Local(reader)
//! Local(_) --evict--> Remote --read--> Fetching --ok--> Local(reader)
//!                                               --error--> Remote
//! ```
//!
//! The fetch itself runs without the mutex held; readers that find `Fetching` wait on
//! the condition variable for that one fetch and share its outcome, so N concurrent
//! readers cause one fetch, not N.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::durable::io_err;
use crate::format::{corrupt, LayerReader, FOOTER_LEN};
use crate::limits::KEY_LEN;
use crate::name::NameParts;
use crate::{LayerFetcher, LayerInfo, StoreError};

/// Our critical sections leave no half-updated state, so a poisoned lock is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A layer file in the map.
#[derive(Debug)]
pub(crate) struct Layer {
    pub info: LayerInfo,
    /// Where its file is (or goes) on local disk.
    pub path: PathBuf,
    state: Mutex<State>,
    /// Signalled when a fetch ends.
    fetch_done: Condvar,
    /// When it was last read, in nanoseconds after the store's `opened` instant: one
    /// atomic store per read, cheap enough for the read path.
    last_read_ns: AtomicU64,
}

#[derive(Debug)]
struct State {
    residency: Residency,
    /// Fetches that ended, so that a reader that waited for one can tell it ended.
    fetches_ended: u64,
    /// Why the last fetch failed, for the readers that waited for it.
    last_failure: Option<StoreError>,
    /// Readers waiting for a fetch, for tests that need them all waiting.
    #[cfg(test)]
    waiting: usize,
}

#[derive(Debug)]
enum Residency {
    /// The file is on local disk; the reader (with the index) once loaded.
    Local(Option<Arc<LayerReader>>),
    /// The file is only in object storage.
    Remote,
    /// A reader is fetching it; others wait for that fetch.
    Fetching,
}

/// What a reader does when the layer's file is not on local disk.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IfRemote<'a> {
    /// Fetch it (without a fetcher, the read fails with `NotResident`).
    Fetch(Option<&'a dyn LayerFetcher>),
    /// Do not fetch: the answer is `None`.
    Skip,
}

impl Layer {
    pub(crate) fn new(info: LayerInfo, path: PathBuf, resident: bool, last_read_ns: u64) -> Layer {
        let residency = if resident {
            Residency::Local(None)
        } else {
            Residency::Remote
        };
        Layer {
            info,
            path,
            state: Mutex::new(State {
                residency,
                fetches_ended: 0,
                last_failure: None,
                #[cfg(test)]
                waiting: 0,
            }),
            fetch_done: Condvar::new(),
            last_read_ns: AtomicU64::new(last_read_ns),
        }
    }

    pub(crate) fn covers(&self, key: &[u8; KEY_LEN], since: u64, at: u64) -> bool {
        let i = &self.info;
        i.key_start <= *key && *key <= i.key_end && i.lsn_start <= at && since <= i.lsn_end
    }

    /// The layer's reader, loading its index or fetching its file as needed. `None` only
    /// with [`IfRemote::Skip`] for a layer whose file is not on local disk.
    pub(crate) fn reader(
        &self,
        if_remote: IfRemote<'_>,
    ) -> Result<Option<Arc<LayerReader>>, StoreError> {
        let mut state = lock(&self.state);
        // The `fetches_ended` count when this reader started waiting for a fetch.
        let mut waited_for: Option<u64> = None;
        loop {
            match (&state.residency, if_remote) {
                (Residency::Local(Some(reader)), _) => return Ok(Some(reader.clone())),
                (Residency::Local(None), _) => {
                    let reader = Arc::new(self.load()?);
                    state.residency = Residency::Local(Some(reader.clone()));
                    return Ok(Some(reader));
                }
                (Residency::Remote | Residency::Fetching, IfRemote::Skip) => return Ok(None),
                (Residency::Fetching, IfRemote::Fetch(_)) => {
                    waited_for.get_or_insert(state.fetches_ended);
                    #[cfg(test)]
                    {
                        state.waiting += 1;
                    }
                    state = self
                        .fetch_done
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    #[cfg(test)]
                    {
                        state.waiting -= 1;
                    }
                }
                (Residency::Remote, IfRemote::Fetch(fetcher)) => {
                    if waited_for.take().is_some_and(|n| n != state.fetches_ended) {
                        // The fetch this reader waited for failed: it shares that
                        // failure rather than trying again at once.
                        if let Some(failure) = &state.last_failure {
                            return Err(copy_error(failure));
                        }
                    }
                    let Some(fetcher) = fetcher else {
                        return Err(StoreError::NotResident {
                            layer: self.info.name.clone(),
                        });
                    };
                    state.residency = Residency::Fetching;
                    drop(state);
                    let fetch = FetchInProgress {
                        layer: self,
                        ended: false,
                    };
                    let outcome = self.fetch(fetcher);
                    fetch.end(&outcome);
                    return outcome.map(Some);
                }
            }
        }
    }

    /// Loads the index of the local file and checks it against the name and the
    /// manifest's size.
    fn load(&self) -> Result<LayerReader, StoreError> {
        let reader = LayerReader::load(&self.path, &self.info.name)?;
        let f = reader.footer();
        let size = f.index_offset + f.index_len + FOOTER_LEN as u64;
        if f.parts != parts_of(&self.info) || size != self.info.size_bytes {
            return Err(corrupt(
                &self.info.name,
                "footer disagrees with the file name or the manifest's size",
            ));
        }
        Ok(reader)
    }

    /// Runs the fetcher, then checks the fetched file like any layer file, and every
    /// blob's checksum on top: damage in transit is caught here, where the file can be
    /// deleted and fetched again, rather than by some later read of a file that would
    /// then stay damaged on local disk. A file that fails is deleted.
    fn fetch(&self, fetcher: &dyn LayerFetcher) -> Result<Arc<LayerReader>, StoreError> {
        let name = &self.info.name;
        let size_bytes = self.info.size_bytes;
        info!(layer = %name, size_bytes, "fetching layer file");
        let outcome = fetcher
            .fetch(name, size_bytes, &self.path)
            .map_err(|source| StoreError::Fetch {
                layer: name.clone(),
                source,
            })
            .and_then(|()| self.check_fetched());
        if let Err(error) = &outcome {
            warn!(layer = %name, %error, "fetch of layer file failed");
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // The layer stays Remote, so this file is never served; the next fetch
                // renames over it.
                Err(e) => warn!(layer = %name, error = %e, "cannot remove a failed fetch"),
            }
        }
        outcome
    }

    fn check_fetched(&self) -> Result<Arc<LayerReader>, StoreError> {
        let actual = fs::metadata(&self.path)
            .map_err(io_err(format!("stat fetched {}", self.path.display())))?
            .len();
        if actual != self.info.size_bytes {
            return Err(corrupt(
                &self.info.name,
                format!(
                    "fetched {actual} bytes, {} in the manifest",
                    self.info.size_bytes
                ),
            ));
        }
        let reader = self.load()?;
        reader.verify_blobs()?;
        Ok(Arc::new(reader))
    }

    /// Removes the local file so that the next read fetches it again. `false` if it is
    /// not on local disk, being fetched, or being read (a reader holds the reader).
    pub(crate) fn evict(&self) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        match &state.residency {
            Residency::Remote | Residency::Fetching => return Ok(false),
            Residency::Local(Some(reader)) if Arc::strong_count(reader) > 1 => return Ok(false),
            Residency::Local(_) => {}
        }
        // The file is removed with the state lock held, so that no reader takes the
        // reader from now on and no fetch of this layer can start before it is gone.
        // The directory is not fsynced: a crash that undoes the unlink leaves the whole
        // file, which `open` finds resident again.
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("remove {}", self.path.display()))(e)),
        }
        state.residency = Residency::Remote;
        Ok(true)
    }

    pub(crate) fn is_resident(&self) -> bool {
        matches!(lock(&self.state).residency, Residency::Local(_))
    }

    pub(crate) fn touch(&self, opened: Instant) {
        self.last_read_ns
            .fetch_max(nanos_since(opened), Ordering::Relaxed);
    }

    pub(crate) fn last_read(&self, opened: Instant) -> Instant {
        opened + Duration::from_nanos(self.last_read_ns.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub(crate) fn readers_waiting_for_fetch(&self) -> usize {
        lock(&self.state).waiting
    }
}

/// Ends a fetch: publishes its outcome to the readers waiting for it. If the fetcher
/// panics, dropping this still ends the fetch, so that waiters are not left waiting.
struct FetchInProgress<'a> {
    layer: &'a Layer,
    ended: bool,
}

impl FetchInProgress<'_> {
    fn end(mut self, outcome: &Result<Arc<LayerReader>, StoreError>) {
        self.publish(outcome);
        self.ended = true;
    }

    fn publish(&self, outcome: &Result<Arc<LayerReader>, StoreError>) {
        let mut state = lock(&self.layer.state);
        state.fetches_ended += 1;
        match outcome {
            Ok(reader) => {
                state.residency = Residency::Local(Some(reader.clone()));
                state.last_failure = None;
            }
            Err(e) => {
                state.residency = Residency::Remote;
                state.last_failure = Some(copy_error(e));
            }
        }
        drop(state);
        self.layer.fetch_done.notify_all();
    }
}

impl Drop for FetchInProgress<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.publish(&Err(StoreError::Fetch {
                layer: self.layer.info.name.clone(),
                source: std::io::Error::other("the fetcher panicked"),
            }));
        }
    }
}

/// The same error for another reader (`std::io::Error` is not `Clone`: kind and
/// message are kept).
fn copy_error(e: &StoreError) -> StoreError {
    let copy_io = |source: &std::io::Error| std::io::Error::new(source.kind(), source.to_string());
    match e {
        StoreError::Io { context, source } => StoreError::Io {
            context: context.clone(),
            source: copy_io(source),
        },
        StoreError::Fetch { layer, source } => StoreError::Fetch {
            layer: layer.clone(),
            source: copy_io(source),
        },
        StoreError::Corrupt { file, reason } => StoreError::Corrupt {
            file: file.clone(),
            reason: reason.clone(),
        },
        StoreError::NotResident { layer } => StoreError::NotResident {
            layer: layer.clone(),
        },
        StoreError::Invalid(reason) => StoreError::Invalid(reason.clone()),
        StoreError::RocksDb(e) => StoreError::Io {
            context: "RocksDB".into(),
            source: std::io::Error::other(e.to_string()),
        },
    }
}

/// Nanoseconds from `opened` to now (saturating: u64 nanoseconds last 584 years).
pub(crate) fn nanos_since(opened: Instant) -> u64 {
    u64::try_from(opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn parts_of(i: &LayerInfo) -> NameParts {
    NameParts {
        kind: i.kind,
        key_start: i.key_start,
        key_end: i.key_end,
        lsn_start: i.lsn_start,
        lsn_end: i.lsn_end,
    }
}
