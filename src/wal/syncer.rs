//! The sync thread: `fdatasync` off the event loop.
//!
//! The loop writes a batch to the log file (`write(2)`, into the page
//! cache) and hands the thread a [`Target`]: "make the file durable through
//! this end offset and seq". It then keeps serving while the thread runs
//! `fdatasync` and reports back through a channel and the `notify` callback
//! (the loop's `mio::Waker`).
//!
//! ```text
//!  loop:   write A, request A ─ turns: collect B ─────── write B, request B ─ turns: collect C ...
//!  thread:            fdatasync(A) ────────────► report A   fdatasync(B) ──────► report B
//! ```
//!
//! The turns served during a sync collect their records in the log's buffer
//! and write them when the sync is reported (see `Wal::syncing_always`), so
//! one `fdatasync` covers every turn served meanwhile: the group commit
//! grows with the load. Should requests still queue up, the thread serves
//! only the newest of them.
//!
//! Each request carries the file it is about, so the thread never syncs a
//! file the log has since replaced, and each report carries the target it
//! covers, tagged with the file's generation. The log waits for the sync in
//! flight before it replaces its file ([`Syncer::wait`]), so a report is
//! never taken for the new file.
//!
//! The thread knows nothing of seqs or the store: what a report means is
//! decided by the log ([`super::Wal`]), which also decides when a small
//! batch is better fsynced inline. A failed `fdatasync` is reported
//! once and never retried; the log then stops taking writes. Failures are
//! counted ([`Syncer::failures`]) for the log's `INFO` counters.

use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// How far a sync must make the log durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The file generation the offset refers to ([`super::Wal::generation`]).
    pub generation: u64,
    /// File length the sync covers: every byte before it was written before
    /// the request was made.
    pub end: u64,
    /// Seq of the last record before `end`.
    pub seq: u64,
}

impl Target {
    /// Whether a sync reaching `self` also covers `other`.
    fn covers(&self, other: &Target) -> bool {
        self.generation == other.generation && self.end >= other.end
    }
}

/// One request to the thread.
struct Request {
    file: Arc<File>,
    target: Target,
}

/// One answer from the thread.
struct Report {
    target: Target,
    result: io::Result<()>,
}

/// How a file is made durable: `File::sync_data` (fdatasync), or a stand-in
/// in tests.
pub type SyncFn = Box<dyn Fn(&File) -> io::Result<()> + Send>;

/// The handle the log keeps on its sync thread. Dropping it stops the thread
/// after the sync in progress.
pub struct Syncer {
    requests: Option<mpsc::Sender<Request>>,
    reports: mpsc::Receiver<Report>,
    thread: Option<JoinHandle<()>>,
    /// The newest target handed over and not yet reported.
    in_flight: Option<Target>,
    /// Syncs reported failed so far, each failed `fdatasync` once (and a
    /// thread that died with a sync in flight).
    failures: u64,
}

impl Syncer {
    /// Starts the thread; `notify` is called after every report.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn spawn(notify: Box<dyn Fn() + Send>) -> io::Result<Syncer> {
        Syncer::spawn_with(notify, Box::new(File::sync_data))
    }

    /// [`Syncer::spawn`] with `sync` in place of `fdatasync`.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn spawn_with(notify: Box<dyn Fn() + Send>, sync: SyncFn) -> io::Result<Syncer> {
        let (request_tx, request_rx) = mpsc::channel::<Request>();
        let (report_tx, report_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || run(&request_rx, &report_tx, &*notify, &*sync))?;
        Ok(Syncer {
            requests: Some(request_tx),
            reports: report_rx,
            thread: Some(thread),
            in_flight: None,
            failures: 0,
        })
    }

    /// Asks for `file` to be made durable through `target`. A target that
    /// the sync in flight already covers is not sent again.
    pub fn request(&mut self, file: &Arc<File>, target: Target) {
        if self.in_flight.is_some_and(|t| t.covers(&target)) {
            return;
        }
        self.in_flight = Some(target);
        if let Some(requests) = &self.requests {
            // A send fails only if the thread is gone; `poll` says so.
            let _ = requests.send(Request {
                file: Arc::clone(file),
                target,
            });
        }
    }

    /// Syncs that failed so far, counted as their reports are taken in by
    /// [`Syncer::poll`] or [`Syncer::wait`] (one [`Outcome`] may fold in
    /// several).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Whether a sync was requested and has not been reported yet.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The reports that have arrived, without waiting.
    pub fn poll(&mut self) -> Option<Outcome> {
        let mut outcome = None;
        loop {
            match self.reports.try_recv() {
                Ok(report) => outcome = Some(self.take(outcome, report)),
                Err(mpsc::TryRecvError::Empty) => return outcome,
                Err(mpsc::TryRecvError::Disconnected) => return self.thread_gone(outcome),
            }
        }
    }

    /// Waits until the newest request is reported; returns what arrived.
    pub fn wait(&mut self) -> Option<Outcome> {
        let mut outcome = self.poll();
        while self.in_flight.is_some() {
            match self.reports.recv() {
                Ok(report) => outcome = Some(self.take(outcome, report)),
                Err(mpsc::RecvError) => return self.thread_gone(outcome),
            }
        }
        outcome
    }

    /// Folds one report into what was gathered so far.
    fn take(&mut self, so_far: Option<Outcome>, report: Report) -> Outcome {
        if self.in_flight.is_some_and(|t| report.target.covers(&t)) {
            self.in_flight = None;
        }
        Outcome::merge(
            so_far,
            match report.result {
                Ok(()) => Outcome::Durable(report.target),
                Err(e) => {
                    self.failures += 1;
                    Outcome::Failed(e)
                }
            },
        )
    }

    /// The thread ended (it panicked): whatever was in flight failed.
    fn thread_gone(&mut self, so_far: Option<Outcome>) -> Option<Outcome> {
        self.in_flight.take()?;
        self.failures += 1;
        Some(Outcome::merge(
            so_far,
            Outcome::Failed(io::Error::other("the log sync thread stopped")),
        ))
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the reports gathered in one [`Syncer::poll`] or [`Syncer::wait`]
/// say.
#[derive(Debug)]
pub enum Outcome {
    /// Durable through this target (the newest reported).
    Durable(Target),
    /// A sync failed. Later successes do not undo that: after a failed
    /// `fdatasync` the kernel may have dropped the dirty pages, and a later
    /// sync that "succeeds" does not bring them back.
    Failed(io::Error),
}

impl Outcome {
    /// Combines an earlier outcome with a later report: the first failure
    /// wins, otherwise the furthest target.
    fn merge(earlier: Option<Outcome>, later: Outcome) -> Outcome {
        match (earlier, later) {
            (Some(Outcome::Failed(e)), _) => Outcome::Failed(e),
            (Some(Outcome::Durable(a)), Outcome::Durable(b))
                if a.generation == b.generation && a.end > b.end =>
            {
                Outcome::Durable(a)
            }
            (_, later) => later,
        }
    }
}

/// The thread: sync the newest request, report, repeat until the log drops
/// its [`Syncer`].
fn run(
    requests: &mpsc::Receiver<Request>,
    reports: &mpsc::Sender<Report>,
    notify: &dyn Fn(),
    sync: &dyn Fn(&File) -> io::Result<()>,
) {
    while let Ok(mut request) = requests.recv() {
        // Requests that queued during the last sync: the newest covers
        // them all (they are for the same file; the log never has requests
        // for two files outstanding).
        while let Ok(newer) = requests.try_recv() {
            request = newer;
        }
        let result = sync(&request.file);
        drop(request.file);
        let report = Report {
            target: request.target,
            result,
        };
        // Report first, then wake the loop: a loop woken early would find
        // no report and sleep on.
        if reports.send(report).is_err() {
            return;
        }
        notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn target(end: u64) -> Target {
        Target {
            generation: 0,
            end,
            seq: end,
        }
    }

    fn file() -> (tempfile::TempDir, Arc<File>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("log")).expect("create");
        (dir, Arc::new(file))
    }

    #[test]
    fn merge_keeps_the_first_failure_and_the_furthest_target() {
        let durable = |end| Outcome::Durable(target(end));
        let failed = || Outcome::Failed(io::Error::other("disk"));
        assert!(matches!(
            Outcome::merge(None, durable(5)),
            Outcome::Durable(t) if t.end == 5
        ));
        assert!(matches!(
            Outcome::merge(Some(durable(9)), durable(5)),
            Outcome::Durable(t) if t.end == 9
        ));
        assert!(matches!(
            Outcome::merge(Some(durable(5)), durable(9)),
            Outcome::Durable(t) if t.end == 9
        ));
        assert!(matches!(
            Outcome::merge(Some(durable(5)), failed()),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            Outcome::merge(Some(failed()), durable(9)),
            Outcome::Failed(_)
        ));
        // A new generation's target replaces the old one.
        let next = Target {
            generation: 1,
            end: 3,
            seq: 12,
        };
        assert!(matches!(
            Outcome::merge(Some(durable(9)), Outcome::Durable(next)),
            Outcome::Durable(t) if t == next
        ));
    }

    #[test]
    fn covers_needs_the_same_generation() {
        assert!(target(10).covers(&target(10)));
        assert!(target(10).covers(&target(4)));
        assert!(!target(4).covers(&target(10)));
        let other = Target {
            generation: 1,
            ..target(4)
        };
        assert!(!target(10).covers(&other));
    }

    #[test]
    fn a_sync_is_reported_and_notified() {
        let (_dir, file) = file();
        let notified = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&notified);
        let mut syncer = Syncer::spawn(Box::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
        }))
        .expect("spawn");
        (&*file).write_all(b"record").expect("write");
        syncer.request(&file, target(6));
        assert!(syncer.is_busy());
        assert!(matches!(syncer.wait(), Some(Outcome::Durable(t)) if t == target(6)));
        assert!(!syncer.is_busy());
        assert!(syncer.poll().is_none());
        assert!(syncer.wait().is_none(), "nothing in flight: no wait");
        // The thread notifies right after it reports; dropping the handle
        // joins it.
        drop(syncer);
        assert_eq!(notified.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn requests_made_during_a_sync_share_the_next_one() {
        let (_dir, file) = file();
        let syncs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Mutex::new(()));
        let (count, held) = (Arc::clone(&syncs), Arc::clone(&gate));
        let slow_sync: SyncFn = Box::new(move |_| {
            let _gate = held.lock().unwrap_or_else(|e| e.into_inner());
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let mut syncer = Syncer::spawn_with(Box::new(|| {}), slow_sync).expect("spawn");
        {
            // The first sync waits at the gate while more requests queue.
            let _closed = gate.lock().unwrap_or_else(|e| e.into_inner());
            for end in 1..=10 {
                syncer.request(&file, target(end));
            }
        }
        assert!(matches!(syncer.wait(), Some(Outcome::Durable(t)) if t.end == 10));
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs <= 2, "{syncs} syncs for 10 requests");
    }

    #[test]
    fn a_covered_request_is_not_sent_again() {
        let (_dir, file) = file();
        let mut syncer = Syncer::spawn(Box::new(|| {})).expect("spawn");
        syncer.request(&file, target(10));
        syncer.request(&file, target(7));
        assert_eq!(syncer.in_flight, Some(target(10)));
        assert!(matches!(syncer.wait(), Some(Outcome::Durable(t)) if t.end == 10));
    }

    #[test]
    fn a_failed_sync_is_reported() {
        let (_dir, file) = file();
        let failing_sync: SyncFn = Box::new(|_| Err(io::Error::other("injected fsync error")));
        let mut syncer = Syncer::spawn_with(Box::new(|| {}), failing_sync).expect("spawn");
        assert_eq!(syncer.failures(), 0);
        syncer.request(&file, target(3));
        match syncer.wait() {
            Some(Outcome::Failed(e)) => assert!(e.to_string().contains("injected")),
            other => panic!("{other:?}"),
        }
        assert!(!syncer.is_busy());
        assert_eq!(syncer.failures(), 1);
    }

    #[test]
    fn every_failed_sync_is_counted_even_when_reports_fold_into_one() {
        let (_dir, file) = file();
        let gate = Arc::new(Mutex::new(()));
        let (entered_tx, entered) = mpsc::channel();
        let held = Arc::clone(&gate);
        let failing_sync: SyncFn = Box::new(move |_| {
            let _ = entered_tx.send(());
            let _gate = held.lock().unwrap_or_else(|e| e.into_inner());
            Err(io::Error::other("injected fsync error"))
        });
        let mut syncer = Syncer::spawn_with(Box::new(|| {}), failing_sync).expect("spawn");
        {
            // The first sync waits at the gate; the second request queues
            // behind it, and both fail. Their reports are taken in by one
            // wait, as one outcome.
            let _closed = gate.lock().unwrap_or_else(|e| e.into_inner());
            syncer.request(&file, target(3));
            entered.recv().expect("the first sync began");
            syncer.request(&file, target(6));
        }
        assert!(matches!(syncer.wait(), Some(Outcome::Failed(_))));
        assert_eq!(syncer.failures(), 2, "two failed syncs");
    }

    #[test]
    fn a_dead_thread_fails_what_was_in_flight() {
        let (_dir, file) = file();
        let panicking_sync: SyncFn =
            Box::new(|_| panic!("the sync thread dies (expected in this test)"));
        let mut syncer = Syncer::spawn_with(Box::new(|| {}), panicking_sync).expect("spawn");
        syncer.request(&file, target(3));
        assert!(matches!(syncer.wait(), Some(Outcome::Failed(_))));
        assert!(!syncer.is_busy());
        assert_eq!(syncer.failures(), 1);
    }
}
