//! Client access control (`docs/access.md`): the password gate and protected
//! mode.
//!
//! Pure: the decisions here take what the server knows (is a password set,
//! has this connection proved it, what kind of request is this, where does
//! the peer connect from) and return a verdict. The server turns verdicts
//! into replies; the line protocol and the Redis face share these rules.
//!
//! ```text
//! HELLO CLIENT      -> HELLO SERVER          (DENIED <how to fix it> and close: protected mode)
//! GET a             -> NOAUTH                (a password is set and was not given yet)
//! AUTH <wrong>      -> WRONGPASS             (the connection stays)
//! AUTH <password>   -> OK                    (from now on, everything a client may do)
//! AUTH <anything>   -> ERROR no password is set   (no password configured)
//! ```
//!
//! Followers and admin connections prove the shared secret instead and are
//! not subject to either rule. The password is held only as its SHA-256
//! digest, compared in constant time, and never printed (its `Debug` is
//! redacted).

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// The client password, kept as its SHA-256 digest.
///
/// Comparing digests makes the comparison's time independent of the
/// password's length and of where a guess first differs (Redis compares
/// SHA-256 digests of ACL passwords the same way).
#[derive(Clone, PartialEq, Eq)]
pub struct Password {
    digest: [u8; 32],
}

impl Password {
    /// Wraps a password; `None` for an empty one (which would admit
    /// anyone who sends `AUTH` with an empty argument, so it is refused at
    /// start instead).
    pub fn new(password: &[u8]) -> Option<Password> {
        (!password.is_empty()).then(|| Password {
            digest: Sha256::digest(password).into(),
        })
    }

    /// Whether `candidate` is the password, in time that does not depend
    /// on either value.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let theirs: [u8; 32] = Sha256::digest(candidate).into();
        constant_time_eq(&self.digest, &theirs)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Compares two digests without branching on their contents.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What a request is, as far as the password gate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `AUTH`: always allowed, it is how the gate opens.
    Auth,
    /// Allowed before `AUTH`: `PING` and `CLOSE` (they show nothing and
    /// change nothing).
    Open,
    /// Everything else: reads, writes, `INFO`, queries.
    Gated,
}

/// The gate's decision on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Execute it.
    Allow,
    /// Answer `NOAUTH` (`-NOAUTH Authentication required.` on RESP).
    NoAuth,
}

/// The password gate: whether a request of `kind` may run on a connection
/// that has (`proven`) or has not proved the password, when a password is
/// (`password_set`) or is not configured. Admin connections count as
/// proven: they proved the shared secret.
pub fn gate(password_set: bool, proven: bool, kind: Kind) -> Verdict {
    match kind {
        Kind::Auth | Kind::Open => Verdict::Allow,
        Kind::Gated if !password_set || proven => Verdict::Allow,
        Kind::Gated => Verdict::NoAuth,
    }
}

/// The outcome of an `AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The password matched: the connection is authenticated (`OK`).
    Accepted,
    /// It did not (`WRONGPASS`); the connection stays, and keeps whatever
    /// it had proved before.
    WrongPass,
    /// No password is configured (`ERROR no password is set`), as Redis
    /// answers `AUTH` without a configured password with an error.
    NoPasswordSet,
}

/// Checks an `AUTH` candidate against the configured password, if any.
pub fn authenticate(password: Option<&Password>, candidate: &[u8]) -> AuthOutcome {
    match password {
        None => AuthOutcome::NoPasswordSet,
        Some(p) if p.matches(candidate) => AuthOutcome::Accepted,
        Some(_) => AuthOutcome::WrongPass,
    }
}

/// Whether `ip` is this host's loopback: 127.0.0.0/8, `::1`, or an
/// IPv4-mapped `::ffff:127.x.y.z` (what a dual-stack socket reports for an
/// IPv4 loopback peer).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Protected mode: whether a client from `peer` is refused (`DENIED` and
/// close) at its `HELLO CLIENT`. Only when protected mode is on, no
/// password is set, and the peer is not on loopback.
pub fn protected_refuses(protected_mode: bool, password_set: bool, peer: IpAddr) -> bool {
    protected_mode && !password_set && !is_loopback(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_only_itself() {
        let p = Password::new(b"hunter2").expect("non-empty");
        assert!(p.matches(b"hunter2"));
        for wrong in [&b""[..], b"hunter", b"hunter22", b"Hunter2", b"hunter2\n"] {
            assert!(!p.matches(wrong), "{wrong:?}");
        }
        assert_eq!(Password::new(b""), None);
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::new(b"hunter2").expect("non-empty");
        let shown = format!("{p:?} {:?}", Some(&p));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn gate_table() {
        use Kind::*;
        use Verdict::*;
        // (password set, proven, kind) -> verdict
        for (set, proven, kind, want) in [
            (false, false, Gated, Allow),
            (false, false, Open, Allow),
            (false, false, Auth, Allow),
            (true, false, Gated, NoAuth),
            (true, false, Open, Allow),
            (true, false, Auth, Allow),
            (true, true, Gated, Allow),
            (true, true, Open, Allow),
            (true, true, Auth, Allow),
            (false, true, Gated, Allow),
        ] {
            assert_eq!(gate(set, proven, kind), want, "{set} {proven} {kind:?}");
        }
    }

    #[test]
    fn auth_outcomes() {
        let p = Password::new(b"pw").expect("non-empty");
        assert_eq!(authenticate(Some(&p), b"pw"), AuthOutcome::Accepted);
        assert_eq!(authenticate(Some(&p), b"pW"), AuthOutcome::WrongPass);
        assert_eq!(authenticate(None, b"pw"), AuthOutcome::NoPasswordSet);
    }

    #[test]
    fn loopback_forms() {
        for ip in [
            "127.0.0.1",
            "127.5.6.7",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.9.0.1",
        ] {
            assert!(is_loopback(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
            "::127.0.0.1",
        ] {
            assert!(!is_loopback(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn protected_mode_refuses_only_remote_peers_without_a_password() {
        let remote: IpAddr = "10.1.2.3".parse().expect("ip");
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(protected_refuses(true, false, remote));
        assert!(!protected_refuses(true, true, remote));
        assert!(!protected_refuses(false, false, remote));
        assert!(!protected_refuses(true, false, local));
    }
}
