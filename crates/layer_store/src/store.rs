//! [`LayerStore`]: the open layer, the layer map, freezing and reads.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use rocksdb::{WriteBatch, WriteOptions, DB};
use tracing::{info, warn};

use crate::durable::{self, io_err, TEMP_SUFFIX};
use crate::format::{LayerReader, LayerWriter, WrittenLayer, FOOTER_LEN};
use crate::layer::{lock, nanos_since, IfRemote, Layer};
use crate::limits::{DELETE_BATCH_ENTRIES, KEY_LEN, MAX_META_BYTES, MAX_VALUE_BYTES};
use crate::name::{parse_layer_file_name, NameParts};
use crate::open_layer::{self, META_KEY};
use crate::{
    manifest, Entry, LayerFetcher, LayerInfo, LayerKind, LayerResidency, StoreConfig, StoreError,
    Version,
};

const OPEN_LAYER_DIR: &str = "open_layer";
const LAYERS_DIR: &str = "layers";

/// Where a test makes a freeze (or an image layer write) stop as if the process died.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailPoint {
    /// The layer is complete and fsync'd under its temporary name.
    LayerTempWritten,
    /// The layer has its final name but is not in the manifest.
    LayerRenamed,
    /// The manifest lists the layer; the open layer still holds its entries.
    ManifestWritten,
}

/// One timeline's versions. All methods take `&self`: reads run concurrently with
/// `put_batch`, `freeze` and `write_image_layer`; the latter two are serialized among
/// themselves.
pub struct LayerStore {
    dir: PathBuf,
    layers_dir: PathBuf,
    config: StoreConfig,
    db: DB,
    /// Copy-on-write: readers clone the `Arc` and walk a stable list.
    map: RwLock<Arc<Vec<Arc<Layer>>>>,
    /// Held by whoever writes layer files and the manifest.
    writer: Mutex<()>,
    open_bytes: AtomicU64,
    /// Brings back layer files that are not on local disk.
    fetcher: RwLock<Option<Arc<dyn LayerFetcher>>>,
    /// When the store was opened: the origin of the layers' `last_read` times.
    opened: Instant,
    #[cfg(test)]
    pub(crate) fail_at: Mutex<Option<FailPoint>>,
}

impl std::fmt::Debug for LayerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStore")
            .field("dir", &self.dir)
            .field("layers", &self.layer_count())
            .field("resident_bytes", &self.resident_bytes())
            .field("open_layer_bytes", &self.open_layer_bytes())
            .finish()
    }
}

fn info_of(name: &str, parts: NameParts, size_bytes: u64) -> LayerInfo {
    LayerInfo {
        name: name.to_string(),
        kind: parts.kind,
        key_start: parts.key_start,
        key_end: parts.key_end,
        lsn_start: parts.lsn_start,
        lsn_end: parts.lsn_end,
        size_bytes,
    }
}

/// Newest first: by highest LSN, an image before a delta ending at the same LSN (it
/// usually ends the walk), then by lowest LSN.
fn sort_layers(layers: &mut [Arc<Layer>]) {
    layers.sort_by(|a, b| {
        let key = |l: &Layer| {
            let image_first = l.info.kind == LayerKind::Image;
            (l.info.lsn_end, image_first, l.info.lsn_start)
        };
        key(b)
            .cmp(&key(a))
            .then_with(|| a.info.name.cmp(&b.info.name))
    });
}

/// Versions gathered from the open layer and the layers, deduplicated by LSN.
#[derive(Default)]
struct Collected {
    by_lsn: BTreeMap<u64, Version>,
    newest_image: Option<u64>,
}

impl Collected {
    /// The same (key, LSN) may come from two places (an entry whose freeze was
    /// interrupted, an image layer at a delta's LSN); both describe the same state, and
    /// the image is kept because it ends reconstruction.
    fn add(&mut self, v: Version) {
        if v.will_init {
            self.newest_image = self.newest_image.max(Some(v.lsn));
        }
        match self.by_lsn.get(&v.lsn) {
            Some(old) if old.will_init || !v.will_init => {}
            _ => {
                self.by_lsn.insert(v.lsn, v);
            }
        }
    }

    fn has(&self, lsn: u64, will_init: bool) -> bool {
        self.by_lsn
            .get(&lsn)
            .is_some_and(|old| old.will_init || !will_init)
    }

    fn newest_first(self) -> Vec<Version> {
        let mut out = Vec::new();
        for (_, v) in self.by_lsn.into_iter().rev() {
            let stop = v.will_init;
            out.push(v);
            if stop {
                break;
            }
        }
        out
    }
}

impl LayerStore {
    /// Opens (creating if needed) the store in `dir`, and finishes whatever a crash
    /// interrupted: temporary files (of freezes and of fetches) are removed, layer files
    /// the manifest does not list are removed, and open-layer entries that a listed
    /// layer on local disk already holds are dropped. A listed layer whose file is
    /// missing is not resident: it is fetched when a read needs it.
    #[tracing::instrument(skip_all, fields(dir = %dir.display()))]
    pub fn open(dir: &Path, config: StoreConfig) -> Result<LayerStore, StoreError> {
        let layers_dir = dir.join(LAYERS_DIR);
        fs::create_dir_all(&layers_dir)
            .map_err(io_err(format!("create {}", layers_dir.display())))?;
        // Make the directories themselves durable before files are renamed into them.
        durable::fsync_dir(dir)?;
        remove_temp_files(dir)?;
        let listed = manifest::load(dir)?;
        let layers = reconcile_layer_files(&layers_dir, &listed)?;
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        // Values are mostly 8 KiB page images that lz4 compresses when they become a
        // layer file; compressing them again in RocksDB's own files cost a tenth of
        // ingest CPU (snappy on write and on every read) for a store that lives only
        // until the next freeze.
        options.set_compression_type(rocksdb::DBCompressionType::None);
        let db = DB::open(&options, dir.join(OPEN_LAYER_DIR))?;
        let store = LayerStore {
            dir: dir.to_path_buf(),
            layers_dir,
            config,
            db,
            map: RwLock::new(Arc::new(layers)),
            writer: Mutex::new(()),
            open_bytes: AtomicU64::new(0),
            fetcher: RwLock::new(None),
            opened: Instant::now(),
            #[cfg(test)]
            fail_at: Mutex::new(None),
        };
        let (kept, dropped) = store.drop_held_entries()?;
        store.open_bytes.store(kept, Ordering::Relaxed);
        info!(
            layers = store.layer_count(),
            resident_bytes = store.resident_bytes(),
            open_layer_bytes = kept,
            dropped_entries = dropped,
            "layer store opened"
        );
        Ok(store)
    }

    /// Creates a store in `dir` (which must not exist or be empty) made of `layers`
    /// (name, size in bytes) that are not on local disk, with `meta` as the open layer's
    /// meta blob: a timeline restored from object storage alone. Durable when it
    /// returns: the manifest is written and fsynced, and `meta` is written with a synced
    /// RocksDB write. A crash before that leaves a partial store in `dir`, so callers
    /// create into a scratch directory and rename it into place.
    #[tracing::instrument(skip_all, fields(dir = %dir.display(), layers = layers.len()))]
    pub fn create_from_layers(
        dir: &Path,
        config: StoreConfig,
        layers: &[(String, u64)],
        meta: &[u8],
    ) -> Result<LayerStore, StoreError> {
        check_restored_layers(layers)?;
        if meta.len() > MAX_META_BYTES {
            return Err(StoreError::Invalid(format!(
                "meta of {} bytes exceeds {MAX_META_BYTES}",
                meta.len()
            )));
        }
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(StoreError::Invalid(format!(
                        "{} is not empty",
                        dir.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
                // The new directory's entry in its parent must survive a crash too.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    durable::fsync_dir(parent)?;
                }
            }
            Err(e) => return Err(io_err(format!("list {}", dir.display()))(e)),
        }
        // The manifest first (written, fsynced, renamed, directory fsynced): `open` then
        // finds every layer listed and none on disk.
        manifest::store(dir, layers)?;
        let store = LayerStore::open(dir, config)?;
        // A synced write (see `put_batch`).
        store.put_batch(&[], meta)?;
        info!(
            layers = layers.len(),
            "layer store created from remote layers"
        );
        Ok(store)
    }

    /// Installs the fetcher used when a read needs a layer that is not on local disk.
    /// Without one, such a read fails with [`StoreError::NotResident`].
    pub fn set_fetcher(&self, fetcher: Arc<dyn LayerFetcher>) {
        *self.fetcher.write().unwrap_or_else(PoisonError::into_inner) = Some(fetcher);
    }

    fn fetcher(&self) -> Option<Arc<dyn LayerFetcher>> {
        self.fetcher
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The reader of `layer` for a read, fetching its file if needed; records the read
    /// for least-recently-read eviction.
    fn read_layer(
        &self,
        layer: &Layer,
        fetcher: Option<&dyn LayerFetcher>,
    ) -> Result<Arc<LayerReader>, StoreError> {
        layer.touch(self.opened);
        layer
            .reader(IfRemote::Fetch(fetcher))?
            .ok_or_else(|| StoreError::NotResident {
                layer: layer.info.name.clone(),
            })
    }

    /// Removes the local file of layer `name` so that it is fetched again when next
    /// read; the caller has uploaded it. `Ok(false)` if it is not on local disk, is
    /// being fetched, or is being read right now. An error if `name` is not a layer of
    /// the store.
    pub fn evict(&self, name: &str) -> Result<bool, StoreError> {
        let layers = self.map_snapshot();
        let layer = layers
            .iter()
            .find(|l| l.info.name == name)
            .ok_or_else(|| StoreError::Invalid(format!("{name} is not a layer of the store")))?;
        let evicted = layer.evict()?;
        if evicted {
            info!(layer = %name, size_bytes = layer.info.size_bytes, "evicted layer file");
        }
        Ok(evicted)
    }

    /// Every layer (newest first) with whether its file is on local disk and when it
    /// was last read.
    pub fn residency(&self) -> Vec<LayerResidency> {
        self.map_snapshot()
            .iter()
            .map(|l| LayerResidency {
                info: l.info.clone(),
                resident: l.is_resident(),
                last_read: l.last_read(self.opened),
            })
            .collect()
    }

    /// Bytes of layer files on local disk.
    pub fn resident_bytes(&self) -> u64 {
        self.map_snapshot()
            .iter()
            .filter(|l| l.is_resident())
            .map(|l| l.info.size_bytes)
            .sum()
    }

    /// Path of a layer's local file (for uploading it); the file exists only while the
    /// layer is resident.
    pub fn layer_path(&self, name: &str) -> PathBuf {
        self.layers_dir.join(name)
    }

    /// Stores `entries` and `meta` in one RocksDB write batch. Replacing a (key, LSN)
    /// with a different value is not supported: one value per (key, LSN).
    pub fn put_batch(&self, entries: &[Entry], meta: &[u8]) -> Result<(), StoreError> {
        if meta.len() > MAX_META_BYTES {
            return Err(StoreError::Invalid(format!(
                "meta of {} bytes exceeds {MAX_META_BYTES}",
                meta.len()
            )));
        }
        let mut batch = WriteBatch::default();
        let mut added = 0u64;
        for e in entries {
            if e.value.len() > MAX_VALUE_BYTES {
                return Err(StoreError::Invalid(format!(
                    "value of {} bytes exceeds {MAX_VALUE_BYTES}",
                    e.value.len()
                )));
            }
            batch.put(
                open_layer::encode_key(&e.key, e.lsn),
                open_layer::encode_value(e.will_init, &e.value),
            );
            added += open_layer::entry_bytes(e.value.len());
        }
        batch.put(META_KEY, meta);
        let mut options = WriteOptions::default();
        // sync = true makes RocksDB fsync its WAL before the write returns: this is the
        // fsync behind the caller's acknowledgement (disk_consistent_lsn), and the one
        // batch makes entries and meta atomic.
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        self.open_bytes.fetch_add(added, Ordering::Relaxed);
        Ok(())
    }

    /// The `meta` blob of the last `put_batch`, if any.
    pub fn meta(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(META_KEY)?)
    }

    /// Versions of `key` with `since <= lsn <= at`, newest first, ending with (and
    /// including) the first `will_init` version; empty if there is none.
    pub fn versions(
        &self,
        key: &[u8; KEY_LEN],
        since: u64,
        at: u64,
    ) -> Result<Vec<Version>, StoreError> {
        let mut found = Collected::default();
        if since > at {
            return Ok(Vec::new());
        }
        // The open layer is read before the layer map is looked at: a freeze adds its
        // layer to the map before deleting the entries, so whatever this read misses
        // because a freeze deleted it is in the map snapshot taken afterwards.
        self.open_layer_versions(key, since, at, &mut found)?;
        let layers = self.map_snapshot();
        let fetcher = self.fetcher();
        for layer in layers.iter().filter(|l| l.covers(key, since, at)) {
            if found
                .newest_image
                .is_some_and(|cut| layer.info.lsn_end < cut)
            {
                // Layers are sorted by highest LSN: none of the rest holds anything newer
                // than the image already found.
                break;
            }
            let reader = self.read_layer(layer, fetcher.as_deref())?;
            let floor = since.max(found.newest_image.unwrap_or(0));
            for e in reader.range(key, floor, at).iter().rev() {
                if found.has(e.lsn, e.will_init) {
                    continue;
                }
                found.add(reader.read(e)?);
                if e.will_init {
                    break;
                }
            }
        }
        // An image layer holds every key that existed at its LSN in its key range (it is
        // written from the live key space), so a key it lacks did not exist then:
        // versions at or below that LSN must not be read, or a dropped key would come
        // back.
        let mut versions = found.newest_first();
        if let Some(absent_at) =
            self.absent_in_image_layer(&layers, fetcher.as_deref(), key, since, at)?
        {
            versions.retain(|v| v.lsn > absent_at);
        }
        Ok(versions)
    }

    /// The highest LSN in `[since, at]` of an image layer whose key range holds `key`
    /// but which does not hold it.
    fn absent_in_image_layer(
        &self,
        layers: &[Arc<Layer>],
        fetcher: Option<&dyn LayerFetcher>,
        key: &[u8; KEY_LEN],
        since: u64,
        at: u64,
    ) -> Result<Option<u64>, StoreError> {
        for layer in layers.iter().filter(|l| l.covers(key, since, at)) {
            if layer.info.kind != LayerKind::Image {
                continue;
            }
            let lsn = layer.info.lsn_end;
            if self
                .read_layer(layer, fetcher)?
                .range(key, lsn, lsn)
                .is_empty()
            {
                // Newest first: the first such layer is the highest.
                return Ok(Some(lsn));
            }
        }
        Ok(None)
    }

    fn open_layer_versions(
        &self,
        key: &[u8; KEY_LEN],
        since: u64,
        at: u64,
        found: &mut Collected,
    ) -> Result<(), StoreError> {
        // A RocksDB iterator reads one implicit snapshot, so a concurrent freeze's deletes
        // are seen all or not at all.
        // The lower bound keeps the backward seek inside this key's versions: without
        // it, a key with no live entry walks back over every deletion a freeze left
        // behind until it meets another key.
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_lower_bound(open_layer::encode_key(key, since).to_vec());
        let mut it = self.db.raw_iterator_opt(options);
        it.seek_for_prev(open_layer::encode_key(key, at));
        while let Some((k, lsn)) = it.key().and_then(open_layer::decode_key) {
            if k != *key || lsn < since {
                break;
            }
            let v = open_layer::decode_value(lsn, it.value().unwrap_or_default())?;
            let will_init = v.will_init;
            found.add(v);
            if will_init {
                break;
            }
            it.prev();
        }
        it.status()?;
        Ok(())
    }

    /// Writes the open layer out as a delta layer when it holds at least
    /// `freeze_bytes` (or when `force`), durably, lists it, then deletes its entries
    /// from RocksDB. The caller guarantees that every entry in the open layer is at or
    /// below its last committed LSN. `None` when nothing was written.
    #[tracing::instrument(skip_all, fields(dir = %self.dir.display(), force))]
    pub fn freeze(&self, force: bool) -> Result<Option<LayerInfo>, StoreError> {
        let _writer = lock(&self.writer);
        if !force && self.open_layer_bytes() < self.config.freeze_bytes {
            return Ok(None);
        }
        // Entries put after this snapshot stay in the open layer for the next freeze.
        let snapshot = self.db.snapshot();
        let layers = self.map_snapshot();
        let fetcher = self.fetcher();
        // An entry a listed layer holds is not written again, even if that layer has to
        // be fetched: a second layer of the same name could not be installed.
        let if_remote = IfRemote::Fetch(fetcher.as_deref());
        let mut writer = LayerWriter::create(&self.layers_dir, LayerKind::Delta)?;
        let mut frozen_bytes = 0u64;
        let mut it = snapshot.raw_iterator();
        it.seek_to_first();
        while let Some(raw_key) = it.key() {
            if let Some((key, lsn)) = open_layer::decode_key(raw_key) {
                let v = open_layer::decode_value(lsn, it.value().unwrap_or_default())?;
                frozen_bytes += open_layer::entry_bytes(v.value.len());
                if !holds(&layers, &key, lsn, if_remote)? {
                    writer.add(key, lsn, v.will_init, &v.value)?;
                }
            }
            it.next();
        }
        it.status()?;
        drop(it);
        let info = match writer.finish()? {
            Some(written) => Some(self.install(written)?),
            None => None,
        };
        #[cfg(test)]
        self.fail(FailPoint::ManifestWritten)?;
        let deleted = self.delete_entries(snapshot.raw_iterator())?;
        drop(snapshot);
        // Deleted entries stay as tombstones that every later iteration steps over
        // until compaction drops them; the open layer is small right after a freeze,
        // so compacting it now is cheap and keeps reads and the next freeze fast.
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        let _ = self
            .open_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(frozen_bytes))
            });
        if let Some(info) = &info {
            info!(
                layer = %info.name,
                lsn_start = info.lsn_start,
                lsn_end = info.lsn_end,
                size_bytes = info.size_bytes,
                deleted_entries = deleted,
                "froze open layer"
            );
        }
        Ok(info)
    }

    /// Writes an image layer at `lsn` from `values` (key, value bytes), which must be
    /// sorted by key without duplicates; every value is stored as `will_init`.
    #[tracing::instrument(skip_all, fields(dir = %self.dir.display(), lsn))]
    pub fn write_image_layer(
        &self,
        lsn: u64,
        values: impl Iterator<Item = ([u8; KEY_LEN], Vec<u8>)>,
    ) -> Result<LayerInfo, StoreError> {
        let _writer = lock(&self.writer);
        let mut writer = LayerWriter::create(&self.layers_dir, LayerKind::Image)?;
        for (key, value) in values {
            writer.add(key, lsn, true, &value)?;
        }
        let written = writer
            .finish()?
            .ok_or_else(|| StoreError::Invalid("an image layer needs at least one key".into()))?;
        let info = self.install(written)?;
        info!(layer = %info.name, size_bytes = info.size_bytes, "wrote image layer");
        Ok(info)
    }

    /// Renames a written layer into place, lists it in the manifest, then adds it to the
    /// layer map. Called with `writer` held.
    fn install(&self, written: WrittenLayer) -> Result<LayerInfo, StoreError> {
        let layers = self.map_snapshot();
        if layers.iter().any(|l| l.info.name == written.name) {
            // Our own leftover would be harmless to overwrite, but a listed layer may
            // hold different entries: refuse rather than lose them.
            fs::remove_file(&written.tmp_path)
                .map_err(io_err(format!("remove {}", written.tmp_path.display())))?;
            return Err(StoreError::Invalid(format!(
                "layer {} already exists",
                written.name
            )));
        }
        #[cfg(test)]
        self.fail(FailPoint::LayerTempWritten)?;
        let path = written.rename_into(&self.layers_dir)?;
        #[cfg(test)]
        self.fail(FailPoint::LayerRenamed)?;
        let info = info_of(&written.name, written.parts, written.size_bytes);
        let mut listed: Vec<(String, u64)> = layers
            .iter()
            .map(|l| (l.info.name.clone(), l.info.size_bytes))
            .collect();
        listed.push((info.name.clone(), info.size_bytes));
        // Durable before the open layer entries are deleted (see manifest.rs).
        manifest::store(&self.dir, &listed)?;
        let mut new_layers: Vec<Arc<Layer>> = layers.iter().cloned().collect();
        // A new layer counts as read when written: it holds the newest versions.
        let written_at = nanos_since(self.opened);
        new_layers.push(Arc::new(Layer::new(info.clone(), path, true, written_at)));
        sort_layers(&mut new_layers);
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new_layers);
        Ok(info)
    }

    /// Deletes every entry the iterator yields. The deletes are not synced: one that a
    /// crash loses is redone by `open`, since the entry is held by a listed layer.
    fn delete_entries(
        &self,
        mut it: rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
    ) -> Result<u64, StoreError> {
        let mut batch = WriteBatch::default();
        let mut deleted = 0u64;
        it.seek_to_first();
        while let Some(raw_key) = it.key() {
            if open_layer::decode_key(raw_key).is_some() {
                batch.delete(raw_key);
                deleted += 1;
                if batch.len() >= DELETE_BATCH_ENTRIES {
                    self.db.write(std::mem::take(&mut batch))?;
                }
            }
            it.next();
        }
        it.status()?;
        self.db.write(batch)?;
        Ok(deleted)
    }

    /// At open: drops the entries a listed layer holds (a freeze interrupted between
    /// its manifest write and its deletes). Returns (bytes kept, entries dropped).
    fn drop_held_entries(&self) -> Result<(u64, u64), StoreError> {
        let layers = self.map_snapshot();
        let mut batch = WriteBatch::default();
        let (mut kept, mut dropped) = (0u64, 0u64);
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        while let Some(raw_key) = it.key() {
            if let Some((key, lsn)) = open_layer::decode_key(raw_key) {
                // No fetcher is installed yet: an entry that only a layer not on local
                // disk holds stays, which reads tolerate (they deduplicate by LSN) and
                // the next freeze drops.
                if holds(&layers, &key, lsn, IfRemote::Skip)? {
                    batch.delete(raw_key);
                    dropped += 1;
                } else {
                    let value_len = it.value().map_or(0, |v| v.len().saturating_sub(1));
                    kept += open_layer::entry_bytes(value_len);
                }
                if batch.len() >= DELETE_BATCH_ENTRIES {
                    self.db.write(std::mem::take(&mut batch))?;
                }
            }
            it.next();
        }
        it.status()?;
        self.db.write(batch)?;
        if dropped > 0 {
            warn!(
                dropped,
                "dropped open layer entries already held by layer files"
            );
        }
        Ok((kept, dropped))
    }

    fn map_snapshot(&self) -> Arc<Vec<Arc<Layer>>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The layer files, newest first.
    pub fn layers(&self) -> Vec<LayerInfo> {
        self.map_snapshot().iter().map(|l| l.info.clone()).collect()
    }

    pub fn layer_count(&self) -> usize {
        self.map_snapshot().len()
    }

    pub fn layer_bytes(&self) -> u64 {
        self.map_snapshot().iter().map(|l| l.info.size_bytes).sum()
    }

    /// Approximate bytes (keys and values) in the open layer, counted by this store.
    pub fn open_layer_bytes(&self) -> u64 {
        self.open_bytes.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn fail(&self, at: FailPoint) -> Result<(), StoreError> {
        if *lock(&self.fail_at) == Some(at) {
            return Err(StoreError::Io {
                context: format!("failpoint {at:?}"),
                source: std::io::Error::other("injected crash"),
            });
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn layers_dir(&self) -> &Path {
        &self.layers_dir
    }

    #[cfg(test)]
    pub(crate) fn layer(&self, name: &str) -> Arc<Layer> {
        let layers = self.map_snapshot();
        let found = layers.iter().find(|l| l.info.name == name);
        found.expect("a layer of the store").clone()
    }
}

/// Whether a layer in `layers` (sorted newest first) holds exactly (key, lsn); with
/// [`IfRemote::Skip`], layers not on local disk are taken not to.
fn holds(
    layers: &[Arc<Layer>],
    key: &[u8; KEY_LEN],
    lsn: u64,
    if_remote: IfRemote<'_>,
) -> Result<bool, StoreError> {
    for layer in layers {
        if layer.info.lsn_end < lsn {
            break;
        }
        if layer.covers(key, lsn, lsn)
            && layer
                .reader(if_remote)?
                .is_some_and(|r| r.contains(key, lsn))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Layers given to `create_from_layers`: valid names, no duplicates, and sizes that can
/// hold a footer.
fn check_restored_layers(layers: &[(String, u64)]) -> Result<(), StoreError> {
    let mut names = std::collections::BTreeSet::new();
    for (name, size) in layers {
        if parse_layer_file_name(name).is_none() {
            return Err(StoreError::Invalid(format!("{name:?} is not a layer name")));
        }
        if *size < FOOTER_LEN as u64 {
            return Err(StoreError::Invalid(format!(
                "layer {name} of {size} bytes cannot hold a footer"
            )));
        }
        if !names.insert(name.as_str()) {
            return Err(StoreError::Invalid(format!("layer {name} listed twice")));
        }
    }
    Ok(())
}

fn remove_temp_files(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))? {
        let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            warn!(file = %entry.path().display(), "removing temporary file");
            fs::remove_file(entry.path())
                .map_err(io_err(format!("remove {}", entry.path().display())))?;
        }
    }
    Ok(())
}

/// Removes temporary and unlisted layer files from `layers_dir` and checks that every
/// listed layer file there has its size. Returns the layer map, in which a listed layer
/// without a file is not resident.
fn reconcile_layer_files(
    layers_dir: &Path,
    listed: &[(String, u64)],
) -> Result<Vec<Arc<Layer>>, StoreError> {
    remove_temp_files(layers_dir)?;
    let context = format!("list {}", layers_dir.display());
    for entry in fs::read_dir(layers_dir).map_err(io_err(context.clone()))? {
        let entry = entry.map_err(io_err(context.clone()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if parse_layer_file_name(&name).is_none() {
            warn!(file = %name, "ignoring unknown file among layer files");
        } else if !listed.iter().any(|(n, _)| *n == name) {
            // Written by a freeze that crashed before its manifest write: the open
            // layer still holds all its entries.
            warn!(layer = %name, "removing layer file not in the manifest");
            fs::remove_file(entry.path())
                .map_err(io_err(format!("remove {}", entry.path().display())))?;
        }
    }
    let mut layers = Vec::with_capacity(listed.len());
    for (name, size) in listed {
        let path = layers_dir.join(name);
        let actual = match fs::metadata(&path) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(format!("stat {}", path.display()))(e)),
        };
        if let Some(actual) = actual.filter(|a| a != size) {
            return Err(crate::format::corrupt(
                name,
                format!("{actual} bytes on disk, {size} in the manifest"),
            ));
        }
        let parts = parse_layer_file_name(name)
            .ok_or_else(|| crate::format::corrupt(name, "not a layer file name"))?;
        let resident = actual.is_some();
        layers.push(Arc::new(Layer::new(
            info_of(name, parts, *size),
            path,
            resident,
            0,
        )));
    }
    sort_layers(&mut layers);
    Ok(layers)
}
