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
//!
//! `SCAN` walks the keys in the order of their table hashes, and its
//! cursor is a hash: the next step starts at the hash after the last one
//! returned. A key keeps its hash, so a full scan returns every key
//! present throughout, however the table grows or rehashes in between
//! (hashbrown's buckets move, so a cursor over them could not promise
//! that). The order comes from an index, a `BTreeSet` of every key's hash,
//! built in bulk at the first `SCAN` ([`Store::build_scan_index`]) and
//! dropped when the server sees none for a while
//! ([`Store::drop_scan_index`]): 11 to 16 bytes a key, which a store never
//! scanned does not pay. While it is there, every new key inserts its hash
//! and every removal takes it out (unless another key shares the full
//! hash); an overwrite changes nothing, and with no index those paths pay
//! one branch. A step finds the keys of a hash by probing the table for it
//! ([`HashTable::iter_hash`]) and keeps those whose hash is equal.

use std::collections::{BTreeSet, VecDeque};
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

/// How the table hashes keys: foldhash with a random seed of the store's
/// own; tests can force a function of theirs (to make keys collide).
#[derive(Default)]
struct KeyHasher {
    seed: RandomState,
    #[cfg(test)]
    forced: Option<fn(&[u8]) -> u64>,
}

impl KeyHasher {
    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        #[cfg(test)]
        if let Some(forced) = self.forced {
            return forced(key);
        }
        self.seed.hash_one(key)
    }
}

/// Takes `hash` out of a `SCAN` index after a key with it left the table,
/// unless another key still has it.
fn unindex(
    index: &mut BTreeSet<u64>,
    entries: &HashTable<Entry>,
    hasher: &KeyHasher,
    buffers: &Buffers,
    hash: u64,
) {
    // The probe starts at the group the removed key was in (still in the
    // cache), and a candidate is rehashed only when its 7 tag bits match.
    let shared = entries
        .iter_hash(hash)
        .any(|e| hasher.hash(e.key(buffers)) == hash);
    if !shared {
        index.remove(&hash);
    }
}

/// The key-value map.
#[derive(Default)]
pub struct Store {
    entries: HashTable<Entry>,
    hasher: KeyHasher,
    buffers: Buffers,
    /// The table hash of every key, while `SCAN` uses them
    /// ([`Store::build_scan_index`] to [`Store::drop_scan_index`]).
    scan_index: Option<BTreeSet<u64>>,
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
        let hash = self.hasher.hash(key);
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
        let hash = self.hasher.hash(key);
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
        if let Some(index) = &mut self.scan_index {
            unindex(index, &self.entries, &self.hasher, buffers, hash);
        }
        if let Entry::Shared { buffer, .. } = old {
            self.buffers.release(buffer, len);
        }
        true
    }

    /// Sets `key` to `value`, first showing `replaced` the old value (or
    /// `None`).
    fn upsert(&mut self, key: &[u8], value: &[u8], replaced: impl FnOnce(Option<&[u8]>)) {
        let hash = self.hasher.hash(key);
        let (hasher, buffers) = (&self.hasher, &self.buffers);
        let slot = self.entries.entry(
            hash,
            |e| e.key(buffers) == key,
            |e| hasher.hash(e.key(buffers)),
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
                if let Some(index) = &mut self.scan_index {
                    index.insert(hash);
                }
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
                let hash = self.hasher.hash(key);
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
            |e| hasher.hash(e.key(buffers)),
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
                if let Some(index) = &mut self.scan_index {
                    index.insert(hash);
                }
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
            .try_reserve(additional, |e| hasher.hash(e.key(buffers)))
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

    /// Builds the index [`Store::scan`] walks, if there is none: every
    /// key's table hash, in order: about 11 bytes a key as built (70 ms
    /// for a million keys), up to about 16 as keys come and go. Every
    /// insert of a new key and every removal then also updates it, until
    /// [`Store::drop_scan_index`].
    pub fn build_scan_index(&mut self) {
        if self.scan_index.is_some() {
            return;
        }
        let (hasher, buffers) = (&self.hasher, &self.buffers);
        let mut hashes: Vec<u64> = (self.entries.iter())
            .map(|e| hasher.hash(e.key(buffers)))
            .collect();
        hashes.sort_unstable();
        // Sorted, the set is built bottom up, its nodes full.
        self.scan_index = Some(hashes.into_iter().collect());
    }

    /// Gives back the index's memory (no `SCAN` came for a while). A cursor
    /// handed out before stays good: the next `SCAN` builds the index
    /// anew, from the keys as they are then.
    pub fn drop_scan_index(&mut self) {
        self.scan_index = None;
    }

    /// Whether the index [`Store::scan`] needs is there.
    pub fn has_scan_index(&self) -> bool {
        self.scan_index.is_some()
    }

    /// About the most memory the `SCAN` index holds: 16 bytes a hash. Its
    /// nodes hold up to 11 hashes in 104 bytes; built in bulk they are
    /// full (11 bytes a hash), and inserts leave them about two-thirds
    /// full. 0 with none.
    pub fn scan_index_bytes(&self) -> u64 {
        self.scan_index.as_ref().map_or(0, |i| 16 * i.len() as u64)
    }

    /// One step of `SCAN`: the keys whose table hash is at least `cursor`,
    /// in hash order, at least `count` of them (1 if `count` is 0) unless
    /// fewer are left, and always every key of the last hash taken, so
    /// keys sharing a full hash are never split between steps. Also the
    /// cursor to pass next: the last hash taken plus 1, or 0 once no key
    /// has a higher hash.
    ///
    /// From cursor 0 to 0 again, every key present throughout is returned
    /// at least once, whatever is written, deleted or rehashed in between
    /// (each step covers every hash from its cursor to the next one, and a
    /// key's hash never changes); a key written or deleted during the scan
    /// may or may not be. A cursor is a position in this store's hash
    /// order only: the seed is random per store, so one from another
    /// process, or from before the store was replaced (a snapshot
    /// installed), resumes at some arbitrary point with no guarantee, as a
    /// Redis cursor does after a restart.
    ///
    /// Needs the index ([`Store::build_scan_index`]); without it (a bug)
    /// this returns no keys and cursor 0.
    pub fn scan(&self, cursor: u64, count: usize) -> (u64, Vec<&[u8]>) {
        debug_assert!(self.scan_index.is_some(), "scan without an index");
        let Some(index) = &self.scan_index else {
            return (0, Vec::new());
        };
        let (hasher, buffers) = (&self.hasher, &self.buffers);
        let count = count.max(1);
        let mut keys = Vec::with_capacity(count.min(1024));
        let mut hashes = index.range(cursor..);
        while let Some(&hash) = hashes.next() {
            let before = keys.len();
            let of_hash = (self.entries.iter_hash(hash))
                .map(|e| e.key(buffers))
                .filter(|key| hasher.hash(key) == hash);
            keys.extend(of_hash);
            debug_assert!(keys.len() > before, "an indexed hash with no key");
            if keys.len() >= count {
                // A higher hash is left, so `hash + 1` cannot overflow.
                return (hashes.next().map_or(0, |_| hash + 1), keys);
            }
        }
        (0, keys)
    }

    /// The keys starting with `prefix`, in byte order.
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
        let region = self.region_of(self.store.hasher.hash(key));
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
        let hash = self.store.hasher.hash(key);
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

    /// A table hash that makes keys collide: a key is hashed by its part
    /// before any `#`, and groups `zero` and `max` hash to 0 and
    /// `u64::MAX`.
    fn grouped(key: &[u8]) -> u64 {
        let group = key.split(|&b| b == b'#').next().unwrap_or_default();
        match group {
            b"zero" => 0,
            b"max" => u64::MAX,
            _ => foldhash::fast::FixedState::with_seed(7).hash_one(group),
        }
    }

    fn store_hashing_with(forced: Option<fn(&[u8]) -> u64>) -> Store {
        let mut store = Store::new();
        store.hasher.forced = forced;
        store
    }

    /// The index is exactly the hashes of the keys in the table.
    fn assert_index_in_step(store: &Store) {
        let rebuilt: BTreeSet<u64> = store
            .iter()
            .map(|(key, _)| store.hasher.hash(key))
            .collect();
        assert_eq!(store.scan_index.as_ref(), Some(&rebuilt));
    }

    /// Every key from cursor 0 to 0 in steps of `count`, and the number of
    /// steps.
    fn full_scan(store: &Store, count: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut keys, mut steps, mut cursor) = (Vec::new(), 0, 0);
        loop {
            let (next, page) = store.scan(cursor, count);
            steps += 1;
            assert!(next == 0 || next > cursor, "{cursor} then {next}");
            keys.extend(page.into_iter().map(<[u8]>::to_vec));
            if next == 0 {
                return (keys, steps);
            }
            cursor = next;
        }
    }

    #[test]
    fn a_full_scan_with_no_writes_returns_every_key_once() {
        let mut store = Store::new();
        store.build_scan_index();
        assert_eq!(store.scan(0, 10), (0, vec![]), "empty");
        for i in 0..5000 {
            store.set(format!("key:{i}").as_bytes(), b"v");
        }
        let mut want: Vec<Vec<u8>> = store.iter().map(|(k, _)| k.to_vec()).collect();
        want.sort_unstable();
        for count in [0, 1, 7, 100, 4999, 5000, 100_000] {
            let (mut keys, steps) = full_scan(&store, count);
            let hashes: Vec<u64> = keys.iter().map(|k| store.hasher.hash(k)).collect();
            assert!(hashes.is_sorted(), "in hash order");
            keys.sort_unstable();
            assert_eq!(keys, want, "count {count}");
            assert_eq!(steps, 5000_usize.div_ceil(count.max(1)), "count {count}");
        }
        assert_index_in_step(&store);
    }

    #[test]
    fn keys_sharing_a_full_hash_are_never_split_between_steps() {
        let mut store = store_hashing_with(Some(grouped));
        for group in ["zero", "a", "b", "c", "max"] {
            for i in 0..3 {
                store.set(format!("{group}#{i}").as_bytes(), b"v");
            }
        }
        store.set(b"alone", b"v");
        store.build_scan_index();
        assert_eq!(store.scan_index.as_ref().map(BTreeSet::len), Some(6));
        let mut cursor = 0;
        let mut pages = Vec::new();
        loop {
            let (next, mut page) = store.scan(cursor, 1);
            page.sort_unstable();
            pages.push(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        assert_eq!(pages.len(), 6, "one page a hash: {pages:?}");
        let group_of = |k: &[u8]| k.split(|&b| b == b'#').next().map(<[u8]>::to_vec);
        for page in &pages {
            assert!(page.len() == 3 || page == &[b"alone"], "{page:?}");
            assert!(page.iter().all(|k| group_of(k) == group_of(page[0])));
        }
        assert_eq!(pages[0][0], b"zero#0", "hash 0 comes first");
        assert_eq!(pages[5][0], b"max#0", "u64::MAX last, then cursor 0");
        // At u64::MAX there is no next hash to point to.
        assert_eq!(store.scan(u64::MAX, 1).0, 0);
        assert_eq!(store.scan(u64::MAX, 1).1.len(), 3);
        // A step asked for 4 keys takes the whole group its fourth falls in.
        let (cursor, page) = store.scan(0, 4);
        let (mut want, mut last) = (0, 0);
        for (n, p) in pages.iter().enumerate() {
            (want, last) = (want + p.len(), n);
            if want >= 4 {
                break;
            }
        }
        assert_eq!(page.len(), want);
        assert_eq!(cursor, store.hasher.hash(pages[last][0]) + 1);

        // A shared hash stays while any of its keys does.
        assert!(store.remove(b"a#0"));
        assert!(store.remove(b"a#1"));
        assert_index_in_step(&store);
        assert!(store.remove(b"a#2"));
        assert_index_in_step(&store);
        assert_eq!(store.scan_index.as_ref().map(BTreeSet::len), Some(5));
    }

    #[test]
    fn dropping_the_index_gives_it_back_and_it_builds_anew() {
        let mut store = Store::new();
        assert!(!store.has_scan_index());
        assert_eq!(store.scan_index_bytes(), 0);
        for i in 0..100 {
            store.set(format!("k{i}").as_bytes(), b"v");
        }
        store.build_scan_index();
        assert!(store.has_scan_index());
        assert_eq!(store.scan_index_bytes(), 1600);
        let (cursor, first) = store.scan(0, 10);
        let first: Vec<Vec<u8>> = first.into_iter().map(<[u8]>::to_vec).collect();
        store.drop_scan_index();
        assert!(!store.has_scan_index());
        assert_eq!(store.scan_index_bytes(), 0);
        // Writes with no index there leave nothing to update.
        for i in 100..200 {
            store.set(format!("k{i}").as_bytes(), b"v");
        }
        for i in 0..50 {
            store.remove(format!("k{i}").as_bytes());
        }
        store.build_scan_index();
        assert_index_in_step(&store);
        // The cursor from before still means a place in hash order.
        let mut keys = first;
        let mut cursor = cursor;
        while cursor != 0 {
            let (next, page) = store.scan(cursor, 10);
            keys.extend(page.into_iter().map(<[u8]>::to_vec));
            cursor = next;
        }
        for i in 50..100 {
            assert!(keys.contains(&format!("k{i}").into_bytes()), "k{i}");
        }
    }

    /// Scans while writes, deletes, roll-backs, shared chunks and growth
    /// happen between the steps; every key present from a scan's start to
    /// its end must come back.
    fn scan_under_writes(forced: Option<fn(&[u8]) -> u64>, seed: u64) {
        use std::collections::HashSet;
        let mut next = below(seed);
        let mut store = store_hashing_with(forced);
        let mut undo = UndoLog::new();
        let mut model: HashSet<Vec<u8>> = HashSet::new();
        let mut buffers = Vec::new();
        let name = |n: u64| match forced {
            Some(_) => format!("k{}#{}", n / 3, n % 3).into_bytes(),
            None => format!("k{n}").into_bytes(),
        };
        let (mut fresh, mut seq, mut grew) = (0, 0, 0);
        for round in 0..24 {
            // Rounds alternate growth and churn that leaves the size
            // about where it is (deletes leave tombstones, which make
            // hashbrown rehash in place).
            let growing = round % 2 == 0;
            store.build_scan_index();
            let at_start = model.clone();
            let mut left = HashSet::new();
            let mut seen = HashSet::new();
            let mut cursor = 0;
            loop {
                let buckets = store.entries.num_buckets();
                for _ in 0..next(40) {
                    seq += 1;
                    let old = name(next(fresh.max(1)));
                    match next(20) {
                        0..=7 if growing => {
                            let key = name(fresh);
                            fresh += 1;
                            store.put(&key, b"new", seq, &mut undo);
                            model.insert(key);
                        }
                        0..=3 => {
                            let key = name(fresh);
                            fresh += 1;
                            store.set(&key, b"new");
                            model.insert(key);
                        }
                        4..=7 => {
                            if store.delete(&old, seq, &mut undo) {
                                model.remove(&old);
                                left.insert(old);
                            }
                        }
                        8..=10 => {
                            // An overwrite, or a key back.
                            let value = "v".repeat(1 + next(20) as usize);
                            store.put(&old, value.as_bytes(), seq, &mut undo);
                            model.insert(old);
                        }
                        11 => {
                            // Writes a failed commit takes back.
                            undo.forget_through(seq);
                            let before = model.clone();
                            for i in 0..next(6) {
                                let key = name(next(fresh + 10));
                                if i % 2 == 0 {
                                    store.put(&key, b"undone", seq, &mut undo);
                                } else if store.delete(&key, seq, &mut undo) {
                                    left.insert(key);
                                }
                                seq += 1;
                            }
                            undo.roll_back(&mut store);
                            model = before;
                        }
                        12 | 13 => {
                            // A chunk of a snapshot, its keys old and new.
                            let pairs: Vec<(String, String)> = (0..1 + next(6))
                                .map(|i| {
                                    let n = if i % 2 == 0 {
                                        next(fresh + 1)
                                    } else {
                                        fresh + i
                                    };
                                    let key = String::from_utf8(name(n)).expect("ascii");
                                    (key, format!("s{seq}"))
                                })
                                .collect();
                            let (bytes, at) = owned_buffer_of(&pairs);
                            let id = store.share(Arc::clone(&bytes), locate).expect("id");
                            for (&at, (k, v)) in at.iter().zip(&pairs) {
                                store.set_shared(id, at, k.as_bytes(), v.as_bytes());
                                model.insert(k.as_bytes().to_vec());
                            }
                            fresh += pairs.len() as u64;
                            store.unpin(id);
                            buffers.push(bytes);
                        }
                        14 => store.settle_shared(),
                        15 if next(10) == 0 => {
                            // No SCAN for a while: the next step rebuilds.
                            store.drop_scan_index();
                        }
                        _ => {
                            if store.remove(&old) {
                                model.remove(&old);
                                left.insert(old);
                            }
                        }
                    }
                    if next(50) == 0 {
                        undo.forget_through(seq);
                    }
                }
                if store.entries.num_buckets() != buckets {
                    grew += 1;
                }
                assert_eq!(store.len(), model.len());
                store.build_scan_index();
                let (after, page) = store.scan(cursor, 1 + next(60) as usize);
                for key in page {
                    assert!(model.contains(key), "a key returned is there");
                    seen.insert(key.to_vec());
                }
                if after == 0 {
                    break;
                }
                cursor = after;
            }
            for key in at_start.difference(&left) {
                assert!(
                    seen.contains(key),
                    "round {round}: {} present throughout, never returned",
                    String::from_utf8_lossy(key)
                );
            }
            assert_index_in_step(&store);
        }
        assert!(store.len() > 3000, "{}", store.len());
        assert!(grew >= 4, "the table grew {grew} times during scans");
    }

    #[test]
    fn a_full_scan_returns_every_key_present_throughout_despite_writes_and_growth() {
        scan_under_writes(None, 0x2545_f491_4f6c_dd1d);
        scan_under_writes(None, 0x9e37_79b9_7f4a_7c15);
    }

    #[test]
    fn a_full_scan_returns_every_key_present_throughout_when_hashes_collide() {
        scan_under_writes(Some(grouped), 0x2545_f491_4f6c_dd1d);
    }

    #[test]
    fn the_index_stays_the_tables_hashes_through_random_mixes() {
        let mut next = below(0x0123_4567_89ab_cdef);
        for round in 0..100 {
            let forced = if round % 2 == 0 {
                None
            } else {
                Some(grouped as fn(&[u8]) -> u64)
            };
            let (mut store, mut undo) = (store_hashing_with(forced), UndoLog::new());
            store.build_scan_index();
            for step in 0..80 {
                let key = format!("k{}#{}", next(6), next(3)).into_bytes();
                let value = "v".repeat(1 + next(4) as usize).into_bytes();
                match next(7) {
                    0 => {
                        let pairs: Vec<(String, String)> = (0..1 + next(4))
                            .map(|i| (format!("k{}#{}", next(6), next(3)), format!("s{step}.{i}")))
                            .collect();
                        let (bytes, at) = owned_buffer_of(&pairs);
                        let id = store.share(Arc::clone(&bytes), locate).expect("id");
                        for (&at, (k, v)) in at.iter().zip(&pairs) {
                            store.set_shared(id, at, k.as_bytes(), v.as_bytes());
                        }
                        store.unpin(id);
                    }
                    1 => store.set(&key, &value),
                    2 => drop(store.remove(&key)),
                    3 => {
                        store.put(&key, &value, 1, &mut undo);
                        store.delete(b"k0#0", 2, &mut undo);
                        store.put(b"k5#2", b"x", 3, &mut undo);
                        undo.roll_back(&mut store);
                    }
                    4 => {
                        store.put(&key, &value, 1, &mut undo);
                        undo.forget_through(1);
                    }
                    5 => drop(store.delete(&key, 1, &mut undo)),
                    _ => store.settle_shared(),
                }
                assert_index_in_step(&store);
            }
            undo.roll_back(&mut store);
            assert_index_in_step(&store);
        }

        // A bulk load keeps it too, region fills and removals both (a bulk
        // load never has one, but the paths are the same).
        for forced in [None, Some(grouped as fn(&[u8]) -> u64)] {
            let mut load = BulkLoad::new(40_000);
            load.store.hasher.forced = forced;
            load.store.build_scan_index();
            for step in 0..3000 {
                let key = format!("k{}#{}", next(700), next(3));
                match next(10) {
                    0..=6 => {
                        let pairs: Vec<(String, String)> = (0..1 + next(20))
                            .map(|i| {
                                (
                                    format!("k{}#{}", next(700), next(3)),
                                    format!("s{step}.{i}"),
                                )
                            })
                            .collect();
                        let (bytes, at) = owned_buffer_of(&pairs);
                        let id = load.share(Arc::clone(&bytes), locate).expect("id");
                        for (&at, (k, v)) in at.iter().zip(&pairs) {
                            load.set_shared(id, at, k.as_bytes(), v.as_bytes());
                        }
                        load.unpin(id);
                    }
                    7 | 8 => load.set(key.as_bytes(), format!("own{step}").as_bytes()),
                    _ => load.remove(key.as_bytes()),
                }
            }
            let store = load.finish();
            assert!(store.len() > 1000, "{}", store.len());
            assert_index_in_step(&store);
        }
    }

    /// Resident memory of this process, in bytes.
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = (statm.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// Costs to read, not to assert. Run in release, alone; the resident
    /// memory is only the index's when large blocks are mapped and unmapped
    /// (else glibc keeps freed ones):
    /// `MALLOC_MMAP_THRESHOLD_=131072 cargo test --release --lib
    /// scan_index_costs -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn scan_index_costs() {
        use std::time::Instant;
        const KEYS: u64 = 1_000_000;
        const NEW: u64 = 500_000;
        let filled = || {
            let mut store = Store::new();
            for i in 0..KEYS {
                store.set(format!("key:{i:012}").as_bytes(), b"value-of-16-byte");
            }
            store
        };
        // Each measure of memory takes fresh pages (what an earlier store
        // freed would be reused and not show).
        let rss = resident_bytes();
        let mut store = filled();
        let plain = resident_bytes() - rss;
        let rss = resident_bytes();
        let start = Instant::now();
        store.build_scan_index();
        let built = start.elapsed();
        println!(
            "build for {KEYS} keys: {built:?}; resident +{:.1} B a key (estimate {})",
            (resident_bytes() - rss) as f64 / KEYS as f64,
            store.scan_index_bytes() / KEYS
        );
        let rss = resident_bytes();
        let mut grown = Store::new();
        grown.build_scan_index();
        for i in 0..KEYS {
            grown.set(format!("key:{i:012}").as_bytes(), b"value-of-16-byte");
        }
        println!(
            "index grown key by key: resident +{:.1} B a key",
            ((resident_bytes() - rss) as f64 - plain as f64) / KEYS as f64
        );
        drop(grown);
        let start = Instant::now();
        let (keys, steps) = full_scan(&store, 10);
        println!(
            "full scan, COUNT 10: {:?} for {} keys in {steps} steps",
            start.elapsed(),
            keys.len()
        );
        drop(keys);

        for with_index in [false, true] {
            let mut store = filled();
            if with_index {
                store.build_scan_index();
            }
            let mut undo = UndoLog::new();
            let start = Instant::now();
            for i in KEYS..KEYS + NEW {
                let key = format!("key:{i:012}");
                store.put(key.as_bytes(), b"value-of-16-byte", i, &mut undo);
                if i % 1000 == 0 {
                    undo.forget_through(i);
                }
            }
            let put = start.elapsed();
            let start = Instant::now();
            for i in KEYS..KEYS + NEW {
                let key = format!("key:{i:012}");
                store.delete(key.as_bytes(), i, &mut undo);
                if i % 1000 == 0 {
                    undo.forget_through(i);
                }
            }
            let deleted = start.elapsed();
            let start = Instant::now();
            for i in 0..NEW {
                let key = format!("key:{i:012}");
                store.put(key.as_bytes(), b"value-of-16-byt2", i, &mut undo);
                if i % 1000 == 0 {
                    undo.forget_through(i);
                }
            }
            let overwrite = start.elapsed();
            let per = |d: std::time::Duration| d.as_nanos() as f64 / NEW as f64;
            println!(
                "index {}: put new key {:.0} ns, delete {:.0} ns, overwrite {:.0} ns (store of {KEYS} keys)",
                if with_index { "present" } else { "absent " },
                per(put),
                per(deleted),
                per(overwrite)
            );
        }
    }
}
