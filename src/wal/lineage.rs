//! Which write histories a log descends from, and where two logs part.
//!
//! A *history* is the run of writes made by one leader process: a leader
//! starts a new one every time it starts, and a follower starts one when it
//! is promoted. A history begins with a fork record in the log (see
//! [`record`](super::record)) saying after which seq it begins and with
//! which epoch; the first history of a log is named in its header. The
//! list of those beginnings is the log's [`Lineage`].
//!
//! Within one history every copy of the record at a given seq is the same
//! record, because one process wrote them all and never took one back (a
//! lost tail ends the process, and its restart forks). A compacted
//! snapshot part holds the same data in other records (one PUT per live
//! key, a batch's keys each with the batch's seq), but no catch-up starts
//! inside it. So two logs hold the same writes up to the point where their
//! lineages part, and
//! [`plan`] can tell a leader, from nothing but the follower's lineage and
//! seq, whether the follower holds a prefix of its log (catch up), holds
//! writes it does not have (the follower must drop them, or refuse), or is
//! unrelated (only a snapshot will do).
//!
//! Pure: no I/O.

use std::fmt;

use super::record::HistoryId;

/// Where one history begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub history: HistoryId,
    /// The leadership term: raised by every promotion, never by a restart.
    pub epoch: u64,
    /// The history's first write has seq `start + 1`.
    pub start: u64,
}

/// Why a list of segments, or a fork added to a lineage, is not a valid
/// sequence of forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineageError {
    /// No segment at all: a lineage begins with the header's history.
    Empty,
    /// A fork after seq `at`, before the current history's `start`.
    SeqBack { at: u64, start: u64 },
    /// A fork to `epoch`, below the current history's `current`.
    EpochBack { epoch: u64, current: u64 },
    /// A fork to a history the lineage already holds.
    HistoryReused(HistoryId),
}

impl fmt::Display for LineageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineageError::Empty => write!(f, "an empty lineage"),
            LineageError::SeqBack { at, start } => write!(
                f,
                "a fork at seq {at} before the current history's start {start}"
            ),
            LineageError::EpochBack { epoch, current } => write!(
                f,
                "a fork to epoch {epoch} below the current epoch {current}"
            ),
            LineageError::HistoryReused(history) => write!(
                f,
                "a fork to history {} which this log already has",
                hex::encode(history)
            ),
        }
    }
}

impl std::error::Error for LineageError {}

/// The histories of one log, oldest first; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    segments: Vec<Segment>,
}

impl Lineage {
    /// The lineage of a log whose header names `history` at `epoch`.
    pub fn new(history: HistoryId, epoch: u64) -> Lineage {
        Lineage {
            segments: vec![Segment {
                history,
                epoch,
                start: 0,
            }],
        }
    }

    /// A lineage from its segments, oldest first.
    ///
    /// # Errors
    /// When the list is empty or not a valid sequence of forks.
    pub fn from_segments(segments: &[Segment]) -> Result<Lineage, LineageError> {
        let (first, rest) = segments.split_first().ok_or(LineageError::Empty)?;
        let mut lineage = Lineage::new(first.history, first.epoch);
        lineage.segments[0].start = first.start;
        for s in rest {
            lineage.fork(s.history, s.epoch, s.start)?;
        }
        Ok(lineage)
    }

    /// The history new writes belong to.
    pub fn current(&self) -> Segment {
        self.segments[self.segments.len() - 1]
    }

    /// All segments, oldest first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Fork records after the header.
    pub fn forks(&self) -> usize {
        self.segments.len() - 1
    }

    /// Begins `history` at `epoch` after seq `at`.
    ///
    /// # Errors
    /// When the fork would go back in seq or epoch, or reuses a history id.
    pub fn fork(&mut self, history: HistoryId, epoch: u64, at: u64) -> Result<(), LineageError> {
        let current = self.current();
        if at < current.start {
            return Err(LineageError::SeqBack {
                at,
                start: current.start,
            });
        }
        if epoch < current.epoch {
            return Err(LineageError::EpochBack {
                epoch,
                current: current.epoch,
            });
        }
        if self.index_of(&history).is_some() {
            return Err(LineageError::HistoryReused(history));
        }
        self.segments.push(Segment {
            history,
            epoch,
            start: at,
        });
        Ok(())
    }

    fn index_of(&self, history: &HistoryId) -> Option<usize> {
        self.segments.iter().position(|s| &s.history == history)
    }

    /// The last seq of segment `i`, in a log whose last seq is `last_seq`.
    fn end_of(&self, i: usize, last_seq: u64) -> u64 {
        self.segments.get(i + 1).map_or(last_seq, |next| next.start)
    }
}

/// How a leader brings a follower up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The follower's log agrees with the leader's through seq `from` and
    /// the follower's first `keep_forks` fork records; it cuts anything
    /// after that, and the leader sends its records after `from`, skipping
    /// its own first `skip_forks` fork records (the follower has them).
    CatchUp {
        from: u64,
        keep_forks: usize,
        skip_forks: usize,
    },
    /// The whole log. `common`: the seq through which the follower's data
    /// agrees with the leader's, or `None` when the two are unrelated.
    Snapshot { common: Option<u64> },
}

/// Decides how the leader (`leader`, its log starting at `base_seq` and
/// committed through `committed_seq`) serves a follower whose log has
/// `follower` and reaches `follower_seq`. The newest history both know
/// is where the logs part.
pub fn plan(
    leader: &Lineage,
    base_seq: u64,
    committed_seq: u64,
    follower: &Lineage,
    follower_seq: u64,
) -> Plan {
    for (j, segment) in follower.segments.iter().enumerate().rev() {
        let Some(i) = leader.index_of(&segment.history) else {
            continue;
        };
        let common = follower
            .end_of(j, follower_seq)
            .min(leader.end_of(i, committed_seq));
        return if common >= base_seq && common <= committed_seq {
            Plan::CatchUp {
                from: common,
                keep_forks: j,
                skip_forks: i,
            }
        } else {
            Plan::Snapshot {
                common: Some(common),
            }
        };
    }
    Plan::Snapshot { common: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage(parts: &[(u8, u64, u64)]) -> Lineage {
        let segments: Vec<Segment> = parts
            .iter()
            .map(|&(h, epoch, start)| Segment {
                history: [h; 16],
                epoch,
                start,
            })
            .collect();
        Lineage::from_segments(&segments).expect("valid lineage")
    }

    #[test]
    fn forks_only_go_forward() {
        let mut l = lineage(&[(1, 1, 0)]);
        assert!(l.fork([2; 16], 1, 10).is_ok());
        assert_eq!(
            l.fork([3; 16], 2, 9),
            Err(LineageError::SeqBack { at: 9, start: 10 }),
            "seq went back"
        );
        assert_eq!(
            l.fork([3; 16], 0, 12),
            Err(LineageError::EpochBack {
                epoch: 0,
                current: 1
            }),
            "epoch went back"
        );
        assert_eq!(
            l.fork([1; 16], 2, 12),
            Err(LineageError::HistoryReused([1; 16])),
            "history reused"
        );
        assert!(l.fork([3; 16], 2, 10).is_ok(), "two forks at one seq");
        assert_eq!(l.current().history, [3; 16]);
        assert_eq!(l.forks(), 2);
        assert_eq!(Lineage::from_segments(&[]), Err(LineageError::Empty));
    }

    #[test]
    fn errors_read_as_before() {
        let shown = [
            LineageError::Empty.to_string(),
            LineageError::SeqBack { at: 9, start: 10 }.to_string(),
            LineageError::EpochBack {
                epoch: 0,
                current: 1,
            }
            .to_string(),
            LineageError::HistoryReused([0xab; 16]).to_string(),
        ];
        assert_eq!(
            shown,
            [
                "an empty lineage",
                "a fork at seq 9 before the current history's start 10",
                "a fork to epoch 0 below the current epoch 1",
                "a fork to history abababababababababababababababab which this log already has",
            ]
        );
    }

    #[test]
    fn a_follower_in_the_current_history_catches_up() {
        let leader = lineage(&[(1, 1, 0)]);
        let follower = lineage(&[(1, 1, 0)]);
        assert_eq!(
            plan(&leader, 0, 50, &follower, 20),
            Plan::CatchUp {
                from: 20,
                keep_forks: 0,
                skip_forks: 0
            }
        );
    }

    #[test]
    fn a_follower_behind_the_compacted_start_gets_a_related_snapshot() {
        let leader = lineage(&[(1, 1, 0)]);
        let follower = lineage(&[(1, 1, 0)]);
        assert_eq!(
            plan(&leader, 30, 50, &follower, 20),
            Plan::Snapshot { common: Some(20) }
        );
    }

    #[test]
    fn unrelated_logs_need_a_snapshot() {
        let leader = lineage(&[(1, 1, 0), (2, 1, 5)]);
        let follower = lineage(&[(9, 1, 0)]);
        assert_eq!(
            plan(&leader, 0, 50, &follower, 7),
            Plan::Snapshot { common: None }
        );
    }

    #[test]
    fn a_follower_of_an_older_history_continues_through_the_fork() {
        // The leader restarted at 40 (or was promoted there).
        let leader = lineage(&[(1, 1, 0), (2, 2, 40)]);
        let follower = lineage(&[(1, 1, 0)]);
        assert_eq!(
            plan(&leader, 0, 50, &follower, 40),
            Plan::CatchUp {
                from: 40,
                keep_forks: 0,
                skip_forks: 0
            }
        );
    }

    #[test]
    fn writes_past_the_fork_point_are_found() {
        // The leader lost its tail after 40 and wrote on; the follower
        // holds 41..=45 of the old history.
        let leader = lineage(&[(1, 1, 0), (2, 1, 40)]);
        let follower = lineage(&[(1, 1, 0)]);
        assert_eq!(
            plan(&leader, 0, 60, &follower, 45),
            Plan::CatchUp {
                from: 40,
                keep_forks: 0,
                skip_forks: 0
            }
        );
    }

    #[test]
    fn an_old_leader_with_its_own_fork_rejoins_at_the_common_point() {
        // Old leader: history 1, restarted at 30 (history 2), wrote to 38.
        // New leader: followed into history 2 up to 35, promoted there.
        let old = lineage(&[(1, 1, 0), (2, 1, 30)]);
        let new = lineage(&[(1, 1, 0), (2, 1, 30), (3, 2, 35)]);
        assert_eq!(
            plan(&new, 0, 70, &old, 38),
            Plan::CatchUp {
                from: 35,
                keep_forks: 1,
                skip_forks: 1
            }
        );
        // An old leader that restarted (history 4) without writing since,
        // against a new leader that never saw history 4.
        let restarted = lineage(&[(1, 1, 0), (4, 1, 20)]);
        let new = lineage(&[(1, 1, 0), (3, 2, 20)]);
        assert_eq!(
            plan(&new, 0, 70, &restarted, 20),
            Plan::CatchUp {
                from: 20,
                keep_forks: 0,
                skip_forks: 0
            }
        );
    }

    #[test]
    fn a_follower_ahead_of_the_leader_in_its_history_is_found() {
        let leader = lineage(&[(1, 1, 0)]);
        let follower = lineage(&[(1, 1, 0)]);
        assert_eq!(
            plan(&leader, 0, 10, &follower, 12),
            Plan::CatchUp {
                from: 10,
                keep_forks: 0,
                skip_forks: 0
            }
        );
    }
}
