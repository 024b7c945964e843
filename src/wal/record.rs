//! The byte layout of the write-ahead log: the file header and the records.
//!
//! Pure: encoding appends to a `Vec<u8>`, decoding reads a `&[u8]`. Nothing
//! here touches a file, so every damaged-input case is a unit test. All
//! integers are little-endian; no `usize` ever reaches the format.
//!
//! ```text
//! header (48 bytes)
//!   0   8  magic        "KEYVALOG"
//!   8   4  version      u32 = 2 (1 is read too)
//!  12  16  history id   random bytes chosen when the history began
//!  28   8  base seq     u64: the records before the first one with a higher
//!                       seq are a snapshot of the data as of this seq
//!  36   8  epoch        u64: the leadership term the history belongs to
//!  44   4  crc          u32: CRC-32 (IEEE) of bytes 0..44
//!
//! record (19 + key + value bytes)
//!   0   4  body length  u32: bytes after the crc field
//!   4   4  crc          u32: CRC-32 (IEEE) of the body
//!   8   8  seq          u64: sequence number of the write
//!  16   1  op           1 = PUT, 2 = DELETE, 3 = FORK, 4 = BATCH
//!  17   2  key length   u16
//!  19   k  key
//!  19+k v  value        rest of the body (empty for DELETE; any bytes,
//!                       empty included, for PUT)
//!
//! FORK (a new history begins after this log's last write; see `lineage`)
//!   seq   = the last seq of the old history (a fork takes no seq of its own)
//!   key   = the new history id (16 bytes)
//!   value = the new history's epoch (u64, 8 bytes)
//!
//! BATCH (several puts and deletes as one write: one seq, one checksum)
//!   key   = empty
//!   value = one or more entries, back to back, filling it exactly:
//!     0   1  op          1 = PUT, 2 = DELETE
//!     1   2  key length  u16, at least 1
//!     3   4  value len   u32 (0 for DELETE)
//!     7   k  key
//!     7+k v  value
//! ```
//!
//! Every reader applies a batch's entries in order, all of them or (a torn
//! or damaged record) none. A batch whose entries do not fill its value
//! exactly is a malformed record, like one whose checksum does not match.
//!
//! **Versions.** Version 1 logs have no BATCH record and no PUT with an
//! empty value; this code reads them as they are. It writes version 2, and
//! a node that opens a version 1 log for writing first rewrites its header
//! as version 2 (see `Wal::open`), so a build that only knows version 1
//! refuses the file instead of taking a batch for a torn tail and cutting
//! it.

/// The first eight bytes of every log file.
pub const MAGIC: &[u8; 8] = b"KEYVALOG";

/// The format version this code writes.
pub const VERSION: u32 = 2;

/// The oldest format version this code reads: version 1, which has no
/// batch records.
pub const MIN_VERSION: u32 = 1;

/// Size of the file header.
pub const HEADER_LEN: usize = 48;

/// Bytes in front of the body: length and checksum.
pub const RECORD_PREFIX_LEN: usize = 8;

/// Bytes of a body before the key: seq, op, key length.
pub const BODY_FIXED_LEN: usize = 11;

/// Upper bound on a record body. The protocol caps lines at
/// `--max-line-bytes`; this cap only stops a damaged length field from
/// making the reader wait for gigabytes.
pub const MAX_BODY_LEN: usize = 256 << 20;

/// A history id: 16 random bytes, shown as 32 hex digits.
pub type HistoryId = [u8; 16];

/// The file header: which history the log belongs to and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The history this log belongs to.
    pub history: HistoryId,
    /// The seq the snapshot part of the file brings the data to.
    pub base_seq: u64,
    /// The leadership term.
    pub epoch: u64,
}

/// Why a header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Short,
    /// Not a keyval log.
    BadMagic,
    /// A keyval log of a version this build cannot read (outside
    /// [`MIN_VERSION`]`..=`[`VERSION`]).
    UnsupportedVersion(u32),
    /// The header checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => write!(f, "header is shorter than {HEADER_LEN} bytes"),
            HeaderError::BadMagic => write!(f, "not a keyval log (bad magic)"),
            HeaderError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported log format version {v} (this build reads versions \
                     {MIN_VERSION} to {VERSION}"
                )?;
                if *v > VERSION {
                    write!(f, "; a newer keyval wrote this file")?;
                }
                write!(f, ")")
            }
            HeaderError::BadChecksum => write!(f, "header checksum mismatch"),
        }
    }
}

impl Header {
    /// Appends the 48 header bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.history);
        out.extend_from_slice(&self.base_seq.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Reads a header from the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Errors
    /// A [`HeaderError`] when the bytes are not a valid header.
    pub fn decode(buf: &[u8]) -> Result<Header, HeaderError> {
        Header::decode_versioned(buf).map(|(header, _)| header)
    }

    /// Reads a header like [`Header::decode`], and the format version it
    /// names (from [`MIN_VERSION`] to [`VERSION`]).
    ///
    /// # Errors
    /// A [`HeaderError`] when the bytes are not a valid header.
    pub fn decode_versioned(buf: &[u8]) -> Result<(Header, u32), HeaderError> {
        let bytes = buf.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
        if &bytes[..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = le_u32(&bytes[8..12]);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        if crc32fast::hash(&bytes[..44]) != le_u32(&bytes[44..48]) {
            return Err(HeaderError::BadChecksum);
        }
        let mut history = [0u8; 16];
        history.copy_from_slice(&bytes[12..28]);
        let header = Header {
            history,
            base_seq: le_u64(&bytes[28..36]),
            epoch: le_u64(&bytes[36..44]),
        };
        Ok((header, version))
    }
}

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Delete,
    /// A new history begins: no data changes.
    Fork,
    /// Several puts and deletes, applied in order as one write.
    Batch,
}

impl Op {
    /// The op's byte in a record (and, for PUT and DELETE, in a batch
    /// entry).
    pub fn code(self) -> u8 {
        match self {
            Op::Put => 1,
            Op::Delete => 2,
            Op::Fork => 3,
            Op::Batch => 4,
        }
    }

    /// The op a record's byte names, if any.
    pub fn from_code(code: u8) -> Option<Op> {
        match code {
            1 => Some(Op::Put),
            2 => Some(Op::Delete),
            3 => Some(Op::Fork),
            4 => Some(Op::Batch),
            _ => None,
        }
    }
}

/// The key and value of the PUT record that begins `bytes`, for a store
/// that keeps records where they are ([`crate::store::BulkLoad::set_shared`]).
/// The record was decoded, checksum and all, before the store took it; this
/// only finds its fields again (lengths that do not fit give empty slices,
/// not a panic). A batch record is never shared this way: its value is its
/// entries, not one key's value.
pub fn key_value_at(bytes: &[u8]) -> (&[u8], &[u8]) {
    let key_at = RECORD_PREFIX_LEN + BODY_FIXED_LEN;
    // The body length opens the record; the key length ends the fixed body.
    let (Some(body_len), Some(key_len)) = (bytes.get(..4), bytes.get(key_at - 2..key_at)) else {
        return (&[], &[]);
    };
    let key_end = key_at + usize::from(u16::from_le_bytes([key_len[0], key_len[1]]));
    let end = RECORD_PREFIX_LEN + le_u32(body_len) as usize;
    match (bytes.get(key_at..key_end), bytes.get(key_end..end)) {
        (Some(key), Some(value)) => (key, value),
        _ => (&[], &[]),
    }
}

fn total_len(prefix: &[u8]) -> Result<usize, RecordError> {
    let body_len = le_u32(&prefix[..4]) as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Err(RecordError::BadLength);
    }
    Ok(RECORD_PREFIX_LEN + body_len)
}

/// Bytes of a fork record's value: the epoch.
const FORK_VALUE_LEN: usize = 8;

/// Bytes of a batch entry before its key: op, key length, value length.
pub const ENTRY_FIXED_LEN: usize = 7;

/// One put or delete: a PUT or DELETE record, or one entry of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// [`Op::Put`] or [`Op::Delete`].
    pub op: Op,
    pub key: &'a [u8],
    /// Empty for a delete.
    pub value: &'a [u8],
}

/// Why entries are not a valid batch, to encode or as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// No entry at all.
    Empty,
    /// An entry whose op is not PUT or DELETE (the op's byte).
    BadOp(u8),
    /// An entry with an empty key.
    EmptyKey,
    /// A key longer than a u16 can count.
    KeyTooLong(usize),
    /// A DELETE with a value.
    DeleteWithValue,
    /// An entry whose fields run past the end of the batch.
    Truncated,
    /// A record body of this many bytes, past [`MAX_BODY_LEN`].
    TooLarge(usize),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Empty => write!(f, "a batch without entries"),
            BatchError::BadOp(code) => write!(f, "a batch entry with op {code}"),
            BatchError::EmptyKey => write!(f, "a batch entry with an empty key"),
            BatchError::KeyTooLong(len) => write!(f, "a batch entry with a key of {len} bytes"),
            BatchError::DeleteWithValue => write!(f, "a batch DELETE with a value"),
            BatchError::Truncated => write!(f, "a batch entry runs past the end of the batch"),
            BatchError::TooLarge(len) => write!(
                f,
                "a batch record of {len} bytes (at most {MAX_BODY_LEN} allowed)"
            ),
        }
    }
}

impl std::error::Error for BatchError {}

/// Checks `entries` as the content of one batch record: at least one,
/// each a PUT or a DELETE of a key of 1 to 65535 bytes (a DELETE without
/// a value), and a record body within [`MAX_BODY_LEN`]. Returns the bytes
/// of the record's value.
///
/// # Errors
/// The first thing wrong, as a [`BatchError`].
pub fn check_batch(entries: &[(Op, &[u8], &[u8])]) -> Result<usize, BatchError> {
    if entries.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut len = 0usize;
    for &(op, key, value) in entries {
        match op {
            Op::Put => {}
            Op::Delete if value.is_empty() => {}
            Op::Delete => return Err(BatchError::DeleteWithValue),
            Op::Fork | Op::Batch => return Err(BatchError::BadOp(op.code())),
        }
        if key.is_empty() {
            return Err(BatchError::EmptyKey);
        }
        if u16::try_from(key.len()).is_err() {
            return Err(BatchError::KeyTooLong(key.len()));
        }
        len = len
            .saturating_add(ENTRY_FIXED_LEN)
            .saturating_add(key.len())
            .saturating_add(value.len());
    }
    let body = len.saturating_add(BODY_FIXED_LEN);
    if body > MAX_BODY_LEN {
        return Err(BatchError::TooLarge(body));
    }
    Ok(len)
}

/// The entries of a batch record's value, in order, each checked: it never
/// panics, whatever the bytes. An entry that does not parse is an error,
/// and ends the iteration.
#[derive(Debug, Clone)]
pub struct BatchEntries<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> BatchEntries<'a> {
    /// The entries of `value`, a batch record's value.
    pub fn new(value: &'a [u8]) -> BatchEntries<'a> {
        BatchEntries {
            rest: value,
            failed: false,
        }
    }

    /// The number of entries in `value`, if they fill it exactly.
    ///
    /// # Errors
    /// The first entry that does not parse, or [`BatchError::Empty`].
    pub fn count(value: &'a [u8]) -> Result<usize, BatchError> {
        let mut n = 0;
        for entry in BatchEntries::new(value) {
            entry?;
            n += 1;
        }
        if n == 0 {
            return Err(BatchError::Empty);
        }
        Ok(n)
    }

    fn entry(&mut self) -> Result<Entry<'a>, BatchError> {
        let rest = self.rest;
        let fixed = rest.get(..ENTRY_FIXED_LEN).ok_or(BatchError::Truncated)?;
        let op = match Op::from_code(fixed[0]) {
            Some(op @ (Op::Put | Op::Delete)) => op,
            _ => return Err(BatchError::BadOp(fixed[0])),
        };
        let key_len = usize::from(u16::from_le_bytes([fixed[1], fixed[2]]));
        let value_len = usize::try_from(le_u32(&fixed[3..7])).map_err(|_| BatchError::Truncated)?;
        let key_end = ENTRY_FIXED_LEN + key_len;
        let end = key_end
            .checked_add(value_len)
            .ok_or(BatchError::Truncated)?;
        let (Some(key), Some(value)) = (rest.get(ENTRY_FIXED_LEN..key_end), rest.get(key_end..end))
        else {
            return Err(BatchError::Truncated);
        };
        if key.is_empty() {
            return Err(BatchError::EmptyKey);
        }
        if op == Op::Delete && !value.is_empty() {
            return Err(BatchError::DeleteWithValue);
        }
        self.rest = &rest[end..];
        Ok(Entry { op, key, value })
    }
}

impl<'a> Iterator for BatchEntries<'a> {
    type Item = Result<Entry<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let entry = self.entry();
        self.failed = entry.is_err();
        Some(entry)
    }
}

impl std::iter::FusedIterator for BatchEntries<'_> {}

/// The puts and deletes of one record, in order ([`Record::entries`]).
#[derive(Debug, Clone)]
pub struct Entries<'a>(EntriesOf<'a>);

#[derive(Debug, Clone)]
enum EntriesOf<'a> {
    One(Option<Entry<'a>>),
    Batch(BatchEntries<'a>),
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        match &mut self.0 {
            EntriesOf::One(entry) => entry.take(),
            EntriesOf::Batch(entries) => entries.next()?.ok(),
        }
    }
}

impl std::iter::FusedIterator for Entries<'_> {}

/// One logged write, borrowing its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub op: Op,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The outcome of decoding at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checksummed record and the bytes it used.
    Record(Record<'a>, usize),
    /// The buffer ends inside a record: `needed` bytes make it whole (or
    /// show it is damaged).
    Incomplete { needed: usize },
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RecordError {
    /// The length field is impossible (too short for the fixed fields, or
    /// past [`MAX_BODY_LEN`]).
    BadLength,
    /// The body does not match its checksum.
    BadChecksum,
    /// The checksum matches but the fields are not a valid write.
    BadBody,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordError::BadLength => "impossible record length",
            RecordError::BadChecksum => "record checksum mismatch",
            RecordError::BadBody => "malformed record body",
        })
    }
}

impl<'a> Record<'a> {
    /// Appends a fork record: `history` (at `epoch`) begins after `seq`.
    pub fn encode_fork(out: &mut Vec<u8>, seq: u64, history: &HistoryId, epoch: u64) {
        Record {
            seq,
            op: Op::Fork,
            key: history,
            value: &epoch.to_le_bytes(),
        }
        .encode(out);
    }

    /// The new history and its epoch, if this is a fork record.
    pub fn as_fork(&self) -> Option<(HistoryId, u64)> {
        if self.op != Op::Fork {
            return None;
        }
        let history = HistoryId::try_from(self.key).ok()?;
        Some((history, le_u64(self.value)))
    }

    /// Appends a batch record with seq `seq`: the puts and deletes of
    /// `entries` (op, key, value), to be applied in this order as one
    /// write.
    ///
    /// # Errors
    /// Entries that are not a valid batch ([`check_batch`]); nothing is
    /// appended then.
    pub fn encode_batch(
        out: &mut Vec<u8>,
        seq: u64,
        entries: &[(Op, &[u8], &[u8])],
    ) -> Result<(), BatchError> {
        let value_len = check_batch(entries)?;
        let body_len = BODY_FIXED_LEN + value_len;
        out.reserve(RECORD_PREFIX_LEN + body_len);
        // Within MAX_BODY_LEN, so every length fits its field.
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        let crc_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let body_at = out.len();
        out.extend_from_slice(&seq.to_le_bytes());
        out.push(Op::Batch.code());
        out.extend_from_slice(&0u16.to_le_bytes());
        for &(op, key, value) in entries {
            out.push(op.code());
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
        let crc = crc32fast::hash(&out[body_at..]);
        out[crc_at..body_at].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// The puts and deletes this record makes, in the order they apply:
    /// the record itself for a PUT or a DELETE, its entries for a batch,
    /// none for a fork. [`Record::decode`] checked a batch's entries; for
    /// a record made some other way whose entries do not parse, this
    /// stops before the first bad one (use [`BatchEntries`] to see why).
    pub fn entries(&self) -> Entries<'a> {
        Entries(match self.op {
            Op::Put | Op::Delete => EntriesOf::One(Some(Entry {
                op: self.op,
                key: self.key,
                value: self.value,
            })),
            Op::Batch => EntriesOf::Batch(BatchEntries::new(self.value)),
            Op::Fork => EntriesOf::One(None),
        })
    }

    /// Bytes this record takes when encoded.
    pub fn encoded_len(&self) -> usize {
        RECORD_PREFIX_LEN + BODY_FIXED_LEN + self.key.len() + self.value.len()
    }

    /// Appends the encoded record.
    ///
    /// # Panics
    /// If the key is longer than `u16::MAX` bytes; the protocol allows 1024.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let body_len = BODY_FIXED_LEN + self.key.len() + self.value.len();
        let key_len = u16::try_from(self.key.len()).expect("keys are at most 1024 bytes");
        out.reserve(RECORD_PREFIX_LEN + body_len);
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        let crc_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let body_at = out.len();
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(self.op.code());
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
        let crc = crc32fast::hash(&out[body_at..]);
        out[crc_at..body_at].copy_from_slice(&crc.to_le_bytes());
    }

    /// The length of the record at the start of `buf`, from its length
    /// field alone: `None` if `buf` is shorter than the length field. The
    /// checksum is not verified; use it only to step over records that
    /// were verified before or will be after.
    ///
    /// # Errors
    /// [`RecordError::BadLength`] for a length no record can have.
    pub fn peek_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
        buf.get(..4).map(total_len).transpose()
    }

    /// The seq of the record at the start of `buf`, read without checking
    /// it (the caller knows it is whole and was checked when written).
    pub fn peek_seq(buf: &[u8]) -> Option<u64> {
        buf.get(RECORD_PREFIX_LEN..RECORD_PREFIX_LEN + 8)
            .map(le_u64)
    }

    /// Decodes the record at the start of `buf`.
    ///
    /// # Errors
    /// A [`RecordError`] when the bytes cannot be a record.
    pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, RecordError> {
        let Some(prefix) = buf.get(..RECORD_PREFIX_LEN) else {
            return Ok(Decoded::Incomplete {
                needed: RECORD_PREFIX_LEN,
            });
        };
        let total = total_len(prefix)?;
        let Some(body) = buf.get(RECORD_PREFIX_LEN..total) else {
            return Ok(Decoded::Incomplete { needed: total });
        };
        if crc32fast::hash(body) != le_u32(&prefix[4..8]) {
            return Err(RecordError::BadChecksum);
        }
        let seq = le_u64(&body[..8]);
        let op = Op::from_code(body[8]).ok_or(RecordError::BadBody)?;
        let key_len = usize::from(u16::from_le_bytes([body[9], body[10]]));
        let (key, value) = body[BODY_FIXED_LEN..]
            .split_at_checked(key_len)
            .ok_or(RecordError::BadBody)?;
        let valid = match op {
            // Any value, the empty one included.
            Op::Put => !key.is_empty(),
            Op::Delete => !key.is_empty() && value.is_empty(),
            Op::Fork => key.len() == 16 && value.len() == FORK_VALUE_LEN,
            Op::Batch => key.is_empty() && BatchEntries::count(value).is_ok(),
        };
        if !valid {
            return Err(RecordError::BadBody);
        }
        Ok(Decoded::Record(
            Record {
                seq,
                op,
                key,
                value,
            },
            total,
        ))
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put(seq: u64, key: &'static [u8], value: &'static [u8]) -> Record<'static> {
        Record {
            seq,
            op: Op::Put,
            key,
            value,
        }
    }

    #[test]
    fn crc32_known_answer() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn key_value_at_finds_what_decode_found() {
        let mut buf = Vec::new();
        for (key, value) in [
            (&b"k"[..], &b"v"[..]),
            (b"key:17", b""),
            (b"x", &[7u8; 300][..]),
        ] {
            buf.clear();
            let op = if value.is_empty() {
                Op::Delete
            } else {
                Op::Put
            };
            Record {
                seq: 9,
                op,
                key,
                value,
            }
            .encode(&mut buf);
            buf.extend_from_slice(b"the next record");
            assert_eq!(key_value_at(&buf), (key, value));
        }
        let empty: (&[u8], &[u8]) = (&[], &[]);
        for cut in [0, 4, 18, 20, buf.len() - 16] {
            assert_eq!(key_value_at(&buf[..cut]), empty, "cut at {cut}");
        }
    }

    #[test]
    fn header_round_trip_and_layout() {
        let header = Header {
            history: [7; 16],
            base_seq: 42,
            epoch: 3,
        };
        let mut buf = Vec::new();
        header.encode(&mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(&buf[..8], b"KEYVALOG");
        assert_eq!(&buf[8..12], &[2, 0, 0, 0]);
        assert_eq!(&buf[28..36], &42u64.to_le_bytes());
        assert_eq!(Header::decode(&buf), Ok(header));
    }

    #[test]
    fn header_damage_is_reported() {
        let mut buf = Vec::new();
        Header {
            history: [1; 16],
            base_seq: 0,
            epoch: 1,
        }
        .encode(&mut buf);
        assert_eq!(Header::decode(&buf[..47]), Err(HeaderError::Short));
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderError::BadMagic));
        let mut bad = buf.clone();
        bad[8] = 9;
        assert_eq!(
            Header::decode(&bad),
            Err(HeaderError::UnsupportedVersion(9))
        );
        let mut bad = buf.clone();
        bad[20] ^= 1;
        assert_eq!(Header::decode(&bad), Err(HeaderError::BadChecksum));
    }

    /// `header` encoded as format version `version`, checksum and all.
    pub(crate) fn header_bytes(header: &Header, version: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        header.encode(&mut buf);
        buf[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&buf[..44]);
        buf[44..48].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    #[test]
    fn version_1_headers_are_read_and_later_ones_refused_clearly() {
        let header = Header {
            history: [5; 16],
            base_seq: 7,
            epoch: 2,
        };
        let v1 = header_bytes(&header, 1);
        assert_eq!(Header::decode_versioned(&v1), Ok((header, 1)));
        assert_eq!(Header::decode(&v1), Ok(header));
        let mut v2 = Vec::new();
        header.encode(&mut v2);
        assert_eq!(Header::decode_versioned(&v2), Ok((header, VERSION)));
        for version in [0, 3, u32::MAX] {
            assert_eq!(
                Header::decode(&header_bytes(&header, version)),
                Err(HeaderError::UnsupportedVersion(version)),
                "version {version}"
            );
        }
        assert_eq!(
            HeaderError::UnsupportedVersion(3).to_string(),
            "unsupported log format version 3 (this build reads versions 1 to 2; a newer \
             keyval wrote this file)"
        );
        assert_eq!(
            HeaderError::UnsupportedVersion(0).to_string(),
            "unsupported log format version 0 (this build reads versions 1 to 2)"
        );
    }

    #[test]
    fn put_values_may_be_empty_or_any_bytes() {
        let values: [&[u8]; 5] = [b"", b"\r\n", b"\0", b"\xff\xfe", b"a\nb\r\0\xff"];
        let mut buf = Vec::new();
        for (seq, value) in (1..).zip(values) {
            put(seq, b"k", value).encode(&mut buf);
        }
        let mut rest = &buf[..];
        for (seq, value) in (1..).zip(values) {
            let Ok(Decoded::Record(rec, used)) = Record::decode(rest) else {
                panic!("value {value:?} refused");
            };
            assert_eq!(rec, put(seq, b"k", value));
            assert_eq!(key_value_at(rest), (&b"k"[..], value));
            rest = &rest[used..];
        }
        // A DELETE still has no value, and no record an empty key.
        for (op, key, value) in [
            (Op::Delete, &b"k"[..], &b"v"[..]),
            (Op::Put, b"", b"v"),
            (Op::Delete, b"", b""),
        ] {
            let mut bad = Vec::new();
            Record {
                seq: 1,
                op,
                key,
                value,
            }
            .encode(&mut bad);
            assert_eq!(Record::decode(&bad), Err(RecordError::BadBody), "{op:?}");
        }
    }

    /// One entry as `append_batch` and `encode_batch` take it.
    pub(crate) type Triple<'a> = (Op, &'a [u8], &'a [u8]);

    const BATCH: [Triple<'static>; 4] = [
        (Op::Put, b"a", b"1"),
        (Op::Put, b"b", b""),
        (Op::Delete, b"a", b""),
        (Op::Put, b"c\r\n", b"\0\xff\n"),
    ];

    fn batch(seq: u64, entries: &[(Op, &[u8], &[u8])]) -> Vec<u8> {
        let mut buf = Vec::new();
        Record::encode_batch(&mut buf, seq, entries).expect("a valid batch");
        buf
    }

    /// A record with `body` (seq, op, key length, key, value) and its
    /// checksum: damage that only the field checks can catch.
    fn checksummed(body: &[u8]) -> Vec<u8> {
        let mut buf = (body.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        buf.extend_from_slice(body);
        buf
    }

    /// A batch body: seq 1, op 4, no key, then `value`.
    fn batch_body(value: &[u8]) -> Vec<u8> {
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[4, 0, 0]);
        body.extend_from_slice(value);
        body
    }

    fn entry_bytes(op: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![op];
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn batch_layout_byte_by_byte() {
        let buf = batch(5, &[(Op::Put, b"k", b"vv"), (Op::Delete, b"x", b"")]);
        let value = [entry_bytes(1, b"k", b"vv"), entry_bytes(2, b"x", b"")].concat();
        assert_eq!(value.len(), 10 + 8);
        assert_eq!(
            buf,
            checksummed(&[&5u64.to_le_bytes()[..], &[4, 0, 0], &value].concat())
        );
        assert_eq!(&buf[19..29], &[1, 1, 0, 2, 0, 0, 0, b'k', b'v', b'v']);
    }

    #[test]
    fn batches_round_trip_and_give_their_entries_in_order() {
        let mut buf = batch(9, &BATCH);
        put(10, b"z", b"after").encode(&mut buf);
        let Ok(Decoded::Record(rec, used)) = Record::decode(&buf) else {
            panic!("a batch refused");
        };
        assert_eq!((rec.seq, rec.op, rec.key), (9, Op::Batch, &b""[..]));
        assert_eq!(used, rec.encoded_len());
        let mut again = Vec::new();
        rec.encode(&mut again);
        assert_eq!(again, buf[..used], "re-encodes to the same bytes");
        let entries: Vec<(Op, &[u8], &[u8])> =
            rec.entries().map(|e| (e.op, e.key, e.value)).collect();
        assert_eq!(entries, BATCH.to_vec());
        let checked: Vec<Entry<'_>> = BatchEntries::new(rec.value)
            .collect::<Result<_, _>>()
            .expect("valid entries");
        assert_eq!(checked.len(), 4);
        assert_eq!(BatchEntries::count(rec.value), Ok(4));
        let Ok(Decoded::Record(next, _)) = Record::decode(&buf[used..]) else {
            panic!("the record after the batch");
        };
        assert_eq!(next, put(10, b"z", b"after"));
        // One entry is a batch too; the entries of plain records are
        // themselves, and a fork has none.
        let one = batch(1, &[(Op::Delete, b"k", b"")]);
        assert!(matches!(Record::decode(&one), Ok(Decoded::Record(..))));
        let p = put(3, b"k", b"v");
        let plain: Vec<Entry<'_>> = p.entries().collect();
        assert_eq!(
            plain,
            vec![Entry {
                op: Op::Put,
                key: b"k",
                value: b"v"
            }]
        );
        let mut fork = Vec::new();
        Record::encode_fork(&mut fork, 3, &[1; 16], 2);
        let Ok(Decoded::Record(fork, _)) = Record::decode(&fork) else {
            panic!("a fork");
        };
        assert_eq!(fork.entries().count(), 0);
    }

    #[test]
    fn invalid_batches_are_not_encoded() {
        let long_key = vec![b'k'; 65536];
        let cases: [(&[Triple<'_>], BatchError); 6] = [
            (&[], BatchError::Empty),
            (&[(Op::Put, b"", b"v")], BatchError::EmptyKey),
            (&[(Op::Delete, b"k", b"v")], BatchError::DeleteWithValue),
            (
                &[(Op::Put, b"k", b"v"), (Op::Fork, b"k", b"")],
                BatchError::BadOp(3),
            ),
            (&[(Op::Batch, b"k", b"")], BatchError::BadOp(4)),
            (&[(Op::Put, &long_key, b"")], BatchError::KeyTooLong(65536)),
        ];
        for (entries, error) in cases {
            let mut out = b"before".to_vec();
            assert_eq!(Record::encode_batch(&mut out, 1, entries), Err(error));
            assert_eq!(out, b"before", "nothing appended");
        }
        let huge = vec![0u8; MAX_BODY_LEN / 2];
        let over = [(Op::Put, &b"a"[..], &huge[..]), (Op::Put, b"b", &huge[..])];
        assert!(matches!(check_batch(&over), Err(BatchError::TooLarge(_))));
        assert_eq!(
            check_batch(&[(Op::Put, b"k", b"vv")]),
            Ok(ENTRY_FIXED_LEN + 3)
        );
    }

    #[test]
    fn damaged_batch_entries_are_malformed_records() {
        let good = entry_bytes(1, b"k", b"v");
        let cases: [(&str, Vec<u8>, BatchError); 8] = [
            ("no entries", Vec::new(), BatchError::Empty),
            ("op 0", entry_bytes(0, b"k", b""), BatchError::BadOp(0)),
            ("op 3", entry_bytes(3, b"k", b""), BatchError::BadOp(3)),
            ("empty key", entry_bytes(1, b"", b"v"), BatchError::EmptyKey),
            (
                "delete with a value",
                entry_bytes(2, b"k", b"v"),
                BatchError::DeleteWithValue,
            ),
            (
                "trailing bytes",
                [&good[..], &[1, 1]].concat(),
                BatchError::Truncated,
            ),
            (
                "a value past the end",
                good[..good.len() - 1].to_vec(),
                BatchError::Truncated,
            ),
            (
                "a huge value length",
                [&[1, 1, 0, 0xff, 0xff, 0xff, 0xff, b'k'][..], b"v"].concat(),
                BatchError::Truncated,
            ),
        ];
        for (what, value, error) in cases {
            let found = if value.is_empty() {
                BatchEntries::count(&value)
            } else {
                BatchEntries::new(&value)
                    .find_map(Result::err)
                    .map_or(Ok(0), Err)
            };
            assert_eq!(found, Err(error), "{what}");
            let record = checksummed(&batch_body(&value));
            assert_eq!(Record::decode(&record), Err(RecordError::BadBody), "{what}");
            // The unchecked iterator stops at the damage, without a panic.
            let rec = Record {
                seq: 1,
                op: Op::Batch,
                key: b"",
                value: &value,
            };
            assert!(rec.entries().count() <= 1, "{what}");
        }
        // A batch with a key is malformed too.
        let mut keyed = 1u64.to_le_bytes().to_vec();
        keyed.extend_from_slice(&[4, 1, 0, b'x']);
        keyed.extend_from_slice(&good);
        assert_eq!(
            Record::decode(&checksummed(&keyed)),
            Err(RecordError::BadBody)
        );
        assert_eq!(
            Record::decode(&checksummed(&batch_body(&good))).map(|_| ()),
            Ok(())
        );
    }

    #[test]
    fn every_bit_flip_and_truncation_of_a_batch_is_noticed() {
        let buf = batch(3, &BATCH);
        for cut in 0..buf.len() {
            assert!(
                matches!(Record::decode(&buf[..cut]), Ok(Decoded::Incomplete { .. })),
                "cut {cut}"
            );
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                if let Ok(Decoded::Record(..)) = Record::decode(&bad) {
                    panic!("flip at {byte}.{bit} went unnoticed");
                }
            }
        }
    }

    #[test]
    fn record_layout_byte_by_byte() {
        let mut buf = Vec::new();
        put(1, b"k", b"vv").encode(&mut buf);
        assert_eq!(buf.len(), 22);
        assert_eq!(&buf[..4], &14u32.to_le_bytes());
        assert_eq!(&buf[4..8], &crc32fast::hash(&buf[8..]).to_le_bytes());
        assert_eq!(&buf[8..16], &1u64.to_le_bytes());
        assert_eq!(buf[16], 1);
        assert_eq!(&buf[17..19], &[1, 0]);
        assert_eq!(&buf[19..], b"kvv");
    }

    #[test]
    fn records_round_trip_back_to_back() {
        let mut buf = Vec::new();
        let a = put(1, b"a", b"hello world");
        let d = Record {
            seq: 2,
            op: Op::Delete,
            key: b"a",
            value: b"",
        };
        a.encode(&mut buf);
        d.encode(&mut buf);
        assert_eq!(buf.len(), a.encoded_len() + d.encoded_len());
        let Ok(Decoded::Record(first, used)) = Record::decode(&buf) else {
            panic!("first")
        };
        assert_eq!((first, used), (a, a.encoded_len()));
        assert_eq!(
            Record::decode(&buf[used..]),
            Ok(Decoded::Record(d, d.encoded_len()))
        );
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let mut buf = Vec::new();
        put(9, b"key", b"value").encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(
                matches!(Record::decode(&buf[..cut]), Ok(Decoded::Incomplete { .. })),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        put(9, b"key", b"value").encode(&mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match Record::decode(&bad) {
                    Ok(Decoded::Record(..)) => panic!("flip at {byte}.{bit} went unnoticed"),
                    Ok(Decoded::Incomplete { .. }) | Err(_) => {}
                }
            }
        }
    }

    #[test]
    fn impossible_fields_are_errors() {
        assert_eq!(Record::decode(&[0; 8]), Err(RecordError::BadLength));
        assert_eq!(Record::decode(&[0xff; 8]), Err(RecordError::BadLength));
        // A checksummed body with an unknown op, or a key length past the body.
        for body in [
            &[0, 0, 0, 0, 0, 0, 0, 0, 9, 1, 0, b'k'][..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 9, 0, b'k'],
        ] {
            let mut buf = (body.len() as u32).to_le_bytes().to_vec();
            buf.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            buf.extend_from_slice(body);
            assert_eq!(Record::decode(&buf), Err(RecordError::BadBody));
        }
    }

    #[test]
    fn fork_records_round_trip_and_need_exact_sizes() {
        let mut buf = Vec::new();
        Record::encode_fork(&mut buf, 42, &[7; 16], 3);
        let Ok(Decoded::Record(rec, used)) = Record::decode(&buf) else {
            panic!("not a record");
        };
        assert_eq!(used, buf.len());
        assert_eq!((rec.seq, rec.as_fork()), (42, Some(([7; 16], 3))));
        assert_eq!(put(1, b"k", b"v").as_fork(), None);
        for (key, value) in [(&[7u8; 15][..], &[0u8; 8][..]), (&[7; 16], &[0; 7])] {
            let mut bad = Vec::new();
            Record {
                seq: 1,
                op: Op::Fork,
                key,
                value,
            }
            .encode(&mut bad);
            assert_eq!(Record::decode(&bad), Err(RecordError::BadBody));
        }
    }
}
