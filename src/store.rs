//! The in-memory data set: keys to values, plus the queries the protocol
//! needs (`KEYS`, `DIGEST`), and the undo log that lets a failed commit
//! take back what it changed.
//!
//! Pure: no IO, no clocks. The write-ahead log decides what is durable; this
//! map only holds the current state. Each entry is one heap allocation
//! holding both the key and the value, which keeps a million small keys
//! within Redis's footprint. A value overwritten by one of the same length
//! is overwritten in place, and what it replaced goes to the [`UndoLog`]'s
//! one buffer, so the common overwrite allocates and frees nothing.
//!
//! The map hashes keys with foldhash, seeded at random per process: a
//! third of the cost of std's SipHash for short keys, which every write,
//! read, replay and snapshot pays. It resists collision floods only as long
//! as the seed stays unknown; Redis makes a similar trade with a
//! reduced-round SipHash.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::hash_table::Entry as Slot;
use hashbrown::HashTable;
use sha2::{Digest, Sha256};

/// One key and its value in a single allocation:
///
/// ```text
/// [key length: u16 LE][key bytes][value bytes]
/// ```
struct Entry(Box<[u8]>);

impl Entry {
    fn new(key: &[u8], value: &[u8]) -> Entry {
        let key_len = u16::try_from(key.len()).expect("keys are at most 1024 bytes");
        let mut bytes = Vec::with_capacity(2 + key.len() + value.len());
        bytes.extend_from_slice(&key_len.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Entry(bytes.into_boxed_slice())
    }

    fn split(&self) -> (&[u8], &[u8]) {
        let key_len = usize::from(u16::from_le_bytes([self.0[0], self.0[1]]));
        self.0[2..].split_at(key_len)
    }

    fn key(&self) -> &[u8] {
        self.split().0
    }

    fn value(&self) -> &[u8] {
        self.split().1
    }

    /// Key plus value bytes.
    fn live_len(&self) -> u64 {
        self.0.len() as u64 - 2
    }

    /// Sets the value to `value`: in place when the length is unchanged,
    /// else in a new allocation.
    fn set_value(&mut self, value: &[u8]) {
        let (key, old) = self.split();
        if old.len() == value.len() {
            let at = 2 + key.len();
            self.0[at..].copy_from_slice(value);
        } else {
            *self = Entry::new(key, value);
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
    /// Sum of key and value lengths, the "live data" compaction compares
    /// the log against.
    live_bytes: u64,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = self.hasher.hash_one(key);
        self.entries
            .find(hash, |e| e.key() == key)
            .map(Entry::value)
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
        match self.entries.find_entry(hash, |e| e.key() == key) {
            Ok(found) => {
                let (old, _) = found.remove();
                removed(old.value());
                self.live_bytes -= old.live_len();
                true
            }
            Err(_) => false,
        }
    }

    /// Sets `key` to `value`, first showing `replaced` the old value (or
    /// `None`).
    fn upsert(&mut self, key: &[u8], value: &[u8], replaced: impl FnOnce(Option<&[u8]>)) {
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        let slot = self
            .entries
            .entry(hash, |e| e.key() == key, |e| hasher.hash_one(e.key()));
        match slot {
            Slot::Occupied(mut found) => {
                let entry = found.get_mut();
                replaced(Some(entry.value()));
                self.live_bytes -= entry.live_len();
                entry.set_value(value);
            }
            Slot::Vacant(free) => {
                replaced(None);
                free.insert(Entry::new(key, value));
            }
        }
        self.live_bytes += (key.len() + value.len()) as u64;
    }

    /// Makes room for `additional` more keys up front, so that building a
    /// large store (a snapshot) does not rehash it as it grows. Returns
    /// whether the memory was available; if not, the store grows as usual.
    pub fn try_reserve(&mut self, additional: usize) -> bool {
        let hasher = &self.hasher;
        self.entries
            .try_reserve(additional, |e| hasher.hash_one(e.key()))
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

    /// The keys starting with `prefix`, in byte order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<&[u8]> {
        let mut keys: Vec<&[u8]> = self
            .entries
            .iter()
            .map(Entry::key)
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(Entry::split)
    }

    /// SHA-256 over `<key>\n<value>\n` for every key in byte order, as lower
    /// case hex (SPEC §2 `DIGEST`).
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
