//! The replication stream after `HELLO LEADER`: binary frames, both ways.
//!
//! Pure: encoding appends to a `Vec<u8>`, decoding reads a `&[u8]`.
//!
//! ```text
//! frame:  [kind: u8][length: u32 LE][payload: length bytes]
//!
//! follower -> leader
//!   'S' SYNC       seq:u64 epoch:u64 flags:u8 n:u32 n × (history[16] epoch:u64 start:u64)
//!                  what the follower's log holds: its last seq, the highest
//!                  epoch it knows, and its lineage (wal::lineage), oldest
//!                  first; flags bit 0: its log may have lost records, send
//!                  a snapshot; bit 1: `port:u16` follows the lineage, the
//!                  port it serves clients on (`INFO`, `ROLE`)
//!   'A' ACK        seq:u64 epoch:u64               durable through seq (also the heartbeat)
//!   'C' CONFIRM    round:u64 epoch:u64             the answer to PROBE `round`: this
//!                                                  follower still follows the sender
//! leader -> follower
//!   'P' PLAN       mode:u8 history[16] epoch:u64 seq:u64 related:u8 common:u64 keep:u32
//!                  acks:u8 bytes:u64 keys:u64 sync:u16 sync_timeout_ms:u64
//!                  mode 1 = catch-up (records after seq `common` follow; the
//!                  follower first cuts its log back to `common` and its first
//!                  `keep` fork records), 2 = snapshot (file chunks follow; the
//!                  follower's data agrees with the leader's through `common`
//!                  if `related` is 1, not at all if 0);
//!                  history/epoch/seq are the leader's current ones;
//!                  acks 1: writes wait for follower acks (`--sync-followers`),
//!                  fsync and ack at once; 0: nothing waits, the follower may
//!                  gather its fsyncs;
//!                  bytes/keys: a snapshot plan announces the bytes of log
//!                  file that follow and the leader's live key count (the
//!                  follower sizes its new map by it); 0 in a catch-up plan;
//!                  sync/sync_timeout_ms: the cluster's output rule
//!                  (`SyncPolicy`), which the follower keeps for when it is
//!                  promoted
//!   'F' CHUNK      bytes of the leader's log file, from offset 0 (snapshot only)
//!   'E' END        seq:u64                         the snapshot is complete through seq
//!   'R' RECORDS    whole log records, byte for byte as in the log (see wal::record)
//!   'H' HEARTBEAT  seq:u64 epoch:u64               the leader's committed seq and epoch
//!   'W' WAIT       awaited:u8                      from now on client writes do (1) or do
//!                                                  not (0) wait for this follower's acks
//!   'Q' PROBE      round:u64 epoch:u64             "do you still follow me?", answered at
//!                                                  once with CONFIRM; renews the leader's
//!                                                  read lease (see replication::leader)
//! ```
//!
//! All integers are little-endian.

use super::SyncPolicy;
use crate::wal::lineage::Segment;
use crate::wal::record::{HistoryId, MAX_BODY_LEN};
use crate::wal::snapshot::Announced;

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

/// Most lineage segments a `SYNC` may carry.
pub const MAX_SEGMENTS: usize = 1 << 16;

/// Bytes of a `SYNC` before its segments.
const SYNC_FIXED_LEN: usize = 21;

/// Bytes of one lineage segment in a `SYNC`.
const SEGMENT_LEN: usize = 32;

/// Bytes of a `PLAN`.
const PLAN_LEN: usize = 73;

/// The leader's answer to `SYNC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    /// The leader's current history, epoch and seq.
    pub history: HistoryId,
    pub epoch: u64,
    pub seq: u64,
    /// Catch-up: the seq the records continue after. Snapshot: the seq
    /// through which the follower's data agrees with the leader's, `None`
    /// when they are unrelated.
    pub common: Option<u64>,
    /// Catch-up: the follower's fork records to keep.
    pub keep_forks: u32,
    /// Whether client writes wait for follower acks on this leader.
    pub acks_awaited: bool,
    /// Snapshot: the size of the file part and the leader's key count.
    pub announced: Option<Announced>,
    /// The cluster's output rule.
    pub policy: SyncPolicy,
}

/// One decoded frame; byte payloads borrow from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Sync {
        seq: u64,
        epoch: u64,
        /// The follower's log is suspect: only a snapshot will do.
        want_snapshot: bool,
        lineage: Vec<Segment>,
        /// The port the follower serves clients on.
        port: Option<u16>,
    },
    Ack {
        seq: u64,
        epoch: u64,
    },
    Plan(Plan),
    Chunk(&'a [u8]),
    End {
        seq: u64,
    },
    Records(&'a [u8]),
    Heartbeat {
        seq: u64,
        epoch: u64,
    },
    /// Whether client writes now wait for this follower's acks (the
    /// `PLAN`'s `acks_awaited`, changed later).
    Wait {
        awaited: bool,
    },
    /// The leader asks whether this follower still follows it (read
    /// lease).
    Probe {
        round: u64,
        epoch: u64,
    },
    /// The follower's answer to `Probe { round }`, with the highest epoch
    /// it knows.
    Confirm {
        round: u64,
        epoch: u64,
    },
}

impl Frame<'_> {
    /// The frame's name, as the protocol documents it.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Sync { .. } => "SYNC",
            Frame::Ack { .. } => "ACK",
            Frame::Plan(_) => "PLAN",
            Frame::Chunk(_) => "CHUNK",
            Frame::End { .. } => "END",
            Frame::Records(_) => "RECORDS",
            Frame::Heartbeat { .. } => "HEARTBEAT",
            Frame::Wait { .. } => "WAIT",
            Frame::Probe { .. } => "PROBE",
            Frame::Confirm { .. } => "CONFIRM",
        }
    }
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
        match self {
            Frame::Sync {
                seq,
                epoch,
                want_snapshot,
                lineage,
                port,
            } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
                out.push(u8::from(*want_snapshot) | (u8::from(port.is_some()) << 1));
                let n = lineage.len().min(MAX_SEGMENTS);
                out.extend_from_slice(&(n as u32).to_le_bytes());
                // The newest segments matter; an absurdly long lineage
                // loses its oldest ones.
                for s in &lineage[lineage.len() - n..] {
                    out.extend_from_slice(&s.history);
                    out.extend_from_slice(&s.epoch.to_le_bytes());
                    out.extend_from_slice(&s.start.to_le_bytes());
                }
                if let Some(port) = port {
                    out.extend_from_slice(&port.to_le_bytes());
                }
            }
            Frame::End { seq } => out.extend_from_slice(&seq.to_le_bytes()),
            Frame::Plan(plan) => {
                out.push(match plan.mode {
                    Mode::CatchUp => 1,
                    Mode::Snapshot => 2,
                });
                out.extend_from_slice(&plan.history);
                out.extend_from_slice(&plan.epoch.to_le_bytes());
                out.extend_from_slice(&plan.seq.to_le_bytes());
                out.push(u8::from(plan.common.is_some()));
                out.extend_from_slice(&plan.common.unwrap_or(0).to_le_bytes());
                out.extend_from_slice(&plan.keep_forks.to_le_bytes());
                out.push(u8::from(plan.acks_awaited));
                let a = plan.announced.unwrap_or(Announced { bytes: 0, keys: 0 });
                out.extend_from_slice(&a.bytes.to_le_bytes());
                out.extend_from_slice(&a.keys.to_le_bytes());
                let followers = u16::try_from(plan.policy.followers).unwrap_or(u16::MAX);
                out.extend_from_slice(&followers.to_le_bytes());
                out.extend_from_slice(&plan.policy.timeout_ms.to_le_bytes());
            }
            Frame::Chunk(bytes) | Frame::Records(bytes) => out.extend_from_slice(bytes),
            Frame::Ack { seq, epoch }
            | Frame::Heartbeat { seq, epoch }
            | Frame::Probe { round: seq, epoch }
            | Frame::Confirm { round: seq, epoch } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
            }
            Frame::Wait { awaited } => out.push(u8::from(*awaited)),
        }
        finish(out, at);
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Sync { .. } => b'S',
            Frame::Ack { .. } => b'A',
            Frame::Plan(_) => b'P',
            Frame::Chunk(_) => b'F',
            Frame::End { .. } => b'E',
            Frame::Records(_) => b'R',
            Frame::Heartbeat { .. } => b'H',
            Frame::Wait { .. } => b'W',
            Frame::Probe { .. } => b'Q',
            Frame::Confirm { .. } => b'C',
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
            b'W' => Some(1),
            b'E' => Some(8),
            b'A' | b'H' | b'Q' | b'C' => Some(16),
            b'P' => Some(PLAN_LEN),
            b'S' | b'F' | b'R' => None,
            other => return Err(WireError::UnknownKind(other)),
        };
        if fixed.is_some_and(|f| f != len) {
            return Err(WireError::BadLength);
        }
        if kind == b'S'
            && (len < SYNC_FIXED_LEN || !matches!((len - SYNC_FIXED_LEN) % SEGMENT_LEN, 0 | 2))
        {
            return Err(WireError::BadLength);
        }
        let Some(p) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return Ok(None);
        };
        let frame = match kind {
            b'S' => decode_sync(p)?,
            b'A' => Frame::Ack {
                seq: u64_at(p, 0),
                epoch: u64_at(p, 8),
            },
            b'E' => Frame::End { seq: u64_at(p, 0) },
            b'P' => Frame::Plan(decode_plan(p)?),
            b'H' => Frame::Heartbeat {
                seq: u64_at(p, 0),
                epoch: u64_at(p, 8),
            },
            b'Q' => Frame::Probe {
                round: u64_at(p, 0),
                epoch: u64_at(p, 8),
            },
            b'C' => Frame::Confirm {
                round: u64_at(p, 0),
                epoch: u64_at(p, 8),
            },
            b'W' => Frame::Wait {
                awaited: match p[0] {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError::BadField),
                },
            },
            b'F' => Frame::Chunk(p),
            _ => Frame::Records(p),
        };
        Ok(Some((frame, FRAME_HEADER_LEN + len)))
    }
}

fn decode_sync(p: &[u8]) -> Result<Frame<'_>, WireError> {
    let flags = p[16];
    if flags & !3 != 0 {
        return Err(WireError::BadField);
    }
    let (want_snapshot, has_port) = (flags & 1 == 1, flags & 2 == 2);
    let n = u32_at(p, 17) as usize;
    let segments_end = SYNC_FIXED_LEN + n * SEGMENT_LEN;
    let port_len = if has_port { 2 } else { 0 };
    if n == 0 || n > MAX_SEGMENTS || p.len() != segments_end + port_len {
        return Err(WireError::BadField);
    }
    let port = has_port.then(|| u16::from_le_bytes([p[segments_end], p[segments_end + 1]]));
    let lineage = p[SYNC_FIXED_LEN..segments_end]
        .chunks_exact(SEGMENT_LEN)
        .map(|s| Segment {
            history: history(s),
            epoch: u64_at(s, 16),
            start: u64_at(s, 24),
        })
        .collect();
    Ok(Frame::Sync {
        seq: u64_at(p, 0),
        epoch: u64_at(p, 8),
        want_snapshot,
        lineage,
        port,
    })
}

fn decode_plan(p: &[u8]) -> Result<Plan, WireError> {
    let mode = match p[0] {
        1 => Mode::CatchUp,
        2 => Mode::Snapshot,
        _ => return Err(WireError::BadField),
    };
    let common = match p[33] {
        // Canonical: an unrelated snapshot carries a zero `common`.
        0 if mode == Mode::Snapshot && u64_at(p, 34) == 0 => None,
        1 => Some(u64_at(p, 34)),
        _ => return Err(WireError::BadField),
    };
    Ok(Plan {
        mode,
        history: history(&p[1..17]),
        epoch: u64_at(p, 17),
        seq: u64_at(p, 25),
        common,
        keep_forks: u32_at(p, 42),
        acks_awaited: match p[46] {
            0 => false,
            1 => true,
            _ => return Err(WireError::BadField),
        },
        announced: match (mode, u64_at(p, 47), u64_at(p, 55)) {
            (_, 0, 0) => None,
            (Mode::Snapshot, bytes, keys) => Some(Announced { bytes, keys }),
            // Canonical: a catch-up announces nothing.
            (Mode::CatchUp, _, _) => return Err(WireError::BadField),
        },
        policy: SyncPolicy {
            followers: usize::from(u16::from_le_bytes([p[63], p[64]])),
            timeout_ms: u64_at(p, 65),
        },
    })
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

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode, common: Option<u64>) -> Plan {
        Plan {
            mode,
            history: [3; 16],
            epoch: 1,
            seq: 5,
            common,
            keep_forks: 2,
            acks_awaited: true,
            announced: None,
            policy: SyncPolicy {
                followers: 2,
                timeout_ms: 750,
            },
        }
    }

    fn announced(mut plan: Plan) -> Plan {
        plan.announced = Some(Announced {
            bytes: 1 << 33,
            keys: 1_000_000,
        });
        plan
    }

    fn all_frames() -> Vec<Frame<'static>> {
        vec![
            Frame::Sync {
                seq: 7,
                epoch: 2,
                want_snapshot: true,
                lineage: vec![
                    Segment {
                        history: [1; 16],
                        epoch: 1,
                        start: 0,
                    },
                    Segment {
                        history: [2; 16],
                        epoch: 2,
                        start: 5,
                    },
                ],
                port: None,
            },
            Frame::Sync {
                seq: 8,
                epoch: 2,
                want_snapshot: false,
                lineage: vec![Segment {
                    history: [3; 16],
                    epoch: 2,
                    start: 0,
                }],
                port: Some(6380),
            },
            Frame::Ack { seq: 99, epoch: 3 },
            Frame::Plan(plan(Mode::CatchUp, Some(4))),
            Frame::Plan(plan(Mode::Snapshot, None)),
            Frame::Plan(plan(Mode::Snapshot, Some(0))),
            Frame::Plan(announced(plan(Mode::Snapshot, None))),
            Frame::Chunk(b"KEYVALOG..."),
            Frame::End { seq: 12 },
            Frame::Records(b""),
            Frame::Records(b"\x01\x02"),
            Frame::Heartbeat { seq: 3, epoch: 4 },
            Frame::Probe { round: 5, epoch: 6 },
            Frame::Confirm { round: 7, epoch: 8 },
            Frame::Wait { awaited: true },
            Frame::Wait { awaited: false },
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
        Frame::Ack {
            seq: 0x0102,
            epoch: 3,
        }
        .encode(&mut buf);
        assert_eq!(
            buf,
            [b'A', 16, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn layout_of_a_snapshot_plan() {
        let mut buf = Vec::new();
        Frame::Plan(announced(plan(Mode::Snapshot, Some(4)))).encode(&mut buf);
        assert_eq!(buf.len(), FRAME_HEADER_LEN + 73);
        assert_eq!(&buf[..5], &[b'P', 73, 0, 0, 0]);
        let p = &buf[FRAME_HEADER_LEN..];
        assert_eq!(p[0], 2);
        assert_eq!(p[33], 1);
        assert_eq!(u64_at(p, 34), 4);
        assert_eq!(p[46], 1, "acks awaited");
        assert_eq!(u64_at(p, 47), 1 << 33);
        assert_eq!(u64_at(p, 55), 1_000_000);
        assert_eq!(&p[63..65], &[2, 0], "two followers awaited");
        assert_eq!(u64_at(p, 65), 750, "for 750 ms");
        // A catch-up announces nothing.
        let mut catch_up = Vec::new();
        let mut bad = announced(plan(Mode::CatchUp, Some(4)));
        Frame::Plan(bad).encode(&mut catch_up);
        assert_eq!(Frame::decode(&catch_up), Err(WireError::BadField));
        bad.announced = None;
        catch_up.clear();
        Frame::Plan(bad).encode(&mut catch_up);
        assert!(matches!(Frame::decode(&catch_up), Ok(Some((Frame::Plan(p), 78))) if p == bad));
        // Any other length is refused.
        let mut odd = buf[..FRAME_HEADER_LEN + 54].to_vec();
        odd[1] = 54;
        assert_eq!(Frame::decode(&odd), Err(WireError::BadLength));
        let mut old = buf[..FRAME_HEADER_LEN + 46].to_vec();
        old[1] = 46;
        assert_eq!(Frame::decode(&old), Err(WireError::BadLength));
        let mut before_policy = buf[..FRAME_HEADER_LEN + 63].to_vec();
        before_policy[1] = 63;
        assert_eq!(Frame::decode(&before_policy), Err(WireError::BadLength));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        for p in [
            plan(Mode::CatchUp, Some(1)),
            announced(plan(Mode::Snapshot, None)),
        ] {
            let mut buf = Vec::new();
            Frame::Plan(p).encode(&mut buf);
            for cut in 0..buf.len() {
                assert_eq!(Frame::decode(&buf[..cut]), Ok(None), "cut {cut}");
            }
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(
            Frame::decode(b"Z\0\0\0\0"),
            Err(WireError::UnknownKind(b'Z'))
        );
        assert_eq!(Frame::decode(b"A\x07\0\0\0"), Err(WireError::BadLength));
        assert_eq!(Frame::decode(b"S\x16\0\0\0"), Err(WireError::BadLength));
        let mut empty_sync = b"S\x15\0\0\0".to_vec();
        empty_sync.extend_from_slice(&[0; 21]);
        assert_eq!(Frame::decode(&empty_sync), Err(WireError::BadField));
        assert_eq!(
            Frame::decode(b"R\xff\xff\xff\xff"),
            Err(WireError::BadLength)
        );
        let mut bytes = Vec::new();
        Frame::Plan(plan(Mode::CatchUp, Some(0))).encode(&mut bytes);
        bytes[5] = 7;
        assert_eq!(Frame::decode(&bytes), Err(WireError::BadField));
        // A catch-up must say where it continues.
        let mut bytes = Vec::new();
        Frame::Plan(plan(Mode::CatchUp, Some(0))).encode(&mut bytes);
        bytes[5 + 33] = 0;
        assert_eq!(Frame::decode(&bytes), Err(WireError::BadField));
    }
}
