//! Local disk as a cache of layer files: eviction, fetching (one fetch for concurrent
//! readers, damaged or failed fetches), restoring a store from remote layers alone.
//! "Remote" is a directory the test fetcher copies from, as object storage would serve.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::*;
use crate::format::FOOTER_LEN;
use crate::layer::IfRemote;
use crate::LayerFetcher;

/// How the test fetcher damages what it delivers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Damage {
    /// XOR one byte at this offset.
    Flip(usize),
    /// Drop the last byte.
    Truncate,
    /// Append a byte.
    Extend,
}

/// Copies layer files from a "remote" directory, atomically and durably like a real
/// fetcher (temporary file in `dest`'s directory, fsync, rename, directory fsync); can
/// damage what it delivers, fail, panic, or hold every fetch until released.
#[derive(Debug)]
pub(super) struct DirFetcher {
    remote: PathBuf,
    calls: AtomicU64,
    damage: Mutex<Option<Damage>>,
    fail: AtomicBool,
    panic: AtomicBool,
    gate_closed: Mutex<bool>,
    gate: Condvar,
}

impl DirFetcher {
    pub(super) fn new(remote: &Path) -> Arc<DirFetcher> {
        Arc::new(DirFetcher {
            remote: remote.to_path_buf(),
            calls: AtomicU64::new(0),
            damage: Mutex::new(None),
            fail: AtomicBool::new(false),
            panic: AtomicBool::new(false),
            gate_closed: Mutex::new(false),
            gate: Condvar::new(),
        })
    }

    pub(super) fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn set_damage(&self, damage: Option<Damage>) {
        *self.damage.lock().unwrap() = damage;
    }

    fn set_gate(&self, closed: bool) {
        *self.gate_closed.lock().unwrap() = closed;
        self.gate.notify_all();
    }
}

impl LayerFetcher for DirFetcher {
    fn fetch(&self, layer_name: &str, size_bytes: u64, dest: &Path) -> std::io::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.gate_closed.lock().unwrap();
        while *closed {
            closed = self.gate.wait(closed).unwrap();
        }
        drop(closed);
        assert!(!self.panic.load(Ordering::SeqCst), "injected fetcher panic");
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "remote unavailable",
            ));
        }
        let mut bytes = fs::read(self.remote.join(layer_name))?;
        if bytes.len() as u64 != size_bytes {
            return Err(std::io::Error::other("remote object has another size"));
        }
        match *self.damage.lock().unwrap() {
            Some(Damage::Flip(at)) => bytes[at] ^= 0x10,
            Some(Damage::Truncate) => {
                bytes.pop();
            }
            Some(Damage::Extend) => bytes.push(0),
            None => {}
        }
        let tmp = dest.with_file_name(format!(".{layer_name}.fetch.tmp"));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dest)?;
        fs::File::open(dest.parent().unwrap())?.sync_all()
    }
}

/// Copies every resident layer file of `store` that `remote` lacks, as an upload would.
pub(super) fn upload(store: &LayerStore, remote: &Path) {
    for r in store.residency().into_iter().filter(|r| r.resident) {
        let target = remote.join(&r.info.name);
        if !target.exists() {
            fs::copy(store.layer_path(&r.info.name), target).unwrap();
        }
    }
}

/// `history()` in three delta layers, an image layer at 55 of keys 1 and 3 (key 2 lies
/// in its key range but not in it), and a delta layer of key 1 at 60; the open layer is
/// empty and the meta blob is `meta`.
fn layered_store(dir: &Path) -> LayerStore {
    let store = open(dir);
    for (i, e) in history().into_iter().enumerate() {
        store.put_batch(&[e], b"meta").unwrap();
        if i % 2 == 1 {
            store.freeze(true).unwrap().unwrap();
        }
    }
    let image = [
        (key(1), value(1, 55).to_vec()),
        (key(3), value(3, 55).to_vec()),
    ];
    store.write_image_layer(55, image.into_iter()).unwrap();
    store.put_batch(&[entry(1, 60, false)], b"meta").unwrap();
    store.freeze(true).unwrap().unwrap();
    assert_eq!(store.layer_count(), 5);
    assert_eq!(store.open_layer_bytes(), 0);
    store
}

/// The answers of many reads, to compare two stores (or one store before and after).
fn probe(store: &LayerStore) -> Vec<Vec<Version>> {
    let mut out = Vec::new();
    for k in 0..4 {
        for at in [0, 9, 10, 15, 25, 39, 40, 45, 50, 55, 59, 60, MAX_LSN] {
            for since in [0, 20, 55] {
                out.push(store.versions(&key(k), since, at).unwrap());
            }
        }
    }
    out
}

/// The store holding `history()` in one layer, uploaded and evicted, with a fetcher.
fn evicted_history(dir: &Path, remote: &Path) -> (LayerStore, Arc<DirFetcher>, String) {
    let store = open(dir);
    store.put_batch(&history(), b"").unwrap();
    let name = store.freeze(true).unwrap().unwrap().name;
    upload(&store, remote);
    assert!(store.evict(&name).unwrap());
    let fetcher = DirFetcher::new(remote);
    store.set_fetcher(fetcher.clone());
    (store, fetcher, name)
}

fn not_resident<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotResident { .. }))
}

#[test]
fn evicted_layers_read_back_identically() {
    let (dir, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = layered_store(dir.path());
    upload(&store, remote.path());
    let before = probe(&store);
    let fetcher = DirFetcher::new(remote.path());
    store.set_fetcher(fetcher.clone());
    assert_eq!(store.resident_bytes(), store.layer_bytes());
    for info in store.layers() {
        assert!(store.evict(&info.name).unwrap());
        assert!(!store.layer_path(&info.name).exists());
        assert!(!store.evict(&info.name).unwrap(), "already evicted");
    }
    assert_eq!(store.resident_bytes(), 0);
    assert!(store.residency().iter().all(|r| !r.resident));
    assert_eq!(probe(&store), before);
    assert_eq!(
        fetcher.calls(),
        store.layer_count() as u64,
        "one fetch per layer"
    );
    assert_eq!(store.resident_bytes(), store.layer_bytes());
    assert!(matches!(
        store.evict("delta__nonsense"),
        Err(StoreError::Invalid(_))
    ));

    // Evicted, then reopened: open succeeds, reads need the fetcher again.
    for info in store.layers() {
        assert!(store.evict(&info.name).unwrap());
    }
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.resident_bytes(), 0);
    assert!(not_resident(&store.versions(&key(1), 0, MAX_LSN)));
    store.set_fetcher(DirFetcher::new(remote.path()));
    assert_eq!(probe(&store), before);
}

#[test]
fn a_layer_being_read_is_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_batch(&history(), b"").unwrap();
    let name = store.freeze(true).unwrap().unwrap().name;
    let reader = store.layer(&name).reader(IfRemote::Skip).unwrap().unwrap();
    assert!(!store.evict(&name).unwrap());
    assert!(store.layer_path(&name).exists());
    drop(reader);
    assert!(store.evict(&name).unwrap());
    assert!(!store.layer_path(&name).exists());
}

#[test]
fn a_store_restored_from_remote_layers_reads_like_the_original() {
    let (dir, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let original = layered_store(&dir.path().join("original"));
    upload(&original, remote.path());
    let expected = probe(&original);
    let layers: Vec<(String, u64)> = original
        .layers()
        .into_iter()
        .map(|l| (l.name, l.size_bytes))
        .collect();
    let restored_dir = dir.path().join("restored");
    let config = StoreConfig::default();
    let restored =
        LayerStore::create_from_layers(&restored_dir, config.clone(), &layers, b"meta").unwrap();
    assert_eq!(restored.meta().unwrap().as_deref(), Some(&b"meta"[..]));
    assert_eq!(restored.layers(), original.layers());
    assert_eq!(restored.resident_bytes(), 0);
    assert!(not_resident(&restored.versions(&key(1), 0, MAX_LSN)));
    restored.set_fetcher(DirFetcher::new(remote.path()));
    assert_eq!(probe(&restored), expected);
    drop(restored);
    let restored = LayerStore::open(&restored_dir, config.clone()).unwrap();
    assert_eq!(restored.layers(), original.layers());
    assert_eq!(restored.meta().unwrap().as_deref(), Some(&b"meta"[..]));
    assert_eq!(restored.resident_bytes(), restored.layer_bytes());
    assert_eq!(probe(&restored), expected, "every layer is local now");

    let create = |dir: &Path, layers: &[(String, u64)]| {
        LayerStore::create_from_layers(dir, config.clone(), layers, b"m")
    };
    let invalid = |r: Result<LayerStore, StoreError>| matches!(r, Err(StoreError::Invalid(_)));
    assert!(invalid(create(&restored_dir, &layers)), "not empty");
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let twice = [layers[0].clone(), layers[0].clone()];
    assert!(invalid(create(&empty, &twice)));
    assert!(invalid(create(&empty, &[("layer".into(), 1000)])));
    assert!(invalid(create(&empty, &[(layers[0].0.clone(), 10)])));
    let store = create(&empty, &[]).unwrap();
    assert_eq!(store.layer_count(), 0);
    assert_eq!(store.meta().unwrap().as_deref(), Some(&b"m"[..]));
}

#[test]
fn a_damaged_fetch_is_corrupt_and_a_later_good_fetch_works() {
    let (dir, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, fetcher, name) = evicted_history(dir.path(), remote.path());
    let len = store.layers()[0].size_bytes as usize;
    let damages = [
        Damage::Flip(3),                     // the first blob
        Damage::Flip(len / 3),               // another blob
        Damage::Flip(len - FOOTER_LEN - 10), // the index
        Damage::Flip(len - 1),               // the footer's magic
        Damage::Truncate,
        Damage::Extend,
    ];
    for damage in damages {
        fetcher.set_damage(Some(damage));
        let r = store.versions(&key(2), 0, MAX_LSN);
        assert!(is_corrupt(&r), "{damage:?}: {r:?}");
        assert!(!store.layer_path(&name).exists(), "{damage:?}: kept");
        assert_eq!(layer_file_names(&store), Vec::<String>::new());
        assert_eq!(store.resident_bytes(), 0);
    }
    fetcher.set_damage(None);
    check_history(&store);
    assert_eq!(fetcher.calls(), damages.len() as u64 + 1);
    assert_eq!(store.resident_bytes(), store.layer_bytes());
}

#[test]
fn a_failed_fetch_is_an_error_and_the_layer_stays_remote() {
    let (dir, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, fetcher, name) = evicted_history(dir.path(), remote.path());
    fetcher.fail.store(true, Ordering::SeqCst);
    let r = store.versions(&key(1), 0, MAX_LSN);
    assert!(matches!(r, Err(StoreError::Fetch { .. })), "{r:?}");
    assert!(!store.layer_path(&name).exists());
    fetcher.fail.store(false, Ordering::SeqCst);

    // A fetcher that panics ends its fetch all the same: the next read fetches again.
    fetcher.panic.store(true, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.versions(&key(1), 0, MAX_LSN)
    }));
    assert!(r.is_err());
    fetcher.panic.store(false, Ordering::SeqCst);
    check_history(&store);
    assert_eq!(fetcher.calls(), 3);
}

/// Starts `n` readers of key 1 while the fetcher holds every fetch, waits until one is
/// fetching and the others wait for it, releases the fetch, and returns the results.
fn read_during_one_fetch(
    store: &Arc<LayerStore>,
    fetcher: &DirFetcher,
    name: &str,
    n: usize,
) -> Vec<Result<Vec<Version>, StoreError>> {
    fetcher.set_gate(true);
    let calls = fetcher.calls();
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || store.versions(&key(1), 0, MAX_LSN))
        })
        .collect();
    let layer = store.layer(name);
    while fetcher.calls() == calls || layer.readers_waiting_for_fetch() < n - 1 {
        std::thread::yield_now();
    }
    fetcher.set_gate(false);
    readers.into_iter().map(|r| r.join().unwrap()).collect()
}

#[test]
fn concurrent_reads_of_an_evicted_layer_fetch_once() {
    const READERS: usize = 4;
    let (dir, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, fetcher, name) = evicted_history(dir.path(), remote.path());
    let store = Arc::new(store);
    let expected = store_versions_of_key_1();

    // A failed fetch fails every reader that waited for it, with one call.
    fetcher.fail.store(true, Ordering::SeqCst);
    for r in read_during_one_fetch(&store, &fetcher, &name, READERS) {
        assert!(matches!(r, Err(StoreError::Fetch { .. })), "{r:?}");
    }
    assert_eq!(fetcher.calls(), 1);

    fetcher.fail.store(false, Ordering::SeqCst);
    for r in read_during_one_fetch(&store, &fetcher, &name, READERS) {
        assert_eq!(r.unwrap(), expected);
    }
    assert_eq!(fetcher.calls(), 2);
}

fn store_versions_of_key_1() -> Vec<Version> {
    [50u64, 40]
        .into_iter()
        .map(|lsn| Version {
            lsn,
            will_init: lsn == 40,
            value: value(1, lsn),
        })
        .collect()
}

#[test]
fn a_leftover_fetch_temporary_file_is_removed_on_open() {
    let (dir, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, _, name) = evicted_history(dir.path(), remote.path());
    // What a fetch interrupted by a crash leaves: a partial temporary file.
    let partial = fs::read(remote.path().join(&name)).unwrap();
    let tmp = store.layers_dir().join(format!(".{name}.fetch.tmp"));
    fs::write(&tmp, &partial[..partial.len() / 2]).unwrap();
    drop(store);
    let store = open(dir.path());
    assert!(!tmp.exists());
    assert_eq!(layer_file_names(&store), Vec::<String>::new());
    assert_eq!(store.resident_bytes(), 0);
    store.set_fetcher(DirFetcher::new(remote.path()));
    check_history(&store);
}

#[test]
fn residency_reports_local_layers_and_when_they_were_read() {
    let dir = tempfile::tempdir().unwrap();
    drop(layered_store(dir.path()));
    let store = open(dir.path());
    let opened = store.residency();
    assert!(opened.iter().all(|r| r.resident));
    assert_eq!(store.resident_bytes(), store.layer_bytes());
    let first_read = opened[0].last_read;
    assert!(
        opened.iter().all(|r| r.last_read == first_read),
        "never read since open: the open time"
    );
    let before_read = Instant::now();
    // Key 3 is only in the image layer.
    check(&store, 3, 0, MAX_LSN, &[(55, true)]);
    for r in store.residency() {
        if r.info.kind == LayerKind::Image {
            assert!(r.last_read >= before_read, "{}", r.info.name);
        } else {
            assert!(r.last_read < before_read, "{}", r.info.name);
        }
    }
}

/// Entries put again after their layer was evicted: `open` (which has no fetcher)
/// keeps them, reads return each version once, and a freeze fetches the layer to see
/// that it holds them.
#[test]
fn entries_held_by_an_evicted_layer_are_dropped_by_the_next_freeze() {
    let (dir, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, _, _) = evicted_history(dir.path(), remote.path());
    store.put_batch(&history(), b"").unwrap();
    drop(store);
    let store = open(dir.path());
    assert!(store.open_layer_bytes() > 0);
    assert!(not_resident(&store.freeze(true)));
    let fetcher = DirFetcher::new(remote.path());
    store.set_fetcher(fetcher.clone());
    assert_eq!(store.freeze(true).unwrap(), None, "all held already");
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(store.open_layer_bytes(), 0);
    assert_eq!(store.layer_count(), 1);
    check_history(&store);
}
