//! The byte layout of the write-ahead log: the file header and the records.
//!
//! Pure: encoding appends to a `Vec<u8>`, decoding reads a `&[u8]`. Nothing
//! here touches a file, so every damaged-input case is a unit test. All
//! integers are little-endian; no `usize` ever reaches the format.
//!
//! ```text
//! header (48 bytes)
//!   0   8  magic        "KEYVALOG"
//!   8   4  version      u32 = 1
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
//!  16   1  op           1 = PUT, 2 = DELETE, 3 = FORK
//!  17   2  key length   u16
//!  19   k  key
//!  19+k v  value        rest of the body (empty for DELETE)
//!
//! FORK (a new history begins after this log's last write; see `lineage`)
//!   seq   = the last seq of the old history (a fork takes no seq of its own)
//!   key   = the new history id (16 bytes)
//!   value = the new history's epoch (u64, 8 bytes)
//! ```

/// The first eight bytes of every log file.
pub const MAGIC: &[u8; 8] = b"KEYVALOG";

/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

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
    /// A keyval log of a version this build cannot read.
    UnsupportedVersion(u32),
    /// The header checksum does not match.
    BadChecksum,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => write!(f, "header is shorter than {HEADER_LEN} bytes"),
            HeaderError::BadMagic => write!(f, "not a keyval log (bad magic)"),
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported log format version {v}"),
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
        let bytes = buf.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
        if &bytes[..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = le_u32(&bytes[8..12]);
        if version != VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        if crc32fast::hash(&bytes[..44]) != le_u32(&bytes[44..48]) {
            return Err(HeaderError::BadChecksum);
        }
        let mut history = [0u8; 16];
        history.copy_from_slice(&bytes[12..28]);
        Ok(Header {
            history,
            base_seq: le_u64(&bytes[28..36]),
            epoch: le_u64(&bytes[36..44]),
        })
    }
}

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Delete,
    /// A new history begins: no data changes.
    Fork,
}

impl Op {
    fn code(self) -> u8 {
        match self {
            Op::Put => 1,
            Op::Delete => 2,
            Op::Fork => 3,
        }
    }
}

/// The key and value of the record that begins `bytes`, for a store that
/// keeps records where they are ([`crate::store::BulkLoad::set_shared`]). The
/// record was decoded, checksum and all, before the store took it; this
/// only finds its fields again (lengths that do not fit give empty slices,
/// not a panic).
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

impl Record<'_> {
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
        let op = match body[8] {
            1 => Op::Put,
            2 => Op::Delete,
            3 => Op::Fork,
            _ => return Err(RecordError::BadBody),
        };
        let key_len = usize::from(u16::from_le_bytes([body[9], body[10]]));
        let (key, value) = body[BODY_FIXED_LEN..]
            .split_at_checked(key_len)
            .ok_or(RecordError::BadBody)?;
        let valid = match op {
            Op::Put => !value.is_empty(),
            Op::Delete => value.is_empty(),
            Op::Fork => key.len() == 16 && value.len() == FORK_VALUE_LEN,
        };
        if key.is_empty() || !valid {
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
mod tests {
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
        assert_eq!(&buf[8..12], &[1, 0, 0, 0]);
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
