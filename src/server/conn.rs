//! One accepted socket and its buffered IO: reads until `WouldBlock`,
//! writes what it may, and says which readiness it needs next. It knows
//! sockets and bytes, not commands.
//!
//! Replies that must wait for writes to become durable are *held* (see
//! [`super::held`]); replies after a held one on the same connection wait
//! behind it, so a pipelined client always sees its replies in request
//! order.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;

use super::held::{Dialect, HeldReplies, Progress, Seen, WriteReply};
use super::redis::RedisClient;
use crate::protocol::Reply;
use crate::reads::ReadMode;
use crate::replication::handshake::Challenged;
use crate::replication::session::{Opener, SealError, Session};

/// Bytes read from a socket per `read` call.
pub const READ_CHUNK: usize = 64 << 10;

/// Pending output above which a connection's input is no longer processed
/// (and so no longer read): a client that does not read its replies costs
/// at most about this much memory, plus one reply. Queries reserve their
/// reply up front, so they count too (see `super::limits`, which also
/// lowers this to `--max-output-bytes` if that is lower).
pub const OUTPUT_HIGH: usize = 1 << 20;

/// Bytes written to one socket per loop turn; the rest waits for the next
/// turn. A client that reads as fast as the loop writes never fills its
/// socket, so without a cap the loop would write a large reply in one go:
/// the 14 MB reply to `KEYS` over 1M keys held every other client up for
/// about 150 ms here.
pub const WRITE_PER_TURN: usize = 1 << 20;

/// Writes awaiting commit on one connection above which its input pauses.
pub const MAX_HELD: usize = 64 << 10;

/// Queries (`DIGEST`, `KEYS`) waiting for a job thread on one connection at
/// which its input pauses (see `super::jobs`).
pub const MAX_QUERIES: usize = 4;

/// What the socket said during [`Conn::read_some`].
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Got bytes; there may be more.
    Data,
    /// Got bytes, and the socket had no more.
    DataDrained,
    /// `WouldBlock`: everything available was read.
    Drained,
    /// The peer shut its side (EOF).
    Eof,
}

/// What the peer on a connection turned out to be. The replication state
/// of a follower or of the link lives in the node
/// ([`Replication`](crate::replication::Replication)), by connection key.
pub enum Peer {
    /// Nothing received yet: the first line must be a `HELLO`.
    AwaitHello,
    /// Said `HELLO CLIENT`.
    Client,
    /// Sent a RESP array first: a Redis client (`docs/redis.md`).
    Redis(Box<RedisClient>),
    /// A follower or an admin that was challenged and must send `AUTH`.
    Challenged(Box<Challenged>),
    /// On a leader: an authenticated follower with this id, fed from the
    /// log.
    Follower(u32),
    /// On a follower: the link to the leader, which this node dialled.
    Leader,
    /// An authenticated admin: a client that may also change the role.
    Admin,
}

/// Buffered state of one connection.
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// What the peer is, decided by its first line.
    pub kind: Peer,
    /// A client gave the password (`AUTH`); see [`crate::access`].
    pub authenticated: bool,
    /// The client said `HELLO CLIENT` to a writable leader: its reads are
    /// the leader's, and once this node is no longer the leader they are
    /// answered `NOT_LEADER` rather than from a copy that may be stale.
    pub read_mode: ReadMode,
    /// Read, not yet parsed.
    pub rbuf: Vec<u8>,
    /// Bytes at the start of `rbuf` already searched for a newline in
    /// vain: a long line arriving in small pieces is scanned once, not once
    /// per piece.
    pub scanned: usize,
    /// Dropping input up to the next `\n` after `LINE_TOO_LONG`.
    pub discarding: bool,
    /// Released output; `wbuf[wpos..]` is not yet written.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Replies waiting for writes to become durable, oldest first; their
    /// bytes count against [`OUTPUT_HIGH`].
    held: HeldReplies,
    /// The interest last registered.
    pub interest: Interest,
    /// The peer sent EOF: answer what was asked, then close.
    pub peer_eof: bool,
    /// Close once the output is written (after `BYE` or a fatal reply).
    pub closing: bool,
    /// Input processing stopped for backpressure; resume when output drains.
    pub paused: bool,
    /// Already on the loop's list of connections to flush this turn.
    pub dirty: bool,
    /// Closed and deregistered; the slot is freed at the end of the turn.
    pub gone: bool,
    /// Bytes written to the socket since it opened.
    pub written_total: u64,
    /// After a follower's or an admin's handshake: every byte both ways
    /// travels in MAC'd records (`replication::session`).
    sealed: Option<Box<Sealed>>,
    /// Unread output as last booked in the client budget
    /// (`super::limits::Budget`).
    pub booked: usize,
    /// A query request waits, unread, for room for its reply: the bytes it
    /// would reserve.
    pub deferred: Option<usize>,
}

/// The record layer of a connection whose session began: `rbuf` and
/// `wbuf` keep holding the stream's own bytes, and this turns them into
/// records and back at the socket's edge.
struct Sealed {
    session: Session,
    /// Bytes read but not yet opened: at most one partial record.
    wire_in: Vec<u8>,
    /// `wbuf[..sealed_to]` is ready for the wire (sealed, or sent before
    /// the session began); what follows is sealed by the next flush.
    sealed_to: usize,
    /// The session began during the line just executed: input after that
    /// line, already read as plain bytes, is records
    /// ([`Conn::open_after_handshake`]).
    began: bool,
}

impl Sealed {
    /// Opens the records `read` completes, appending their bytes to
    /// `plain`. Only a record split between reads is copied aside (into
    /// `wire_in`, just the bytes that complete it); whole records are
    /// opened where they were read.
    fn open(&mut self, mut read: &[u8], plain: &mut Vec<u8>) -> io::Result<()> {
        let opener = &mut self.session.opener;
        let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
        while !self.wire_in.is_empty() && !read.is_empty() {
            let take = Opener::missing(&self.wire_in).min(read.len());
            self.wire_in.extend_from_slice(&read[..take]);
            read = &read[take..];
            if Opener::missing(&self.wire_in) == 0 {
                let used = opener.open(&self.wire_in, plain).map_err(invalid)?;
                self.wire_in.drain(..used);
            }
        }
        let used = opener.open(read, plain).map_err(invalid)?;
        self.wire_in.extend_from_slice(&read[used..]);
        Ok(())
    }

    /// Seals `wbuf[sealed_to..]` in place.
    fn seal(&mut self, wbuf: &mut Vec<u8>) -> io::Result<()> {
        if self.sealed_to < wbuf.len() {
            self.session
                .sealer
                .seal_in_place(wbuf, self.sealed_to)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.sealed_to = wbuf.len();
        }
        Ok(())
    }
}

impl Conn {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Conn {
        Conn {
            stream,
            peer,
            kind: Peer::AwaitHello,
            authenticated: false,
            read_mode: ReadMode::Local,
            rbuf: Vec::new(),
            scanned: 0,
            discarding: false,
            wbuf: Vec::new(),
            wpos: 0,
            held: HeldReplies::default(),
            interest: Interest::READABLE,
            peer_eof: false,
            closing: false,
            paused: false,
            dirty: false,
            gone: false,
            written_total: 0,
            sealed: None,
            booked: 0,
            deferred: None,
        }
    }

    /// Begins the session: from here on, output not yet released (all of
    /// it, for a peer that holds no replies) is sealed, and input after
    /// the line being executed is opened.
    pub fn begin_session(&mut self, session: Session) {
        debug_assert!(self.held.is_empty(), "a handshake reply is never held");
        self.sealed = Some(Box::new(Sealed {
            session,
            wire_in: Vec::new(),
            sealed_to: self.wbuf.len(),
            began: true,
        }));
    }

    /// Whether the session began during the line just executed; the
    /// caller then passes the input after that line to
    /// [`Conn::open_after_handshake`].
    pub fn session_began(&mut self) -> bool {
        self.sealed
            .as_mut()
            .is_some_and(|s| std::mem::take(&mut s.began))
    }

    /// Input after the line that began the session, read before the
    /// session existed: `input[from..]` is records, opened in place.
    ///
    /// # Errors
    /// A record that fails; the connection must close.
    pub fn open_after_handshake(
        &mut self,
        input: &mut Vec<u8>,
        from: usize,
    ) -> Result<(), SealError> {
        let Some(sealed) = &mut self.sealed else {
            return Ok(());
        };
        let wire = input.split_off(from);
        let used = sealed.session.opener.open(&wire, input)?;
        sealed.wire_in.extend_from_slice(&wire[used..]);
        Ok(())
    }

    /// Reads one chunk (through the loop's shared `scratch` buffer, so an
    /// idle connection holds no read buffer) and appends it to `rbuf`
    /// (once a session began, the bytes of the records it completes).
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`, and
    /// `InvalidData` for a session record that fails its MAC.
    pub fn read_some(&mut self, scratch: &mut [u8]) -> io::Result<ReadStatus> {
        let result = loop {
            match self.stream.read(scratch) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                self.peer_eof = true;
                Ok(ReadStatus::Eof)
            }
            Ok(n) => {
                match &mut self.sealed {
                    None => self.rbuf.extend_from_slice(&scratch[..n]),
                    Some(sealed) => sealed.open(&scratch[..n], &mut self.rbuf)?,
                }
                // A short read of a stream socket emptied its receive
                // buffer: more data will raise a new edge, so the loop need
                // not pay for a read that only says WouldBlock.
                Ok(if n < scratch.len() {
                    ReadStatus::DataDrained
                } else {
                    ReadStatus::Data
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadStatus::Drained),
            Err(e) => Err(e),
        }
    }

    /// Queues a fixed reply.
    pub fn reply(&mut self, reply: Reply) {
        self.reply_with(|out| out.extend_from_slice(reply.as_bytes()));
    }

    /// Queues a reply that `encode` appends: behind the newest held reply
    /// if any, else straight to the released output.
    pub fn reply_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        self.held.reply_with(&mut self.wbuf, encode);
    }

    /// Queues a last line (a refusal), after which the connection closes.
    pub fn refuse(&mut self, line: &[u8]) {
        self.reply_with(|out| out.extend_from_slice(line));
        self.closing = true;
    }

    /// Queues the reply to a read that may have seen writes through `seen`
    /// ([`HeldReplies::reply_seen`]).
    pub fn reply_seen(&mut self, seen: Option<Seen>, encode: impl FnOnce(&mut Vec<u8>)) {
        self.held.reply_seen(&mut self.wbuf, seen, encode);
    }

    /// Holds the reply to a query that job hold `id` computes, reserving
    /// `reserve` bytes for it ([`HeldReplies::hold_query`]).
    pub fn hold_query(&mut self, seen: Option<Seen>, id: u64, reserve: usize) {
        self.held.hold_query(seen, id, reserve);
    }

    /// Brings in a query's reply ([`HeldReplies::fill_query`]).
    pub fn fill_query(&mut self, id: u64, reply: Vec<u8>) -> bool {
        self.held.fill_query(id, reply)
    }

    /// Holds the reply `ok` to write `seq` until [`Conn::release`] or
    /// [`Conn::expire`].
    pub fn hold(&mut self, seq: u64, deadline: Option<Instant>, ok: WriteReply) {
        self.held.hold_write_with(seq, deadline, ok);
    }

    /// Holds a `WAIT`'s reply ([`HeldReplies::hold_replicas`]).
    pub fn hold_replicas(&mut self, seq: u64, need: usize, deadline: Option<Instant>) {
        self.held.hold_replicas(seq, need, deadline);
    }

    /// Spells this connection's failure replies as Redis errors.
    pub fn speak_resp(&mut self) {
        self.held.dialect = Dialect::Resp;
    }

    /// Releases held replies as far as `progress` allows
    /// ([`HeldReplies::release`]).
    pub fn release(&mut self, progress: &Progress) {
        self.held.release(&mut self.wbuf, progress);
    }

    /// Answers held writes whose replication deadline passed
    /// ([`HeldReplies::expire`]).
    pub fn expire(&mut self, now: Instant, progress: &Progress) {
        self.held.expire(&mut self.wbuf, now, progress);
    }

    /// The earliest held deadline that can fire ([`HeldReplies::next_deadline`]).
    pub fn next_deadline(&self, local: u64) -> Option<Instant> {
        self.held.next_deadline(local)
    }

    /// Whether replies wait for writes to become durable.
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Output bytes not yet written, held or released, and the bytes
    /// reserved for query replies not yet computed.
    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos + self.held.bytes() + self.held.reserved()
    }

    /// Whether input should wait until the output drains.
    pub fn is_backlogged(&self) -> bool {
        self.pending_output() >= OUTPUT_HIGH
            || self.held.len() >= MAX_HELD
            || self.held.queries() >= MAX_QUERIES
    }

    /// Writes released output until done, `WouldBlock`, or
    /// [`WRITE_PER_TURN`] bytes.
    ///
    /// # Returns
    /// Whether it stopped at the cap, with more to write to a socket that
    /// may still take it: the loop must come back to it without waiting
    /// for an event.
    ///
    /// # Errors
    /// Socket errors; the caller closes the connection.
    pub fn flush(&mut self) -> io::Result<bool> {
        if let Some(sealed) = &mut self.sealed {
            sealed.seal(&mut self.wbuf)?;
        }
        let mut written = 0;
        let mut capped = false;
        while self.wpos < self.wbuf.len() {
            if written >= WRITE_PER_TURN {
                capped = true;
                break;
            }
            let end = self.wbuf.len().min(self.wpos + WRITE_PER_TURN - written);
            match self.stream.write(&self.wbuf[self.wpos..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wpos += n;
                    written += n;
                    self.written_total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            // A large reply (a query's is moved in whole) leaves its
            // capacity behind: give it back once written, so an idle
            // connection keeps no more than a chunk.
            if self.wbuf.capacity() > 4 * READ_CHUNK {
                self.wbuf.shrink_to(READ_CHUNK);
            }
        } else if self.wpos >= self.wbuf.len() - self.wpos {
            // At least half of it is written: move the rest to the front.
            // Output added as fast as the socket takes it (a follower's
            // feed) may never drain completely, and the written bytes
            // would otherwise pile up in front, as large as a snapshot.
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        if let Some(sealed) = &mut self.sealed {
            sealed.sealed_to = self.wbuf.len();
        }
        Ok(capped)
    }

    /// The released output buffer, for peers that never hold replies
    /// (replication frames).
    pub fn raw_out(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// Whether released output is waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// Whether the connection is finished: it is closing or the peer left,
    /// and nothing is left to answer or write.
    pub fn is_done(&self) -> bool {
        (self.closing || (self.peer_eof && !self.has_unparsed_line()))
            && self.held.is_empty()
            && !self.wants_write()
            && !self.paused
    }

    fn has_unparsed_line(&self) -> bool {
        self.rbuf.contains(&b'\n')
    }

    /// The readiness to register for: reads unless paused or finished,
    /// writes only while output is pending.
    pub fn desired_interest(&self) -> Interest {
        let read = !self.peer_eof && !self.closing && !self.paused;
        match (read, self.wants_write()) {
            (_, true) if read => Interest::READABLE | Interest::WRITABLE,
            (_, true) => Interest::WRITABLE,
            // mio needs some interest; a paused, drained socket stays
            // readable-registered but is not read until resumed.
            _ => Interest::READABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A connection on a loopback socket, and the client end.
    fn connected() -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (server, peer) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        (Conn::new(TcpStream::from_std(server), peer), client)
    }

    /// Reads `total` bytes from `client` as fast as they come (fewer if
    /// it closes); the thread returns the count.
    fn read_in_thread(mut client: std::net::TcpStream, total: u64) -> std::thread::JoinHandle<u64> {
        std::thread::spawn(move || {
            let mut got = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            while got < total {
                match client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
            }
            got
        })
    }

    #[test]
    fn output_that_never_drains_keeps_the_buffer_bounded() {
        let (mut conn, client) = connected();
        let total: u64 = 64 << 20;
        let reader = read_in_thread(client, total);
        // Like a follower's feed: topped up before every flush, so more
        // than a flush writes (its per-turn cap) is always pending and the
        // buffer never empties.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut added = 0u64;
        let mut largest = 0;
        while conn.written_total < total {
            assert!(Instant::now() < deadline, "the writes do not finish");
            while conn.pending_output() < 2 * WRITE_PER_TURN && added < total {
                let out = conn.raw_out();
                out.resize(out.len() + (256 << 10), b'x');
                added += 256 << 10;
            }
            conn.flush().expect("flush");
            largest = largest.max(conn.wbuf.len());
        }
        assert_eq!(reader.join().expect("reader"), total);
        assert!(
            largest <= 6 * WRITE_PER_TURN,
            "the buffer grew to {largest} bytes for at most {} pending",
            2 * WRITE_PER_TURN + (256 << 10)
        );
    }

    /// The two ends of a follower's session.
    fn sessions() -> (Session, Session) {
        use crate::replication::auth::Prover;
        let (f, l) = (
            "00112233445566778899aabbccddeeff",
            "ffeeddccbbaa99887766554433221100",
        );
        (
            Session::new(b"k", Prover::Leader, Prover::Follower, "2", f, l),
            Session::new(b"k", Prover::Follower, Prover::Leader, "2", f, l),
        )
    }

    #[test]
    fn a_session_seals_what_follows_it_and_opens_records_read_in_any_pieces() {
        let (mut conn, mut client) = connected();
        let (leader, mut follower) = sessions();
        conn.reply_with(|out| out.extend_from_slice(b"HELLO LEADER\n"));
        conn.begin_session(leader);
        assert!(
            conn.session_began() && !conn.session_began(),
            "reported once"
        );
        let frames: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        conn.raw_out().extend_from_slice(&frames);
        while conn.wants_write() {
            conn.flush().expect("flush");
        }
        // The client sees the line in clear, then records it can open.
        let mut wire = vec![0u8; 13];
        client.read_exact(&mut wire).expect("hello");
        assert_eq!(&wire, b"HELLO LEADER\n");
        let mut sealed = Vec::new();
        let mut plain = Vec::new();
        while plain.len() < frames.len() {
            let mut buf = [0u8; 8192];
            let n = client.read(&mut buf).expect("read");
            sealed.extend_from_slice(&buf[..n]);
            let used = follower.opener.open(&sealed, &mut plain).expect("open");
            sealed.drain(..used);
        }
        assert_eq!(plain, frames);
        // The other way, cut at awkward places: the connection opens it all.
        let mut back = Vec::new();
        follower
            .sealer
            .seal(&frames[..40_000], &mut back)
            .expect("seal");
        follower
            .sealer
            .seal(&frames[40_000..], &mut back)
            .expect("seal");
        let mut scratch = vec![0u8; READ_CHUNK];
        for piece in back.chunks(7_777) {
            client.write_all(piece).expect("write");
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                assert!(Instant::now() < deadline, "the piece never arrived");
                match conn.read_some(&mut scratch).expect("read") {
                    ReadStatus::Drained => std::thread::yield_now(),
                    _ => break,
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while conn.rbuf.len() < frames.len() {
            assert!(Instant::now() < deadline, "not all opened");
            let _ = conn.read_some(&mut scratch).expect("read");
        }
        assert_eq!(conn.rbuf, frames);
        // A flipped bit is an error, not data.
        let mut bad = Vec::new();
        follower.sealer.seal(b"ACK", &mut bad).expect("seal");
        bad[5] ^= 1;
        client.write_all(&bad).expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            assert!(Instant::now() < deadline, "no error");
            match conn.read_some(&mut scratch) {
                Err(e) => break e,
                Ok(_) => std::thread::yield_now(),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(conn.rbuf.len(), frames.len(), "nothing of it was let in");
    }

    #[test]
    fn a_flush_writes_at_most_the_per_turn_cap() {
        let (mut conn, client) = connected();
        let total = 3 * WRITE_PER_TURN + 12_345;
        conn.reply_with(|out| out.resize(total, b'x'));
        // A reader as fast as the writer: the socket never fills.
        let reader = read_in_thread(client, total as u64);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut capped = 0;
        while conn.wants_write() {
            assert!(Instant::now() < deadline, "the flush does not finish");
            let before = conn.written_total;
            if conn.flush().expect("flush") {
                capped += 1;
                assert!(conn.wants_write(), "stopped at the cap with more to write");
            }
            assert!(conn.written_total - before <= WRITE_PER_TURN as u64);
        }
        assert_eq!(conn.written_total, total as u64);
        assert!(capped <= 3);
        assert_eq!(reader.join().expect("reader"), total as u64);
    }

    #[test]
    fn a_query_reply_counts_from_its_reservation_and_its_buffer_is_given_back() {
        let (mut conn, client) = connected();
        let reply_len = 2 << 20;
        conn.hold_query(None, 1, 3 << 20);
        assert_eq!(
            conn.pending_output(),
            3 << 20,
            "reserved before it is built"
        );
        assert!(conn.is_backlogged());
        assert!(conn.fill_query(1, vec![b'k'; reply_len]));
        assert_eq!(conn.pending_output(), reply_len);
        conn.release(&Progress {
            leased: true,
            ..Progress::default()
        });
        let reader = read_in_thread(client, reply_len as u64);
        let deadline = Instant::now() + Duration::from_secs(10);
        while conn.wants_write() {
            assert!(Instant::now() < deadline, "the flush does not finish");
            conn.flush().expect("flush");
        }
        assert_eq!(reader.join().expect("reader"), reply_len as u64);
        assert_eq!(conn.pending_output(), 0);
        assert!(
            conn.wbuf.capacity() <= 4 * READ_CHUNK,
            "{} bytes kept after the reply drained",
            conn.wbuf.capacity()
        );
    }
}
