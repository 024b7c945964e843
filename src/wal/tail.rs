//! Telling a torn tail from damage: the rule replay uses to decide whether
//! the bytes after the last whole record may be cut.
//!
//! Replay reads records from the header on and stops at the first one it
//! cannot take: its length is impossible, its checksum does not match, or
//! its length runs past the end of the file. What is left from there to
//! the end of the file is either
//!
//! - a **torn tail**: what a crash in the middle of an append leaves. The
//!   loop appends a whole batch of records with one `write` (the group
//!   commit), and a crash can leave any prefix of that write, followed by
//!   nothing, by zeros or by garbage the file system had in the blocks; or
//! - **damage**: a record the disk or a person changed after it was
//!   written, with the acknowledged records after it still in place.
//!
//! A torn write is the last thing in the file, so no valid record comes
//! after it. That is the whole rule ([`judge`]):
//!
//! > From the first byte after the start of the record replay stopped at,
//! > to the end of the file, look at every offset for a record that fits
//! > the sequence: a length in range that ends inside the file, a seq the
//! > next records could have ([`SeqWindow`]), and a checksum that matches.
//! > If there is none, the rest is a torn tail and is cut. If there is one,
//! > the stop is damage and the node refuses to start.
//!
//! The scan looks at every offset, not only where the damaged record says
//! the next one begins, because damage to a length field (a single bit
//! flip, say) is exactly what moves that place. No size bound is put on a
//! torn tail: a batch has no fixed largest size, under `--fsync everysec`
//! or `no` several writes may be unsynced at a crash, and zeros left by
//! the file system come in whole blocks. A torn tail of any length that
//! holds no record is cut; one that holds a record is refused.
//!
//! The rule errs on the safe side. A torn final record whose *value*
//! happens to hold the bytes of a whole record with a seq that fits (a
//! client can store such a value) is refused although cutting it would
//! have been right; the operator then cuts the file at the named offset by
//! hand (see `docs/durability.md`). The opposite mistake, cutting
//! acknowledged writes, needs damage that leaves no record after it
//! checksummed and in sequence, which is damage to the last record (and
//! that is what `docs/durability.md` promises to cut: "a torn or corrupt
//! tail").
//!
//! Pure apart from reading: the bytes come through [`ReadAt`], which a
//! file and a byte slice both provide, so every case is a unit test.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::record::{Decoded, Record, BODY_FIXED_LEN, MAX_BODY_LEN, RECORD_PREFIX_LEN};
use super::SeqCheck;

/// The smallest record: prefix, fixed body fields and a one-byte key (a
/// `DELETE` has no value).
const MIN_RECORD_LEN: u64 = (RECORD_PREFIX_LEN + BODY_FIXED_LEN + 1) as u64;

/// Bytes of the prefix and seq: what the scan reads at an offset before it
/// looks further.
const SEQ_END: usize = RECORD_PREFIX_LEN + 8;

/// Bytes read at a time by the scan: it never holds more than this (and
/// one candidate record) in memory, however long the tail.
const SCAN_CHUNK: usize = 1 << 20;

/// Positional reads from a log's bytes: a file, or a slice in tests.
pub trait ReadAt {
    /// Reads into `buf` from `offset`; returns the bytes read (0 at the
    /// end).
    ///
    /// # Errors
    /// IO errors of the source.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The number of bytes.
    ///
    /// # Errors
    /// IO errors of the source.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(rest) = usize::try_from(offset).ok().and_then(|at| self.get(at..)) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// Fills `buf` from `offset`.
///
/// # Errors
/// IO errors, and `UnexpectedEof` if the source ends first.
pub fn read_exact_at<R: ReadAt + ?Sized>(src: &R, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the log ends at offset {}", offset + filled as u64),
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The seqs a record after a stop could carry, given the records before
/// it. Past the snapshot part the records are numbered one by one (a fork
/// repeats the last seq), so a record after the stop has a seq from the
/// last one to one more per [`MIN_RECORD_LEN`] bytes to the end. Inside
/// the snapshot part any seq from 1 up to the same bound is possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqWindow {
    lo: u64,
    hi: u64,
}

impl SeqWindow {
    /// The window for a stop after the records `seqs` accepted, with
    /// `rest` bytes from the stop to the end of the file.
    pub fn after(seqs: &SeqCheck, rest: u64) -> SeqWindow {
        let lo = if seqs.in_snapshot_part() {
            1
        } else {
            seqs.last()
        };
        SeqWindow {
            lo,
            hi: seqs.last().saturating_add(rest / MIN_RECORD_LEN + 1),
        }
    }

    fn contains(&self, seq: u64) -> bool {
        (self.lo..=self.hi).contains(&seq)
    }
}

/// What the bytes from a stop to the end of the file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// No record follows the stop: a torn tail, to be cut at the stop.
    Torn,
    /// A record that fits the sequence begins at `next`: the stop is
    /// damage, and cutting there would drop it and whatever follows.
    Damaged { next: u64 },
}

/// Judges the bytes `src[at..end]`, where replay stopped at a record it
/// could not take (see the module docs for the rule).
///
/// # Errors
/// Read errors.
pub fn judge<R: ReadAt + ?Sized>(
    src: &R,
    at: u64,
    end: u64,
    window: SeqWindow,
) -> io::Result<Tail> {
    Ok(match find_record(src, at.saturating_add(1), end, window)? {
        Some(next) => Tail::Damaged { next },
        None => Tail::Torn,
    })
}

/// The first offset in `from..end` where a record that fits `window`
/// begins, reading at most [`SCAN_CHUNK`] bytes (and one candidate record)
/// at a time.
fn find_record<R: ReadAt + ?Sized>(
    src: &R,
    from: u64,
    end: u64,
    window: SeqWindow,
) -> io::Result<Option<u64>> {
    let mut buf = Vec::new();
    // The file offset of `buf[0]`.
    let mut base = from;
    while end.saturating_sub(base) >= MIN_RECORD_LEN {
        let n = usize::try_from(end - base).map_or(SCAN_CHUNK, |left| left.min(SCAN_CHUNK));
        buf.resize(n, 0);
        read_exact_at(src, &mut buf, base)?;
        let last_chunk = base + n as u64 == end;
        // Offsets whose prefix and seq are in this chunk; at the end, only
        // those with room for the smallest record.
        let stop = if last_chunk {
            n + 1 - MIN_RECORD_LEN as usize
        } else {
            n + 1 - SEQ_END
        };
        for i in 0..stop {
            if let Some(at) = record_at(src, &buf, i, base, end, window)? {
                return Ok(Some(at));
            }
        }
        if last_chunk {
            break;
        }
        base += stop as u64;
    }
    Ok(None)
}

/// Whether a record that fits `window` begins at `buf[i]` (file offset
/// `base + i`); the cheap checks first, the checksum last.
fn record_at<R: ReadAt + ?Sized>(
    src: &R,
    buf: &[u8],
    i: usize,
    base: u64,
    end: u64,
    window: SeqWindow,
) -> io::Result<Option<u64>> {
    let Some(head) = buf.get(i..i + SEQ_END) else {
        return Ok(None);
    };
    let mut word = [0u8; 4];
    word.copy_from_slice(&head[..4]);
    let body_len = u32::from_le_bytes(word) as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Ok(None);
    }
    let at = base + i as u64;
    let total = RECORD_PREFIX_LEN + body_len;
    if at + total as u64 > end {
        return Ok(None);
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[RECORD_PREFIX_LEN..]);
    if !window.contains(u64::from_le_bytes(seq)) {
        return Ok(None);
    }
    let whole = match buf.get(i..i + total) {
        Some(bytes) => is_record(bytes),
        None => {
            // It runs past this chunk: read exactly that record.
            let mut bytes = vec![0u8; total];
            read_exact_at(src, &mut bytes, at)?;
            is_record(&bytes)
        }
    };
    Ok(whole.then_some(at))
}

fn is_record(bytes: &[u8]) -> bool {
    matches!(Record::decode(bytes), Ok(Decoded::Record(..)))
}

#[cfg(test)]
mod tests {
    use super::super::record::{Header, Op, HEADER_LEN};
    use super::super::{replay, WalError};
    use super::*;
    use std::path::Path;

    /// A log with base seq `base` holding a record per seq, keys `k<seq>`
    /// with values of `value_len` bytes. Returns the bytes and the offset
    /// of every record.
    fn log(base: u64, seqs: &[u64], value_len: usize) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        Header {
            history: [3; 16],
            base_seq: base,
            epoch: 1,
        }
        .encode(&mut bytes);
        let value = vec![b'v'; value_len];
        let mut offsets = Vec::new();
        for &seq in seqs {
            offsets.push(bytes.len() as u64);
            let key = format!("k{seq}");
            Record {
                seq,
                op: Op::Put,
                key: key.as_bytes(),
                value: &value,
            }
            .encode(&mut bytes);
        }
        (bytes, offsets)
    }

    /// What replay makes of `bytes`: `Ok((end, last seq))` with `end`
    /// where the file is cut back to, or the offset it refuses at.
    fn replayed(bytes: &[u8]) -> Result<(u64, u64), u64> {
        match replay(Path::new("test.log"), bytes, None) {
            Ok(r) => Ok((r.end, r.last_seq)),
            Err(WalError::Corrupt { offset, .. }) => Err(offset),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn seqs(n: u64) -> Vec<u64> {
        (1..=n).collect()
    }

    #[test]
    fn a_whole_log_is_not_cut() {
        let (bytes, _) = log(0, &seqs(20), 10);
        assert_eq!(replayed(&bytes), Ok((bytes.len() as u64, 20)));
    }

    #[test]
    fn every_prefix_of_a_final_batch_is_a_torn_tail() {
        // Records 1..=5 were synced; 6..=10 were one write, torn anywhere.
        let (bytes, offsets) = log(0, &seqs(10), 7);
        let boundaries: Vec<u64> = offsets
            .iter()
            .copied()
            .chain([bytes.len() as u64])
            .collect();
        for len in offsets[5]..bytes.len() as u64 {
            // The cut falls on the last record boundary at or before `len`.
            let end = boundaries
                .iter()
                .copied()
                .filter(|&b| b <= len)
                .max()
                .expect("a boundary");
            let kept = offsets.iter().filter(|&&o| o < end).count() as u64;
            assert_eq!(
                replayed(&bytes[..len as usize]),
                Ok((end, kept)),
                "torn at {len}"
            );
        }
    }

    #[test]
    fn a_torn_batch_with_zeros_or_garbage_after_it_is_cut() {
        let (bytes, offsets) = log(0, &seqs(8), 30);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut garbage = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        };
        let noise: Vec<u8> = (0..5000).map(|_| garbage()).collect();
        for tail in [vec![0u8; 4096], vec![0xff; 100], noise] {
            for torn_at in [
                offsets[6] as usize,
                offsets[6] as usize + 3,
                offsets[7] as usize + 20,
            ] {
                let mut torn = bytes[..torn_at].to_vec();
                torn.extend_from_slice(&tail);
                let cut = if torn_at > offsets[7] as usize {
                    offsets[7]
                } else {
                    offsets[6]
                };
                assert_eq!(
                    replayed(&torn),
                    Ok((cut, if cut == offsets[7] { 7 } else { 6 })),
                    "torn at {torn_at}, {} bytes of tail",
                    tail.len()
                );
            }
        }
    }

    #[test]
    fn a_file_of_zeros_after_the_header_is_cut_to_the_header() {
        let (mut bytes, _) = log(0, &[], 0);
        bytes.extend_from_slice(&[0u8; 3 * SCAN_CHUNK / 2]);
        assert_eq!(replayed(&bytes), Ok((HEADER_LEN as u64, 0)));
    }

    #[test]
    fn a_length_flipped_past_the_end_with_records_after_it_is_refused() {
        let (bytes, offsets) = log(0, &seqs(600), 12);
        for (record, byte, mask) in [(2, 2, 0x40), (2, 3, 0x01), (0, 1, 0x80), (598, 2, 0x10)] {
            let mut bad = bytes.clone();
            let at = offsets[record] as usize;
            bad[at + byte] ^= mask;
            let len = Record::peek_len(&bad[at..]).expect("a length in range");
            assert!(
                len.is_some_and(|len| (at + len) > bad.len()),
                "record {record}: the length must run past the end"
            );
            assert_eq!(replayed(&bad), Err(offsets[record]), "record {record}");
        }
    }

    #[test]
    fn the_error_names_the_file_the_offset_and_the_record_after_it() {
        let (mut bytes, offsets) = log(0, &seqs(5), 4);
        bytes[offsets[1] as usize + 2] ^= 0x40;
        let Err(e) = replay(Path::new("/data/leader.log"), &bytes[..], None) else {
            panic!("a damaged log replayed");
        };
        let text = e.to_string();
        let expected = format!(
            "/data/leader.log: offset {}: a record of {} bytes runs past the end of the file \
             ({} bytes); a valid record follows at offset {}, so this is damage, not a torn tail",
            offsets[1],
            offsets[2] - offsets[1] + (4 << 20),
            bytes.len(),
            offsets[2]
        );
        assert!(text.starts_with(&expected), "{text}");
    }

    #[test]
    fn a_length_flipped_past_the_end_of_the_last_record_is_torn() {
        let (bytes, offsets) = log(0, &seqs(10), 12);
        let mut bad = bytes.clone();
        bad[offsets[9] as usize + 2] ^= 0x40;
        assert_eq!(replayed(&bad), Ok((offsets[9], 9)));
    }

    #[test]
    fn damage_in_the_middle_is_refused() {
        let (bytes, offsets) = log(0, &seqs(30), 20);
        for at in [offsets[10] + 4, offsets[10] + 9, offsets[10] + 30] {
            let mut bad = bytes.clone();
            bad[at as usize] ^= 0x04;
            assert_eq!(replayed(&bad), Err(offsets[10]), "flip at {at}");
        }
        // A block of zeros over records in the middle.
        let mut zeroed = bytes.clone();
        zeroed[offsets[10] as usize..offsets[14] as usize + 5].fill(0);
        assert_eq!(replayed(&zeroed), Err(offsets[10]));
    }

    #[test]
    fn every_bit_flip_before_the_last_record_is_refused_and_in_it_is_cut() {
        let (bytes, offsets) = log(0, &seqs(6), 3);
        let last = offsets[5] as usize;
        for byte in HEADER_LEN..bytes.len() {
            let record = offsets.iter().filter(|&&o| o <= byte as u64).count() - 1;
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                let got = replayed(&bad);
                if byte < last {
                    assert_eq!(got, Err(offsets[record]), "flip {byte}.{bit}");
                } else {
                    assert_eq!(got, Ok((last as u64, 5)), "flip {byte}.{bit}");
                }
            }
        }
    }

    #[test]
    fn a_damaged_batch_is_refused_before_the_tail_and_cut_whole_at_it() {
        let (mut bytes, _) = log(0, &seqs(4), 6);
        let at = bytes.len();
        let entries: [(Op, &[u8], &[u8]); 3] = [
            (Op::Put, b"a", b"\r\n"),
            (Op::Delete, b"k1", b""),
            (Op::Put, b"b", b""),
        ];
        Record::encode_batch(&mut bytes, 5, &entries).expect("a batch");
        let batch_end = bytes.len();
        // Torn anywhere inside the batch: cut at its start, whole.
        for len in at..batch_end {
            assert_eq!(replayed(&bytes[..len]), Ok((at as u64, 4)), "torn at {len}");
        }
        Record {
            seq: 6,
            op: Op::Put,
            key: b"after",
            value: b"v",
        }
        .encode(&mut bytes);
        // Damage to an entry with a record after it: refused. The same
        // damage to the last record: cut.
        for byte in [at + 19, at + 23, at + 27, batch_end - 1] {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x10;
            assert_eq!(replayed(&bad), Err(at as u64), "flip at {byte}");
            assert_eq!(
                replayed(&bad[..batch_end]),
                Ok((at as u64, 4)),
                "flip at {byte}, last"
            );
        }
    }

    #[test]
    fn damage_in_the_snapshot_part_is_refused() {
        // Base seq 9: records with seqs up to 9 in any order, then 10, 11.
        let (bytes, offsets) = log(9, &[7, 2, 9, 4, 10, 11], 5);
        let mut bad = bytes.clone();
        bad[offsets[1] as usize + 2] ^= 0x20;
        assert_eq!(replayed(&bad), Err(offsets[1]));
        // Torn inside the snapshot part: nothing follows, so it is cut.
        assert_eq!(
            replayed(&bytes[..offsets[3] as usize + 4]),
            Ok((offsets[3], 9))
        );
    }

    #[test]
    fn a_record_after_a_long_gap_is_found_across_chunks() {
        let (head, _) = log(0, &seqs(3), 5);
        let (tail, tail_offsets) = log(0, &seqs(5), 40_000);
        let mut bytes = head.clone();
        // Record 4 of a later log, its prefix inside the scan's first chunk and
        // its body past it.
        bytes.extend_from_slice(&[0u8; SCAN_CHUNK - 99]);
        let gap_end = bytes.len() as u64;
        bytes.extend_from_slice(&tail[tail_offsets[3] as usize..tail_offsets[4] as usize]);
        assert_eq!(replayed(&bytes), Err(head.len() as u64));
        let window = SeqWindow { lo: 3, hi: 10 };
        assert_eq!(
            judge(&bytes[..], head.len() as u64, bytes.len() as u64, window).expect("judge"),
            Tail::Damaged { next: gap_end }
        );
        // Out of the window, the same record does not count.
        let stale = SeqWindow { lo: 5, hi: 10 };
        assert_eq!(
            judge(&bytes[..], head.len() as u64, bytes.len() as u64, stale).expect("judge"),
            Tail::Torn
        );
    }

    #[test]
    fn random_damage_never_panics_and_a_cut_keeps_a_prefix() {
        let (bytes, offsets) = log(0, &seqs(12), 6);
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..3000 {
            let mut bad = bytes.clone();
            // Overwrite a few bytes, then maybe cut and append noise.
            for _ in 0..1 + next() % 4 {
                let at = HEADER_LEN + (next() as usize) % (bad.len() - HEADER_LEN);
                bad[at] = next() as u8;
            }
            if next() % 2 == 0 {
                bad.truncate(HEADER_LEN + (next() as usize) % (bad.len() - HEADER_LEN));
            }
            for _ in 0..next() % 64 {
                bad.push(next() as u8);
            }
            match replayed(&bad) {
                // A cut keeps whole records that were there unchanged.
                Ok((end, last)) => {
                    assert!(offsets.contains(&end) || end == bytes.len() as u64);
                    assert_eq!(bad[..end as usize], bytes[..end as usize], "round {round}");
                    assert_eq!(last, offsets.iter().filter(|&&o| o < end).count() as u64);
                }
                Err(offset) => assert!(offsets.contains(&offset), "round {round}"),
            }
        }
    }

    #[test]
    fn the_window_follows_the_sequence() {
        let mut seqs = SeqCheck::new(5);
        assert!(seqs.in_snapshot_part());
        let w = SeqWindow::after(&seqs, 100);
        assert_eq!(w, SeqWindow { lo: 1, hi: 11 });
        seqs.accept(3).expect("snapshot part");
        seqs.accept(6).expect("next");
        let w = SeqWindow::after(&seqs, 0);
        assert_eq!(w, SeqWindow { lo: 6, hi: 7 });
        assert!(w.contains(6) && w.contains(7) && !w.contains(5) && !w.contains(8));
    }

    #[test]
    fn slices_read_like_files() {
        let bytes = b"0123456789";
        let mut buf = [0u8; 4];
        assert_eq!(bytes[..].read_at(&mut buf, 8).expect("read"), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(bytes[..].read_at(&mut buf, 11).expect("read"), 0);
        assert!(read_exact_at(&bytes[..], &mut buf, 7).is_err());
        read_exact_at(&bytes[..], &mut buf, 6).expect("read");
        assert_eq!(&buf, b"6789");
    }
}
