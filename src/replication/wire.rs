//! The replication stream after `HELLO LEADER`: binary frames, both ways.
//!
//! Pure: encoding appends to a `Vec<u8>`, decoding reads a `&[u8]`.
//!
//! ```text
//! frame:  [kind: u8][length: u32 LE][payload: length bytes]
//!
//! follower -> leader
//!   'S' SYNC       history[16] seq:u64 epoch:u64   what the follower's log holds
//!   'A' ACK        seq:u64                         durable through seq (also the heartbeat)
//! leader -> follower
//!   'P' PLAN       mode:u8 history[16] epoch:u64 seq:u64
//!                  mode 1 = catch-up (records follow), 2 = snapshot (file chunks follow);
//!                  history/epoch/seq are the leader's
//!   'F' CHUNK      bytes of the leader's log file, from offset 0 (snapshot only)
//!   'E' END        seq:u64                         the snapshot is complete through seq
//!   'R' RECORDS    whole log records, byte for byte as in the log (see wal::record)
//!   'H' HEARTBEAT  seq:u64 epoch:u64               the leader's committed seq
//! ```
//!
//! All integers are little-endian.

use crate::wal::record::{HistoryId, MAX_BODY_LEN};

/// Bytes before a frame's payload.
pub const FRAME_HEADER_LEN: usize = 5;

/// The largest payload accepted: one record of the largest size, or a
/// chunk. A longer length field is a protocol error, not a reason to buffer.
pub const MAX_FRAME_LEN: usize = MAX_BODY_LEN + 64;

/// How the leader will bring a follower up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only the records after the follower's seq.
    CatchUp,
    /// The whole log file, then records.
    Snapshot,
}

/// One decoded frame; byte payloads borrow from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Sync {
        history: HistoryId,
        seq: u64,
        epoch: u64,
    },
    Ack {
        seq: u64,
    },
    Plan {
        mode: Mode,
        history: HistoryId,
        epoch: u64,
        seq: u64,
    },
    Chunk(&'a [u8]),
    End {
        seq: u64,
    },
    Records(&'a [u8]),
    Heartbeat {
        seq: u64,
        epoch: u64,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum WireError {
    /// An unknown kind byte.
    UnknownKind(u8),
    /// A payload of the wrong size for its kind, or past the cap.
    BadLength,
    /// A field with an impossible value.
    BadField,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::UnknownKind(k) => write!(f, "unknown frame kind 0x{k:02x}"),
            WireError::BadLength => write!(f, "bad frame length"),
            WireError::BadField => write!(f, "bad frame field"),
        }
    }
}

impl Frame<'_> {
    /// Appends the encoded frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = begin(out, self.kind());
        match *self {
            Frame::Sync {
                history,
                seq,
                epoch,
            } => {
                out.extend_from_slice(&history);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
            }
            Frame::Ack { seq } | Frame::End { seq } => out.extend_from_slice(&seq.to_le_bytes()),
            Frame::Plan {
                mode,
                history,
                epoch,
                seq,
            } => {
                out.push(match mode {
                    Mode::CatchUp => 1,
                    Mode::Snapshot => 2,
                });
                out.extend_from_slice(&history);
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
            }
            Frame::Chunk(bytes) | Frame::Records(bytes) => out.extend_from_slice(bytes),
            Frame::Heartbeat { seq, epoch } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
            }
        }
        finish(out, at);
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Sync { .. } => b'S',
            Frame::Ack { .. } => b'A',
            Frame::Plan { .. } => b'P',
            Frame::Chunk(_) => b'F',
            Frame::End { .. } => b'E',
            Frame::Records(_) => b'R',
            Frame::Heartbeat { .. } => b'H',
        }
    }

    /// Decodes the frame at the start of `buf`: `Ok(None)` if it is not
    /// all there yet.
    ///
    /// # Errors
    /// A [`WireError`]; the connection is then dropped.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
        let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let kind = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(WireError::BadLength);
        }
        let fixed = match kind {
            b'S' => Some(32),
            b'A' | b'E' => Some(8),
            b'P' => Some(33),
            b'H' => Some(16),
            b'F' | b'R' => None,
            other => return Err(WireError::UnknownKind(other)),
        };
        if fixed.is_some_and(|f| f != len) {
            return Err(WireError::BadLength);
        }
        let Some(p) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return Ok(None);
        };
        let frame = match kind {
            b'S' => Frame::Sync {
                history: history(&p[..16]),
                seq: u64_at(p, 16),
                epoch: u64_at(p, 24),
            },
            b'A' => Frame::Ack { seq: u64_at(p, 0) },
            b'E' => Frame::End { seq: u64_at(p, 0) },
            b'P' => Frame::Plan {
                mode: match p[0] {
                    1 => Mode::CatchUp,
                    2 => Mode::Snapshot,
                    _ => return Err(WireError::BadField),
                },
                history: history(&p[1..17]),
                epoch: u64_at(p, 17),
                seq: u64_at(p, 25),
            },
            b'H' => Frame::Heartbeat {
                seq: u64_at(p, 0),
                epoch: u64_at(p, 8),
            },
            b'F' => Frame::Chunk(p),
            _ => Frame::Records(p),
        };
        Ok(Some((frame, FRAME_HEADER_LEN + len)))
    }
}

/// Starts a frame of `kind` whose payload the caller appends; returns the
/// position to pass to [`finish`].
pub fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let at = out.len();
    out.push(kind);
    out.extend_from_slice(&[0; 4]);
    at
}

/// Fills in the length of the frame started at `at`.
pub fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at - FRAME_HEADER_LEN) as u32;
    out[at + 1..at + FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
}

fn history(bytes: &[u8]) -> HistoryId {
    let mut h = [0u8; 16];
    h.copy_from_slice(&bytes[..16]);
    h
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame<'static>> {
        vec![
            Frame::Sync {
                history: [1; 16],
                seq: 7,
                epoch: 2,
            },
            Frame::Ack { seq: 99 },
            Frame::Plan {
                mode: Mode::CatchUp,
                history: [3; 16],
                epoch: 1,
                seq: 5,
            },
            Frame::Plan {
                mode: Mode::Snapshot,
                history: [4; 16],
                epoch: 9,
                seq: 0,
            },
            Frame::Chunk(b"KEYVALOG..."),
            Frame::End { seq: 12 },
            Frame::Records(b""),
            Frame::Records(b"\x01\x02"),
            Frame::Heartbeat { seq: 3, epoch: 4 },
        ]
    }

    #[test]
    fn round_trip_back_to_back() {
        let mut buf = Vec::new();
        for f in all_frames() {
            f.encode(&mut buf);
        }
        let mut rest = &buf[..];
        for want in all_frames() {
            let (got, used) = Frame::decode(rest).expect("valid").expect("complete");
            assert_eq!(got, want);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn layout_of_an_ack() {
        let mut buf = Vec::new();
        Frame::Ack { seq: 0x0102 }.encode(&mut buf);
        assert_eq!(buf, [b'A', 8, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut buf = Vec::new();
        Frame::Plan {
            mode: Mode::CatchUp,
            history: [3; 16],
            epoch: 1,
            seq: 5,
        }
        .encode(&mut buf);
        for cut in 0..buf.len() {
            assert_eq!(Frame::decode(&buf[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(
            Frame::decode(b"Z\0\0\0\0"),
            Err(WireError::UnknownKind(b'Z'))
        );
        assert_eq!(Frame::decode(b"A\x07\0\0\0"), Err(WireError::BadLength));
        assert_eq!(
            Frame::decode(b"R\xff\xff\xff\xff"),
            Err(WireError::BadLength)
        );
        let mut plan = Vec::new();
        Frame::Plan {
            mode: Mode::CatchUp,
            history: [0; 16],
            epoch: 0,
            seq: 0,
        }
        .encode(&mut plan);
        plan[5] = 7;
        assert_eq!(Frame::decode(&plan), Err(WireError::BadField));
    }
}
