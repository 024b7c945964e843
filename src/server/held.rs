//! Replies that wait for writes to become durable, per connection.
//!
//! Pure: bytes in, bytes out, no sockets and no clocks (the caller passes
//! `now`). A connection's replies leave in request order, so a reply that
//! must wait holds back every reply after it on the same connection.
//!
//! Two kinds of reply wait:
//!
//! - the reply to a **write** (`PUT`, `DELETE`), until the write is durable
//!   here and, with `--sync-followers N`, on N followers; then `OK`, or
//!   `REPLICATION_TIMEOUT` once its deadline passed;
//! - the reply to a **read** (`GET`, `KEYS`, `DIGEST`, `INFO`, a `DELETE`
//!   that finds nothing) made while some write it may have seen was
//!   applied but not yet durable, until that write is durable here (a disk
//!   error could still undo it); on a leader with `--sync-followers N`,
//!   until that write passed the output rule like a write's reply, since a
//!   failover to a follower without it would take it back. Such a read is
//!   answered `REPLICATION_TIMEOUT` at the write's deadline.
//! - the reply to a **query** (`DIGEST` or `KEYS` over a large data set)
//!   that a job thread computes off the loop (see `super::jobs`), until
//!   [`HeldReplies::fill_query`] brings it in. From then on it waits like
//!   a read, for the writes it may have seen to be durable.
//!
//! - the reply to a **`WAIT`** (Redis face), until enough followers
//!   acknowledged the connection's last write, or its timeout passes; then
//!   the number that did.
//!
//! After a disk error, writes from the first lost seq on are answered
//! `ERROR`, and so are reads that may have seen one of them. A write's
//! own reply (`OK`, or on the Redis face `+OK`, a count, an old value) is
//! encoded when the write is taken and goes out only if it succeeds; the
//! failures are spelled in the connection's [`Dialect`].

use std::collections::VecDeque;
use std::time::Instant;

use crate::protocol::Reply;

/// How a connection's failure replies are spelled: the line protocol's
/// words, or Redis errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    #[default]
    Line,
    Resp,
}

/// `ERROR` on the Redis face.
pub const RESP_ERROR: &[u8] = b"-ERR not acknowledged: the write could not be made durable here, \
or this node stopped leading before its followers held it\r\n";

/// `REPLICATION_TIMEOUT` on the Redis face.
pub const RESP_REPLICATION_TIMEOUT: &[u8] = b"-REPLICATION_TIMEOUT the write is durable on this \
node, but fewer followers than --sync-followers confirmed it in time\r\n";

impl Dialect {
    fn failure(self, reply: Reply) -> &'static [u8] {
        match (self, reply) {
            (Dialect::Line, reply) => reply.as_bytes(),
            (Dialect::Resp, Reply::ReplicationTimeout) => RESP_REPLICATION_TIMEOUT,
            (Dialect::Resp, _) => RESP_ERROR,
        }
    }
}

/// How far the node's writes have got, for releasing held replies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Writes through this seq are answered `OK`: durable here and, with
    /// `--sync-followers N`, on N followers.
    pub acked: u64,
    /// Writes through this seq are durable here: reads that saw them may be
    /// answered, and a write's `REPLICATION_TIMEOUT` may fire.
    pub local: u64,
    /// After a disk error, the first seq lost: writes from it on, and reads
    /// that may have seen them, are answered `ERROR`.
    pub lost_from: Option<u64>,
    /// The leader's read lease holds: reads that wait for it may go.
    pub leased: bool,
    /// On a leader, each connected follower's last acknowledged seq
    /// (`WAIT` counts them).
    pub follower_acks: Vec<u64>,
}

impl Progress {
    /// Followers that acknowledged writes through `seq`.
    pub fn replicas_at(&self, seq: u64) -> usize {
        self.follower_acks
            .iter()
            .filter(|&&acked| acked >= seq)
            .count()
    }
}

/// What a read may have seen that it must not show yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The newest write it may have seen.
    pub seq: u64,
    /// That write must pass the output rule (`Progress::acked`), not only
    /// be durable here (`Progress::local`).
    pub acked: bool,
    /// With `acked`: when the read is answered `REPLICATION_TIMEOUT`.
    pub deadline: Option<Instant>,
    /// It also waits for the leader's read lease (`Progress::leased`).
    pub lease: bool,
}

impl Seen {
    /// A read that waits for writes through `seq` to be durable here.
    pub fn local(seq: u64) -> Seen {
        Seen {
            seq,
            acked: false,
            deadline: None,
            lease: false,
        }
    }
}

/// One held reply.
struct Held {
    /// The write's sequence number, or for a read the newest write it may
    /// have seen.
    seq: u64,
    wait: Wait,
    /// A read released at `Progress::acked` rather than `Progress::local`.
    until_acked: bool,
    /// A read that also waits for the leader's read lease.
    needs_lease: bool,
    /// When `REPLICATION_TIMEOUT` is answered instead (sync replication).
    deadline: Option<Instant>,
    /// Replies to the requests after this one, held behind it (for a read,
    /// its own reply first).
    after: Vec<u8>,
}

/// What kind of reply is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A write: `fixed`, then the first `own` bytes of `after`, are its
    /// reply if it succeeds; else `ERROR` or `REPLICATION_TIMEOUT`.
    Write { own: usize, fixed: &'static [u8] },
    /// `WAIT`: answered with the number of followers that acknowledged
    /// `seq` once there are `need` of them, or at the deadline.
    Replicas { need: usize },
    /// A read: its reply is the first `own` bytes of `after`.
    Read { own: usize },
    /// A query whose reply job `id` is computing; it becomes a `Read` when
    /// the reply comes in. Until then `reserve` bytes, the largest its reply
    /// can be, count as held (see `super::limits`).
    Query { id: u64, reserve: usize },
}

/// The reply to a write that succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteReply {
    /// A fixed reply (`OK`, `+OK`): nothing to allocate.
    Fixed(&'static [u8]),
    /// Bytes encoded when the write was taken (an old value, a count).
    Encoded(Vec<u8>),
}

/// How a held reply is answered.
enum Answer {
    /// With its own reply (a read's, or a write's that succeeded).
    Own,
    /// With a failure, in the connection's dialect.
    Failure(Reply),
    /// With a count (`WAIT`).
    Count(usize),
}

/// The held replies of one connection, oldest first.
#[derive(Default)]
pub struct HeldReplies {
    queue: VecDeque<Held>,
    /// How failures are spelled.
    pub dialect: Dialect,
    /// Bytes held in `after` buffers.
    bytes: usize,
    /// Holds of [`Wait::Query`] whose reply has not come in.
    queries: usize,
    /// The sum of their reservations.
    reserved: usize,
}

impl HeldReplies {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Number of held replies.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of reply held behind them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queries whose reply has not come in yet.
    pub fn queries(&self) -> usize {
        self.queries
    }

    /// Bytes reserved for the replies of those queries.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Queues a reply that `encode` appends: behind the newest held reply if
    /// any, else straight to `out`, the released output.
    pub fn reply_with(&mut self, out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
        match self.queue.back_mut() {
            Some(held) => {
                let before = held.after.len();
                encode(&mut held.after);
                self.bytes += held.after.len() - before;
            }
            None => encode(out),
        }
    }

    /// Queues the reply to a read that may have seen writes through `seen`
    /// (`None`: it saw only durable data, so it needs no hold of its own).
    pub fn reply_seen(
        &mut self,
        out: &mut Vec<u8>,
        seen: Option<Seen>,
        encode: impl FnOnce(&mut Vec<u8>),
    ) {
        let Some(seen) = seen else {
            return self.reply_with(out, encode);
        };
        // A hold of its own even behind another one: if a write it saw is
        // lost, this reply, and only this one, becomes `ERROR`.
        let mut after = Vec::new();
        encode(&mut after);
        self.bytes += after.len();
        self.queue.push_back(Held {
            seq: seen.seq,
            wait: Wait::Read { own: after.len() },
            until_acked: seen.acked,
            needs_lease: seen.lease,
            deadline: seen.deadline,
            after,
        });
    }

    /// Holds the reply to write `seq` (`OK`); with a `deadline`, it is
    /// answered `REPLICATION_TIMEOUT` if not acknowledged by then.
    #[cfg(test)]
    pub fn hold_write(&mut self, seq: u64, deadline: Option<Instant>) {
        self.hold_write_with(seq, deadline, WriteReply::Fixed(Reply::Ok.as_bytes()));
    }

    /// Holds the reply to write `seq` until the write is acknowledged;
    /// with a `deadline`, it is answered `REPLICATION_TIMEOUT` instead if
    /// not acknowledged by then.
    pub fn hold_write_with(&mut self, seq: u64, deadline: Option<Instant>, ok: WriteReply) {
        let (wait, after) = match ok {
            WriteReply::Fixed(reply) => (
                Wait::Write {
                    own: 0,
                    fixed: reply,
                },
                Vec::new(),
            ),
            WriteReply::Encoded(after) => (
                Wait::Write {
                    own: after.len(),
                    fixed: b"",
                },
                after,
            ),
        };
        self.bytes += after.len();
        self.queue.push_back(Held {
            seq,
            wait,
            until_acked: true,
            needs_lease: false,
            deadline,
            after,
        });
    }

    /// Holds a `WAIT`'s reply: the number of followers that acknowledged
    /// writes through `seq`, once `need` of them did or at `deadline`.
    pub fn hold_replicas(&mut self, seq: u64, need: usize, deadline: Option<Instant>) {
        self.queue.push_back(Held {
            seq,
            wait: Wait::Replicas { need },
            until_acked: false,
            needs_lease: false,
            deadline,
            after: Vec::new(),
        });
    }

    /// Holds the reply to a query that job `id` computes, as of a moment
    /// when it may have seen writes through `seen` (as for
    /// [`HeldReplies::reply_seen`]), reserving `reserve` bytes for it until
    /// it comes in.
    pub fn hold_query(&mut self, seen: Option<Seen>, id: u64, reserve: usize) {
        self.queries += 1;
        self.reserved += reserve;
        self.queue.push_back(Held {
            // Seq 0 is durable from the start and never lost.
            seq: seen.map_or(0, |s| s.seq),
            wait: Wait::Query { id, reserve },
            until_acked: seen.is_some_and(|s| s.acked),
            needs_lease: seen.is_some_and(|s| s.lease),
            deadline: seen.and_then(|s| s.deadline),
            after: Vec::new(),
        });
    }

    /// Brings in the reply of query job `id`: it goes out once the writes
    /// the query may have seen are durable (at the next
    /// [`HeldReplies::release`]). Returns false if no reply waits for it
    /// (it was answered `ERROR` meanwhile).
    pub fn fill_query(&mut self, id: u64, mut reply: Vec<u8>) -> bool {
        let Some(held) = self
            .queue
            .iter_mut()
            .find(|h| matches!(h.wait, Wait::Query { id: at, .. } if at == id))
        else {
            return false;
        };
        if let Wait::Query { reserve, .. } = held.wait {
            self.reserved -= reserve;
        }
        let own = reply.len();
        // A large reply (`KEYS` over a million keys is 14 MB) is moved,
        // not copied, unless replies are queued behind it.
        reply.append(&mut held.after);
        held.after = reply;
        held.wait = Wait::Read { own };
        self.bytes += own;
        self.queries -= 1;
        true
    }

    /// Answers held replies to `out`, oldest first, as far as `progress`
    /// allows: `ERROR` for lost writes and reads that may have seen them,
    /// `OK` for acknowledged writes, and their own reply for reads whose
    /// writes are durable.
    pub fn release(&mut self, out: &mut Vec<u8>, progress: &Progress) {
        while let Some(front) = self.queue.front() {
            let lost = progress.lost_from.is_some_and(|from| front.seq >= from);
            let answer = match front.wait {
                _ if lost => Answer::Failure(Reply::Error),
                Wait::Write { .. } if front.seq <= progress.acked => Answer::Own,
                Wait::Replicas { need }
                    if front.seq <= progress.local && progress.replicas_at(front.seq) >= need =>
                {
                    Answer::Count(progress.replicas_at(front.seq))
                }
                Wait::Read { .. } if front.needs_lease && !progress.leased => break,
                Wait::Read { .. } if front.until_acked && front.seq <= progress.acked => {
                    Answer::Own
                }
                Wait::Read { .. } if !front.until_acked && front.seq <= progress.local => {
                    Answer::Own
                }
                Wait::Write { .. }
                | Wait::Replicas { .. }
                | Wait::Read { .. }
                | Wait::Query { .. } => break,
            };
            self.answer_front(out, answer);
        }
    }

    /// Answers held writes whose deadline has passed with
    /// `REPLICATION_TIMEOUT`, once they are durable here
    /// (`progress.local`), which that reply promises; a `WAIT` with the
    /// followers it has. Deadlines are in request order.
    pub fn expire(&mut self, out: &mut Vec<u8>, now: Instant, progress: &Progress) {
        while let Some(front) = self
            .queue
            .front()
            .filter(|_| self.next_deadline(progress.local).is_some_and(|d| d <= now))
        {
            let answer = match front.wait {
                Wait::Replicas { .. } => Answer::Count(progress.replicas_at(front.seq)),
                _ => Answer::Failure(Reply::ReplicationTimeout),
            };
            self.answer_front(out, answer);
        }
    }

    /// The earliest deadline that can fire: the oldest held reply's, once
    /// its write is durable here (`local`). Until then the sync report
    /// wakes the loop.
    pub fn next_deadline(&self, local: u64) -> Option<Instant> {
        self.queue
            .front()
            .filter(|h| h.seq <= local)
            .and_then(|h| h.deadline)
    }

    /// Answers the oldest held reply as `answer` says; then the replies
    /// held behind it.
    fn answer_front(&mut self, out: &mut Vec<u8>, answer: Answer) {
        let Some(held) = self.queue.pop_front() else {
            return;
        };
        self.bytes -= held.after.len();
        let own = match held.wait {
            Wait::Replicas { .. } => 0,
            Wait::Write { own, fixed } => {
                if matches!(answer, Answer::Own) {
                    out.extend_from_slice(fixed);
                }
                own
            }
            Wait::Read { own } => own,
            Wait::Query { reserve, .. } => {
                self.queries -= 1;
                self.reserved -= reserve;
                0
            }
        };
        let behind = match answer {
            Answer::Failure(reply) => {
                out.extend_from_slice(self.dialect.failure(reply));
                &held.after[own..]
            }
            Answer::Count(n) => {
                crate::resp::encode::integer(out, n as i64);
                &held.after[own..]
            }
            // Moved rather than copied when nothing is ahead of it.
            Answer::Own if out.is_empty() => {
                *out = held.after;
                return;
            }
            Answer::Own => &held.after[..],
        };
        out.extend_from_slice(behind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn progress(acked: u64, local: u64, lost_from: Option<u64>) -> Progress {
        Progress {
            acked,
            local,
            lost_from,
            leased: true,
            follower_acks: Vec::new(),
        }
    }

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).expect("utf8")
    }

    /// `GET` replies are the value and `\n`.
    fn value(v: &'static str) -> impl FnOnce(&mut Vec<u8>) {
        move |out: &mut Vec<u8>| {
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
    }

    #[test]
    fn nothing_held_goes_straight_out() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.reply_with(&mut out, value("PONG"));
        held.reply_seen(&mut out, None, value("v"));
        assert_eq!(text(&out), "PONG\nv\n");
        assert!(held.is_empty());
    }

    #[test]
    fn replies_keep_request_order_behind_a_write() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.hold_write(5, None);
        held.reply_with(&mut out, value("PONG"));
        held.reply_seen(&mut out, Some(Seen::local(5)), value("v5"));
        held.hold_write(6, None);
        assert_eq!(held.len(), 3);
        assert_eq!(held.bytes(), "PONG\nv5\n".len());
        held.release(&mut out, &progress(4, 4, None));
        assert_eq!(text(&out), "");
        held.release(&mut out, &progress(5, 5, None));
        assert_eq!(text(&out), "OK\nPONG\nv5\n");
        held.release(&mut out, &progress(6, 6, None));
        assert_eq!(text(&out), "OK\nPONG\nv5\nOK\n");
        assert!(held.is_empty());
        assert_eq!(held.bytes(), 0);
    }

    #[test]
    fn a_read_on_a_sync_leader_waits_for_the_output_rule_or_its_deadline() {
        let now = Instant::now();
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        let seen = |seq, after: u64| Seen {
            seq,
            acked: true,
            deadline: Some(now + Duration::from_millis(after)),
            lease: false,
        };
        held.reply_seen(&mut out, Some(seen(7, 100)), value("seen 7"));
        held.reply_seen(&mut out, Some(seen(9, 100)), value("seen 9"));
        // Durable here is not enough.
        held.release(&mut out, &progress(6, 9, None));
        assert_eq!(text(&out), "");
        held.release(&mut out, &progress(7, 9, None));
        assert_eq!(text(&out), "seen 7\n");
        // Past its deadline, the read is answered like its write.
        held.expire(
            &mut out,
            now + Duration::from_millis(50),
            &progress(0, 9, None),
        );
        assert_eq!(text(&out), "seen 7\n");
        held.expire(
            &mut out,
            now + Duration::from_millis(100),
            &progress(0, 9, None),
        );
        assert_eq!(text(&out), "seen 7\nREPLICATION_TIMEOUT\n");
        assert!(held.is_empty());
    }

    #[test]
    fn a_read_waits_for_local_durability_only() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.reply_seen(&mut out, Some(Seen::local(7)), value("seen 7"));
        held.hold_write(8, None);
        // Durable here through 7, not yet on the followers.
        held.release(&mut out, &progress(0, 7, None));
        assert_eq!(text(&out), "seen 7\n");
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn lost_writes_and_the_reads_that_saw_them_get_error() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.hold_write(3, None);
        held.reply_seen(&mut out, Some(Seen::local(3)), value("saw 3"));
        held.hold_write(4, None);
        held.reply_seen(&mut out, Some(Seen::local(4)), value("saw 4"));
        held.reply_with(&mut out, value("PONG"));
        held.hold_write(5, None);
        // Durable through 3; 4 and 5 were lost.
        held.release(&mut out, &progress(3, 3, Some(4)));
        assert_eq!(text(&out), "OK\nsaw 3\nERROR\nERROR\nPONG\nERROR\n");
        assert!(held.is_empty());
        assert_eq!(held.bytes(), 0);
    }

    #[test]
    fn a_durable_write_waiting_for_followers_keeps_waiting_after_a_loss() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.hold_write(3, None);
        held.hold_write(4, None);
        held.release(&mut out, &progress(0, 3, Some(4)));
        assert_eq!(text(&out), "", "3 is durable: it waits for its acks");
        held.release(&mut out, &progress(3, 3, Some(4)));
        assert_eq!(text(&out), "OK\nERROR\n");
    }

    #[test]
    fn a_timeout_fires_only_once_the_write_is_durable_here() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        let t0 = Instant::now();
        held.hold_write(9, Some(t0));
        held.reply_with(&mut out, value("PONG"));
        held.hold_write(10, Some(t0 + Duration::from_secs(1)));
        assert_eq!(held.next_deadline(8), None);
        held.expire(&mut out, t0, &progress(0, 8, None));
        assert_eq!(text(&out), "");
        assert_eq!(held.next_deadline(9), Some(t0));
        held.expire(&mut out, t0, &progress(0, 9, None));
        assert_eq!(text(&out), "REPLICATION_TIMEOUT\nPONG\n");
        assert_eq!(held.next_deadline(9), None, "10 is not durable yet");
        held.expire(
            &mut out,
            t0 + Duration::from_secs(2),
            &progress(0, 10, None),
        );
        assert_eq!(
            text(&out),
            "REPLICATION_TIMEOUT\nPONG\nREPLICATION_TIMEOUT\n"
        );
    }

    #[test]
    fn a_query_holds_back_what_follows_it_until_its_reply_comes_in() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.reply_with(&mut out, value("before"));
        held.hold_query(None, 7, 10);
        held.reply_with(&mut out, value("PONG"));
        held.hold_write(3, None);
        held.reply_with(&mut out, value("after"));
        assert_eq!(held.queries(), 1);
        assert_eq!(held.reserved(), 10);
        held.release(&mut out, &progress(3, 3, None));
        assert_eq!(text(&out), "before\n", "the query is not computed yet");
        assert!(!held.fill_query(8, b"other\n".to_vec()), "no such query");
        assert!(held.fill_query(7, b"digest\n".to_vec()));
        assert_eq!(held.queries(), 0);
        assert_eq!(held.reserved(), 0, "the reply replaces its reservation");
        assert_eq!(held.bytes(), "digest\nPONG\nafter\n".len());
        held.release(&mut out, &progress(3, 3, None));
        assert_eq!(text(&out), "before\ndigest\nPONG\nOK\nafter\n");
        assert!(held.is_empty());
        assert_eq!(held.bytes(), 0);
    }

    #[test]
    fn a_computed_query_still_waits_for_the_writes_it_saw() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.hold_write(4, None);
        held.hold_query(Some(Seen::local(4)), 1, 10);
        assert!(held.fill_query(1, b"keys\n".to_vec()));
        held.release(&mut out, &progress(3, 3, None));
        assert_eq!(text(&out), "");
        held.release(&mut out, &progress(4, 4, None));
        assert_eq!(text(&out), "OK\nkeys\n");
    }

    #[test]
    fn a_query_that_saw_a_lost_write_is_answered_error_computed_or_not() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.hold_query(Some(Seen::local(5)), 1, 10);
        held.reply_with(&mut out, value("PONG"));
        held.hold_query(Some(Seen::local(5)), 2, 10);
        assert!(held.fill_query(2, b"digest\n".to_vec()));
        held.hold_query(Some(Seen::local(4)), 3, 10);
        held.release(&mut out, &progress(4, 4, Some(5)));
        assert_eq!(text(&out), "ERROR\nPONG\nERROR\n");
        assert_eq!(held.queries(), 1, "query 3 saw only durable writes");
        assert_eq!(
            held.reserved(),
            10,
            "answered ERROR: reservations given back"
        );
        assert!(!held.fill_query(1, b"late\n".to_vec()), "already answered");
        assert!(held.fill_query(3, b"3\n".to_vec()));
        held.release(&mut out, &progress(4, 4, Some(5)));
        assert_eq!(text(&out), "ERROR\nPONG\nERROR\n3\n");
        assert_eq!(held.queries(), 0);
        assert_eq!(held.reserved(), 0);
        assert_eq!(held.bytes(), 0);
    }

    #[test]
    fn a_held_read_holds_back_what_follows_it() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.reply_seen(&mut out, Some(Seen::local(2)), value("v"));
        held.reply_with(&mut out, value("PONG"));
        held.release(&mut out, &progress(1, 1, None));
        assert_eq!(text(&out), "");
        held.release(&mut out, &progress(2, 2, None));
        assert_eq!(text(&out), "v\nPONG\n");
    }

    #[test]
    fn a_write_goes_out_with_its_own_reply_or_a_failure_in_the_connection_dialect() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        held.dialect = Dialect::Resp;
        held.hold_write_with(3, None, WriteReply::Encoded(b"$3\r\nold\r\n".to_vec()));
        held.hold_write_with(4, None, WriteReply::Encoded(b":2\r\n".to_vec()));
        held.reply_with(&mut out, |out| out.extend_from_slice(b"+PONG\r\n"));
        held.release(&mut out, &progress(3, 3, Some(4)));
        let mut want = b"$3\r\nold\r\n".to_vec();
        want.extend_from_slice(RESP_ERROR);
        want.extend_from_slice(b"+PONG\r\n");
        assert_eq!(out, want);
        let t0 = Instant::now();
        let mut out = Vec::new();
        held.hold_write_with(5, Some(t0), WriteReply::Fixed(b"+OK\r\n"));
        held.expire(&mut out, t0, &progress(0, 5, None));
        assert_eq!(out, RESP_REPLICATION_TIMEOUT);
        assert_eq!(held.bytes(), 0);
    }

    #[test]
    fn a_wait_counts_the_followers_that_hold_the_write_once_enough_do_or_at_its_deadline() {
        let (mut held, mut out) = (HeldReplies::default(), Vec::new());
        let t0 = Instant::now();
        let acks = |local: u64, acks: &[u64]| Progress {
            local,
            acked: local,
            follower_acks: acks.to_vec(),
            ..Progress::default()
        };
        held.hold_replicas(7, 2, None);
        held.reply_with(&mut out, |out| out.extend_from_slice(b"+PONG\r\n"));
        held.release(&mut out, &acks(6, &[7, 7]));
        assert_eq!(text(&out), "", "not durable here yet");
        held.release(&mut out, &acks(7, &[7, 6]));
        assert_eq!(text(&out), "", "one follower of two");
        held.release(&mut out, &acks(7, &[8, 7, 1]));
        assert_eq!(text(&out), ":2\r\n+PONG\r\n");
        let mut out = Vec::new();
        held.hold_replicas(9, 3, Some(t0));
        assert_eq!(held.next_deadline(9), Some(t0));
        held.expire(&mut out, t0, &acks(9, &[9, 2]));
        assert_eq!(text(&out), ":1\r\n", "the deadline answers what it has");
        assert!(held.is_empty());
    }
}
