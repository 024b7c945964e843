//! Session MACs: after a follower's `HELLO LEADER` or an admin's
//! `HELLO SERVER`, every byte in both directions travels inside sealed
//! records, so a relay without the secret can pass the stream on
//! unchanged and do nothing else.
//!
//! Pure: sealing appends to a `Vec<u8>`, opening reads a `&[u8]`.
//!
//! ```text
//! key(sender) = HMAC-SHA256(secret, "keyval-session|<sender word>|<id>|<fnonce>|<lnonce>")
//!               sender word: keyval-leader (a leader, or a node answering
//!               an admin), keyval-follower, keyval-admin; id: the
//!               follower's id, or "admin"
//! record      = [len: u32 LE][payload: len bytes][tag: 16 bytes]
//! tag         = first 16 bytes of BLAKE3-keyed(key(sender), payload ‖ counter: u64 LE ‖ len: u32 LE)
//!               counter: records this sender sealed before, from 0
//! ```
//!
//! The keys come from HMAC-SHA256, like the handshake's proofs; the tags
//! from BLAKE3 in its keyed mode, a MAC three to four times faster than
//! HMAC-SHA256 here (a snapshot's every byte is tagged on the leader's
//! loop and checked on the follower's). The payload comes first so that
//! it starts on one of BLAKE3's 1 KiB chunks and every whole chunk goes
//! through its SIMD lanes; the 12 bytes after it are a fixed-length
//! suffix, so the input still names one payload, counter and length.
//!
//! - Each direction has its own key (the sender's word is in it), so a
//!   record cannot be reflected back to its sender.
//! - Both nonces are in the key, so a record from an earlier session does
//!   not verify in a later one.
//! - The counter is implicit: a record dropped, replayed or moved makes
//!   every later tag fail, so the receiver sees exactly the sender's
//!   bytes, in order, or closes the connection.
//! - The payload is whatever bytes the sender had to send (frames or lines,
//!   cut anywhere): records are a layer under the stream, like TLS records,
//!   and the stream above them does not change.
//! - Nothing is encrypted: an observer on the path reads the data (as with
//!   Redis without TLS). TLS is the layer for that.

use super::auth::{self, Prover};

/// Bytes of a record's length field.
pub const RECORD_HEADER_LEN: usize = 4;

/// Bytes of a record's tag: keyed BLAKE3 truncated to 128 bits.
pub const TAG_LEN: usize = 16;

/// The largest payload of one record. The receiver buffers at most one
/// record before it can check it, so this bounds what a peer can make it
/// hold. 16 KiB keeps the overhead (20 bytes per record) near 0.1 %, is
/// long enough for BLAKE3's SIMD lanes, and is well under a socket read
/// (64 KiB), so a read mostly opens whole records in place.
pub const MAX_RECORD: usize = 16 << 10;

/// Why received bytes are not a record of this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// A length of zero or above [`MAX_RECORD`].
    BadLength {
        /// The record's number in this direction.
        record: u64,
        len: u32,
    },
    /// The tag does not verify: the bytes were changed, dropped, replayed
    /// or reordered, or the sender does not hold the secret.
    BadMac {
        /// The record's number in this direction.
        record: u64,
    },
    /// More records than a counter can number.
    Exhausted,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::BadLength { record, len } => write!(
                f,
                "session record {record} claims {len} bytes (1 to {MAX_RECORD} allowed): not \
                 from the peer that holds the secret"
            ),
            SealError::BadMac { record } => write!(
                f,
                "session record {record} fails its MAC (altered, dropped, replayed or forged \
                 on the way)"
            ),
            SealError::Exhausted => write!(f, "the session's record counter is exhausted"),
        }
    }
}

impl std::error::Error for SealError {}

/// The two ends of one session, from the point of view of one side.
pub struct Session {
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what the other side sends.
    pub opener: Opener,
}

impl std::fmt::Debug for Session {
    /// Keys stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session { .. }")
    }
}

impl Session {
    /// The session keys of a handshake that `me` took part in with `peer`,
    /// under `id` and the two nonces (as the proofs of
    /// [`auth`](super::auth) use them).
    pub fn new(
        secret: &[u8],
        me: Prover,
        peer: Prover,
        id: &str,
        fnonce: &str,
        lnonce: &str,
    ) -> Session {
        Session {
            sealer: Sealer {
                mac: blake3::Hasher::new_keyed(&auth::session_key(secret, me, id, fnonce, lnonce)),
                counter: 0,
                tags: Vec::new(),
            },
            opener: Opener {
                mac: blake3::Hasher::new_keyed(&auth::session_key(
                    secret, peer, id, fnonce, lnonce,
                )),
                counter: 0,
            },
        }
    }
}

/// The tag of record `counter` with `payload`, from the sender's keyed
/// hasher (cloned, so the key schedule is done once per session).
fn tag(mac: &blake3::Hasher, counter: u64, payload: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = mac.clone();
    mac.update(payload);
    mac.update(&counter.to_le_bytes());
    mac.update(&(payload.len() as u32).to_le_bytes());
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&mac.finalize().as_bytes()[..TAG_LEN]);
    out
}

/// Whether two tags are equal, looking at every byte whatever the first
/// difference (no early exit that would time how much of a forgery was
/// right).
fn same_tag(a: &[u8], b: &[u8; TAG_LEN]) -> bool {
    a.len() == TAG_LEN && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seals one direction of a session.
pub struct Sealer {
    mac: blake3::Hasher,
    counter: u64,
    /// The tags of one call, kept for reuse.
    tags: Vec<[u8; TAG_LEN]>,
}

impl Sealer {
    /// Appends `plain` to `out` as records of at most [`MAX_RECORD`] bytes.
    ///
    /// # Errors
    /// [`SealError::Exhausted`] after 2^64 records; the connection must
    /// then close.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let from = out.len();
        out.extend_from_slice(plain);
        self.seal_in_place(out, from)
    }

    /// Turns `buf[from..]` into records where it lies: each piece moves
    /// once, back to make room for the headers and tags in front of it.
    /// A connection's output buffer is sealed this way as it is flushed.
    ///
    /// # Errors
    /// As [`Sealer::seal`]; `buf` is then left as it was.
    pub fn seal_in_place(&mut self, buf: &mut Vec<u8>, from: usize) -> Result<(), SealError> {
        let plain = buf.len() - from;
        let n = plain.div_ceil(MAX_RECORD);
        let counter = self.counter;
        self.counter = (n as u64)
            .checked_add(counter)
            .ok_or(SealError::Exhausted)?;
        self.tags.clear();
        for (i, part) in buf[from..].chunks(MAX_RECORD).enumerate() {
            self.tags.push(tag(&self.mac, counter + i as u64, part));
        }
        let framing = RECORD_HEADER_LEN + TAG_LEN;
        buf.resize(buf.len() + n * framing, 0);
        // The last piece first: a piece's new place overlaps only the
        // places of the pieces after it, which have moved already.
        for (i, tag) in self.tags.iter().enumerate().rev() {
            let src = from + i * MAX_RECORD;
            let len = MAX_RECORD.min(plain - i * MAX_RECORD);
            let dst = from + i * (MAX_RECORD + framing);
            buf.copy_within(src..src + len, dst + RECORD_HEADER_LEN);
            buf[dst..dst + RECORD_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
            let at = dst + RECORD_HEADER_LEN + len;
            buf[at..at + TAG_LEN].copy_from_slice(tag);
        }
        Ok(())
    }
}

/// Opens the other direction of a session.
pub struct Opener {
    mac: blake3::Hasher,
    counter: u64,
}

impl Opener {
    /// Opens the whole records at the start of `wire`, appending their
    /// payloads to `plain`, each only once its tag verified.
    ///
    /// # Returns
    /// The bytes of `wire` used; a partial record at the end is left for
    /// the next call.
    ///
    /// # Errors
    /// A [`SealError`]: the connection must close. Records before the bad
    /// one were opened into `plain`.
    pub fn open(&mut self, wire: &[u8], plain: &mut Vec<u8>) -> Result<usize, SealError> {
        let mut off = 0;
        while let Some(head) = wire.get(off..off + RECORD_HEADER_LEN) {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if len == 0 || len as usize > MAX_RECORD {
                return Err(SealError::BadLength {
                    record: self.counter,
                    len,
                });
            }
            let start = off + RECORD_HEADER_LEN;
            let end = start + len as usize;
            let Some(received) = wire.get(end..end + TAG_LEN) else {
                break;
            };
            let payload = &wire[start..end];
            if !same_tag(received, &tag(&self.mac, self.counter, payload)) {
                return Err(SealError::BadMac {
                    record: self.counter,
                });
            }
            self.counter = self.counter.checked_add(1).ok_or(SealError::Exhausted)?;
            plain.extend_from_slice(payload);
            off = end + TAG_LEN;
        }
        Ok(off)
    }

    /// How many bytes `pending`, the start of a record, lacks to be whole
    /// (or, before its length is there, to show its length). 0 when it is
    /// whole, or when its length is out of bounds ([`Opener::open`] then
    /// says so).
    pub fn missing(pending: &[u8]) -> usize {
        let Some(head) = pending.get(..RECORD_HEADER_LEN) else {
            return RECORD_HEADER_LEN - pending.len();
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 || len > MAX_RECORD {
            return 0;
        }
        (RECORD_HEADER_LEN + len + TAG_LEN).saturating_sub(pending.len())
    }

    /// The most bytes of `wire` that [`Opener::open`] may leave unused:
    /// one record short of its tag.
    pub const MAX_PENDING: usize = RECORD_HEADER_LEN + MAX_RECORD + TAG_LEN;
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "00112233445566778899aabbccddeeff";
    const L: &str = "ffeeddccbbaa99887766554433221100";

    /// Both ends of a follower's session.
    fn pair(secret: &[u8]) -> (Session, Session) {
        (
            Session::new(secret, Prover::Leader, Prover::Follower, "2", F, L),
            Session::new(secret, Prover::Follower, Prover::Leader, "2", F, L),
        )
    }

    fn sealed(sealer: &mut Sealer, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sealer.seal(plain, &mut out).expect("seal");
        out
    }

    #[test]
    fn a_record_is_length_payload_and_the_truncated_hmac() {
        let (mut leader, _) = pair(b"s3cret");
        let wire = sealed(&mut leader.sealer, b"abc");
        assert_eq!(&wire[..7], b"\x03\0\0\0abc");
        let key = auth::session_key(b"s3cret", Prover::Leader, "2", F, L);
        let mut mac = blake3::Hasher::new_keyed(&key);
        mac.update(b"abc");
        mac.update(&0u64.to_le_bytes());
        mac.update(&3u32.to_le_bytes());
        assert_eq!(&wire[7..], &mac.finalize().as_bytes()[..TAG_LEN]);
        // The next record has counter 1: the same bytes get another tag.
        let again = sealed(&mut leader.sealer, b"abc");
        assert_ne!(again, wire);
    }

    #[test]
    fn both_directions_round_trip_in_pieces() {
        let (mut leader, mut follower) = pair(b"k");
        let plain: Vec<u8> = (0..3 * MAX_RECORD + 17).map(|i| i as u8).collect();
        let mut wire = sealed(&mut leader.sealer, &plain);
        wire.extend(sealed(&mut leader.sealer, b"tail"));
        // Fed a few bytes at a time, the opener waits for whole records.
        let mut got = Vec::new();
        let mut pending = Vec::new();
        for piece in wire.chunks(4093) {
            pending.extend_from_slice(piece);
            let used = follower.opener.open(&pending, &mut got).expect("open");
            pending.drain(..used);
            assert!(pending.len() < Opener::MAX_PENDING);
        }
        assert!(pending.is_empty());
        assert_eq!(&got[..plain.len()], &plain[..]);
        assert_eq!(&got[plain.len()..], b"tail");
        let back = sealed(&mut follower.sealer, b"ACK");
        let mut got = Vec::new();
        assert_eq!(leader.opener.open(&back, &mut got), Ok(back.len()));
        assert_eq!(got, b"ACK");
    }

    #[test]
    fn sealing_in_place_gives_the_same_records() {
        for len in [
            1,
            100,
            MAX_RECORD - 1,
            MAX_RECORD,
            MAX_RECORD + 1,
            5 * MAX_RECORD + 3,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (mut a, _) = pair(b"k");
            let (mut b, _) = pair(b"k");
            let mut copied = b"before".to_vec();
            a.sealer.seal(&plain, &mut copied).expect("seal");
            let mut in_place = b"before".to_vec();
            in_place.extend_from_slice(&plain);
            b.sealer.seal_in_place(&mut in_place, 6).expect("seal");
            assert_eq!(copied, in_place, "{len} bytes");
            let (_, mut follower) = pair(b"k");
            let mut got = Vec::new();
            assert_eq!(
                follower.opener.open(&in_place[6..], &mut got),
                Ok(in_place.len() - 6)
            );
            assert_eq!(got, plain);
        }
    }

    #[test]
    fn missing_counts_what_completes_the_first_record() {
        let (mut leader, _) = pair(b"k");
        let wire = sealed(&mut leader.sealer, &[9; 300]);
        assert_eq!(Opener::missing(&[]), RECORD_HEADER_LEN);
        assert_eq!(Opener::missing(&wire[..3]), 1);
        assert_eq!(Opener::missing(&wire[..4]), 300 + TAG_LEN);
        assert_eq!(Opener::missing(&wire[..wire.len() - 1]), 1);
        assert_eq!(Opener::missing(&wire), 0);
        assert_eq!(
            Opener::missing(&[0, 0, 0, 0]),
            0,
            "a bad length is for open to refuse"
        );
    }

    #[test]
    fn any_changed_byte_fails() {
        let (mut leader, _) = pair(b"k");
        let wire = sealed(&mut leader.sealer, b"PUT k7 value");
        for at in 0..wire.len() {
            for bit in [0x01, 0x80] {
                let mut bad = wire.clone();
                bad[at] ^= bit;
                let (_, mut follower) = pair(b"k");
                let mut got = Vec::new();
                let result = follower.opener.open(&bad, &mut got);
                assert!(matches!(result, Err(_) | Ok(0)), "flip at {at}: {result:?}");
                assert!(got.is_empty(), "nothing unverified is exposed");
            }
        }
    }

    #[test]
    fn drops_replays_reorders_and_reflections_fail() {
        let (mut leader, _) = pair(b"k");
        let one = sealed(&mut leader.sealer, b"one");
        let two = sealed(&mut leader.sealer, b"two");
        let open = |wire: &[u8]| {
            let (_, mut follower) = pair(b"k");
            let mut got = Vec::new();
            (follower.opener.open(wire, &mut got), got)
        };
        // Dropped: `two` alone is record 1, read as record 0.
        assert_eq!(open(&two).0, Err(SealError::BadMac { record: 0 }));
        // Replayed: `one` twice.
        let (result, got) = open(&[one.clone(), one.clone()].concat());
        assert_eq!(result, Err(SealError::BadMac { record: 1 }));
        assert_eq!(got, b"one");
        // Reordered.
        assert_eq!(
            open(&[two.clone(), one.clone()].concat()).0,
            Err(SealError::BadMac { record: 0 })
        );
        // Reflected: the leader's own record sent back to it.
        let (mut leader, _) = pair(b"k");
        let mine = sealed(&mut leader.sealer, b"one");
        let mut got = Vec::new();
        assert_eq!(
            leader.opener.open(&mine, &mut got),
            Err(SealError::BadMac { record: 0 })
        );
        // Another secret, another id, or other nonces: another key.
        for other in [
            Session::new(b"x", Prover::Follower, Prover::Leader, "2", F, L),
            Session::new(b"k", Prover::Follower, Prover::Leader, "3", F, L),
            Session::new(b"k", Prover::Follower, Prover::Leader, "2", L, F),
        ] {
            let mut other = other;
            let mut got = Vec::new();
            assert!(other.opener.open(&one, &mut got).is_err());
        }
    }

    #[test]
    fn lengths_are_bounded_before_anything_is_buffered() {
        let (_, mut follower) = pair(b"k");
        let mut got = Vec::new();
        let too_long = ((MAX_RECORD + 1) as u32).to_le_bytes();
        assert_eq!(
            follower.opener.open(&too_long, &mut got),
            Err(SealError::BadLength {
                record: 0,
                len: MAX_RECORD as u32 + 1
            })
        );
        assert_eq!(
            follower.opener.open(&[0, 0, 0, 0], &mut got),
            Err(SealError::BadLength { record: 0, len: 0 })
        );
        assert_eq!(follower.opener.open(&[1, 0, 0], &mut got), Ok(0));
    }

    #[test]
    fn session_keys_are_not_the_handshake_proofs() {
        let key = auth::session_key(b"k", Prover::Leader, "2", F, L);
        let proof = auth::proof(b"k", Prover::Leader, "2", F, L);
        assert_ne!(hex::encode(key), proof);
    }
}
