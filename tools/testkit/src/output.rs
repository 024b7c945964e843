//! A child's output, line by line: [`Output`] reads the child's piped
//! stdout and stderr on background threads, keeps the last lines, and
//! notes the address of the first `listening on <addr>` line, which is
//! how a `keyval` started on port 0 says where it listens
//! ([`parse_listening`], [`wait_listening`]).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::ChildGuard;

/// How long a child that exited may take to close its pipes before its
/// output is taken as complete.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// The words before the address in the server's startup line
/// (`src/server/mod.rs`): `... leader 1 listening on 127.0.0.1:40123 (seq 0, ...)`.
const LISTENING_ON: &str = "listening on ";

/// The address in a log line containing `listening on <addr>`: the word
/// after it, without trailing punctuation (`127.0.0.1:6000,`).
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let at = line.find(LISTENING_ON)? + LISTENING_ON.len();
    let word = line[at..].split_whitespace().next()?;
    word.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// What the reading threads share with the readers.
#[derive(Debug, Default)]
struct Lines {
    /// The last `keep` lines, oldest first.
    kept: VecDeque<String>,
    keep: usize,
    /// Lines read in all, kept or not.
    total: u64,
    /// The first `listening on` address.
    listening: Option<SocketAddr>,
    /// Pipes still being read.
    open: usize,
}

#[derive(Debug, Default)]
struct Shared {
    lines: Mutex<Lines>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Lines> {
        // A reader thread never panics holding the lock, but a poisoned
        // lock still holds good lines.
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The output of a child process, read line by line (lossily UTF-8,
/// without `\n` or `\r\n`) by one thread per pipe until the child closes it.
#[derive(Debug, Clone)]
pub struct Output {
    shared: Arc<Shared>,
}

impl Output {
    /// Starts reading whichever of `child`'s stdout and stderr are piped
    /// (and not taken yet), keeping the last `keep` lines (`usize::MAX`
    /// for all of them).
    pub fn capture(child: &mut Child, keep: usize) -> Output {
        let output = Output {
            shared: Arc::new(Shared {
                lines: Mutex::new(Lines {
                    keep,
                    ..Lines::default()
                }),
                changed: Condvar::new(),
            }),
        };
        if let Some(out) = child.stdout.take() {
            output.read(out);
        }
        if let Some(err) = child.stderr.take() {
            output.read(err);
        }
        output
    }

    /// Reads `pipe` on a thread of its own until it ends (at the latest
    /// when the child dies).
    fn read(&self, pipe: impl Read + Send + 'static) {
        self.shared.lock().open += 1;
        let shared = Arc::clone(&self.shared);
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let end = line.strip_suffix(b"\n").unwrap_or(&line);
                let end = end.strip_suffix(b"\r").unwrap_or(end);
                let text = String::from_utf8_lossy(end).into_owned();
                let mut lines = shared.lock();
                if lines.listening.is_none() {
                    lines.listening = parse_listening(&text);
                }
                lines.total += 1;
                if lines.keep > 0 {
                    if lines.kept.len() == lines.keep {
                        lines.kept.pop_front();
                    }
                    lines.kept.push_back(text);
                }
                drop(lines);
                shared.changed.notify_all();
            }
            shared.lock().open -= 1;
            shared.changed.notify_all();
        });
    }

    /// The address of the first `listening on <addr>` line, once read.
    pub fn listening(&self) -> Option<SocketAddr> {
        self.shared.lock().listening
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.shared.lock().kept.iter().cloned().collect()
    }

    /// The kept lines, joined by newlines.
    pub fn text(&self) -> String {
        let lines = self.shared.lock();
        let mut text = String::new();
        for (i, line) in lines.kept.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(line);
        }
        text
    }

    /// The first kept line that contains `needle`.
    pub fn find_first(&self, needle: &str) -> Option<String> {
        let lines = self.shared.lock();
        lines.kept.iter().find(|l| l.contains(needle)).cloned()
    }

    /// The last kept line that contains `needle`.
    pub fn find_last(&self, needle: &str) -> Option<String> {
        let lines = self.shared.lock();
        lines
            .kept
            .iter()
            .rev()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Whether every pipe has been read to its end.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().open == 0
    }

    /// Waits until a new line is read or the pipes close, at most
    /// `at_most`.
    pub fn wait_change(&self, at_most: Duration) {
        let lines = self.shared.lock();
        let (total, open) = (lines.total, lines.open);
        let _ = self
            .shared
            .changed
            .wait_timeout_while(lines, at_most, |l| l.total == total && l.open == open);
    }

    /// Waits until every pipe has been read to its end, at most `at_most`
    /// (a child that exited may still have lines in its pipes).
    pub fn wait_closed(&self, at_most: Duration) {
        let lines = self.shared.lock();
        let _ = self
            .shared
            .changed
            .wait_timeout_while(lines, at_most, |l| l.open > 0);
    }
}

/// Why [`wait_listening`] has no address.
#[derive(Debug)]
pub enum NotListening {
    /// The process exited first (its output then read to the end).
    Exited(ExitStatus),
    /// It logged no `listening on` line in time (it still runs).
    TimedOut(Duration),
    /// Its status could not be read.
    Io(io::Error),
}

impl fmt::Display for NotListening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotListening::Exited(status) => write!(f, "exited ({status}) before it listened"),
            NotListening::TimedOut(wait) => {
                write!(f, "did not log 'listening on <addr>' within {wait:?}")
            }
            NotListening::Io(e) => write!(f, "cannot tell whether it runs: {e}"),
        }
    }
}

impl std::error::Error for NotListening {}

/// Waits up to `timeout` until `output`, the output of `child`, has a
/// `listening on <addr>` line, and returns the address; fails at once if
/// the child exits first.
///
/// # Errors
/// See [`NotListening`].
pub fn wait_listening(
    child: &mut ChildGuard,
    output: &Output,
    timeout: Duration,
) -> Result<SocketAddr, NotListening> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(addr) = output.listening() {
            return Ok(addr);
        }
        if let Some(status) = child.try_exit().map_err(NotListening::Io)? {
            output.wait_closed(LAST_WORDS);
            // It may have listened just before it exited.
            return match output.listening() {
                Some(addr) => Ok(addr),
                None => Err(NotListening::Exited(status)),
            };
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(NotListening::TimedOut(timeout));
        }
        output.wait_change((deadline - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sh(script: &str) -> (ChildGuard, Output) {
        let mut guard = ChildGuard::spawn(
            Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .expect("spawn sh");
        let output = Output::capture(guard.child_mut().expect("child"), 3);
        (guard, output)
    }

    #[test]
    fn parses_listening_lines() {
        let addr = |s: &str| Some(s.parse::<SocketAddr>().expect("addr"));
        assert_eq!(
            parse_listening("12:00:00 [INFO] leader 1 listening on 127.0.0.1:4100 (seq 0, 0 keys)"),
            addr("127.0.0.1:4100")
        );
        assert_eq!(
            parse_listening("listening on 127.0.0.1:6000, role leader"),
            addr("127.0.0.1:6000")
        );
        assert_eq!(
            parse_listening("listening on [::1]:7000"),
            addr("[::1]:7000")
        );
        assert_eq!(parse_listening("starting up"), None);
        assert_eq!(parse_listening("listening on nowhere"), None);
        assert_eq!(parse_listening("listening on "), None);
    }

    #[test]
    fn keeps_the_last_lines_of_both_pipes_and_the_address() {
        let (mut guard, output) = sh(
            "echo 'x listening on 127.0.0.1:4000 (seq 0)'; echo two >&2; echo three; \
             echo 'four: catching up'; echo 'listening on 127.0.0.1:5000'",
        );
        let addr = wait_listening(&mut guard, &output, Duration::from_secs(5)).expect("addr");
        assert_eq!(addr, "127.0.0.1:4000".parse().expect("addr"));
        // (Reaped already if it exited while the address was awaited.)
        guard.wait_exit(Duration::from_secs(5)).expect("wait");
        assert!(!guard.is_running());
        output.wait_closed(Duration::from_secs(5));
        assert!(output.is_closed());
        // Three kept of five; the first address all the same.
        assert_eq!(output.lines().len(), 3);
        assert_eq!(output.listening(), Some(addr));
        assert_eq!(
            output.find_last("catching up").as_deref(),
            Some("four: catching up")
        );
        assert_eq!(
            output.find_first("listening").as_deref(),
            Some("listening on 127.0.0.1:5000")
        );
        assert_eq!(output.find_first("snapshot"), None);
    }

    #[test]
    fn a_child_that_exits_first_is_reported_with_its_output() {
        let (mut guard, output) = sh("echo 'bad flag' >&2; exit 2");
        match wait_listening(&mut guard, &output, Duration::from_secs(5)) {
            Err(NotListening::Exited(status)) => assert_eq!(status.code(), Some(2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(output.text(), "bad flag");
    }

    #[test]
    fn a_silent_child_times_out() {
        let (mut guard, output) = sh("exec sleep 30");
        let wait = Duration::from_millis(100);
        match wait_listening(&mut guard, &output, wait) {
            Err(NotListening::TimedOut(w)) => assert_eq!(w, wait),
            other => panic!("{other:?}"),
        }
        assert!(guard.is_running());
    }
}
