//! Finding the leader's address without blocking the loop. An IP literal
//! is used as it is; a host name is looked up on a short-lived thread
//! (the system resolver only blocks), and the loop polls for the answer
//! on its dial timer.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;

/// Where a lookup stands.
#[derive(Debug)]
pub enum Resolution {
    Ready(SocketAddr),
    /// Still looking; ask again shortly.
    Pending,
    Failed(ResolveError),
}

/// Why a host name gave no address.
#[derive(Debug)]
pub enum ResolveError {
    /// The system resolver failed.
    Lookup(io::Error),
    /// The name resolved to no address.
    NoAddress,
    /// The lookup thread ended without an answer (it panicked).
    ThreadDied,
    /// The lookup thread could not be started.
    Spawn(io::Error),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Lookup(e) => write!(f, "{e}"),
            ResolveError::NoAddress => write!(f, "no address"),
            ResolveError::ThreadDied => write!(f, "the lookup thread died"),
            ResolveError::Spawn(e) => write!(f, "cannot start a lookup: {e}"),
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::Lookup(e) | ResolveError::Spawn(e) => Some(e),
            ResolveError::NoAddress | ResolveError::ThreadDied => None,
        }
    }
}

/// At most one lookup in flight, for the leader currently followed.
#[derive(Default)]
pub struct Resolver {
    pending: Option<Lookup>,
}

struct Lookup {
    host: String,
    port: u16,
    answer: Receiver<Result<SocketAddr, ResolveError>>,
}

impl Resolver {
    /// The address of `host:port`, or a lookup started or in progress.
    pub fn resolve(&mut self, host: &str, port: u16) -> Resolution {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Resolution::Ready(SocketAddr::new(ip, port));
        }
        if let Some(lookup) = self.pending.take() {
            if lookup.host == host && lookup.port == port {
                return match lookup.answer.try_recv() {
                    Ok(Ok(addr)) => Resolution::Ready(addr),
                    Ok(Err(why)) => Resolution::Failed(why),
                    Err(TryRecvError::Empty) => {
                        self.pending = Some(lookup);
                        Resolution::Pending
                    }
                    Err(TryRecvError::Disconnected) => Resolution::Failed(ResolveError::ThreadDied),
                };
            }
        }
        let (tx, answer) = mpsc::channel();
        let name = host.to_string();
        let spawned = thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let result = (name.as_str(), port)
                    .to_socket_addrs()
                    .map_err(ResolveError::Lookup)
                    .and_then(|mut addrs| addrs.next().ok_or(ResolveError::NoAddress));
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            return Resolution::Failed(ResolveError::Spawn(e));
        }
        self.pending = Some(Lookup {
            host: host.to_string(),
            port,
            answer,
        });
        Resolution::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn ip_literals_need_no_lookup() {
        let mut r = Resolver::default();
        let v4: SocketAddr = "127.0.0.1:7".parse().expect("addr");
        assert!(matches!(r.resolve("127.0.0.1", 7), Resolution::Ready(a) if a == v4));
        let v6: SocketAddr = "[::1]:7".parse().expect("addr");
        assert!(matches!(r.resolve("[::1]", 7), Resolution::Ready(a) if a == v6));
    }

    #[test]
    fn names_resolve_in_the_background() {
        let mut r = Resolver::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match r.resolve("localhost", 9) {
                Resolution::Ready(addr) => {
                    assert!(addr.ip().is_loopback(), "{addr}");
                    assert_eq!(addr.port(), 9);
                    break;
                }
                Resolution::Pending => {
                    assert!(Instant::now() < deadline, "lookup hangs");
                    thread::sleep(Duration::from_millis(5));
                }
                Resolution::Failed(why) => panic!("localhost: {why}"),
            }
        }
    }

    #[test]
    fn errors_read_as_before() {
        let cases = [
            (
                ResolveError::Lookup(io::Error::other("lookup failed")),
                "lookup failed",
            ),
            (ResolveError::NoAddress, "no address"),
            (ResolveError::ThreadDied, "the lookup thread died"),
            (
                ResolveError::Spawn(io::Error::other("no threads")),
                "cannot start a lookup: no threads",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text, "{error:?}");
        }
    }
}
