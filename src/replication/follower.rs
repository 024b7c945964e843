//! The follower's side: the state of its link to the leader, the rule that
//! decides whether to accept a leader at all, and reconnect backoff. A
//! snapshot being received is a [`wal::snapshot::Receiver`](Receiver).
//!
//! Nothing here owns a socket; the event loop feeds bytes in and sends what
//! it is told.

use std::time::Duration;

use super::session::Session;
use super::wire::{Mode, Plan};
use super::{plausible_epoch, MAX_EPOCH_LEAP};
use crate::wal::record::HistoryId;
use crate::wal::snapshot::Receiver;

/// Where the link to the leader stands.
pub enum LinkState {
    /// Non-blocking connect in progress.
    Connecting,
    /// Sent `HELLO FOLLOWER|<id>:<fnonce>`; expecting `CHALLENGE`.
    AwaitChallenge { fnonce: String },
    /// Sent `AUTH`; expecting `HELLO LEADER`, after which this session
    /// seals both directions.
    AwaitWelcome(Box<Session>),
    /// Sent `SYNC`; expecting `PLAN`.
    AwaitPlan,
    /// Receiving a snapshot (and, after its `END`, waiting for it to be
    /// finished and installed).
    Snapshot(Box<Receiver>),
    /// Receiving live records.
    Streaming,
}

impl LinkState {
    /// Whether bytes on the link are frames rather than lines.
    pub fn is_framed(&self) -> bool {
        matches!(
            self,
            LinkState::AwaitPlan | LinkState::Snapshot(_) | LinkState::Streaming
        )
    }

    /// Whether the loop must leave the link's input unread for now: the
    /// snapshot threads are behind, or the snapshot awaits its install.
    pub fn holds_input(&self) -> bool {
        matches!(self, LinkState::Snapshot(r) if r.holds_input())
    }
}

/// Why a follower turns a leader down (`docs/replication.md`: never throw
/// away data the leader does not have).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The leader's epoch is below one this follower knows: it was deposed.
    StaleEpoch { mine: u64, leader: u64 },
    /// The leader's history is unrelated to this follower's.
    Unrelated { leader: HistoryId },
    /// This follower holds writes `common + 1 ..= mine` that the leader
    /// does not have.
    Diverged { common: u64, mine: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::StaleEpoch { mine, leader } => write!(
                f,
                "the leader is at epoch {leader}, but epoch {mine} exists: it was replaced by a \
                 promotion and must not be followed"
            ),
            Refusal::Unrelated { leader } => write!(
                f,
                "the leader's history {} is unrelated to this node's data (was the leader \
                 started on an empty disk, or is it another cluster?)",
                hex::encode(leader)
            ),
            Refusal::Diverged { common, mine } => write!(
                f,
                "this node holds {} writes (seq {}..={mine}) that the leader does not have; the \
                 two logs agree only through seq {common} (did the leader lose its log tail, or \
                 was this node a leader whose last writes never replicated?)",
                mine - common,
                common + 1
            ),
        }
    }
}

/// What this follower holds, for judging a leader's plan.
#[derive(Debug, Clone, Copy)]
pub struct Holding {
    pub seq: u64,
    pub forks: usize,
    /// The highest epoch this node knows of.
    pub epoch: u64,
    /// The operator asked this node to follow this leader (`FOLLOW`):
    /// writes the leader lacks may be dropped.
    pub may_discard: bool,
}

/// A claim in a leader's plan that cannot be true of this follower, or
/// of any real leader: a protocol error, whatever the plan's other fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadClaim {
    /// An epoch past [`MAX_EPOCH_LEAP`] above the highest this follower
    /// knows.
    EpochLeap { claimed: u64, known: u64 },
    /// A point of agreement after this follower's last write.
    CommonAhead { common: u64, mine: u64 },
    /// More fork records to keep than this follower's log holds.
    ForksAhead { keep: u32, mine: usize },
    /// The leader's own seq below the point it says it continues from.
    SeqBehind { seq: u64, common: u64 },
}

impl std::fmt::Display for BadClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadClaim::EpochLeap { claimed, known } => write!(
                f,
                "epoch {claimed} is more than {MAX_EPOCH_LEAP} above the highest this node knows \
                 ({known})"
            ),
            BadClaim::CommonAhead { common, mine } => write!(
                f,
                "it says the logs agree through seq {common}, but this node's log ends at {mine}"
            ),
            BadClaim::ForksAhead { keep, mine } => write!(
                f,
                "it says to keep {keep} fork records, but this node's log holds {mine}"
            ),
            BadClaim::SeqBehind { seq, common } => write!(
                f,
                "its last seq {seq} is below the seq {common} it continues from"
            ),
        }
    }
}

/// Checks what a plan claims about this follower and about the leader
/// against what this follower knows, before any of it is believed.
///
/// # Errors
/// The first [`BadClaim`].
pub fn check_claims(plan: &Plan, mine: Holding) -> Result<(), BadClaim> {
    if !plausible_epoch(plan.epoch, mine.epoch) {
        return Err(BadClaim::EpochLeap {
            claimed: plan.epoch,
            known: mine.epoch,
        });
    }
    if let Some(common) = plan.common {
        if common > mine.seq {
            return Err(BadClaim::CommonAhead {
                common,
                mine: mine.seq,
            });
        }
        if plan.seq < common {
            return Err(BadClaim::SeqBehind {
                seq: plan.seq,
                common,
            });
        }
    }
    if plan.mode == Mode::CatchUp && plan.keep_forks as usize > mine.forks {
        return Err(BadClaim::ForksAhead {
            keep: plan.keep_forks,
            mine: mine.forks,
        });
    }
    Ok(())
}

/// What accepting a plan does to this follower's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acceptance {
    /// Cut the log back to this seq and this many fork records first.
    pub rewind: Option<(u64, usize)>,
    /// Writes this follower drops (first and last seq).
    pub dropped: Option<(u64, u64)>,
}

/// Accepts a leader's plan unless following it would discard writes this
/// follower holds without the operator asking for it, or the leader was
/// deposed. An empty follower accepts any current leader.
///
/// # Errors
/// The [`Refusal`] to log and show as `leader_link refused`.
pub fn check_plan(plan: &Plan, mine: Holding) -> Result<Acceptance, Refusal> {
    if plan.epoch < mine.epoch {
        return Err(Refusal::StaleEpoch {
            mine: mine.epoch,
            leader: plan.epoch,
        });
    }
    let common = match (plan.mode, plan.common) {
        _ if mine.seq == 0 && plan.mode == Mode::Snapshot => mine.seq,
        (_, Some(common)) => common,
        (_, None) => {
            return Err(Refusal::Unrelated {
                leader: plan.history,
            })
        }
    };
    let dropped = (mine.seq > common).then_some((common + 1, mine.seq));
    if dropped.is_some() && !mine.may_discard {
        return Err(Refusal::Diverged {
            common,
            mine: mine.seq,
        });
    }
    let keep = plan.keep_forks as usize;
    let rewind = (plan.mode == Mode::CatchUp && (dropped.is_some() || mine.forks > keep))
        .then_some((common, keep));
    Ok(Acceptance { rewind, dropped })
}

/// Capped exponential backoff for reconnecting.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

/// First retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt; doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    /// After a link that worked: start small again.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode, epoch: u64, common: Option<u64>, keep_forks: u32) -> Plan {
        Plan {
            mode,
            history: [2; 16],
            epoch,
            seq: 50,
            common,
            keep_forks,
            acks_awaited: false,
            announced: None,
            policy: crate::replication::SyncPolicy::DEFAULT,
        }
    }

    fn holding(seq: u64, forks: usize, may_discard: bool) -> Holding {
        Holding {
            seq,
            forks,
            epoch: 2,
            may_discard,
        }
    }

    #[test]
    fn claims_a_plan_cannot_make_are_protocol_errors() {
        let mine = holding(40, 1, false);
        // What real leaders send passes.
        for ok in [
            plan(Mode::CatchUp, 2, Some(40), 1),
            plan(Mode::CatchUp, 3, Some(10), 0),
            plan(Mode::Snapshot, 2, None, 0),
            plan(Mode::Snapshot, 2 + MAX_EPOCH_LEAP, Some(40), 0),
        ] {
            assert_eq!(check_claims(&ok, mine), Ok(()), "{ok:?}");
        }
        // A forged epoch that would fence the real leader for good, or
        // leave no epoch to promote to.
        for claimed in [3 + MAX_EPOCH_LEAP, 1 << 62, u64::MAX] {
            assert_eq!(
                check_claims(&plan(Mode::Snapshot, claimed, None, 0), mine),
                Err(BadClaim::EpochLeap { claimed, known: 2 })
            );
        }
        // A history this follower does not have: agreement past its end,
        // forks it never had, a leader behind its own continuation point.
        assert_eq!(
            check_claims(&plan(Mode::CatchUp, 2, Some(41), 0), mine),
            Err(BadClaim::CommonAhead {
                common: 41,
                mine: 40
            })
        );
        assert_eq!(
            check_claims(&plan(Mode::Snapshot, 2, Some(41), 0), mine),
            Err(BadClaim::CommonAhead {
                common: 41,
                mine: 40
            })
        );
        assert_eq!(
            check_claims(&plan(Mode::CatchUp, 2, Some(40), 2), mine),
            Err(BadClaim::ForksAhead { keep: 2, mine: 1 })
        );
        let mut behind = plan(Mode::CatchUp, 2, Some(40), 0);
        behind.seq = 39;
        assert_eq!(
            check_claims(&behind, mine),
            Err(BadClaim::SeqBehind {
                seq: 39,
                common: 40
            })
        );
        // The epoch bound saturates instead of wrapping.
        let far = Holding {
            epoch: u64::MAX - 1,
            ..mine
        };
        assert_eq!(
            check_claims(&plan(Mode::Snapshot, u64::MAX, None, 0), far),
            Ok(())
        );
    }

    #[test]
    fn an_empty_follower_accepts_any_current_leader() {
        let accepted = Acceptance {
            rewind: None,
            dropped: None,
        };
        let empty = holding(0, 0, false);
        assert_eq!(
            check_plan(&plan(Mode::Snapshot, 2, None, 0), empty),
            Ok(accepted)
        );
        assert_eq!(
            check_plan(&plan(Mode::Snapshot, 1, None, 0), empty),
            Err(Refusal::StaleEpoch { mine: 2, leader: 1 })
        );
    }

    #[test]
    fn a_follower_with_data_refuses_unrelated_or_shorter_histories() {
        let five = holding(5, 0, false);
        assert!(check_plan(&plan(Mode::CatchUp, 2, Some(5), 0), five).is_ok());
        assert!(check_plan(&plan(Mode::Snapshot, 3, Some(5), 0), five).is_ok());
        assert_eq!(
            check_plan(&plan(Mode::Snapshot, 2, None, 0), five),
            Err(Refusal::Unrelated { leader: [2; 16] })
        );
        assert_eq!(
            check_plan(&plan(Mode::CatchUp, 2, Some(4), 0), five),
            Err(Refusal::Diverged { common: 4, mine: 5 })
        );
        // Even when asked to follow, unrelated data is not wiped.
        assert!(check_plan(&plan(Mode::Snapshot, 2, None, 0), holding(5, 0, true)).is_err());
    }

    #[test]
    fn a_follower_asked_to_follow_rewinds_exactly_its_extra_writes() {
        assert_eq!(
            check_plan(&plan(Mode::CatchUp, 3, Some(40), 1), holding(45, 2, true)),
            Ok(Acceptance {
                rewind: Some((40, 1)),
                dropped: Some((41, 45)),
            })
        );
        assert_eq!(
            check_plan(&plan(Mode::Snapshot, 3, Some(40), 0), holding(45, 0, true)),
            Ok(Acceptance {
                rewind: None,
                dropped: Some((41, 45)),
            })
        );
        // A fork of its own but no extra writes: dropped silently.
        assert_eq!(
            check_plan(&plan(Mode::CatchUp, 3, Some(45), 0), holding(45, 1, false)),
            Ok(Acceptance {
                rewind: Some((45, 0)),
                dropped: None,
            })
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }
}
