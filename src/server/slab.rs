//! A slab: connections stored by a small integer key that doubles as their
//! mio `Token`, with freed keys reused.
//!
//! Keys are released by the loop only at the end of a turn, so a stale event
//! in the same batch can never reach a new connection that took the key.

/// Values addressed by reusable `usize` keys.
pub struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// The key the next [`Slab::insert`] will use.
    pub fn vacant_key(&self) -> usize {
        self.free.last().copied().unwrap_or(self.slots.len())
    }

    /// Stores `value`; returns its key.
    pub fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(value);
                key
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        }
    }

    /// Removes and returns the value at `key`, if any.
    pub fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.slots.get_mut(key)?.take()?;
        self.free.push(key);
        self.len -= 1;
        Some(value)
    }

    /// The value at `key`.
    pub fn get(&self, key: usize) -> Option<&T> {
        self.slots.get(key)?.as_ref()
    }

    /// The value at `key`, mutably.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.slots.get_mut(key)?.as_mut()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(k, v)| Some((k, v.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_after_removal() {
        let mut slab = Slab::default();
        assert_eq!(slab.vacant_key(), 0);
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!((a, b, slab.iter().count()), (0, 1, 2));
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.vacant_key(), 0);
        assert_eq!(slab.insert("c"), 0);
        assert_eq!(slab.get(0), Some(&"c"));
        assert_eq!(
            slab.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(),
            vec![(0, "c"), (1, "b")]
        );
        assert_eq!(slab.remove(99), None);
        assert_eq!(slab.iter().count(), 2);
    }
}
