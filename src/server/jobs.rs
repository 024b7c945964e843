//! `DIGEST` and `KEYS` over a large data set, computed off the event loop.
//!
//! Both read every key, and their replies must be in byte order, so
//! answering them means sorting the whole key set. At 1M keys that took
//! the loop about 0.5 s, during which no other client was served. Here
//! they run on a worker thread instead, and the loop keeps serving.
//!
//! # Where the data comes from
//!
//! A reply must show the data as of the moment the request is processed,
//! in the connection's request order. A pipelined `PUT k v` then `DIGEST`
//! shows the `PUT`; a `DIGEST` then `PUT` does not. So the job needs the
//! state at that moment: seq `S`, the last write applied.
//!
//! The job reads it back from the log, which replays to exactly the
//! store's state. It replays the records through `S` into a [`Fold`]
//! that keeps only what the query needs, then encodes the reply with the
//! same code as the inline path ([`Query::answer`]). The log is read
//! through its own shared handle, with positional reads, up to where the
//! file ended when the job was armed (see [`crate::wal::scan`] for what a
//! compaction, snapshot install, rewind or disk error does to it). The
//! cost to the loop is a few pointer copies per request.
//!
//! The other way would be a point-in-time copy of the store, made on the
//! loop. At 1M keys (100-byte values) copying the map took 0.98 s, more
//! than the digest itself (0.77 s in that measurement), and even collecting
//! references to every entry took 94 ms. A cheap copy needs a persistent
//! or reference-counted map, which costs every write and 16 bytes or more
//! per key. The log is already there.
//!
//! # When
//!
//! - **Small data sets are answered inline**, from the store, at once:
//!   with at most [`INLINE_MAX_KEYS`] keys. A digest of 4,096 keys took
//!   0.9 ms on the 2-core development machine (0.35 ms for `KEYS`), about
//!   one small inline fsync. At 16,000 keys it took 3.7 ms, and at 64,000,
//!   28 ms.
//! - **A job is armed once the file holds `S`.** Records through `S` may
//!   still be in the log's buffer, waiting for the sync in flight; the
//!   next commits write them. The loop arms jobs right after each commit
//!   and before it puts a finished compaction in place, so the file's base
//!   seq is never past `S`.
//! - **One job runs at a time**, on one worker thread started with the
//!   first job. One at a time leaves the other core of a small machine to
//!   the loop.
//! - **Connections take turns.** The next job to start is one for the
//!   connection served longest ago (one never served first), oldest job
//!   first among equals: round robin by connection, not request order.
//!   Fifty connections interleaving `PUT` and `DIGEST` queue 200 jobs; a
//!   new client's `DIGEST` waits for the running job and at most one job
//!   of each other connection, not for all 200. A job holds a copy of what
//!   its query needs: every key and value for `DIGEST`, about the size of
//!   the store, or the matching keys for `KEYS`. One long-lived worker
//!   also keeps that memory in one malloc arena, reused job after job.
//! - **Equal requests share a job.** A query for the same data (same
//!   query, same `S`, no reset in between) joins the job already waiting
//!   or running, so a flood of `DIGEST`s on an idle node costs one scan.
//! - **Each connection has at most [`super::conn::MAX_QUERIES`] queries
//!   waiting for a job**; then its input pauses until one is answered.
//!   Each also reserves its largest possible reply against the
//!   connection's output limit before it is queued (`super::limits`), so
//!   the replies computed here are bounded by those limits. A
//!   closed connection leaves the jobs it waited on, and a job nobody waits
//!   for any more is dropped unless it is already running. So the waiting
//!   jobs are bounded by the connections, and there is one thread.
//!
//! # The reply
//!
//! The reply is held on its connection ([`super::held`]) like any read
//! that may have seen a write not yet durable. Replies after it wait behind
//! it. The worker sends its result over a channel and wakes the loop
//! through its `mio::Waker`; at the end of the turn the loop fills the held
//! replies in, and releases them with the others. A large reply is copied
//! on the loop, and the worker frees its own buffer ([`COPY_FROM`] says
//! why). A query whose data a disk error lost, or that a rewind or
//! snapshot install overtook, is answered `ERROR` (see
//! [`crate::wal::scan`]): the data it was to show is gone from this node.
//!
//! At 1M keys the job takes 1.25–1.7 s for `DIGEST` and about 1 s for
//! `KEYS`, 2–3 times a sort of the live map, because it rebuilds the data
//! from the log; `docs/benchmarks.md` has the figures and the commands.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use log::{debug, warn};

use crate::protocol::Reply;
use crate::query::Query;
use crate::wal::scan::{LogView, ViewAt};
use crate::wal::{close_off_loop, Wal, WalError};

/// Data sets of at most this many keys are answered on the loop.
pub const INLINE_MAX_KEYS: usize = 4096;

/// Jobs running at the same time (on the one worker thread).
pub const MAX_RUNNING: usize = 1;

/// Replies at least this big are copied on the loop, and the worker's
/// buffer goes back to the worker to be freed. glibc's malloc gives each
/// thread an arena of its own, and a free of 64 KiB or more consolidates
/// every small chunk freed in that arena first: the worker's map of a
/// million entries, just dropped. Freed on the loop, the 14 MB `KEYS`
/// reply at 1M keys made the loop spend 80 % of its time in
/// `malloc_consolidate`, and held other clients up for 125–270 ms.
const COPY_FROM: usize = 64 << 10;

/// A reply computed for a held query.
pub struct Answer {
    /// The connection's slot.
    pub conn: usize,
    /// The hold id given out by [`Jobs::request`].
    pub hold: u64,
    /// The encoded reply.
    pub reply: Vec<u8>,
}

/// One connection's held reply waiting for a job.
struct Waiter {
    conn: usize,
    hold: u64,
}

/// Where a job is.
enum State {
    /// The file does not hold its seq yet.
    Waiting,
    /// Its view is taken; `rewinds` as of then.
    Ready { view: LogView, rewinds: u64 },
    /// On its thread since `started`; `rewinds` as of the view.
    Running { rewinds: u64, started: Instant },
}

/// One query over the data as of one seq, and whoever waits for it.
struct Job {
    id: u64,
    query: Query,
    seq: u64,
    /// [`Wal::resets`] when it was asked for.
    resets: u64,
    state: State,
    waiters: Vec<Waiter>,
}

/// Why a job has no reply (its clients get `ERROR`).
#[derive(Debug)]
enum JobError {
    /// The log could not be read back.
    Log(WalError),
    /// The job panicked (a bug); its clients are answered anyway.
    Panicked,
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Log(e) => write!(f, "{e}"),
            JobError::Panicked => write!(f, "the query job panicked"),
        }
    }
}

/// What the worker sends back.
struct Done {
    id: u64,
    result: Result<Vec<u8>, JobError>,
    keys: usize,
}

/// What the loop sends the worker.
enum Work {
    /// Fold `view` for `query`; answer as job `id`.
    Run {
        id: u64,
        query: Query,
        view: LogView,
    },
    /// A reply buffer the worker allocated, to be freed there (see
    /// [`COPY_FROM`]).
    Free(Vec<u8>),
}

/// The query jobs of a node.
pub struct Jobs {
    /// In request order.
    jobs: Vec<Job>,
    next_id: u64,
    running: usize,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    /// Wakes the loop when a job is done.
    notify: Arc<dyn Fn() + Send + Sync>,
    /// The worker thread, started with the first job (and again if it
    /// could not be reached).
    worker: Option<mpsc::Sender<Work>>,
    /// For each connection with a job started, the [`Jobs::starts`] count
    /// at its latest: the fair queue serves the lowest first.
    last_start: HashMap<usize, u64>,
    /// Jobs started so far.
    starts: u64,
}

impl Jobs {
    /// No jobs yet; `notify` wakes the loop when one finishes.
    pub fn new(notify: Arc<dyn Fn() + Send + Sync>) -> Jobs {
        let (done_tx, done_rx) = mpsc::channel();
        Jobs {
            jobs: Vec::new(),
            next_id: 1,
            running: 0,
            done_tx,
            done_rx,
            notify,
            worker: None,
            last_start: HashMap::new(),
            starts: 0,
        }
    }

    /// Asks for `query` over the data as of `seq` (with [`Wal::resets`] at
    /// `resets`) for connection `conn`. Returns the id to hold its reply
    /// under; the reply comes back from [`Jobs::turn`].
    pub fn request(&mut self, query: Query, seq: u64, resets: u64, conn: usize) -> u64 {
        let hold = self.next_id;
        self.next_id += 1;
        let waiter = Waiter { conn, hold };
        let same = self
            .jobs
            .iter_mut()
            .find(|j| j.seq == seq && j.resets == resets && j.query == query);
        match same {
            Some(job) => job.waiters.push(waiter),
            None => self.jobs.push(Job {
                id: hold,
                query,
                seq,
                resets,
                state: State::Waiting,
                waiters: vec![waiter],
            }),
        }
        hold
    }

    /// Forgets connection `conn`, which closed: jobs nobody waits for any
    /// more are dropped, unless running.
    pub fn forget_conn(&mut self, conn: usize) {
        self.last_start.remove(&conn);
        for job in &mut self.jobs {
            job.waiters.retain(|w| w.conn != conn);
        }
        let mut kept = Vec::with_capacity(self.jobs.len());
        for job in self.jobs.drain(..) {
            if !job.waiters.is_empty() || matches!(job.state, State::Running { .. }) {
                kept.push(job);
            } else if let State::Ready { view, .. } = job.state {
                close_off_loop(view);
            }
        }
        self.jobs = kept;
    }

    /// Jobs not finished (waiting, ready or running).
    pub fn unfinished(&self) -> usize {
        self.jobs.len()
    }

    /// Jobs on a thread now.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.running
    }

    /// Call once per turn, after the commit and before a compaction is put
    /// in place: takes in finished jobs, arms those whose seq the file now
    /// holds, and starts the next ones. Returns the replies to fill in.
    pub fn turn(&mut self, wal: &Wal) -> Vec<Answer> {
        let mut answers = Vec::new();
        while let Ok(done) = self.done_rx.try_recv() {
            self.finish(done, wal, &mut answers);
        }
        self.arm(wal, &mut answers);
        self.start(&mut answers);
        answers
    }

    /// Takes in one job's result.
    fn finish(&mut self, done: Done, wal: &Wal, answers: &mut Vec<Answer>) {
        let Some(at) = self.jobs.iter().position(|j| j.id == done.id) else {
            return;
        };
        let job = self.jobs.remove(at);
        let State::Running { rewinds, started } = job.state else {
            return;
        };
        self.running -= 1;
        let reply = match done.result {
            Ok(reply) if wal.rewinds() != rewinds => {
                self.free_on_worker(reply);
                warn!(
                    "{} as of seq {}: the log was rewound while it was read; answered ERROR",
                    job.query.name(),
                    job.seq
                );
                error_reply()
            }
            Ok(reply) => {
                debug!(
                    "{} as of seq {}: {} keys read from the log in {:.1} ms, for {} waiting",
                    job.query.name(),
                    job.seq,
                    done.keys,
                    started.elapsed().as_secs_f64() * 1e3,
                    job.waiters.len()
                );
                if reply.len() >= COPY_FROM {
                    let copy = reply.clone();
                    self.free_on_worker(reply);
                    copy
                } else {
                    reply
                }
            }
            Err(e) => {
                warn!(
                    "{} as of seq {}: {e}; answered ERROR",
                    job.query.name(),
                    job.seq
                );
                error_reply()
            }
        };
        answer(job.waiters, reply, answers);
    }

    /// Takes views for the jobs whose seq the file now holds; answers
    /// `ERROR` to those it never will.
    fn arm(&mut self, wal: &Wal, answers: &mut Vec<Answer>) {
        let mut kept = Vec::with_capacity(self.jobs.len());
        for mut job in self.jobs.drain(..) {
            if !matches!(job.state, State::Waiting) {
                kept.push(job);
                continue;
            }
            let why = if wal.resets() != job.resets {
                "the log was rewound or replaced by a snapshot since"
            } else {
                match wal.view_at(job.seq) {
                    ViewAt::NotYet => {
                        kept.push(job);
                        continue;
                    }
                    ViewAt::Ready(view) => {
                        let rewinds = wal.rewinds();
                        job.state = State::Ready { view, rewinds };
                        kept.push(job);
                        continue;
                    }
                    ViewAt::Gone => "the log no longer holds that state",
                }
            };
            debug!(
                "{} as of seq {}: {why}; answered ERROR",
                job.query.name(),
                job.seq
            );
            answer(job.waiters, error_reply(), answers);
        }
        self.jobs = kept;
    }

    /// Starts ready jobs while fewer than [`MAX_RUNNING`] run, taking
    /// turns by connection ([`next_fair`]).
    fn start(&mut self, answers: &mut Vec<Answer>) {
        while self.running < MAX_RUNNING {
            let Some(at) = next_fair(&self.jobs, &self.last_start) else {
                return;
            };
            self.starts += 1;
            for w in &self.jobs[at].waiters {
                self.last_start.insert(w.conn, self.starts);
            }
            let job = &mut self.jobs[at];
            let State::Ready { view, rewinds } = std::mem::replace(&mut job.state, State::Waiting)
            else {
                return;
            };
            debug!(
                "{} as of seq {}: reading the log off the loop, for {} waiting",
                job.query.name(),
                view.seq(),
                job.waiters.len()
            );
            let work = Work::Run {
                id: job.id,
                query: job.query.clone(),
                view,
            };
            match self.send(work) {
                Ok(()) => {
                    self.jobs[at].state = State::Running {
                        rewinds,
                        started: Instant::now(),
                    };
                    self.running += 1;
                }
                Err(e) => {
                    warn!("cannot start the query worker thread: {e}");
                    let job = self.jobs.remove(at);
                    answer(job.waiters, error_reply(), answers);
                }
            }
        }
    }

    /// Sends the worker `work`, starting the worker if there is none (or
    /// it is gone).
    fn send(&mut self, work: Work) -> std::io::Result<()> {
        let work = match &self.worker {
            Some(worker) => match worker.send(work) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(work)) => work,
            },
            None => work,
        };
        let worker = spawn_worker(self.done_tx.clone(), Arc::clone(&self.notify))?;
        let sent = worker.send(work);
        self.worker = Some(worker);
        sent.map_err(|_| std::io::Error::other("the query worker thread is gone"))
    }

    /// Hands a reply buffer the worker allocated back to it to be freed
    /// (see [`COPY_FROM`]); without a worker, a thread of its own frees it.
    fn free_on_worker(&mut self, buf: Vec<u8>) {
        if buf.len() < COPY_FROM {
            return;
        }
        let buf = match &self.worker {
            Some(worker) => match worker.send(Work::Free(buf)) {
                Ok(()) => return,
                Err(mpsc::SendError(Work::Free(buf))) => buf,
                Err(_) => return,
            },
            None => buf,
        };
        close_off_loop(buf);
    }
}

/// Starts the worker thread: it runs jobs one at a time, sends each result
/// to `done` and calls `notify`, until the loop drops its sender.
fn spawn_worker(
    done: mpsc::Sender<Done>,
    notify: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<mpsc::Sender<Work>> {
    let (tx, rx) = mpsc::channel::<Work>();
    thread::Builder::new().name("query".into()).spawn(move || {
        for work in rx {
            let (id, query, view) = match work {
                Work::Free(buf) => {
                    drop(buf);
                    continue;
                }
                Work::Run { id, query, view } => (id, query, view),
            };
            // A bug must not leave the query's clients waiting forever.
            let ran = panic::catch_unwind(AssertUnwindSafe(|| {
                let mut fold = query.fold();
                let result = view.replay(|op, key, value| fold.apply(op, key, value));
                // The last handle on a replaced log file is closed here,
                // off the loop.
                drop(view);
                let keys = fold.len();
                (result.map(|()| fold.finish()).map_err(JobError::Log), keys)
            }));
            let (result, keys) = ran.unwrap_or((Err(JobError::Panicked), 0));
            if done.send(Done { id, result, keys }).is_err() {
                return;
            }
            notify();
        }
    })?;
    Ok(tx)
}

/// The ready job to start next: the one whose connection (the earliest
/// served, if it has several waiters) got a job started longest ago
/// according to `last_start` (never: first), the oldest among equals.
fn next_fair(jobs: &[Job], last_start: &HashMap<usize, u64>) -> Option<usize> {
    jobs.iter()
        .enumerate()
        .filter(|(_, j)| matches!(j.state, State::Ready { .. }))
        .min_by_key(|(at, j)| {
            let turn = j
                .waiters
                .iter()
                .map(|w| last_start.get(&w.conn).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            (turn, *at)
        })
        .map(|(at, _)| at)
}

fn error_reply() -> Vec<u8> {
    Reply::Error.as_bytes().to_vec()
}

/// Queues `reply` for every waiter (copied for all but the last).
fn answer(mut waiters: Vec<Waiter>, reply: Vec<u8>, answers: &mut Vec<Answer>) {
    let Some(last) = waiters.pop() else {
        return;
    };
    for w in waiters {
        answers.push(Answer {
            conn: w.conn,
            hold: w.hold,
            reply: reply.clone(),
        });
    }
    answers.push(Answer {
        conn: last.conn,
        hold: last.hold,
        reply,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::tests::{commit_durably, open, open_controlled, put};
    use crate::wal::Opened;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn jobs() -> (Jobs, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&wakes);
        let jobs = Jobs::new(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        (jobs, wakes)
    }

    /// Turns until `n` answers came back (bounded).
    fn answers(jobs: &mut Jobs, o: &Opened, n: usize) -> Vec<Answer> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        while all.len() < n {
            all.extend(jobs.turn(&o.wal));
            assert!(Instant::now() < deadline, "only {} answers", all.len());
            thread::sleep(Duration::from_millis(2));
        }
        all
    }

    fn text(reply: &[u8]) -> &str {
        std::str::from_utf8(reply).expect("utf8")
    }

    fn keys(prefix: &str) -> Query {
        Query::Keys {
            prefix: prefix.as_bytes().into(),
        }
    }

    #[test]
    fn a_job_answers_for_the_state_at_its_request_once_the_file_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        let (mut jobs, wakes) = jobs();
        put(&mut o, "a", "1");
        let expected = Query::Digest.answer(&o.store);
        let hold = jobs.request(Query::Digest, o.wal.last_seq(), o.wal.resets(), 3);
        // Still in the log's buffer: nothing can start.
        assert!(jobs.turn(&o.wal).is_empty());
        assert_eq!(jobs.running(), 0);
        // A later write, committed before the job is armed, is not shown.
        put(&mut o, "b", "2");
        o.wal.commit(&mut o.store).expect("commit");
        let got = answers(&mut jobs, &o, 1);
        assert_eq!((got[0].conn, got[0].hold), (3, hold));
        assert_eq!(got[0].reply, expected);
        assert_eq!(jobs.unfinished(), 0);
        assert_eq!(jobs.running(), 0);
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "the loop was woken");
    }

    #[test]
    fn equal_requests_share_a_job_and_others_queue_behind_the_running_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        let (mut jobs, _) = jobs();
        for k in 0..100 {
            put(&mut o, &format!("k{k:03}"), "v");
        }
        o.wal.commit(&mut o.store).expect("commit");
        let (seq, resets) = (o.wal.last_seq(), o.wal.resets());
        let h1 = jobs.request(Query::Digest, seq, resets, 1);
        let h2 = jobs.request(Query::Digest, seq, resets, 2);
        let h3 = jobs.request(keys("k09"), seq, resets, 1);
        let h4 = jobs.request(Query::Digest, seq - 1, resets, 1);
        assert_eq!(
            jobs.unfinished(),
            3,
            "the two DIGESTs at {seq} share one job"
        );
        let mut got = jobs.turn(&o.wal);
        assert_eq!(jobs.running(), MAX_RUNNING);
        got.extend(answers(&mut jobs, &o, 4 - got.len()));
        got.sort_by_key(|a| a.hold);
        let holds: Vec<u64> = got.iter().map(|a| a.hold).collect();
        assert_eq!(holds, vec![h1, h2, h3, h4]);
        assert_eq!(got[0].reply, Query::Digest.answer(&o.store));
        assert_eq!(got[1].reply, got[0].reply);
        assert_eq!(text(&got[2].reply).lines().count(), 11);
        assert_ne!(got[3].reply, got[0].reply);
        assert_eq!(jobs.unfinished(), 0);
    }

    #[test]
    fn connections_take_turns_whatever_the_request_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        let (mut jobs, _) = jobs();
        let mut flood = Vec::new();
        for k in 0..4 {
            put(&mut o, &format!("k{k}"), "v");
            flood.push(jobs.request(Query::Digest, o.wal.last_seq(), o.wal.resets(), 1));
        }
        let (seq, resets) = (o.wal.last_seq(), o.wal.resets());
        let other = jobs.request(keys(""), seq, resets, 2);
        let third = jobs.request(keys("k"), seq, resets, 3);
        o.wal.commit(&mut o.store).expect("commit");
        // One at a time on the worker, so answers come back in start order.
        let got = answers(&mut jobs, &o, 6);
        let order: Vec<u64> = got.iter().map(|a| a.hold).collect();
        assert_eq!(
            order,
            vec![flood[0], other, third, flood[1], flood[2], flood[3]],
            "connection 1 queued first, but 2 and 3 do not wait behind all of it"
        );
        assert_eq!(text(&got[1].reply), "4\nk0\nk1\nk2\nk3\n");
    }

    #[test]
    fn a_job_nobody_waits_for_is_dropped_unless_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        let (mut jobs, _) = jobs();
        put(&mut o, "a", "1");
        o.wal.commit(&mut o.store).expect("commit");
        let seq = o.wal.last_seq();
        jobs.request(Query::Digest, seq, 0, 1);
        jobs.request(keys(""), seq, 0, 1);
        jobs.request(keys("a"), seq, 0, 2);
        assert!(jobs.turn(&o.wal).is_empty());
        assert_eq!(jobs.running(), MAX_RUNNING);
        jobs.forget_conn(1);
        // The running DIGEST finishes for nobody; KEYS "" is gone.
        assert_eq!(jobs.unfinished(), 2);
        let got = answers(&mut jobs, &o, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].conn, 2);
        assert_eq!(text(&got[0].reply), "1\na\n");
        assert_eq!(jobs.unfinished(), 0);
    }

    #[test]
    fn a_lost_state_or_a_reset_is_answered_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        let (mut jobs, _) = jobs();
        for k in 0..5 {
            put(&mut o, &format!("k{k}"), "v");
        }
        o.wal.commit(&mut o.store).expect("commit");
        // Asked for before a rewind.
        jobs.request(Query::Digest, o.wal.last_seq(), o.wal.resets(), 1);
        let (store, _) = o.wal.rewind(&mut o.store, 3, 0).expect("rewind");
        o.store = store;
        let got = answers(&mut jobs, &o, 1);
        assert_eq!(text(&got[0].reply), "ERROR\n");
        // Asked for after it: fine.
        jobs.request(Query::Digest, o.wal.last_seq(), o.wal.resets(), 1);
        let got = answers(&mut jobs, &o, 1);
        assert_eq!(got[0].reply, Query::Digest.answer(&o.store));
    }

    #[test]
    fn a_state_lost_to_a_disk_error_is_answered_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = open_controlled(dir.path());
        let (mut jobs, _) = jobs();
        put(&mut o, "a", "1");
        commit_durably(&mut o, &control);
        // One turn written while its fsync waits (and will fail), the next
        // kept in the log's buffer behind it.
        control.gate.close();
        control.fail.store(true, Ordering::SeqCst);
        put(&mut o, "b", "1");
        o.wal.commit(&mut o.store).expect("commit");
        put(&mut o, "c", "1");
        o.wal.commit(&mut o.store).expect("commit");
        jobs.request(Query::Digest, o.wal.last_seq(), o.wal.resets(), 1);
        assert!(jobs.turn(&o.wal).is_empty(), "not yet in the file");
        control.gate.open();
        control.next_report();
        assert!(o.wal.commit(&mut o.store).is_err(), "the fsync failed");
        let got = answers(&mut jobs, &o, 1);
        assert_eq!(text(&got[0].reply), "ERROR\n");
        assert_eq!(jobs.unfinished(), 0);
    }
}
