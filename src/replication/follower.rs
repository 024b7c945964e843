//! The follower's side: its link to the leader as a state machine, the
//! rule that decides whether to accept a leader's plan at all, and
//! reconnect backoff.
//!
//! ```text
//!  (down) ──dial──▶ Connecting ──connected──▶ Handshake ──welcome──▶ AwaitPlan
//!    ▲                                                                  │ PLAN
//!    │                                            ┌─────── Snapshot ◀───┤
//!    └──── closed: backoff, then dial again ◀──── │ installed           │
//!                                                 └──────▶ Streaming ◀──┘
//! ```
//!
//! [`Link`] is a plain value: the event loop tells it what happened (the
//! socket connected, a line or a frame came, the log made writes durable,
//! a second passed, the connection closed) and does what it answers (send
//! a line, send an `ACK`, close, dial later). The snapshot being received
//! ([`Receiver`](crate::wal::snapshot::Receiver)) and the log are the
//! loop's.

use std::time::{Duration, Instant};

use super::epoch::{plausible_epoch, MAX_EPOCH_LEAP};
use super::handshake::{DialError, Dialed, Dialer};
use super::wire::{Mode, Plan};
use crate::wal::record::HistoryId;

/// Where the link to the leader stands.
#[derive(Debug)]
pub enum Phase {
    /// No connection: dial at `reconnect_at`.
    Down,
    /// Non-blocking connect in progress.
    Connecting,
    /// Sent the hello; the handshake is under way.
    Handshake(Box<Dialer>),
    /// Sent `SYNC`; expecting `PLAN`.
    AwaitPlan,
    /// Receiving a snapshot (and, after its `END`, waiting for it to be
    /// finished and installed).
    Snapshot,
    /// Receiving live records.
    Streaming,
}

/// `leader_link` in `INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    Down,
    Up,
    Refused,
}

/// A follower's link to its leader.
#[derive(Debug)]
pub struct Link {
    /// The loop's key of the connection, while there is one.
    pub key: Option<usize>,
    phase: Phase,
    status: Option<LinkStatus>,
    /// When to dial again.
    pub reconnect_at: Option<Instant>,
    backoff: Backoff,
    /// The leader's last reported seq.
    pub leader_seq: u64,
    /// Last seq acknowledged to the leader.
    acked_sent: u64,
    /// When the leader was last heard from.
    last_heard: Option<Instant>,
    /// The leader waits for this follower's acks (`PLAN`, then `WAIT`).
    pub acks_awaited: bool,
    /// Why the link was last refused, by either side, until it comes up
    /// (`leader_link_error` in `INFO`; a full leader leaves the link down
    /// with this set).
    error: Option<String>,
    /// This node changed leader (`FOLLOW`): until then it neither
    /// acknowledges nor confirms anything to the new one, which keeps the
    /// promise its last `CONFIRM`s made to the old one
    /// ([`LEASE`](super::LEASE)).
    quiet_until: Option<Instant>,
}

/// What the loop does after a handshake line on the link.
#[derive(Debug)]
pub enum HandshakeStep {
    /// Send this line.
    Send(String),
    /// The leader welcomed this follower: begin the session, then send
    /// `SYNC`.
    Welcome(Box<super::session::Session>),
    /// The handshake failed (the link shows why): close.
    Failed(DialError),
}

/// A leader's heartbeat or plan that this follower will not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderError {
    /// An epoch past [`MAX_EPOCH_LEAP`]: a protocol error.
    EpochLeap { claimed: u64, known: u64 },
    /// The leader was deposed: a higher epoch exists. Refused.
    Deposed { leader: u64, known: u64 },
}

impl std::fmt::Display for LeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaderError::EpochLeap { claimed, known } => write!(
                f,
                "a heartbeat claims epoch {claimed}, more than {MAX_EPOCH_LEAP} above the highest \
                 this node knows ({known})"
            ),
            LeaderError::Deposed { leader, known } => write!(
                f,
                "the leader is at epoch {leader}, but epoch {known} exists: it was replaced"
            ),
        }
    }
}

/// What the loop does for the link at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTick {
    Nothing,
    /// The leader has been silent too long: close and reconnect.
    Silent,
    /// Repeat the last acknowledgement (the follower's heartbeat).
    Ack(u64),
}

impl Default for Link {
    fn default() -> Self {
        Link::new(None)
    }
}

impl Link {
    /// A link that dials first at `first_dial`.
    pub fn new(first_dial: Option<Instant>) -> Link {
        Link {
            key: None,
            phase: Phase::Down,
            status: None,
            reconnect_at: first_dial,
            backoff: Backoff::default(),
            leader_seq: 0,
            acked_sent: 0,
            last_heard: None,
            acks_awaited: false,
            error: None,
            quiet_until: None,
        }
    }

    /// Whether the link keeps quiet at `now` (see [`Link::restart`]).
    fn quiet(&self, now: Instant) -> bool {
        self.quiet_until.is_some_and(|until| now < until)
    }

    /// When the quiet after a change of leader ends, if it has not yet.
    pub fn quiet_until(&self, now: Instant) -> Option<Instant> {
        self.quiet_until.filter(|_| self.quiet(now))
    }

    /// `PROBE round` from the leader: the round to confirm at once, or
    /// `None` while the link keeps quiet.
    pub fn on_probe(&mut self, round: u64, now: Instant) -> Option<u64> {
        (!self.quiet(now)).then_some(round)
    }

    /// The link's phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// `leader_link` for `INFO`: `None` before the first attempt.
    pub fn status(&self) -> Option<LinkStatus> {
        self.status
    }

    /// Why the link is not up, if known.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Whether connection `key` is the current link. A link replaced by
    /// `FOLLOW` or `PROMOTE` stays open until the end of the loop turn;
    /// what it still brings is ignored, and its close changes nothing.
    pub fn is_current(&self, key: usize) -> bool {
        self.key == Some(key)
    }

    /// Whether bytes on the link are frames rather than lines.
    pub fn is_framed(&self) -> bool {
        matches!(
            self.phase,
            Phase::AwaitPlan | Phase::Snapshot | Phase::Streaming
        )
    }

    /// Whether it is time to dial (no link, and the backoff passed).
    pub fn due(&self, now: Instant) -> bool {
        self.key.is_none() && self.reconnect_at.is_some_and(|at| now >= at)
    }

    /// A dial could not start (no address yet, connect refused): try again
    /// after the backoff. `retry_soon` instead polls again at that time
    /// without backing off (a name lookup in progress).
    pub fn dial_failed(&mut self, now: Instant, retry_soon: Option<Duration>) {
        let delay = retry_soon.unwrap_or_else(|| self.backoff.next_delay());
        self.reconnect_at = Some(now + delay);
    }

    /// A non-blocking connect started on connection `key`.
    pub fn dialling(&mut self, key: usize, now: Instant) {
        self.key = Some(key);
        self.reconnect_at = None;
        self.phase = Phase::Connecting;
        self.last_heard = Some(now);
    }

    /// The socket connected: the hello to send.
    pub fn connected(&mut self, id: u32) -> String {
        let dialer = Dialer::follower(id);
        let hello = dialer.hello();
        self.phase = Phase::Handshake(Box::new(dialer));
        hello
    }

    /// A line from the leader during the handshake (without its newline).
    pub fn on_line(&mut self, secret: &[u8], line: &str) -> HandshakeStep {
        let Phase::Handshake(dialer) = &mut self.phase else {
            return HandshakeStep::Failed(DialError::Refused {
                word: line.to_string(),
                detail: String::new(),
            });
        };
        match dialer.on_line(secret, line) {
            Ok(Dialed::Auth(line)) => HandshakeStep::Send(line),
            Ok(Dialed::Welcome(session)) => {
                self.phase = Phase::AwaitPlan;
                HandshakeStep::Welcome(session)
            }
            Err(e) => {
                if e.is_transient() {
                    // Room may free up: the link is down, not refused.
                    self.error = Some(e.to_string());
                } else {
                    self.refused(e.to_string());
                }
                HandshakeStep::Failed(e)
            }
        }
    }

    /// Any frame from the leader: it is alive.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
    }

    /// The leader's plan was taken: the link is up, in the plan's mode.
    /// `durable` is this follower's durable seq, acknowledged first on a
    /// catch-up (0 for a snapshot). Returns the seq to acknowledge now.
    pub fn up(&mut self, plan: &Plan, durable: u64) -> u64 {
        self.leader_seq = plan.seq;
        self.acks_awaited = plan.acks_awaited;
        self.status = Some(LinkStatus::Up);
        self.error = None;
        self.backoff.reset();
        let ack = match plan.mode {
            Mode::CatchUp => {
                self.phase = Phase::Streaming;
                durable
            }
            Mode::Snapshot => {
                self.phase = Phase::Snapshot;
                0
            }
        };
        self.acked_sent = ack;
        ack
    }

    /// The snapshot through `seq` was installed: the stream follows. The
    /// seq to acknowledge.
    pub fn installed(&mut self, seq: u64) -> u64 {
        self.phase = Phase::Streaming;
        self.acked_sent = seq;
        seq
    }

    /// Records through `seq` came in the stream.
    pub fn received(&mut self, seq: u64) {
        self.leader_seq = self.leader_seq.max(seq);
    }

    /// The log made writes through `seq` durable: the seq to acknowledge,
    /// if the stream runs, it is news, and the link does not keep quiet.
    pub fn durable(&mut self, seq: u64, now: Instant) -> Option<u64> {
        let news = matches!(self.phase, Phase::Streaming) && seq > self.acked_sent;
        (news && !self.quiet(now)).then(|| {
            self.acked_sent = seq;
            seq
        })
    }

    /// A heartbeat: the leader's seq and epoch, against the highest epoch
    /// this follower knows.
    ///
    /// # Errors
    /// An implausible epoch (protocol error), or a deposed leader (the
    /// link is marked refused).
    pub fn on_heartbeat(&mut self, seq: u64, epoch: u64, known: u64) -> Result<(), LeaderError> {
        if !plausible_epoch(epoch, known) {
            return Err(LeaderError::EpochLeap {
                claimed: epoch,
                known,
            });
        }
        self.leader_seq = seq;
        if epoch < known {
            let e = LeaderError::Deposed {
                leader: epoch,
                known,
            };
            self.refused(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Once a second.
    pub fn tick(&self, now: Instant, timeout: Duration) -> LinkTick {
        if self
            .last_heard
            .is_some_and(|t| now.duration_since(t) > timeout)
        {
            return LinkTick::Silent;
        }
        match self.phase {
            _ if self.quiet(now) => LinkTick::Nothing,
            Phase::Streaming | Phase::Snapshot => LinkTick::Ack(self.acked_sent),
            _ => LinkTick::Nothing,
        }
    }

    /// Marks the link refused (by the leader, or by this follower's own
    /// checks) for `why`, as `INFO` shows it.
    pub fn refused(&mut self, why: String) {
        self.status = Some(LinkStatus::Refused);
        self.error = Some(why);
    }

    /// The current link's connection closed. Returns whether the link had
    /// been up (the loss is worth a warning); dials again after the
    /// backoff.
    pub fn closed(&mut self, now: Instant) -> bool {
        let was_up = self.status == Some(LinkStatus::Up);
        self.key = None;
        self.phase = Phase::Down;
        if self.status != Some(LinkStatus::Refused) {
            self.status = Some(LinkStatus::Down);
        }
        self.reconnect_at = Some(now + self.backoff.next_delay());
        was_up
    }

    /// The node was re-pointed (`FOLLOW`): a fresh link, dialled at once,
    /// that keeps quiet for [`LEASE`](super::LEASE): the old leader may
    /// still answer reads on the strength of this node's last `CONFIRM`.
    /// Returns the old connection, to close.
    pub fn restart(&mut self, now: Instant) -> Option<usize> {
        let old = self.key.take();
        *self = Link::new(Some(now));
        self.status = Some(LinkStatus::Down);
        self.quiet_until = Some(now + super::LEASE);
        old
    }

    /// The node stopped following (`PROMOTE`). Returns the old connection,
    /// to close.
    pub fn stop(&mut self) -> Option<usize> {
        let old = self.key.take();
        *self = Link::new(None);
        old
    }

    /// Whether the link is up (`INFO master_link_status`, `ROLE`).
    pub fn is_up(&self) -> bool {
        self.status == Some(LinkStatus::Up)
    }

    /// `INFO` lines about the link.
    pub fn info(&self, lines: &mut Vec<String>, last_seq: u64) {
        let status = match self.status {
            Some(LinkStatus::Up) => "up",
            Some(LinkStatus::Refused) => "refused",
            _ => "down",
        };
        lines.push(format!("leader_link {status}"));
        if let (false, Some(why)) = (self.status == Some(LinkStatus::Up), &self.error) {
            lines.push(format!("leader_link_error {}", one_line(why)));
        }
        lines.push(format!("leader_seq {}", self.leader_seq));
        lines.push(format!(
            "acks_awaited {}",
            if self.acks_awaited { "yes" } else { "no" }
        ));
        lines.push(format!("lag {}", self.leader_seq.saturating_sub(last_seq)));
    }
}

/// `text` on one line, for an `INFO` value.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why a follower turns a leader's plan down: it never throws away data
/// the leader does not have unless an operator said so
/// (`docs/replication.md`).
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

    const SECRET: &[u8] = b"secret";

    /// Plays the leader's side of the handshake for `link`'s hello; the
    /// challenge line and what checks the follower's answer.
    fn leader_challenge(hello: &str) -> (crate::replication::handshake::Challenged, String) {
        let rest = hello
            .trim_end()
            .strip_prefix("HELLO FOLLOWER|")
            .expect("hello");
        let (id, nonce) = rest.split_once(':').expect("id:nonce");
        let (challenged, line) = crate::replication::handshake::challenge_follower(
            Some(SECRET),
            id.as_bytes(),
            nonce.as_bytes(),
        )
        .expect("challenge");
        (challenged, line.trim_end().to_string())
    }

    /// A link through its handshake to `AwaitPlan`.
    fn link_awaiting_plan(now: Instant) -> Link {
        let mut link = Link::new(Some(now));
        assert!(link.due(now));
        link.dialling(3, now);
        assert!(!link.due(now), "one link at a time");
        let hello = link.connected(2);
        let (challenged, line) = leader_challenge(&hello);
        let HandshakeStep::Send(auth) = link.on_line(SECRET, &line) else {
            panic!("no AUTH");
        };
        challenged
            .answer(SECRET, auth.trim_end().as_bytes())
            .expect("the follower's proof");
        assert!(!link.is_framed());
        assert!(matches!(
            link.on_line(SECRET, "HELLO LEADER"),
            HandshakeStep::Welcome(_)
        ));
        assert!(link.is_framed(), "frames after the welcome");
        link
    }

    #[test]
    fn a_link_comes_up_on_a_plan_and_acks_only_news() {
        let now = Instant::now();
        let mut link = link_awaiting_plan(now);
        assert_eq!(link.status(), None);
        let catch_up = plan(Mode::CatchUp, 2, Some(40), 0);
        assert_eq!(link.up(&catch_up, 40), 40, "acks what it holds");
        assert_eq!(link.status(), Some(LinkStatus::Up));
        assert_eq!(link.durable(40, now), None);
        assert_eq!(link.durable(45, now), Some(45));
        assert_eq!(link.durable(45, now), None);
        link.received(60);
        assert_eq!(link.leader_seq, 60);
        assert_eq!(link.tick(now, Duration::from_secs(5)), LinkTick::Ack(45));
    }

    #[test]
    fn a_snapshot_link_acks_nothing_until_the_install() {
        let now = Instant::now();
        let mut link = link_awaiting_plan(now);
        assert_eq!(link.up(&plan(Mode::Snapshot, 2, None, 0), 0), 0);
        assert!(matches!(link.phase(), Phase::Snapshot));
        assert_eq!(link.durable(10, now), None, "the log is being replaced");
        assert_eq!(link.installed(50), 50);
        assert_eq!(link.durable(50, now), None);
        assert_eq!(link.durable(51, now), Some(51));
    }

    #[test]
    fn a_silent_leader_is_dropped_and_redialled_after_the_backoff() {
        let now = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut link = link_awaiting_plan(now);
        link.up(&plan(Mode::CatchUp, 2, Some(40), 0), 40);
        assert_eq!(
            link.tick(now + Duration::from_secs(6), timeout),
            LinkTick::Silent
        );
        let later = now + Duration::from_secs(6);
        assert!(link.closed(later), "it was up: the loss is news");
        assert_eq!(link.status(), Some(LinkStatus::Down));
        assert!(!link.due(later));
        assert!(link.due(later + BACKOFF_MIN));
        // Attempts that fail back off further, to the cap.
        for _ in 0..10 {
            link.dial_failed(later, None);
        }
        assert_eq!(link.reconnect_at, Some(later + BACKOFF_MAX));
        // A name lookup in progress is polled without backing off.
        link.dial_failed(later, Some(Duration::from_millis(20)));
        assert_eq!(link.reconnect_at, Some(later + Duration::from_millis(20)));
    }

    #[test]
    fn a_deposed_or_impostor_leader_leaves_the_link_refused_with_the_reason() {
        let now = Instant::now();
        let mut link = link_awaiting_plan(now);
        link.up(&plan(Mode::CatchUp, 2, Some(40), 0), 40);
        assert_eq!(link.on_heartbeat(70, 2, 2), Ok(()));
        assert_eq!(link.leader_seq, 70);
        assert_eq!(
            link.on_heartbeat(70, 2, 3),
            Err(LeaderError::Deposed {
                leader: 2,
                known: 3
            })
        );
        assert_eq!(link.status(), Some(LinkStatus::Refused));
        assert!(!link.closed(now), "refused, not lost");
        assert_eq!(
            link.status(),
            Some(LinkStatus::Refused),
            "until it comes up"
        );
        let mut info = Vec::new();
        link.info(&mut info, 40);
        assert!(
            info.iter()
                .any(|l| l.starts_with("leader_link_error the leader is at epoch 2")),
            "{info:?}"
        );
        // A forged epoch is a protocol error, and is not taken as a seq.
        assert!(matches!(
            link.on_heartbeat(99, u64::MAX, 3),
            Err(LeaderError::EpochLeap { .. })
        ));
        assert_eq!(link.leader_seq, 70);

        // An impostor that cannot prove the secret.
        let mut link = Link::new(Some(now));
        link.dialling(4, now);
        let _ = link.connected(2);
        let forged = format!("CHALLENGE {} {}", "0".repeat(32), "ab".repeat(32));
        assert!(matches!(
            link.on_line(SECRET, &forged),
            HandshakeStep::Failed(DialError::Impostor)
        ));
        assert_eq!(link.status(), Some(LinkStatus::Refused));
    }

    #[test]
    fn a_full_leader_leaves_the_link_down_with_the_reason() {
        let now = Instant::now();
        let mut link = Link::new(Some(now));
        link.dialling(4, now);
        let _ = link.connected(2);
        assert!(matches!(
            link.on_line(SECRET, "MAX_SIZE_EXCEEDED"),
            HandshakeStep::Failed(_)
        ));
        assert!(!link.closed(now));
        assert_eq!(link.status(), Some(LinkStatus::Down));
        assert!(link
            .error()
            .is_some_and(|e| e.contains("maximum number of followers")));
    }

    #[test]
    fn re_pointing_closes_the_old_link_and_dials_at_once() {
        let now = Instant::now();
        let mut link = link_awaiting_plan(now);
        link.refused("earlier".into());
        assert_eq!(link.restart(now), Some(3));
        assert_eq!(link.status(), Some(LinkStatus::Down));
        assert_eq!(link.error(), None);
        assert!(link.due(now));
        assert!(!link.is_current(3), "the old connection's close is ignored");
        assert_eq!(link.stop(), None);
        assert!(!link.due(now), "a leader dials no one");
    }

    #[test]
    fn a_re_pointed_link_helps_its_new_leader_only_after_the_lease() {
        let now = Instant::now();
        let mut link = link_awaiting_plan(now);
        link.up(&plan(Mode::CatchUp, 2, Some(40), 0), 40);
        assert_eq!(link.on_probe(7, now), Some(7), "confirms its leader");
        link.restart(now);
        let mut link2 = link_awaiting_plan(now);
        // The same node re-pointed: the fresh link keeps the quiet.
        link2.quiet_until = link.quiet_until;
        link2.up(&plan(Mode::CatchUp, 3, Some(40), 0), 40);
        assert_eq!(link2.on_probe(1, now), None);
        assert_eq!(link2.durable(41, now), None);
        assert_eq!(link2.tick(now, Duration::from_secs(5)), LinkTick::Nothing);
        assert_eq!(link2.quiet_until(now), Some(now + super::super::LEASE));
        let later = now + super::super::LEASE;
        assert_eq!(link2.on_probe(2, later), Some(2));
        assert_eq!(link2.durable(41, later), Some(41));
        assert_eq!(link2.quiet_until(later), None);
    }
}
