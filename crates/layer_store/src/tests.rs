//! Tests of the store through its API, including crash points and damaged files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use crate::store::FailPoint;
use crate::{Entry, LayerKind, LayerStore, StoreConfig, StoreError, Version, KEY_LEN};

mod residency;

const MAX_LSN: u64 = u64::MAX;

fn key(n: u16) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[0] = 0x01;
    k[KEY_LEN - 2..].copy_from_slice(&n.to_be_bytes());
    k
}

fn value(k: u16, lsn: u64) -> Bytes {
    // Repetitive enough that lz4 compresses some values, not all.
    let len = (lsn as usize * 37 + k as usize) % 300;
    Bytes::from(format!("{k}@{lsn};").repeat(len / 8 + 1))
}

fn entry(k: u16, lsn: u64, will_init: bool) -> Entry {
    Entry {
        key: key(k),
        lsn,
        will_init,
        value: value(k, lsn),
    }
}

fn open(dir: &Path) -> LayerStore {
    LayerStore::open(dir, StoreConfig::default()).unwrap()
}

/// (lsn, will_init) pairs of `versions`, checking every value's bytes on the way.
fn check(store: &LayerStore, k: u16, since: u64, at: u64, expected: &[(u64, bool)]) {
    let got = store.versions(&key(k), since, at).unwrap();
    let got_pairs: Vec<(u64, bool)> = got.iter().map(|v| (v.lsn, v.will_init)).collect();
    assert_eq!(got_pairs, expected, "key {k} since {since} at {at}");
    for v in got {
        assert_eq!(v.value, value(k, v.lsn), "key {k} lsn {}", v.lsn);
    }
}

/// Key 1: image at 10, deltas 20 and 30, image at 40, delta at 50.
/// Key 2: delta at 15 only (no image). Key 3: nothing.
fn history() -> Vec<Entry> {
    vec![
        entry(1, 10, true),
        entry(1, 20, false),
        entry(1, 30, false),
        entry(1, 40, true),
        entry(1, 50, false),
        entry(2, 15, false),
    ]
}

fn check_history(store: &LayerStore) {
    check(store, 1, 0, MAX_LSN, &[(50, false), (40, true)]);
    check(store, 1, 0, 40, &[(40, true)]);
    check(store, 1, 0, 39, &[(30, false), (20, false), (10, true)]);
    check(store, 1, 15, 35, &[(30, false), (20, false)]);
    check(store, 1, 25, 25, &[]);
    check(store, 1, 0, 9, &[]);
    check(store, 1, 50, 40, &[]);
    check(store, 2, 0, MAX_LSN, &[(15, false)]);
    check(store, 3, 0, MAX_LSN, &[]);
}

fn layer_file_names(store: &LayerStore) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.layers_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn listed_names(store: &LayerStore) -> Vec<String> {
    let mut names: Vec<String> = store.layers().into_iter().map(|l| l.name).collect();
    names.sort();
    names
}

#[test]
fn open_layer_round_trip_newest_first_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.meta().unwrap(), None);
    store.put_batch(&history(), b"meta-1").unwrap();
    assert_eq!(store.meta().unwrap().as_deref(), Some(&b"meta-1"[..]));
    assert!(store.open_layer_bytes() > 0);
    check_history(&store);
    drop(store);
    let store = open(dir.path());
    check_history(&store);
    assert_eq!(store.meta().unwrap().as_deref(), Some(&b"meta-1"[..]));
}

#[test]
fn freeze_writes_one_delta_layer_and_reads_do_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        freeze_bytes: 1 << 20,
    };
    let store = LayerStore::open(dir.path(), config.clone()).unwrap();
    store.put_batch(&history(), b"m").unwrap();
    assert_eq!(store.freeze(false).unwrap(), None, "below freeze_bytes");
    let layer = store.freeze(true).unwrap().unwrap();
    assert_eq!(layer.kind, LayerKind::Delta);
    assert_eq!((layer.lsn_start, layer.lsn_end), (10, 50));
    assert_eq!((layer.key_start, layer.key_end), (key(1), key(2)));
    assert_eq!(store.open_layer_bytes(), 0);
    assert_eq!(store.layer_count(), 1);
    let file_len = std::fs::metadata(store.layers_dir().join(&layer.name))
        .unwrap()
        .len();
    assert_eq!(store.layer_bytes(), file_len);
    assert_eq!(layer.size_bytes, file_len);
    check_history(&store);
    assert_eq!(store.freeze(true).unwrap(), None, "nothing left to freeze");
    drop(store);
    let store = LayerStore::open(dir.path(), config).unwrap();
    assert_eq!(store.layers(), vec![layer]);
    assert_eq!(store.meta().unwrap().as_deref(), Some(&b"m"[..]));
    check_history(&store);
}

#[test]
fn versions_span_the_open_layer_and_several_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (i, e) in history().into_iter().enumerate() {
        store.put_batch(&[e], b"").unwrap();
        if i % 2 == 1 {
            store.freeze(true).unwrap().unwrap();
        }
    }
    assert_eq!(store.layer_count(), 3);
    check_history(&store);
    store.put_batch(&[entry(1, 60, false)], b"").unwrap();
    check(
        &store,
        1,
        0,
        MAX_LSN,
        &[(60, false), (50, false), (40, true)],
    );
    drop(store);
    let store = open(dir.path());
    check(
        &store,
        1,
        0,
        MAX_LSN,
        &[(60, false), (50, false), (40, true)],
    );
    check(&store, 1, 0, 39, &[(30, false), (20, false), (10, true)]);
}

#[test]
fn an_image_layer_ends_the_walk_for_every_key_in_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let entries = vec![
        entry(1, 10, true),
        entry(1, 20, false),
        entry(1, 30, false),
        entry(2, 10, true),
        entry(2, 30, false),
        entry(3, 10, true),
    ];
    store.put_batch(&entries, b"").unwrap();
    store.freeze(true).unwrap().unwrap();
    // Keys 1 and 3 at LSN 25; key 2 is in the layer's key range but not in it.
    let image = store
        .write_image_layer(
            25,
            [
                (key(1), value(1, 25).to_vec()),
                (key(3), value(3, 25).to_vec()),
            ]
            .into_iter(),
        )
        .unwrap();
    assert_eq!(image.kind, LayerKind::Image);
    assert_eq!((image.lsn_start, image.lsn_end), (25, 25));
    assert_eq!(
        store.layers()[1],
        image,
        "newest first: the delta ends at 30"
    );
    let check_all = |store: &LayerStore| {
        check(store, 1, 0, MAX_LSN, &[(30, false), (25, true)]);
        check(store, 1, 0, 24, &[(20, false), (10, true)]);
        check(store, 1, 26, MAX_LSN, &[(30, false)]);
        // Key 2 is in the image layer's key range but not in it: it did not exist at
        // 25, so its older versions are not read past the image layer.
        check(store, 2, 0, MAX_LSN, &[(30, false)]);
        check(store, 2, 0, 24, &[(10, true)]);
        check(store, 3, 0, MAX_LSN, &[(25, true)]);
    };
    check_all(&store);
    drop(store);
    check_all(&open(dir.path()));
}

#[test]
fn an_image_at_a_deltas_lsn_is_preferred() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .put_batch(&[entry(1, 10, true), entry(1, 20, false)], b"")
        .unwrap();
    store
        .write_image_layer(20, [(key(1), value(1, 20).to_vec())].into_iter())
        .unwrap();
    check(&store, 1, 0, MAX_LSN, &[(20, true)]);
}

#[test]
fn image_layer_input_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let unsorted = [(key(2), vec![1]), (key(1), vec![2])];
    assert!(matches!(
        store.write_image_layer(5, unsorted.into_iter()),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.write_image_layer(5, std::iter::empty()),
        Err(StoreError::Invalid(_))
    ));
    let one = [(key(1), vec![2])];
    store.write_image_layer(5, one.clone().into_iter()).unwrap();
    assert!(matches!(
        store.write_image_layer(5, one.into_iter()),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.layer_count(), 1);
    drop(store);
    assert_eq!(open(dir.path()).layer_count(), 1, "no leftovers");
}

#[test]
fn entries_put_again_after_a_freeze_are_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_batch(&history(), b"").unwrap();
    store.freeze(true).unwrap().unwrap();
    // A timeline re-ingesting WAL after a restart writes the same versions again.
    store.put_batch(&history(), b"").unwrap();
    check_history(&store);
    assert_eq!(store.freeze(true).unwrap(), None, "all held already");
    assert_eq!(store.open_layer_bytes(), 0);
    assert_eq!(store.layer_count(), 1);
    check_history(&store);
}

#[test]
fn oversized_input_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let big = vec![0u8; crate::limits::MAX_META_BYTES + 1];
    assert!(matches!(
        store.put_batch(&[], &big),
        Err(StoreError::Invalid(_))
    ));
}

/// A freeze stopped at each crash point, then a restart: the store comes back with
/// every version readable once, no temporary or unlisted file, and can freeze again.
#[test]
fn every_freeze_crash_point_restarts_cleanly() {
    for point in [
        FailPoint::LayerTempWritten,
        FailPoint::LayerRenamed,
        FailPoint::ManifestWritten,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.put_batch(&history()[..3], b"").unwrap();
        store.freeze(true).unwrap().unwrap();
        store.put_batch(&history()[3..], b"m2").unwrap();
        *store.fail_at.lock().unwrap() = Some(point);
        assert!(store.freeze(true).is_err(), "{point:?}");
        let on_disk = layer_file_names(&store);
        drop(store);

        let store = open(dir.path());
        let expected_layers = if point == FailPoint::ManifestWritten {
            2
        } else {
            1
        };
        assert_eq!(store.layer_count(), expected_layers, "{point:?}");
        assert_eq!(layer_file_names(&store), listed_names(&store), "{point:?}");
        assert!(
            on_disk.len() >= store.layer_count(),
            "{point:?}: {on_disk:?}"
        );
        let open_layer_empty = store.open_layer_bytes() == 0;
        assert_eq!(
            open_layer_empty,
            point == FailPoint::ManifestWritten,
            "{point:?}"
        );
        assert_eq!(store.meta().unwrap().as_deref(), Some(&b"m2"[..]));
        check_history(&store);
        let _ = store.freeze(true).unwrap();
        assert_eq!(store.layer_count(), 2, "{point:?}");
        assert_eq!(store.open_layer_bytes(), 0);
        check_history(&store);
        drop(store);
        check_history(&open(dir.path()));
    }
}

#[test]
fn every_image_layer_crash_point_restarts_cleanly() {
    for point in [FailPoint::LayerTempWritten, FailPoint::LayerRenamed] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.put_batch(&history(), b"").unwrap();
        *store.fail_at.lock().unwrap() = Some(point);
        let image = [(key(1), value(1, 45).to_vec())];
        assert!(store.write_image_layer(45, image.into_iter()).is_err());
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.layer_count(), 0, "{point:?}");
        assert_eq!(layer_file_names(&store), Vec::<String>::new(), "{point:?}");
        check_history(&store);
    }
}

#[test]
fn a_leftover_temporary_file_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let layers_dir = store.layers_dir().to_path_buf();
    drop(store);
    std::fs::write(layers_dir.join("delta-layer.tmp"), b"partial").unwrap();
    std::fs::write(dir.path().join("layer_manifest.tmp"), b"partial").unwrap();
    let store = open(dir.path());
    assert_eq!(layer_file_names(&store), Vec::<String>::new());
    assert!(!dir.path().join("layer_manifest.tmp").exists());
}

/// The only layer file of a store holding `history()`, and its path.
fn frozen_history(dir: &Path) -> std::path::PathBuf {
    let store = open(dir);
    store.put_batch(&history(), b"").unwrap();
    let layer = store.freeze(true).unwrap().unwrap();
    store.layers_dir().join(layer.name)
}

fn is_corrupt<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Corrupt { .. }))
}

#[test]
fn damaged_footer_index_or_blob_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = frozen_history(dir.path());
    let good = std::fs::read(&path).unwrap();
    let len = good.len();
    // Last byte (magic), a footer field, the first index block, the first blob.
    let footer_start = len - crate::format::FOOTER_LEN;
    for at in [len - 1, footer_start + 50, footer_start - 10, 3] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let store = open(dir.path());
        // The first blob is key 1 at LSN 10, which only a read at or below 39 reaches.
        let r = store.versions(&key(1), 0, 10);
        assert!(is_corrupt(&r), "byte {at}: {r:?}");
    }
    std::fs::write(&path, &good).unwrap();
    check_history(&open(dir.path()));
}

#[test]
fn truncated_or_extended_layer_fails_open_and_a_missing_one_is_not_resident() {
    let dir = tempfile::tempdir().unwrap();
    let path = frozen_history(dir.path());
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(is_corrupt(&LayerStore::open(
        dir.path(),
        StoreConfig::default()
    )));
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    assert!(is_corrupt(&LayerStore::open(
        dir.path(),
        StoreConfig::default()
    )));
    // A missing file is a layer to fetch: an error without a fetcher, the same
    // versions once a fetcher supplies the right bytes.
    std::fs::remove_file(&path).unwrap();
    let store = open(dir.path());
    assert_eq!(store.resident_bytes(), 0);
    assert!(matches!(
        store.versions(&key(1), 0, MAX_LSN),
        Err(StoreError::NotResident { .. })
    ));
    let remote = tempfile::tempdir().unwrap();
    std::fs::write(remote.path().join(path.file_name().unwrap()), &good).unwrap();
    let fetcher = residency::DirFetcher::new(remote.path());
    store.set_fetcher(fetcher.clone());
    check_history(&store);
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(std::fs::read(&path).unwrap(), good);
    drop(store);
    check_history(&open(dir.path()));
}

#[test]
fn damaged_manifest_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    frozen_history(dir.path());
    let manifest = dir.path().join("layer_manifest");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[30] ^= 0x01;
    std::fs::write(&manifest, &bytes).unwrap();
    assert!(is_corrupt(&LayerStore::open(
        dir.path(),
        StoreConfig::default()
    )));
}

/// Many keys and versions, so that a layer has several index blocks.
fn big_history() -> Vec<Entry> {
    let mut entries = Vec::new();
    for k in 0..150u16 {
        for lsn in [100u64, 200, 300, 400] {
            entries.push(entry(k, lsn + u64::from(k), lsn == 200));
        }
    }
    entries
}

fn expected_big(k: u16) -> Vec<Version> {
    let mut out: Vec<Version> = big_history()
        .into_iter()
        .filter(|e| e.key == key(k) && e.lsn >= 200 + u64::from(k))
        .map(|e| Version {
            lsn: e.lsn,
            will_init: e.will_init,
            value: e.value,
        })
        .collect();
    out.reverse();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Flipped bytes anywhere in a real layer file: every read returns the right versions
    /// or Corrupt, never wrong data and never a panic.
    #[test]
    fn flipped_bytes_are_never_served(flips in prop::collection::vec((any::<u64>(), 1u8..=255), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let store = open(dir.path());
            store.put_batch(&big_history(), b"").unwrap();
            let layer = store.freeze(true).unwrap().unwrap();
            store.layers_dir().join(layer.name)
        };
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len() as u64;
        for (at, mask) in flips {
            bytes[(at % len) as usize] ^= mask;
        }
        std::fs::write(&path, &bytes).unwrap();
        let store = open(dir.path());
        for k in 0..150u16 {
            match store.versions(&key(k), 0, MAX_LSN) {
                Ok(v) => prop_assert_eq!(v, expected_big(k)),
                Err(StoreError::Corrupt { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }

    /// Truncated copies of a layer file fail to load with Corrupt (the manifest's size
    /// check is bypassed here, so the file format alone must catch it).
    #[test]
    fn truncated_layer_files_fail_to_load(cut in any::<u64>(), extra in prop::collection::vec(any::<u8>(), 0..8)) {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let store = open(dir.path());
            store.put_batch(&big_history(), b"").unwrap();
            let layer = store.freeze(true).unwrap().unwrap();
            store.layers_dir().join(layer.name)
        };
        let bytes = std::fs::read(&path).unwrap();
        let mut damaged = bytes[..(cut % bytes.len() as u64) as usize].to_vec();
        damaged.extend_from_slice(&extra);
        let copy = dir.path().join("copy");
        std::fs::write(&copy, &damaged).unwrap();
        let r = crate::format::LayerReader::load(&copy, "copy");
        prop_assert!(is_corrupt(&r), "{:?}", r.err());
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// (key, will_init, value length) at the next LSNs.
    Put(Vec<(u16, bool)>),
    Freeze,
    Image(Vec<u16>),
    Reopen,
    /// A freeze that dies at the failpoint, then a restart.
    CrashedFreeze(FailPoint),
    /// Evict one layer (uploaded first, as the pageserver does).
    Evict(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u16..6, any::<bool>()), 1..6).prop_map(Op::Put),
        1 => Just(Op::Freeze),
        1 => prop::collection::btree_set(0u16..6, 1..4)
            .prop_map(|s| Op::Image(s.into_iter().collect())),
        1 => Just(Op::Reopen),
        1 => prop_oneof![
            Just(FailPoint::LayerTempWritten),
            Just(FailPoint::LayerRenamed),
            Just(FailPoint::ManifestWritten),
        ].prop_map(Op::CrashedFreeze),
        2 => any::<prop::sample::Index>().prop_map(Op::Evict),
    ]
}

/// The expected answer from a model of all versions ever stored.
/// `absent`: (key, LSN) of keys inside an image layer's key range but not in it (they
/// did not exist at that LSN): a walk stops there.
fn model_versions(
    model: &BTreeMap<(u16, u64), (bool, Bytes)>,
    absent: &BTreeSet<(u16, u64)>,
    k: u16,
    since: u64,
    at: u64,
) -> Vec<Version> {
    let stop = absent
        .range((k, since)..=(k, at))
        .next_back()
        .map(|&(_, l)| l);
    let mut out = Vec::new();
    for (&(_, lsn), (will_init, value)) in model.range((k, since)..=(k, at)).rev() {
        if stop.is_some_and(|s| lsn < s) {
            break;
        }
        out.push(Version {
            lsn,
            will_init: *will_init,
            value: value.clone(),
        });
        if *will_init {
            break;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn store_matches_a_model(ops in prop::collection::vec(op(), 1..16), probes in prop::collection::vec((0u16..6, 0u64..80, 0u64..80), 24)) {
        let dir = tempfile::tempdir().unwrap();
        let remote = tempfile::tempdir().unwrap();
        // Evicted layers come back from `remote` through a fetcher set at every open.
        let open = |dir: &Path| {
            let store = open(dir);
            store.set_fetcher(residency::DirFetcher::new(remote.path()));
            store
        };
        let mut store = open(dir.path());
        let mut model: BTreeMap<(u16, u64), (bool, Bytes)> = BTreeMap::new();
        let mut absent: BTreeSet<(u16, u64)> = BTreeSet::new();
        let mut lsn = 1u64;
        for op in ops {
            match op {
                Op::Put(items) => {
                    let entries: Vec<Entry> = items.iter().map(|&(k, w)| {
                        lsn += 1;
                        entry(k, lsn, w)
                    }).collect();
                    store.put_batch(&entries, &lsn.to_be_bytes()).unwrap();
                    for e in entries {
                        model.insert((u16::from_be_bytes([e.key[16], e.key[17]]), e.lsn), (e.will_init, e.value));
                    }
                }
                Op::Freeze => { store.freeze(true).unwrap(); }
                Op::Image(keys) => {
                    lsn += 1;
                    let at = lsn;
                    store.write_image_layer(at, keys.iter().map(|&k| (key(k), value(k, at).to_vec()))).unwrap();
                    let (first, last) = (keys[0], keys[keys.len() - 1]);
                    for k in first..=last {
                        if !keys.contains(&k) {
                            absent.insert((k, at));
                        }
                    }
                    for k in keys {
                        model.insert((k, at), (true, value(k, at)));
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = open(dir.path());
                }
                Op::CrashedFreeze(point) => {
                    *store.fail_at.lock().unwrap() = Some(point);
                    // Fails at the point, or succeeds with nothing to write.
                    let _ = store.freeze(true);
                    drop(store);
                    store = open(dir.path());
                    let local: Vec<String> = store.residency().into_iter()
                        .filter(|r| r.resident).map(|r| r.info.name).collect();
                    let mut local = local;
                    local.sort();
                    prop_assert_eq!(layer_file_names(&store), local);
                }
                Op::Evict(i) => {
                    let layers = store.layers();
                    if !layers.is_empty() {
                        residency::upload(&store, remote.path());
                        let name = &layers[i.index(layers.len())].name;
                        let was_resident = store.residency().iter().any(|r| r.info.name == *name && r.resident);
                        prop_assert_eq!(store.evict(name).unwrap(), was_resident);
                        prop_assert!(!store.layer_path(name).exists());
                    }
                }
            }
        }
        for (k, a, b) in probes {
            let (since, at) = (a.min(b), a.max(b));
            prop_assert_eq!(store.versions(&key(k), since, at).unwrap(), model_versions(&model, &absent, k, since, at));
        }
    }
}

/// Readers never miss a committed version while a writer puts and freezes.
#[test]
fn concurrent_reads_never_miss_a_version_during_freeze() {
    const LAST_LSN: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let committed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, committed, done) = (store.clone(), committed.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let at = committed.load(Ordering::Acquire);
                    if at == 0 {
                        continue;
                    }
                    let got: Vec<u64> = store
                        .versions(&key(7), 0, at)
                        .unwrap()
                        .iter()
                        .map(|v| v.lsn)
                        .collect();
                    let newest_image = at - (at - 1) % 10;
                    let expected: Vec<u64> = (newest_image..=at).rev().collect();
                    assert_eq!(got, expected, "at {at}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for lsn in 1..=LAST_LSN {
        store
            .put_batch(&[entry(7, lsn, lsn % 10 == 1)], b"")
            .unwrap();
        committed.store(lsn, Ordering::Release);
        if lsn % 7 == 0 {
            store.freeze(true).unwrap().unwrap();
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(store.layer_count(), (LAST_LSN / 7) as usize);
}

/// An index larger than one tail read takes the second range read.
#[test]
fn a_layer_with_a_large_index_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let entries: Vec<Entry> = (0..3000u16).map(|k| entry(k, 10, true)).collect();
    store.put_batch(&entries, b"").unwrap();
    let layer = store.freeze(true).unwrap().unwrap();
    let index_bytes = 3000 * crate::format::INDEX_ENTRY_LEN as u64;
    assert!(index_bytes > crate::limits::TAIL_READ_BYTES);
    assert!(layer.size_bytes > index_bytes);
    drop(store);
    let store = open(dir.path());
    for k in [0u16, 1499, 2999] {
        check(&store, k, 0, MAX_LSN, &[(10, true)]);
    }
}
