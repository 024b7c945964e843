//! The baseline of the snapshot case: copying a file over loopback TCP
//! into a new file in another directory and fsyncing it. That is the least
//! a snapshot transfer can cost on this machine (read, send, receive,
//! write, fsync) without the follower's parsing and map building.
//!
//! A sender thread reads the file and writes it to the socket; the calling
//! thread receives, writes and fsyncs. Both ends have socket timeouts, so a
//! stuck side fails instead of hanging.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Read and write size on both sides.
const CHUNK: usize = 256 * 1024;
/// Longest a single socket read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What one copy did.
#[derive(Clone, Copy, Debug)]
pub struct CopyReport {
    /// Bytes received and made durable.
    pub bytes: u64,
    /// From opening the connection until the copy and its directory were
    /// fsynced.
    pub elapsed: Duration,
}

/// Copies `src` over a loopback TCP connection into `dest` (a new file),
/// then fsyncs `dest` and its directory.
///
/// # Errors
/// Any I/O error of either side, or a length mismatch.
pub fn copy_over_loopback(src: &Path, dest: &Path) -> io::Result<CopyReport> {
    let context = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    let mut input = File::open(src).map_err(context("cannot open", src))?;
    let expected = input.metadata()?.len();
    let mut output = File::create_new(dest).map_err(context("cannot create", dest))?;

    let start = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    // Connect before accepting: the backlog completes the handshake, so
    // neither call can wait for the other thread.
    let sending = TcpStream::connect(listener.local_addr()?)?;
    let (mut receiving, _) = listener.accept()?;
    sending.set_write_timeout(Some(IO_TIMEOUT))?;
    receiving.set_read_timeout(Some(IO_TIMEOUT))?;

    let sender = thread::spawn(move || -> io::Result<u64> {
        let mut sending = sending;
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sending.write_all(&buf[..n])?;
            sent += n as u64;
        }
        // Closing the socket is the receiver's end of file.
        Ok(sent)
    });

    let mut buf = vec![0u8; CHUNK];
    let mut received = 0u64;
    let receive = loop {
        match receiving.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = output.write_all(&buf[..n]) {
                    break Err(context("cannot write", dest)(e));
                }
                received += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(io::Error::new(e.kind(), format!("receiving the copy: {e}"))),
        }
    };
    // A failed receive drops the socket, which ends a blocked sender.
    drop(receiving);
    let sent = sender
        .join()
        .map_err(|_| io::Error::other("the sender thread panicked"))?
        .map_err(|e| io::Error::new(e.kind(), format!("sending {}: {e}", src.display())))?;
    receive?;
    output.sync_all().map_err(context("cannot fsync", dest))?;
    if let Some(dir) = dest.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(context("cannot fsync", dir))?;
    }
    let elapsed = start.elapsed();
    if sent != expected || received != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds {expected} bytes, but {sent} were sent and {received} received",
                src.display()
            ),
        ));
    }
    Ok(CopyReport {
        bytes: received,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::random_value;

    #[test]
    fn copies_a_file_byte_for_byte() {
        let from = tempfile::TempDir::new().unwrap();
        let to = tempfile::TempDir::new().unwrap();
        let src = from.path().join("leader.log");
        // Not a multiple of the chunk size, so the last read is short.
        let data = random_value(&mut fastrand::Rng::with_seed(7), 3 * CHUNK + 1234);
        std::fs::write(&src, &data).unwrap();
        let dest = to.path().join("copy");
        let report = copy_over_loopback(&src, &dest).unwrap();
        assert_eq!(report.bytes, data.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::TempDir::new().unwrap();
        let src = dir.path().join("a");
        std::fs::write(&src, b"x").unwrap();
        let err = copy_over_loopback(&src, &src).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
