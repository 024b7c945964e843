//! The in-memory data set: keys to values, plus the queries the protocol
//! needs (`KEYS`, `DIGEST`), and the undo log that lets a failed commit
//! take back what it changed.
//!
//! Pure: no IO, no clocks. The write-ahead log decides what is durable; this
//! map only holds the current state. An entry written by a client is one
//! heap allocation holding both the key and the value, which keeps a
//! million small keys within Redis's footprint. A value overwritten by one
//! of the same length is overwritten in place, and what it replaced goes to
//! the [`UndoLog`]'s one buffer, so the common overwrite allocates and
//! frees nothing.
//!
//! A store built from a snapshot ([`BulkLoad`]) instead keeps the
//! snapshot's records where they arrived: each chunk of the leader's log
//! becomes a shared buffer and its keys point into it. That saves a
//! million allocations, copies and fresh pages per million keys. A buffer
//! is freed once none of its keys is left in it (a key overwritten or
//! deleted leaves it), so the memory a snapshot pins is at most its own
//! size; buffers left less than half used when the snapshot ends are
//! copied out at once. The bulk load also fills the table region by
//! region rather than key by key, so that a million inserts do not each
//! wait for a cache miss.
//!
//! The map hashes keys with foldhash, seeded at random per process: a
//! third of the cost of std's SipHash for short keys, which every write,
//! read, replay and snapshot pays. It resists collision floods only as long
//! as the seed stays unknown; Redis makes a similar trade with a
//! reduced-round SipHash.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::hash_table::Entry as Slot;
use hashbrown::HashTable;
use sha2::{Digest, Sha256};

/// Finds the key and value of the entry that begins `bytes` in a shared
/// buffer. Every buffer of a store has the layout its `Locate` reads (the
/// log's records: [`crate::wal::record::key_value_at`]).
pub type Locate = fn(&[u8]) -> (&[u8], &[u8]);

/// A shared buffer of a [`Store`], from [`BulkLoad::share`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferId(u32);

/// One key and its value (16 bytes in the table either way).
enum Entry {
    /// Its own allocation: `[key length: u16 LE][key bytes][value bytes]`.
    Own(Box<[u8]>),
    /// In shared buffer `buffer`, at offset `at`.
    Shared { buffer: u32, at: u32 },
}

impl Entry {
    fn own(key: &[u8], value: &[u8]) -> Entry {
        let key_len = u16::try_from(key.len()).expect("keys are at most 1024 bytes");
        let mut bytes = Vec::with_capacity(2 + key.len() + value.len());
        bytes.extend_from_slice(&key_len.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Entry::Own(bytes.into_boxed_slice())
    }

    fn split<'a>(&'a self, buffers: &'a Buffers) -> (&'a [u8], &'a [u8]) {
        match self {
            Entry::Own(bytes) => {
                let key_len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
                bytes[2..].split_at(key_len)
            }
            Entry::Shared { buffer, at } => buffers.split(*buffer, *at),
        }
    }

    fn key<'a>(&'a self, buffers: &'a Buffers) -> &'a [u8] {
        self.split(buffers).0
    }
}

/// Key plus value bytes.
fn live_len((key, value): (&[u8], &[u8])) -> u64 {
    (key.len() + value.len()) as u64
}

/// The shared buffers of a store.
struct Buffers {
    /// Indexed by [`BufferId`]; `None` once freed (ids are not reused).
    list: Vec<Option<Buffer>>,
    locate: Locate,
}

struct Buffer {
    bytes: Arc<[u8]>,
    /// Entries pointing into it, and their key plus value bytes.
    entries: u32,
    live: u64,
    /// Keys are still being set in it ([`Store::share`] until
    /// [`Store::unpin`]): it stays even when its last key leaves, since a
    /// later record of the same chunk may point into it again.
    pinned: bool,
}

fn locate_nothing(_: &[u8]) -> (&[u8], &[u8]) {
    (&[], &[])
}

impl Default for Buffers {
    fn default() -> Buffers {
        Buffers {
            list: Vec::new(),
            locate: locate_nothing,
        }
    }
}

impl Buffers {
    fn split(&self, buffer: u32, at: u32) -> (&[u8], &[u8]) {
        let bytes = self
            .list
            .get(buffer as usize)
            .and_then(Option::as_ref)
            .and_then(|b| b.bytes.get(at as usize..));
        // An entry keeps its buffer alive, so this always finds it.
        bytes.map_or((&[], &[]), self.locate)
    }

    fn get_mut(&mut self, buffer: u32) -> Option<&mut Buffer> {
        self.list.get_mut(buffer as usize).and_then(Option::as_mut)
    }

    /// An entry of `len` bytes now points into `buffer`.
    fn hold(&mut self, buffer: u32, len: u64) {
        if let Some(b) = self.get_mut(buffer) {
            b.entries += 1;
            b.live += len;
        }
    }

    /// An entry of `len` bytes left `buffer`; the last one frees it,
    /// unless keys are still being set in it.
    fn release(&mut self, buffer: u32, len: u64) {
        if let Some(b) = self.get_mut(buffer) {
            b.entries -= 1;
            b.live -= len;
            if b.entries == 0 && !b.pinned {
                self.list[buffer as usize] = None;
            }
        }
    }
}

/// What the writes not yet durable replaced, oldest first, so that a failed
/// commit can put the store back newest first.
///
/// The replaced keys and values are copied into one ring of bytes that is
/// trimmed from the front as writes become durable: no allocation per write.
#[derive(Default)]
pub struct UndoLog {
    /// For every mark, oldest first: the key, then the old value if any.
    bytes: VecDeque<u8>,
    marks: VecDeque<Mark>,
}

/// Room the [`UndoLog`]'s ring keeps once it has drained: more is given
/// back.
const UNDO_KEEP_BYTES: usize = 4 << 20;

/// One write in the [`UndoLog`].
struct Mark {
    seq: u64,
    key_len: u16,
    /// Length of the value the write replaced; `None` if the key was absent.
    old_len: Option<u32>,
}

impl Mark {
    fn bytes(&self) -> usize {
        usize::from(self.key_len) + self.old_len.map_or(0, |n| n as usize)
    }
}

impl UndoLog {
    /// An empty log.
    pub fn new() -> UndoLog {
        UndoLog::default()
    }

    /// Number of writes that can still be undone.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    /// Whether no write can be undone.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    fn push(&mut self, seq: u64, key: &[u8], old: Option<&[u8]>) {
        let key_len = u16::try_from(key.len()).expect("keys are at most 1024 bytes");
        let old_len = old.map(|v| u32::try_from(v.len()).expect("values fit the log's u32"));
        self.bytes.extend(key);
        self.bytes.extend(old.unwrap_or_default());
        self.marks.push_back(Mark {
            seq,
            key_len,
            old_len,
        });
    }

    /// Drops the marks of writes up to `seq`, which can no longer be lost.
    pub fn forget_through(&mut self, seq: u64) {
        let mut drop_bytes = 0;
        while let Some(mark) = self.marks.front().filter(|m| m.seq <= seq) {
            drop_bytes += mark.bytes();
            self.marks.pop_front();
        }
        self.bytes.drain(..drop_bytes);
        // A burst of large values must not pin its memory for good.
        if self.bytes.capacity() > UNDO_KEEP_BYTES && self.bytes.len() <= UNDO_KEEP_BYTES / 2 {
            self.bytes.shrink_to(UNDO_KEEP_BYTES / 2);
        }
    }

    /// Forgets every write: the data set they changed is gone.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.marks.clear();
    }

    /// Undoes every write in the log, newest first, and empties it.
    pub fn roll_back(&mut self, store: &mut Store) {
        let mut key = Vec::new();
        let mut old = Vec::new();
        while let Some(mark) = self.marks.pop_back() {
            let start = self.bytes.len() - mark.bytes();
            let mut taken = self.bytes.drain(start..);
            key.clear();
            key.extend(taken.by_ref().take(usize::from(mark.key_len)));
            old.clear();
            old.extend(taken);
            match mark.old_len {
                Some(_) => store.set(&key, &old),
                None => drop(store.remove(&key)),
            }
        }
    }
}

/// The key-value map.
#[derive(Default)]
pub struct Store {
    entries: HashTable<Entry>,
    hasher: RandomState,
    buffers: Buffers,
    /// Sum of key and value lengths, the "live data" compaction compares
    /// the log against.
    live_bytes: u64,
    /// Sum of key lengths: bounds the size of a `KEYS` reply before it is
    /// built.
    key_bytes: u64,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = self.hasher.hash_one(key);
        let buffers = &self.buffers;
        self.entries
            .find(hash, |e| e.key(buffers) == key)
            .map(|e| e.split(buffers).1)
    }

    /// Sets `key` to `value` as write `seq`, noting in `undo` what it
    /// replaced.
    pub fn put(&mut self, key: &[u8], value: &[u8], seq: u64, undo: &mut UndoLog) {
        self.upsert(key, value, |old| undo.push(seq, key, old));
    }

    /// Removes `key` as write `seq`, noting it in `undo`; whether it was
    /// there (an absent key changes nothing and is not noted).
    pub fn delete(&mut self, key: &[u8], seq: u64, undo: &mut UndoLog) -> bool {
        self.take(key, |old| undo.push(seq, key, Some(old)))
    }

    /// Sets `key` to `value` for good: replay and snapshots, which never
    /// roll back, skip the undo log.
    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        self.upsert(key, value, |_| ());
    }

    /// Removes `key` for good; whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.take(key, |_| ())
    }

    /// Removes `key`, first showing `removed` its value; whether it was
    /// there.
    fn take(&mut self, key: &[u8], removed: impl FnOnce(&[u8])) -> bool {
        let hash = self.hasher.hash_one(key);
        let buffers = &self.buffers;
        let Ok(found) = self.entries.find_entry(hash, |e| e.key(buffers) == key) else {
            return false;
        };
        let (old, _) = found.remove();
        let (_, value) = old.split(buffers);
        removed(value);
        let len = live_len((key, value));
        self.live_bytes -= len;
        self.key_bytes -= key.len() as u64;
        if let Entry::Shared { buffer, .. } = old {
            self.buffers.release(buffer, len);
        }
        true
    }

    /// Sets `key` to `value`, first showing `replaced` the old value (or
    /// `None`).
    fn upsert(&mut self, key: &[u8], value: &[u8], replaced: impl FnOnce(Option<&[u8]>)) {
        let hash = self.hasher.hash_one(key);
        let (hasher, buffers) = (&self.hasher, &self.buffers);
        let slot = self.entries.entry(
            hash,
            |e| e.key(buffers) == key,
            |e| hasher.hash_one(e.key(buffers)),
        );
        let left = match slot {
            Slot::Occupied(mut found) => {
                let entry = found.get_mut();
                let (_, old) = entry.split(buffers);
                replaced(Some(old));
                let same_len = old.len() == value.len();
                let old_len = live_len((key, old));
                self.live_bytes -= old_len;
                let left = match *entry {
                    Entry::Shared { buffer, .. } => Some((buffer, old_len)),
                    Entry::Own(_) => None,
                };
                match entry {
                    Entry::Own(bytes) if same_len => {
                        let at = bytes.len() - value.len();
                        bytes[at..].copy_from_slice(value);
                    }
                    _ => *entry = Entry::own(key, value),
                }
                left
            }
            Slot::Vacant(free) => {
                replaced(None);
                free.insert(Entry::own(key, value));
                self.key_bytes += key.len() as u64;
                None
            }
        };
        self.live_bytes += live_len((key, value));
        if let Some((buffer, len)) = left {
            self.buffers.release(buffer, len);
        }
    }

    /// Takes `bytes` as a shared buffer that entries can point into;
    /// `locate` reads them. `None` once the store has had 2^32 buffers.
    fn share(&mut self, bytes: Arc<[u8]>, locate: Locate) -> Option<BufferId> {
        let id = u32::try_from(self.buffers.list.len()).ok()?;
        self.buffers.locate = locate;
        self.buffers.list.push(Some(Buffer {
            bytes,
            entries: 0,
            live: 0,
            pinned: true,
        }));
        Some(BufferId(id))
    }

    /// No more keys are set in `buffer`: it goes now if no key points
    /// into it, else with its last key.
    fn unpin(&mut self, buffer: BufferId) {
        if let Some(slot) = self.buffers.list.get_mut(buffer.0 as usize) {
            if let Some(b) = slot.as_mut() {
                b.pinned = false;
            }
            if slot.as_ref().is_some_and(|b| b.entries == 0) {
                *slot = None;
            }
        }
    }

    /// [`BulkLoad::set_shared`] one entry at a time, as the tests mix
    /// shared entries with other writes.
    #[cfg(test)]
    fn set_shared(&mut self, buffer: BufferId, at: usize, key: &[u8], value: &[u8]) {
        match self.hold_shared(buffer, at, key, value) {
            Some(at) => {
                let hash = self.hasher.hash_one(key);
                self.place(
                    hash,
                    Entry::Shared {
                        buffer: buffer.0,
                        at,
                    },
                );
            }
            None => self.set(key, value),
        }
    }

    /// Counts `key` and `value`, at `at` in `buffer`, in the buffer and the
    /// live bytes from now on, for an entry about to be placed; the offset
    /// as a `u32`, or `None` past 4 GiB (nothing counted).
    fn hold_shared(
        &mut self,
        buffer: BufferId,
        at: usize,
        key: &[u8],
        value: &[u8],
    ) -> Option<u32> {
        let at = u32::try_from(at).ok()?;
        debug_assert_eq!(self.buffers.split(buffer.0, at), (key, value));
        let len = live_len((key, value));
        self.live_bytes += len;
        self.buffers.hold(buffer.0, len);
        Some(at)
    }

    /// Puts `entry` in the table, in place of the entry of its key if there
    /// is one. The new entry is already counted in the live bytes (and its
    /// buffer, if shared, by [`Store::hold_shared`]); the one it replaces
    /// is taken out of them here.
    fn place(&mut self, hash: u64, entry: Entry) {
        let (hasher, buffers) = (&self.hasher, &self.buffers);
        let key_len = entry.key(buffers).len() as u64;
        let slot = self.entries.entry(
            hash,
            |e| e.key(buffers) == entry.key(buffers),
            |e| hasher.hash_one(e.key(buffers)),
        );
        let left = match slot {
            Slot::Occupied(mut found) => {
                let old_len = live_len(found.get().split(buffers));
                self.live_bytes -= old_len;
                match std::mem::replace(found.get_mut(), entry) {
                    Entry::Shared { buffer, .. } => Some((buffer, old_len)),
                    Entry::Own(_) => None,
                }
            }
            Slot::Vacant(free) => {
                free.insert(entry);
                self.key_bytes += key_len;
                None
            }
        };
        if let Some((old, old_len)) = left {
            self.buffers.release(old, old_len);
        }
    }

    /// Copies the keys of every shared buffer less than half used into
    /// allocations of their own, freeing those buffers: a snapshot of a
    /// log that had not been compacted holds records of overwritten keys,
    /// which would otherwise stay in memory.
    fn settle_shared(&mut self) {
        let is_sparse = |b: &Option<Buffer>| {
            b.as_ref()
                .is_some_and(|b| 2 * b.live < b.bytes.len() as u64)
        };
        let sparse: Vec<bool> = self.buffers.list.iter().map(is_sparse).collect();
        if !sparse.contains(&true) {
            return;
        }
        let buffers = &self.buffers;
        for entry in self.entries.iter_mut() {
            if let Entry::Shared { buffer, .. } = *entry {
                if sparse[buffer as usize] {
                    let (key, value) = entry.split(buffers);
                    *entry = Entry::own(key, value);
                }
            }
        }
        for (slot, sparse) in self.buffers.list.iter_mut().zip(sparse) {
            if sparse {
                *slot = None;
            }
        }
    }

    /// Buffers ever shared with this store, freed ones included.
    #[cfg(test)]
    pub fn buffers_shared(&self) -> usize {
        self.buffers.list.len()
    }

    /// Bytes held in shared buffers, and how many of them are live keys
    /// and values.
    pub fn shared_bytes(&self) -> (u64, u64) {
        let held = self.buffers.list.iter().flatten();
        held.fold((0, 0), |(all, live), b| {
            (all + b.bytes.len() as u64, live + b.live)
        })
    }

    /// Makes room for `additional` more keys up front, so that building a
    /// large store (a snapshot) does not rehash it as it grows. Returns
    /// whether the memory was available; if not, the store grows as usual.
    fn try_reserve(&mut self, additional: usize) -> bool {
        let (hasher, buffers) = (&self.hasher, &self.buffers);
        self.entries
            .try_reserve(additional, |e| hasher.hash_one(e.key(buffers)))
            .is_ok()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys plus values.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes of keys.
    pub fn key_bytes(&self) -> u64 {
        self.key_bytes
    }

    /// The keys starting with `prefix`, in byte order.
    /// Interim scan index.
    pub fn build_scan_index(&mut self) {}

    /// Interim: drops the scan index.
    pub fn drop_scan_index(&mut self) {}

    /// Interim: every key at once.
    pub fn scan(&self, _cursor: u64, _count: usize) -> (u64, Vec<&[u8]>) {
        (0, self.keys_with_prefix(b""))
    }

    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<&[u8]> {
        let mut keys: Vec<&[u8]> = self
            .iter()
            .map(|(key, _)| key)
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|e| e.split(&self.buffers))
    }

    /// SHA-256 over `<key>\n<value>\n` for every key in byte order, as lower
    /// case hex (`DIGEST` in `docs/protocol.md`).
    pub fn digest(&self) -> String {
        let mut entries: Vec<(&[u8], &[u8])> = self.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut hasher = Sha256::new();
        for (key, value) in entries {
            hasher.update(key);
            hasher.update(b"\n");
            hasher.update(value);
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }
}

/// Buckets of the table one region of a [`BulkLoad`] covers: 128 KiB of
/// entries, which stay in the cache while the region fills.
const REGION_BUCKETS: usize = 8192;

/// A store filled in bulk: a snapshot's keys.
///
/// Set one by one as they arrive, a million keys land all over a table of
/// tens of MiB, and nearly every insert waits for a cache miss: that was
/// most of a snapshot's build time. A bulk load instead makes each entry
/// at once but only notes it, with its hash, under the region of the table
/// it will land in; [`BulkLoad::finish`] then fills the table one region
/// at a time, each staying in the cache while it fills. A key always falls
/// in the same region, so writes to one key keep their order; a delete
/// first fills its key's region, then removes the key at once.
pub struct BulkLoad {
    store: Store,
    /// Entries waiting to be placed, by region, each already counted in
    /// the store's live bytes and its buffer.
    regions: Vec<Vec<(u64, Entry)>>,
    /// A hash's bucket in the reserved table (hashbrown starts its probe
    /// at the hash's low bits)...
    bucket_mask: usize,
    /// ...and that bucket's region.
    region_shift: u32,
}

impl BulkLoad {
    /// An empty store with room for `keys` keys (a hint: a store that
    /// cannot get the memory grows as it goes instead).
    pub fn new(keys: usize) -> BulkLoad {
        let mut store = Store::new();
        store.try_reserve(keys);
        let buckets = store.entries.num_buckets().max(1);
        let regions = (buckets / REGION_BUCKETS).max(1);
        // Room for an even spread and some, if the memory is there.
        let per_region = keys / regions + keys / regions / 8;
        let room = |_| {
            let mut noted = Vec::new();
            let _ = noted.try_reserve_exact(per_region);
            noted
        };
        BulkLoad {
            store,
            regions: (0..regions).map(room).collect(),
            bucket_mask: buckets - 1,
            region_shift: (buckets / regions).trailing_zeros(),
        }
    }

    /// Takes `bytes` as a shared buffer that keys set by
    /// [`BulkLoad::set_shared`] point into; `locate` reads them. `None`
    /// once the store has had 2^32 buffers: the caller then sets its keys
    /// with [`BulkLoad::set`].
    pub fn share(&mut self, bytes: Arc<[u8]>, locate: Locate) -> Option<BufferId> {
        self.store.share(bytes, locate)
    }

    /// No more keys are set in `buffer` (the caller is done with its
    /// chunk): it goes now if no key points into it, else with its last
    /// key. Until then it stays, even when every key set in it was
    /// overwritten or deleted, as a later record of the chunk may point
    /// into it again.
    pub fn unpin(&mut self, buffer: BufferId) {
        self.store.unpin(buffer);
    }

    /// Sets `key` to `value` without copying either: they are the entry
    /// the buffer's `Locate` finds at offset `at` of shared `buffer`, which
    /// the caller has just decoded. An offset past 4 GiB is copied instead.
    pub fn set_shared(&mut self, buffer: BufferId, at: usize, key: &[u8], value: &[u8]) {
        match self.store.hold_shared(buffer, at, key, value) {
            Some(at) => self.note(
                key,
                Entry::Shared {
                    buffer: buffer.0,
                    at,
                },
            ),
            None => self.set(key, value),
        }
    }

    /// Sets `key` to `value`, copied.
    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        self.store.live_bytes += live_len((key, value));
        self.note(key, Entry::own(key, value));
    }

    /// Removes `key`: the writes noted for it first, then the removal.
    pub fn remove(&mut self, key: &[u8]) {
        let region = self.region_of(self.store.hasher.hash_one(key));
        self.fill(region);
        self.store.remove(key);
    }

    /// The store: every noted entry placed, then the keys of buffers less
    /// than half used copied out, freeing those buffers (a snapshot of a
    /// log that had not been compacted holds records of overwritten keys,
    /// which would otherwise stay in memory).
    pub fn finish(mut self) -> Store {
        for region in 0..self.regions.len() {
            self.fill(region);
            // Each region's list is given back as soon as it is placed.
            self.regions[region] = Vec::new();
        }
        self.store.settle_shared();
        self.store
    }

    fn note(&mut self, key: &[u8], entry: Entry) {
        let hash = self.store.hasher.hash_one(key);
        let region = self.region_of(hash);
        self.regions[region].push((hash, entry));
    }

    fn region_of(&self, hash: u64) -> usize {
        (hash as usize & self.bucket_mask) >> self.region_shift
    }

    /// Places the entries noted in `region`, in the order they came.
    fn fill(&mut self, region: usize) {
        let mut noted = std::mem::take(&mut self.regions[region]);
        for (hash, entry) in noted.drain(..) {
            self.store.place(hash, entry);
        }
        self.regions[region] = noted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete() {
        let (mut store, mut undo) = (Store::new(), UndoLog::new());
        assert_eq!(store.get(b"a"), None);
        store.put(b"a", b"1", 1, &mut undo);
        store.put(b"a", b"22", 2, &mut undo);
        assert_eq!(store.get(b"a"), Some(&b"22"[..]));
        store.put(b"a", b"33", 3, &mut undo);
        assert_eq!(store.get(b"a"), Some(&b"33"[..]), "overwritten in place");
        assert_eq!(store.live_bytes(), 3);
        assert!(store.delete(b"a", 4, &mut undo));
        assert!(!store.delete(b"a", 5, &mut undo));
        assert_eq!(store.live_bytes(), 0);
        assert!(store.is_empty());
        assert_eq!(undo.len(), 4, "the absent key's delete is not noted");
    }

    #[test]
    fn set_and_remove_match_put_and_delete() {
        let (mut a, mut b) = (Store::new(), Store::new());
        for (k, v) in [("x", "1"), ("y", "22"), ("x", "333")] {
            a.put(k.as_bytes(), v.as_bytes(), 1, &mut UndoLog::new());
            b.set(k.as_bytes(), v.as_bytes());
        }
        assert!(a.delete(b"y", 2, &mut UndoLog::new()));
        assert!(b.remove(b"y"));
        assert!(!b.remove(b"y"));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.live_bytes(), b.live_bytes());
    }

    #[test]
    fn roll_back_restores_previous_state_newest_first() {
        let (mut store, mut undo) = (Store::new(), UndoLog::new());
        store.set(b"a", b"1");
        let digest = store.digest();
        store.put(b"a", b"2", 1, &mut undo); // in place
        store.put(b"b", b"3", 2, &mut undo); // new key
        store.put(b"a", b"444", 3, &mut undo); // new length
        assert!(store.delete(b"a", 4, &mut undo));
        store.put(b"a", b"5", 5, &mut undo); // back, absent before
        undo.roll_back(&mut store);
        assert!(undo.is_empty());
        assert_eq!(store.get(b"a"), Some(&b"1"[..]));
        assert_eq!(store.get(b"b"), None);
        assert_eq!(store.live_bytes(), 2);
        assert_eq!(store.digest(), digest);
    }

    #[test]
    fn forgotten_writes_stay_when_the_rest_is_rolled_back() {
        let (mut store, mut undo) = (Store::new(), UndoLog::new());
        store.put(b"a", b"1", 1, &mut undo);
        store.put(b"b", b"2", 2, &mut undo);
        store.put(b"a", b"3", 3, &mut undo);
        undo.forget_through(2);
        assert_eq!(undo.len(), 1);
        assert_eq!(
            undo.bytes.len(),
            2,
            "only the last mark's key and old value"
        );
        undo.roll_back(&mut store);
        assert_eq!(store.get(b"a"), Some(&b"1"[..]));
        assert_eq!(store.get(b"b"), Some(&b"2"[..]));
        undo.forget_through(u64::MAX);
        assert!(undo.bytes.is_empty());
    }

    #[test]
    fn a_drained_ring_gives_back_a_burst_of_memory() {
        let (mut store, mut undo) = (Store::new(), UndoLog::new());
        let big = vec![b'x'; 1 << 20];
        for seq in 1..=16 {
            store.put(format!("k{seq}").as_bytes(), &big, seq, &mut undo);
            store.put(format!("k{seq}").as_bytes(), b"small", seq, &mut undo);
        }
        assert!(undo.bytes.capacity() >= 16 << 20);
        undo.forget_through(16);
        assert!(undo.is_empty());
        assert!(
            undo.bytes.capacity() <= UNDO_KEEP_BYTES,
            "{}",
            undo.bytes.capacity()
        );
    }

    /// A buffer of entries laid out `[key len: u8][value len: u8][key][value]`,
    /// and the offset of each.
    fn buffer_of(pairs: &[(&str, &str)]) -> (Arc<[u8]>, Vec<usize>) {
        let (mut bytes, mut at) = (Vec::new(), Vec::new());
        for (k, v) in pairs {
            at.push(bytes.len());
            bytes.extend_from_slice(&[k.len() as u8, v.len() as u8]);
            bytes.extend_from_slice(k.as_bytes());
            bytes.extend_from_slice(v.as_bytes());
        }
        (Arc::from(bytes), at)
    }

    fn owned_buffer_of(pairs: &[(String, String)]) -> (Arc<[u8]>, Vec<usize>) {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        buffer_of(&pairs)
    }

    /// A xorshift generator of numbers below its argument.
    fn below(mut x: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    /// The store holds exactly the shared buffers a key is still in (told
    /// by the test's own references to them), and the live bytes in them
    /// never exceed their size.
    fn assert_held_exactly_while_used(store: &Store, buffers: &[Arc<[u8]>]) {
        let (held, live) = store.shared_bytes();
        assert!(live <= held);
        let held_now: u64 = (buffers.iter())
            .filter(|b| Arc::strong_count(b) > 1)
            .map(|b| b.len() as u64)
            .sum();
        assert_eq!(
            held, held_now,
            "a buffer is held exactly while a key is in it"
        );
    }

    fn locate(bytes: &[u8]) -> (&[u8], &[u8]) {
        let (k, v) = (usize::from(bytes[0]), usize::from(bytes[1]));
        (&bytes[2..2 + k], &bytes[2 + k..2 + k + v])
    }

    #[test]
    fn shared_entries_read_like_own_ones_and_free_their_buffer() {
        let (bytes, at) = buffer_of(&[("a", "1"), ("b", "22"), ("a", "333")]);
        let (mut shared, mut own) = (Store::new(), Store::new());
        own.set(b"c", b"own");
        shared.set(b"c", b"own");
        let id = shared.share(Arc::clone(&bytes), locate).expect("id");
        for &at in &at {
            let (key, value) = locate(&bytes[at..]);
            shared.set_shared(id, at, key, value);
        }
        shared.unpin(id);
        for (k, v) in [("a", "1"), ("b", "22"), ("a", "333")] {
            own.set(k.as_bytes(), v.as_bytes());
        }
        assert_eq!(shared.get(b"a"), Some(&b"333"[..]), "the later record wins");
        assert_eq!(shared.digest(), own.digest());
        assert_eq!(shared.live_bytes(), own.live_bytes());
        assert_eq!(shared.keys_with_prefix(b""), own.keys_with_prefix(b""));
        assert_eq!(
            shared.shared_bytes(),
            (bytes.len() as u64, 7),
            "b22 and a333"
        );
        assert_eq!(Arc::strong_count(&bytes), 2);

        // Overwrites, a delete and a roll-back move the keys out.
        let mut undo = UndoLog::new();
        shared.put(b"a", b"4", 1, &mut undo);
        assert!(shared.delete(b"b", 2, &mut undo));
        assert_eq!(shared.get(b"a"), Some(&b"4"[..]));
        assert_eq!(Arc::strong_count(&bytes), 1, "the last key left the buffer");
        assert_eq!(shared.shared_bytes(), (0, 0));
        undo.roll_back(&mut shared);
        assert_eq!(shared.digest(), own.digest());
        assert_eq!(shared.live_bytes(), own.live_bytes());
    }

    #[test]
    fn a_buffer_whose_keys_all_left_stays_while_its_chunk_is_being_read() {
        // One chunk: PUT a, DELETE a (its only key leaves), PUT b.
        let (bytes, at) = buffer_of(&[("a", "1"), ("b", "2")]);
        let mut store = Store::new();
        let id = store.share(Arc::clone(&bytes), locate).expect("id");
        let (key, value) = locate(&bytes[at[0]..]);
        store.set_shared(id, at[0], key, value);
        assert!(store.remove(b"a"));
        let (key, value) = locate(&bytes[at[1]..]);
        store.set_shared(id, at[1], key, value);
        store.unpin(id);
        assert_eq!(store.get(b"b"), Some(&b"2"[..]));
        assert_eq!(store.keys_with_prefix(b""), vec![b"b".to_vec()]);
        assert_eq!(Arc::strong_count(&bytes), 2, "b still points into it");
        assert!(store.remove(b"b"));
        assert_eq!(Arc::strong_count(&bytes), 1, "freed with its last key");
    }

    #[test]
    fn a_key_moves_between_buffers_and_unused_ones_are_dropped() {
        let (first, at1) = buffer_of(&[("k", "old"), ("x", "1")]);
        let (second, at2) = buffer_of(&[("k", "new")]);
        let (unused, _) = buffer_of(&[("u", "1")]);
        let mut store = Store::new();
        let (id1, id2) = (
            store.share(Arc::clone(&first), locate).expect("id"),
            store.share(Arc::clone(&second), locate).expect("id"),
        );
        for (id, bytes, at) in [
            (id1, &first, at1[0]),
            (id1, &first, at1[1]),
            (id2, &second, at2[0]),
        ] {
            let (key, value) = locate(&bytes[at..]);
            store.set_shared(id, at, key, value);
        }
        assert_eq!(store.get(b"k"), Some(&b"new"[..]));
        assert_eq!(store.live_bytes(), 6);
        let id3 = store.share(Arc::clone(&unused), locate).expect("id");
        store.unpin(id3);
        store.unpin(id1);
        assert_eq!(Arc::strong_count(&unused), 1, "no key in it");
        assert_eq!(Arc::strong_count(&first), 2, "still holds x");
        assert!(store.remove(b"x"));
        assert_eq!(Arc::strong_count(&first), 1);
        assert_eq!(Arc::strong_count(&second), 2);
    }

    #[test]
    fn settling_copies_keys_out_of_buffers_less_than_half_used() {
        let pairs: Vec<(String, String)> =
            (0..10).map(|i| (format!("k{i}"), "v".repeat(20))).collect();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (sparse, at1) = buffer_of(&pairs);
        let (full, at2) = buffer_of(&[("f", "value")]);
        let mut store = Store::new();
        let (id1, id2) = (
            store.share(Arc::clone(&sparse), locate).expect("id"),
            store.share(Arc::clone(&full), locate).expect("id"),
        );
        for &at in &at1 {
            let (key, value) = locate(&sparse[at..]);
            store.set_shared(id1, at, key, value);
        }
        let (key, value) = locate(&full[at2[0]..]);
        store.set_shared(id2, at2[0], key, value);
        for i in 0..6 {
            store.set(format!("k{i}").as_bytes(), b"elsewhere");
        }
        let digest = store.digest();
        store.settle_shared();
        assert_eq!(
            Arc::strong_count(&sparse),
            1,
            "4 of 10 keys left: copied out"
        );
        assert_eq!(Arc::strong_count(&full), 2, "fully used: kept");
        assert_eq!(store.digest(), digest);
        assert_eq!(store.get(b"k9"), Some(&b"v".repeat(20)[..]));
        assert_eq!(store.shared_bytes(), (full.len() as u64, 6));
    }

    #[test]
    fn random_mixes_of_shared_and_own_writes_match_a_plain_map() {
        use std::collections::HashMap;
        let mut next = below(0x2545_f491_4f6c_dd1d);
        for round in 0..200 {
            let (mut store, mut undo) = (Store::new(), UndoLog::new());
            let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            let mut buffers = Vec::new();
            for step in 0..60 {
                let key = format!("k{}", next(12)).into_bytes();
                let value = "v".repeat(1 + next(4) as usize).into_bytes();
                match next(5) {
                    0 => {
                        // A chunk of a few entries, some keys repeated.
                        let pairs: Vec<(String, String)> = (0..1 + next(4))
                            .map(|i| (format!("k{}", next(12)), format!("s{round}.{step}.{i}")))
                            .collect();
                        let (bytes, at) = owned_buffer_of(&pairs);
                        let id = store.share(Arc::clone(&bytes), locate).expect("id");
                        for (&at, (k, v)) in at.iter().zip(&pairs) {
                            store.set_shared(id, at, k.as_bytes(), v.as_bytes());
                            model.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
                        }
                        store.unpin(id);
                        buffers.push(bytes);
                    }
                    1 => {
                        store.set(&key, &value);
                        model.insert(key, value);
                    }
                    2 => {
                        assert_eq!(store.remove(&key), model.remove(&key).is_some());
                    }
                    3 => {
                        // Writes that a failed commit takes back.
                        let digest = store.digest();
                        store.put(&key, &value, 1, &mut undo);
                        store.delete(b"k0", 2, &mut undo);
                        undo.roll_back(&mut store);
                        assert_eq!(store.digest(), digest);
                    }
                    _ => store.settle_shared(),
                }
                let live: u64 = model.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
                assert_eq!(store.len(), model.len());
                assert_eq!(store.live_bytes(), live);
                let key_bytes: u64 = model.keys().map(|k| k.len() as u64).sum();
                assert_eq!(store.key_bytes(), key_bytes);
                for (k, v) in &model {
                    assert_eq!(store.get(k), Some(&v[..]));
                }
                let (_, shared_live) = store.shared_bytes();
                assert!(shared_live <= live);
                assert_held_exactly_while_used(&store, &buffers);
            }
        }
    }

    #[test]
    fn a_bulk_load_ends_as_its_writes_applied_in_order() {
        let mut next = below(0x9e37_79b9_7f4a_7c15);
        // No hint, a hint far too small (the table grows as it fills), and
        // one that spreads the keys over several regions.
        for hint in [0, 50, 40_000] {
            let mut load = BulkLoad::new(hint);
            if hint == 40_000 {
                assert!(load.regions.len() > 1, "{}", load.regions.len());
            }
            let mut plain = Store::new();
            let mut buffers = Vec::new();
            for step in 0..3000 {
                let key = format!("k{}", next(2000));
                match next(10) {
                    0..=6 => {
                        let pairs: Vec<(String, String)> = (0..1 + next(20))
                            .map(|i| (format!("k{}", next(2000)), format!("s{step}.{i}")))
                            .collect();
                        let (bytes, at) = owned_buffer_of(&pairs);
                        let id = load.share(Arc::clone(&bytes), locate).expect("id");
                        for (&at, (k, v)) in at.iter().zip(&pairs) {
                            load.set_shared(id, at, k.as_bytes(), v.as_bytes());
                            plain.set(k.as_bytes(), v.as_bytes());
                        }
                        load.unpin(id);
                        buffers.push(bytes);
                    }
                    7 | 8 => {
                        let value = format!("own{step}");
                        load.set(key.as_bytes(), value.as_bytes());
                        plain.set(key.as_bytes(), value.as_bytes());
                    }
                    _ => {
                        load.remove(key.as_bytes());
                        plain.remove(key.as_bytes());
                    }
                }
            }
            let store = load.finish();
            assert_eq!(store.len(), plain.len(), "hint {hint}");
            assert_eq!(store.digest(), plain.digest(), "hint {hint}");
            assert_eq!(store.live_bytes(), plain.live_bytes(), "hint {hint}");
            assert_eq!(store.key_bytes(), plain.key_bytes(), "hint {hint}");
            assert_held_exactly_while_used(&store, &buffers);
        }
    }

    #[test]
    fn keys_are_sorted_and_filtered() {
        let mut store = Store::new();
        for k in ["user:2", "user:10", "admin", "user:1"] {
            store.set(k.as_bytes(), b"v");
        }
        assert_eq!(
            store.keys_with_prefix(b"user:"),
            vec![&b"user:1"[..], b"user:10", b"user:2"]
        );
        assert_eq!(store.keys_with_prefix(b"").len(), 4);
        assert!(store.keys_with_prefix(b"zzz").is_empty());
    }

    #[test]
    fn digest_known_answers() {
        let mut store = Store::new();
        // SHA-256 of the empty string.
        assert_eq!(
            store.digest(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        store.set(b"b", b"2");
        store.set(b"a", b"1");
        // SHA-256 of "a\n1\nb\n2\n".
        let mut h = Sha256::new();
        h.update(b"a\n1\nb\n2\n");
        assert_eq!(store.digest(), hex::encode(h.finalize()));
    }
}
