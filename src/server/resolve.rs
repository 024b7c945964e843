//! Finding the leader's address without blocking the loop. An IP literal
//! is used as it is; a host name is looked up on a short-lived thread
//! (the system resolver only blocks), and the loop polls for the answer
//! on its dial timer.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;

/// Where a lookup stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    Ready(SocketAddr),
    /// Still looking; ask again shortly.
    Pending,
    Failed(String),
}

/// At most one lookup in flight, for the leader currently followed.
#[derive(Default)]
pub struct Resolver {
    pending: Option<Lookup>,
}

struct Lookup {
    host: String,
    port: u16,
    answer: Receiver<Result<SocketAddr, String>>,
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
                    Err(TryRecvError::Disconnected) => {
                        Resolution::Failed("the lookup thread died".into())
                    }
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
                    .map_err(|e| e.to_string())
                    .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_string()));
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            return Resolution::Failed(format!("cannot start a lookup: {e}"));
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
        assert_eq!(
            r.resolve("127.0.0.1", 7),
            Resolution::Ready("127.0.0.1:7".parse().expect("addr"))
        );
        assert_eq!(
            r.resolve("[::1]", 7),
            Resolution::Ready("[::1]:7".parse().expect("addr"))
        );
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
}
