//! The in-memory data set: keys to values, plus the queries the protocol
//! needs (`KEYS`, `DIGEST`).
//!
//! Pure: no IO, no clocks. The write-ahead log decides what is durable; this
//! map only holds the current state. Each entry is one heap allocation
//! holding both the key and the value, which keeps a million small keys
//! within Redis's footprint.
//!
//! The map hashes keys with foldhash, seeded at random per process: a
//! third of the cost of std's SipHash for short keys, which every write,
//! read, replay and snapshot pays. It resists collision floods only as long
//! as the seed stays unknown; Redis makes a similar trade with a
//! reduced-round SipHash.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use foldhash::fast::RandomState;
use sha2::{Digest, Sha256};

/// One key and its value in a single allocation:
///
/// ```text
/// [key length: u16 LE][key bytes][value bytes]
/// ```
///
/// It hashes and compares as its key, so a `HashSet<Entry>` is a map that
/// can be looked up with a plain `&[u8]` key.
pub struct Entry(Box<[u8]>);

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
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

/// What a mutation replaced, kept so a failed commit can be rolled back.
#[must_use]
pub enum Undo {
    /// The key had this entry (which also names the key): put it back.
    Restore(Entry),
    /// The key was absent: remove it.
    Remove(Box<[u8]>),
}

/// The key-value map.
#[derive(Default)]
pub struct Store {
    entries: HashSet<Entry, RandomState>,
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
        self.entries.get(key).map(Entry::value)
    }

    /// Sets `key` to `value`; returns what it replaced.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Undo {
        match self.replace(key, value) {
            Some(old) => Undo::Restore(old),
            None => Undo::Remove(key.into()),
        }
    }

    /// Removes `key`; returns what it removed, or `None` if it was absent.
    pub fn delete(&mut self, key: &[u8]) -> Option<Undo> {
        let old = self.take(key)?;
        Some(Undo::Restore(old))
    }

    /// Sets `key` to `value` for good: replay and snapshots, which never
    /// roll back, skip the undo record and its copy of the key.
    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        self.replace(key, value);
    }

    /// Removes `key` for good; whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.take(key).is_some()
    }

    fn replace(&mut self, key: &[u8], value: &[u8]) -> Option<Entry> {
        let old = self.entries.replace(Entry::new(key, value));
        self.live_bytes += (key.len() + value.len()) as u64;
        if let Some(old) = &old {
            self.live_bytes -= old.0.len() as u64 - 2;
        }
        old
    }

    fn take(&mut self, key: &[u8]) -> Option<Entry> {
        let old = self.entries.take(key)?;
        self.live_bytes -= old.0.len() as u64 - 2;
        Some(old)
    }

    /// Puts back what a mutation replaced. Undos must be applied newest
    /// first.
    pub fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Restore(old) => {
                self.take(old.key());
                self.live_bytes += old.0.len() as u64 - 2;
                self.entries.insert(old);
            }
            Undo::Remove(key) => drop(self.take(&key)),
        }
    }

    /// Makes room for `additional` more keys up front, so that building a
    /// large store (a snapshot) does not rehash it as it grows. Returns
    /// whether the memory was available; if not, the store grows as usual.
    pub fn try_reserve(&mut self, additional: usize) -> bool {
        self.entries.try_reserve(additional).is_ok()
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
        let mut store = Store::new();
        assert_eq!(store.get(b"a"), None);
        let _ = store.put(b"a", b"1");
        let _ = store.put(b"a", b"22");
        assert_eq!(store.get(b"a"), Some(&b"22"[..]));
        assert_eq!(store.live_bytes(), 3);
        assert!(store.delete(b"a").is_some());
        assert!(store.delete(b"a").is_none());
        assert_eq!(store.live_bytes(), 0);
        assert!(store.is_empty());
    }

    #[test]
    fn set_and_remove_match_put_and_delete() {
        let (mut a, mut b) = (Store::new(), Store::new());
        for (k, v) in [("x", "1"), ("y", "22"), ("x", "333")] {
            let _ = a.put(k.as_bytes(), v.as_bytes());
            b.set(k.as_bytes(), v.as_bytes());
        }
        assert!(a.delete(b"y").is_some());
        assert!(b.remove(b"y"));
        assert!(!b.remove(b"y"));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.live_bytes(), b.live_bytes());
    }

    #[test]
    fn undo_restores_previous_state_newest_first() {
        let mut store = Store::new();
        let _ = store.put(b"a", b"1");
        let digest = store.digest();
        let u1 = store.put(b"a", b"2");
        let u2 = store.put(b"b", b"3");
        let u3 = store.delete(b"a").expect("a exists");
        store.undo(u3);
        store.undo(u2);
        store.undo(u1);
        assert_eq!(store.get(b"a"), Some(&b"1"[..]));
        assert_eq!(store.get(b"b"), None);
        assert_eq!(store.live_bytes(), 2);
        assert_eq!(store.digest(), digest);
    }

    #[test]
    fn keys_are_sorted_and_filtered() {
        let mut store = Store::new();
        for k in ["user:2", "user:10", "admin", "user:1"] {
            let _ = store.put(k.as_bytes(), b"v");
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
        let _ = store.put(b"b", b"2");
        let _ = store.put(b"a", b"1");
        // SHA-256 of "a\n1\nb\n2\n".
        let mut h = Sha256::new();
        h.update(b"a\n1\nb\n2\n");
        assert_eq!(store.digest(), hex::encode(h.finalize()));
    }
}
