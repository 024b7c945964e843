//! The recorded history: one [`Op`] per client request, with the time it
//! was invoked, the time its reply arrived and what the reply was.
//!
//! Every PUT writes a value no other write uses (`v<client>.<n>.<padding>`),
//! so a value read back names the write that produced it. Times are
//! microseconds since the run began, from one shared [`Clock`].
//!
//! Each op also says whether its connection was opened to a node that
//! then said it was a leader taking writes: reads on such connections are
//! the ones a client sent believing it talked to the leader.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// Identifies one PUT: the client that sent it and its per-client counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId {
    pub client: u16,
    pub n: u32,
}

impl ValueId {
    /// The value text: the id, then `padding`.
    pub fn text(self, padding: &str) -> String {
        format!("v{}.{}.{padding}", self.client, self.n)
    }

    /// The id back out of a value, `None` if it is not one of ours.
    pub fn parse(value: &str) -> Option<ValueId> {
        let mut parts = value.strip_prefix('v')?.splitn(3, '.');
        let client = parts.next()?.parse().ok()?;
        let n = parts.next()?.parse().ok()?;
        parts.next()?;
        Some(ValueId { client, n })
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.client, self.n)
    }
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Put(ValueId),
    Delete,
    Get,
}

/// What the reply said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `OK`.
    Ok,
    /// `NOT_FOUND`.
    NotFound,
    /// A GET's value.
    Value(ValueId),
    /// `REPLICATION_TIMEOUT`: durable on the leader, not acknowledged.
    ReplicationTimeout,
    /// `WRITE_NOT_ALLOWED [<host:port>]`: the node is not (or no longer) a
    /// leader that takes writes, and did not apply this one.
    Refused,
    /// `ERROR` to a write: a leader that stepped down (fenced, or told to
    /// follow) answers the writes still waiting for follower acks so. They
    /// may or may not survive (docs/failover.md, "What survives a failover").
    Failed,
    /// Acknowledged by a leader that was then lost for good in async mode,
    /// before the follower that replaced it had it (set by the checker
    /// only): the write may be gone.
    Excused,
    /// No reply (the connection broke or timed out): may or may not have
    /// happened.
    Unknown,
    /// A GET answered `NOT_LEADER [<host:port>]`, `WRITE_NOT_ALLOWED
    /// [<host:port>]`, `ERROR` or `REPLICATION_TIMEOUT` (kept verbatim): no
    /// value, so it observed nothing.
    NotServed(Box<str>),
    /// Any other reply, kept verbatim.
    Unexpected(Box<str>),
}

/// One request and its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub client: u16,
    pub key: u32,
    pub kind: Kind,
    /// The id of the node that answered (its `INFO` `id` when the
    /// connection opened), `None` if unknown.
    pub node: Option<u32>,
    /// Whether that `INFO` said `role leader` and `writes ok`: the client
    /// believed it talked to the leader.
    pub via_leader: bool,
    /// Before the request was sent (µs).
    pub invoke: u64,
    /// After the reply (or the failure) arrived (µs).
    pub complete: u64,
    pub outcome: Outcome,
}

impl Op {
    /// Whether this is a write the server acknowledged: a PUT answered
    /// `OK`, or a DELETE answered `OK` or `NOT_FOUND`.
    pub fn is_acked_write(&self) -> bool {
        match self.kind {
            Kind::Put(_) => self.outcome == Outcome::Ok,
            Kind::Delete => matches!(self.outcome, Outcome::Ok | Outcome::NotFound),
            Kind::Get => false,
        }
    }

    /// Sorts a reply line into an [`Outcome`] for this kind of request.
    pub fn classify(kind: Kind, reply: &str) -> Outcome {
        match (kind, reply) {
            (Kind::Put(_) | Kind::Delete, "OK") => Outcome::Ok,
            (Kind::Put(_) | Kind::Delete, "REPLICATION_TIMEOUT") => Outcome::ReplicationTimeout,
            (Kind::Put(_) | Kind::Delete, reply) if refusal(reply).is_some() => Outcome::Refused,
            (Kind::Put(_) | Kind::Delete, "ERROR") => Outcome::Failed,
            (Kind::Delete | Kind::Get, "NOT_FOUND") => Outcome::NotFound,
            (Kind::Get, reply) if not_served(reply) => Outcome::NotServed(reply.into()),
            (Kind::Get, value) => match ValueId::parse(value) {
                Some(id) => Outcome::Value(id),
                None => Outcome::Unexpected(value.into()),
            },
            (_, other) => Outcome::Unexpected(other.into()),
        }
    }
}

/// `Some(hint)` for a `WRITE_NOT_ALLOWED` reply: the leader's address as
/// the node knows it, if it named one (and it parses).
pub fn refusal(reply: &str) -> Option<Option<SocketAddr>> {
    hint_after(reply, "WRITE_NOT_ALLOWED")
}

/// `Some(hint)` for a reply that sends the client elsewhere:
/// `WRITE_NOT_ALLOWED [<host:port>]`, or `NOT_LEADER [<host:port>]` (a
/// node that is no longer a leader taking writes, to a read on a
/// connection opened to it as one).
pub fn redirect(reply: &str) -> Option<Option<SocketAddr>> {
    refusal(reply).or_else(|| hint_after(reply, "NOT_LEADER"))
}

/// `word`, then nothing or one space and an address.
fn hint_after(reply: &str, word: &str) -> Option<Option<SocketAddr>> {
    let rest = reply.strip_prefix(word)?;
    if rest.is_empty() {
        return Some(None);
    }
    Some(rest.strip_prefix(' ')?.trim().parse().ok())
}

/// Whether a reply to a GET is one that carries no value (see
/// [`Outcome::NotServed`]).
pub fn not_served(reply: &str) -> bool {
    matches!(reply, "ERROR" | "REPLICATION_TIMEOUT") || redirect(reply).is_some()
}

/// The key a key index names.
pub fn key_name(key: u32) -> String {
    format!("k{key}")
}

/// The key index back out of a key, `None` if it is not one of ours.
pub fn key_index(name: &str) -> Option<u32> {
    name.strip_prefix('k')?.parse().ok()
}

fn secs(us: u64) -> String {
    format!("{:9.3}", us as f64 / 1e6)
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            Kind::Put(id) => format!("PUT {} {id}", key_name(self.key)),
            Kind::Delete => format!("DELETE {}", key_name(self.key)),
            Kind::Get => format!("GET {}", key_name(self.key)),
        };
        let reply = match &self.outcome {
            Outcome::Ok => "OK".to_string(),
            Outcome::NotFound => "NOT_FOUND".to_string(),
            Outcome::Value(id) => id.to_string(),
            Outcome::ReplicationTimeout => "REPLICATION_TIMEOUT".to_string(),
            Outcome::Refused => "WRITE_NOT_ALLOWED".to_string(),
            Outcome::Failed => "ERROR".to_string(),
            Outcome::Excused => "OK (excused: lost with its leader)".to_string(),
            Outcome::Unknown => "(no reply)".to_string(),
            Outcome::NotServed(text) => format!("{text} (no value)"),
            Outcome::Unexpected(text) => format!("{text:?}"),
        };
        let node = self.node.map_or("?".to_string(), |n| n.to_string());
        let conn = if self.via_leader {
            ""
        } else {
            " (opened as a follower)"
        };
        write!(
            f,
            "[{} .. {}] client {:>5} @node {node}{conn}: {what} -> {reply}",
            secs(self.invoke),
            secs(self.complete),
            self.client
        )
    }
}

/// The run's time base.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Microseconds since the start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_their_write() {
        let id = ValueId { client: 3, n: 41 };
        let text = id.text("abc.def");
        assert_eq!(text, "v3.41.abc.def");
        assert_eq!(ValueId::parse(&text), Some(id));
        assert_eq!(ValueId::parse("v3.41"), None);
        assert_eq!(ValueId::parse("x3.41.a"), None);
        assert_eq!(ValueId::parse("v3.x.a"), None);
        assert_eq!(key_index(&key_name(17)), Some(17));
        assert_eq!(key_index("other"), None);
    }

    #[test]
    fn replies_are_classified() {
        let put = Kind::Put(ValueId { client: 0, n: 1 });
        assert_eq!(Op::classify(put, "OK"), Outcome::Ok);
        assert_eq!(
            Op::classify(put, "REPLICATION_TIMEOUT"),
            Outcome::ReplicationTimeout
        );
        assert_eq!(
            Op::classify(put, "NOT_FOUND"),
            Outcome::Unexpected("NOT_FOUND".into())
        );
        assert_eq!(Op::classify(Kind::Delete, "NOT_FOUND"), Outcome::NotFound);
        assert_eq!(
            Op::classify(Kind::Get, "v1.2.pad"),
            Outcome::Value(ValueId { client: 1, n: 2 })
        );
        // A GET that is not served observed nothing.
        for reply in [
            "ERROR",
            "REPLICATION_TIMEOUT",
            "NOT_LEADER",
            "NOT_LEADER 127.0.0.1:5001",
            "WRITE_NOT_ALLOWED 127.0.0.1:5001",
        ] {
            assert_eq!(
                Op::classify(Kind::Get, reply),
                Outcome::NotServed(reply.into())
            );
        }
        assert_eq!(
            Op::classify(Kind::Get, "NOT_LEADERX"),
            Outcome::Unexpected("NOT_LEADERX".into())
        );
        // To a write, NOT_LEADER is not one of the replies.
        assert_eq!(
            Op::classify(put, "NOT_LEADER"),
            Outcome::Unexpected("NOT_LEADER".into())
        );
        assert_eq!(Op::classify(put, "WRITE_NOT_ALLOWED"), Outcome::Refused);
        assert_eq!(Op::classify(put, "ERROR"), Outcome::Failed);
        assert_eq!(
            Op::classify(Kind::Delete, "WRITE_NOT_ALLOWED 127.0.0.1:5001"),
            Outcome::Refused
        );
        assert_eq!(
            Op::classify(put, "WRITE_NOT_ALLOWEDX"),
            Outcome::Unexpected("WRITE_NOT_ALLOWEDX".into())
        );
    }

    #[test]
    fn refusals_name_the_leader() {
        assert_eq!(refusal("OK"), None);
        assert_eq!(refusal("WRITE_NOT_ALLOWED"), Some(None));
        assert_eq!(
            refusal("WRITE_NOT_ALLOWED 127.0.0.1:5001"),
            Some(Some("127.0.0.1:5001".parse().expect("addr")))
        );
        assert_eq!(refusal("WRITE_NOT_ALLOWED somewhere"), Some(None));
        assert_eq!(refusal("NOT_LEADER"), None);
        assert_eq!(redirect("NOT_LEADER"), Some(None));
        assert_eq!(
            redirect("NOT_LEADER 127.0.0.1:5002"),
            Some(Some("127.0.0.1:5002".parse().expect("addr")))
        );
        assert_eq!(redirect("WRITE_NOT_ALLOWED"), Some(None));
        assert_eq!(redirect("v1.2.pad"), None);
    }
}
