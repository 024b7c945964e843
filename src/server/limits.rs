//! Output limits: how much unread reply memory one client connection, and
//! all client connections together, may hold; whether a connection may take
//! its next request, or start a query whose reply is not built yet.
//!
//! Pure: numbers in, decisions out. The loop keeps the books (it tells
//! [`Budget::update`] whenever a connection's unread output changes) and
//! asks before each request line. "Unread output" is everything a
//! connection owes its peer and holds in memory: replies released but not
//! yet written, replies held for a commit, and, for each query (`KEYS`,
//! `DIGEST`) still computing, a reservation for its largest possible
//! reply. Reserving before the reply is built is what makes a pipelined
//! `KEYS` cost its reply's size at once, not zero until it comes in.
//!
//! Followers and the link to a leader are not counted: their feed has
//! bounds of its own, and pausing replication for slow clients would only
//! make followers lag.

use super::conn::{Peer, OUTPUT_HIGH};

/// Whether a connection's output counts against the client budget.
pub fn counts(kind: &Peer) -> bool {
    !matches!(kind, Peer::Follower(_) | Peer::Leader)
}

/// The books of unread client output, and the limits they are held to.
#[derive(Debug)]
pub struct Budget {
    /// `--max-output-bytes`: one connection's unread output.
    conn_max: usize,
    /// `--max-output-total-bytes`: all client connections' together.
    total_max: usize,
    /// Unread output of all client connections, as last booked.
    total: usize,
    /// Client connections with some unread output.
    holders: usize,
    /// Connections whose input is paused for output (for `INFO`), as the
    /// loop last counted them.
    pub paused: usize,
}

impl Budget {
    /// Empty books for these limits.
    pub fn new(conn_max: usize, total_max: usize) -> Budget {
        Budget {
            conn_max,
            total_max,
            total: 0,
            holders: 0,
            paused: 0,
        }
    }

    /// Unread output of all client connections.
    pub fn total(&self) -> usize {
        self.total
    }

    /// `--max-output-bytes`.
    pub fn conn_max(&self) -> usize {
        self.conn_max
    }

    /// A connection's unread output went from `old` to `new` bytes.
    pub fn update(&mut self, old: usize, new: usize) {
        self.total = self.total.saturating_sub(old).saturating_add(new);
        match (old > 0, new > 0) {
            (false, true) => self.holders += 1,
            (true, false) => self.holders = self.holders.saturating_sub(1),
            _ => {}
        }
    }

    /// Unread output at which a client connection stops taking requests:
    /// [`OUTPUT_HIGH`], or the connection limit if lower. Ordinary replies
    /// are small next to the limit, so they pause input early; only a query
    /// reply can take a connection near `--max-output-bytes`.
    pub fn pause_at(&self) -> usize {
        OUTPUT_HIGH.min(self.conn_max)
    }

    /// A fair share of the global budget: the budget over the number of
    /// connections holding output.
    fn share(&self) -> usize {
        self.total_max / self.holders.max(1)
    }

    /// Whether a connection holding `mine` must stop taking requests for
    /// the global budget: the total is past it and this connection holds
    /// at least its share, so it is among those holding the most.
    /// Connections below their share go on, and one that holds nothing
    /// always does (even when the share rounds down to nothing), so a
    /// fresh client is served.
    pub fn over_share(&self, mine: usize) -> bool {
        self.total > self.total_max && mine > 0 && mine >= self.share()
    }

    /// Whether a connection holding `mine` may start a query whose reply
    /// is at most `reserve` bytes; if not, the request waits unread.
    ///
    /// Per connection: while the reservation fits under
    /// `--max-output-bytes`, or the connection holds nothing (a reply
    /// bigger than the limit on its own is caught when it comes in).
    /// Globally: while it fits in the budget, or the connection holds
    /// nothing. A client that reads its replies is never starved by others
    /// that do not; past the budget each connection gets at most the one
    /// reply, and then holds the most and pauses.
    pub fn admit_query(&self, mine: usize, reserve: usize) -> bool {
        if mine == 0 {
            return true;
        }
        mine.saturating_add(reserve) <= self.conn_max
            && self.total.saturating_add(reserve) <= self.total_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_books_follow_updates_and_closes() {
        let mut b = Budget::new(4 * MIB, 16 * MIB);
        b.update(0, 100);
        b.update(0, 50);
        b.update(100, 300);
        assert_eq!((b.total(), b.holders), (350, 2));
        b.update(50, 0);
        assert_eq!((b.total(), b.holders), (300, 1));
        b.update(300, 0);
        assert_eq!((b.total(), b.holders), (0, 0));
        // Never below zero, even if booked twice.
        b.update(300, 0);
        assert_eq!((b.total(), b.holders), (0, 0));
    }

    #[test]
    fn input_pauses_early_for_ordinary_replies() {
        assert_eq!(Budget::new(64 * MIB, 256 * MIB).pause_at(), OUTPUT_HIGH);
        assert_eq!(Budget::new(64 << 10, 256 * MIB).pause_at(), 64 << 10);
    }

    #[test]
    fn over_the_budget_only_the_biggest_holders_pause() {
        let mut b = Budget::new(64 * MIB, 10 * MIB);
        b.update(0, 9 * MIB);
        b.update(0, MIB);
        assert!(!b.over_share(9 * MIB), "at the budget, not past it");
        b.update(MIB, 2 * MIB);
        // 11 MiB held by two: the share is 5 MiB.
        assert!(b.over_share(9 * MIB));
        assert!(!b.over_share(2 * MIB));
        assert!(!b.over_share(0), "a fresh client is served");
        // More holders than bytes in the budget: the share is zero.
        let mut tiny = Budget::new(4096, 4096);
        for _ in 0..5000 {
            tiny.update(0, 1);
        }
        assert!(tiny.over_share(1));
        assert!(!tiny.over_share(0));
        b.update(9 * MIB, 7 * MIB);
        assert!(!b.over_share(7 * MIB), "drained under the budget: resume");
    }

    #[test]
    fn a_query_reserves_its_reply_against_the_connection_limit() {
        let b = Budget::new(4 * MIB, 256 * MIB);
        assert!(b.admit_query(0, MIB));
        assert!(b.admit_query(3 * MIB, MIB));
        assert!(!b.admit_query(3 * MIB + 1, MIB));
        // Bigger than the limit on its own: only with nothing else owed.
        assert!(b.admit_query(0, 10 * MIB));
        assert!(!b.admit_query(1, 10 * MIB));
    }

    #[test]
    fn past_the_budget_a_query_waits_unless_its_connection_owes_nothing() {
        let mut b = Budget::new(64 * MIB, 10 * MIB);
        b.update(0, 9 * MIB);
        assert!(b.admit_query(100, MIB - 100));
        assert!(!b.admit_query(100, MIB + 1));
        assert!(!b.admit_query(9 * MIB, 2 * MIB));
        assert!(b.admit_query(0, 2 * MIB), "a fresh client is served");
        b.update(0, 2 * MIB);
        assert!(!b.admit_query(2 * MIB, 2 * MIB), "and then pauses");
        b.update(9 * MIB, 0);
        assert!(b.admit_query(2 * MIB, 2 * MIB), "drained: room again");
    }
}
