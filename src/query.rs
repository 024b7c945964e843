//! `DIGEST` and `KEYS`, the two requests that read the whole data set, as
//! pure functions: from a [`Store`], or folded over a stream of writes.
//!
//! Pure: no IO, no clocks. The loop answers them from the live store when
//! the data set is small; past that, a job thread folds the log's records
//! through the request's seq into a [`Fold`] and encodes the same reply
//! (see `server::jobs`). Both paths end in [`Query::answer`], so they
//! cannot disagree on order or format.

use crate::protocol;
use crate::resp::{encode, glob};
use crate::store::Store;
use crate::wal::record::{BatchEntries, Op};

/// A request over the whole data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `DIGEST`: SHA-256 over `<key>\n<value>\n` for every key in byte
    /// order, as 64 hex digits.
    Digest,
    /// `KEYS [prefix]`: the count, then the keys starting with `prefix` in
    /// byte order.
    Keys { prefix: Box<[u8]> },
    /// `KEYVAL.DIGEST` on the Redis face: the digest as a bulk string.
    RedisDigest,
    /// `KEYS pattern` on the Redis face: an array of the keys matching
    /// the glob `pattern`, in byte order.
    RedisKeys { pattern: Box<[u8]> },
}

impl Query {
    /// The encoded reply for the data in `store`.
    pub fn answer(&self, store: &Store) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Query::Digest => protocol::encode_value(&mut out, store.digest().as_bytes()),
            Query::Keys { prefix } => {
                protocol::encode_list(&mut out, store.keys_with_prefix(prefix).into_iter());
            }
            Query::RedisDigest => encode::bulk(&mut out, store.digest().as_bytes()),
            Query::RedisKeys { pattern } => {
                let keys: Vec<&[u8]> = store
                    .keys_with_prefix(&glob::literal_prefix(pattern))
                    .into_iter()
                    .filter(|key| glob::matches(pattern, key))
                    .collect();
                encode::array(&mut out, keys.len());
                for key in keys {
                    encode::bulk(&mut out, key);
                }
            }
        }
        out
    }

    /// The most bytes [`Query::answer`] can give for the data in `store`,
    /// found without building it: what a query reserves against its
    /// connection's output limit while a job computes it. `KEYS` with an
    /// empty prefix is exact; with a prefix, it is the bound for every key.
    pub fn reply_bound(&self, store: &Store) -> usize {
        match self {
            // 64 hex digits and a newline.
            Query::Digest => 65,
            // `$64\r\n`, the digits, `\r\n`.
            Query::RedisDigest => 71,
            Query::RedisKeys { .. } => {
                let keys = store.len();
                let bytes = usize::try_from(store.key_bytes()).unwrap_or(usize::MAX);
                // `*<n>\r\n`, then per key `$<len>\r\n<key>\r\n` (a key's
                // length has at most 4 digits).
                24usize
                    .saturating_add(bytes)
                    .saturating_add(keys.saturating_mul(9))
            }
            Query::Keys { .. } => {
                let keys = store.len();
                let bytes = usize::try_from(store.key_bytes()).unwrap_or(usize::MAX);
                // The count line, then each key and its newline.
                (keys.to_string().len() + 1)
                    .saturating_add(bytes)
                    .saturating_add(keys)
            }
        }
    }

    /// The request line's command word, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Query::Digest => "DIGEST",
            Query::Keys { .. } | Query::RedisKeys { .. } => "KEYS",
            Query::RedisDigest => "KEYVAL.DIGEST",
        }
    }

    /// An empty fold for this query, to feed writes in log order.
    pub fn fold(self) -> Fold {
        Fold {
            query: self,
            store: Store::new(),
        }
    }
}

/// A query's answer being built from writes replayed in log order: the
/// data the query needs, no more (`KEYS` keeps only matching keys, without
/// their values).
pub struct Fold {
    query: Query,
    store: Store,
}

impl Fold {
    /// Applies one write (`Op::Fork` changes no data and is ignored; an
    /// `Op::Batch` is its `value`'s entries, applied in order, as a batch
    /// record holds them).
    pub fn apply(&mut self, op: Op, key: &[u8], value: &[u8]) {
        match (&self.query, op) {
            (_, Op::Fork) => {}
            (_, Op::Batch) => {
                // The log checked the entries when it read the record.
                for entry in BatchEntries::new(value).map_while(Result::ok) {
                    self.apply(entry.op, entry.key, entry.value);
                }
            }
            (_, Op::Delete) => drop(self.store.remove(key)),
            (Query::Digest | Query::RedisDigest, Op::Put) => self.store.set(key, value),
            (Query::Keys { prefix }, Op::Put) => {
                if key.starts_with(prefix) {
                    self.store.set(key, b"");
                }
            }
            (Query::RedisKeys { pattern }, Op::Put) => {
                if glob::matches(pattern, key) {
                    self.store.set(key, b"");
                }
            }
        }
    }

    /// Keys held so far.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// The encoded reply for the writes applied.
    pub fn finish(self) -> Vec<u8> {
        self.query.answer(&self.store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::xorshift;
    use crate::wal::record::{Decoded, Record};
    use sha2::{Digest, Sha256};

    fn keys(prefix: &str) -> Query {
        Query::Keys {
            prefix: prefix.as_bytes().into(),
        }
    }

    #[test]
    fn answers_are_the_protocol_replies() {
        let mut store = Store::new();
        assert_eq!(
            Query::Digest.answer(&store),
            b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        );
        assert_eq!(keys("").answer(&store), b"0\n");
        store.set(b"user:2", b"b");
        store.set(b"user:10", b"a");
        store.set(b"admin", b"c");
        assert_eq!(keys("user:").answer(&store), b"2\nuser:10\nuser:2\n");
        assert_eq!(keys("").answer(&store), b"3\nadmin\nuser:10\nuser:2\n");
        let digest = Query::Digest.answer(&store);
        assert_eq!(digest.len(), 65);
        assert_eq!(digest, format!("{}\n", store.digest()).into_bytes());
    }

    /// A random value: empty, or bytes a line protocol could not carry.
    fn value(rng: &mut u64) -> Vec<u8> {
        match xorshift(rng) % 4 {
            0 => Vec::new(),
            1 => vec![b'\r', b'\n', 0, 0xff, xorshift(rng) as u8],
            _ => format!("v{}", xorshift(rng) % 1000).into_bytes(),
        }
    }

    /// The value of a batch record of `entries`, as the log holds it.
    fn batch_value(entries: &[(Op, &[u8], &[u8])]) -> Vec<u8> {
        let mut record = Vec::new();
        Record::encode_batch(&mut record, 1, entries).expect("a valid batch");
        let Ok(Decoded::Record(rec, _)) = Record::decode(&record) else {
            panic!("a batch that does not decode");
        };
        rec.value.to_vec()
    }

    /// Random puts, deletes and batches of them over a small key space,
    /// folded, give the same replies as the store the same writes built.
    #[test]
    fn a_fold_over_the_writes_answers_like_the_store() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..50 {
            let queries = [Query::Digest, keys(""), keys("k1"), keys("zz")];
            let mut folds: Vec<Fold> = queries.iter().cloned().map(Query::fold).collect();
            let mut store = Store::new();
            for _ in 0..(round * 7) {
                let mut writes: Vec<(Op, Vec<u8>, Vec<u8>)> = Vec::new();
                let batch = xorshift(&mut rng).is_multiple_of(5);
                for _ in 0..if batch { 1 + xorshift(&mut rng) % 4 } else { 1 } {
                    let key = format!("k{}", xorshift(&mut rng) % 40).into_bytes();
                    writes.push(match xorshift(&mut rng) % 4 {
                        0 => (Op::Delete, key, Vec::new()),
                        1 if !batch => (Op::Fork, key, Vec::new()),
                        _ => (Op::Put, key, value(&mut rng)),
                    });
                }
                for (op, key, value) in &writes {
                    match op {
                        Op::Put => store.set(key, value),
                        Op::Delete => drop(store.remove(key)),
                        Op::Fork | Op::Batch => {}
                    }
                }
                let entries: Vec<(Op, &[u8], &[u8])> = writes
                    .iter()
                    .map(|(op, k, v)| (*op, &k[..], &v[..]))
                    .collect();
                let (op, key, value) = if batch {
                    (Op::Batch, Vec::new(), batch_value(&entries))
                } else {
                    writes.swap_remove(0)
                };
                for fold in &mut folds {
                    fold.apply(op, &key, &value);
                }
            }
            for (query, fold) in queries.iter().zip(folds) {
                assert_eq!(fold.finish(), query.answer(&store), "{query:?}");
            }
        }
    }

    #[test]
    fn the_digest_hashes_raw_bytes_of_any_value() {
        let mut store = Store::new();
        let pairs: [(&[u8], &[u8]); 4] = [
            (b"b", b""),
            (b"a", b"\r\n"),
            (b"c", b"\0\xff\n"),
            (b"a\x01", b"x"),
        ];
        let mut fold = Query::Digest.fold();
        for (key, value) in pairs {
            store.set(key, value);
            fold.apply(Op::Put, key, value);
        }
        // SHA-256 of "<key>\n<value>\n" in key byte order, computed by hand.
        let mut hasher = Sha256::new();
        hasher.update(b"a\n\r\n\na\x01\nx\nb\n\nc\n\0\xff\n\n");
        let want = format!("{}\n", hex::encode(hasher.finalize())).into_bytes();
        assert_eq!(Query::Digest.answer(&store), want);
        assert_eq!(fold.finish(), want);
    }

    #[test]
    fn the_reply_bound_holds_and_is_exact_without_a_prefix() {
        let mut store = Store::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200 {
            let key = format!("k{}", xorshift(&mut rng) % 5000);
            if round % 5 == 4 {
                store.remove(key.as_bytes());
            } else {
                store.set(key.as_bytes(), b"some value");
            }
            for query in [Query::Digest, keys(""), keys("k1"), keys("zz")] {
                let bound = query.reply_bound(&store);
                let len = query.answer(&store).len();
                assert!(len <= bound, "{query:?}: {len} > {bound}");
                if query == keys("") || query == Query::Digest {
                    assert_eq!(len, bound, "{query:?}");
                }
            }
        }
    }

    #[test]
    fn a_keys_fold_keeps_only_matching_keys() {
        let mut fold = keys("a").fold();
        fold.apply(Op::Put, b"a1", b"long value");
        fold.apply(Op::Put, b"b1", b"v");
        fold.apply(Op::Put, b"a2", b"v");
        fold.apply(Op::Delete, b"a2", b"");
        fold.apply(Op::Delete, b"zz", b"");
        assert_eq!(fold.len(), 1);
        assert_eq!(fold.finish(), b"1\na1\n");
    }
}
