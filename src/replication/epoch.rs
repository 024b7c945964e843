//! Epochs as news: every promotion starts a history one epoch above any
//! the promoted node knew, and every message between nodes carries the
//! highest epoch its sender knows. A leader that hears of a higher epoch
//! than its own was replaced, and stops taking writes (it is fenced).
//!
//! A peer's claim is believed only within [`MAX_EPOCH_LEAP`] of what this
//! node knows: learned, a forged `u64::MAX` would fence the real leader
//! for good and leave no epoch to promote to.

/// How far above the highest epoch a node knows a peer's epoch may be.
/// Each promotion adds one, so a real cluster never comes near; a claim
/// past it (2^62, `u64::MAX`) is a protocol error, never learned.
pub const MAX_EPOCH_LEAP: u64 = 1 << 16;

/// Whether `epoch`, claimed by a peer, is within [`MAX_EPOCH_LEAP`] of
/// `known`, the highest epoch this node knows.
pub fn plausible_epoch(epoch: u64, known: u64) -> bool {
    epoch <= known.saturating_add(MAX_EPOCH_LEAP)
}

/// What news of an epoch means for this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochNews {
    /// Nothing new.
    Known,
    /// A higher epoch, to remember (and persist).
    Learned,
    /// A higher epoch, and this node is a writable leader: another node
    /// was promoted, so this one must stop taking writes.
    Deposed,
}

/// A claimed epoch too far above any this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochLeap {
    pub claimed: u64,
    pub known: u64,
}

impl std::fmt::Display for EpochLeap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {} is more than {MAX_EPOCH_LEAP} above the highest this node knows ({}); not \
             believed",
            self.claimed, self.known
        )
    }
}

/// Judges `claimed`, heard from a peer, against `known`, the highest epoch
/// this node knows; `writable_leader` says whether it takes writes now.
///
/// # Errors
/// [`EpochLeap`] for an implausible claim: nothing is learned from it.
pub fn judge(claimed: u64, known: u64, writable_leader: bool) -> Result<EpochNews, EpochLeap> {
    if !plausible_epoch(claimed, known) {
        return Err(EpochLeap { claimed, known });
    }
    Ok(match (claimed > known, writable_leader) {
        (false, _) => EpochNews::Known,
        (true, false) => EpochNews::Learned,
        (true, true) => EpochNews::Deposed,
    })
}

/// The epoch a promotion starts: one above the highest known.
///
/// # Errors
/// `None` when no epoch is left above it.
pub fn next(known: u64) -> Option<u64> {
    known.checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_that_hears_of_a_higher_epoch_is_deposed() {
        assert_eq!(judge(3, 2, true), Ok(EpochNews::Deposed));
        assert_eq!(judge(3, 2, false), Ok(EpochNews::Learned));
        // Its own epoch, or an older one (a deposed peer), changes nothing.
        assert_eq!(judge(2, 2, true), Ok(EpochNews::Known));
        assert_eq!(judge(1, 2, true), Ok(EpochNews::Known));
    }

    #[test]
    fn implausible_epochs_are_refused_without_wrapping() {
        let leap = 2 + MAX_EPOCH_LEAP;
        assert_eq!(judge(leap, 2, true), Ok(EpochNews::Deposed));
        for claimed in [leap + 1, 1 << 62, u64::MAX] {
            assert_eq!(
                judge(claimed, 2, true),
                Err(EpochLeap { claimed, known: 2 })
            );
        }
        assert_eq!(judge(u64::MAX, u64::MAX - 1, false), Ok(EpochNews::Learned));
        assert_eq!(next(u64::MAX), None);
        assert_eq!(next(4), Some(5));
    }
}
