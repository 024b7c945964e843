//! The checker: pure logic over the recorded history and what each node
//! holds at the end. No IO; every rule is unit-tested below.
//!
//! Each key is a register, and a value names the PUT that wrote it. An
//! observation of a key (a GET on the leader during the run, or a node's
//! final contents) must come from a *source*: a PUT of that value, a
//! DELETE (for "absent"), or the initial empty state. The source is
//! allowed unless an acknowledged write to the same key was invoked after
//! the source completed and completed before the observation was invoked;
//! that write would have replaced it. Writes without an acknowledgement
//! (`REPLICATION_TIMEOUT`, no reply) count as completing at the end of
//! time: they may or may not have happened, so they never rule anything
//! out, but they can be sources.
//!
//! For a node's final contents the observation time is "after everything",
//! so every acknowledged write counts: a lost acknowledged write is a key
//! whose final value comes from a write that an acknowledged write
//! followed. The checker also wants equal `DIGEST`s on every node, each
//! `DIGEST` equal to the digest of the values read, no keys outside the
//! workload's (the MSET group's keys are [`crate::mset`]'s to check), and
//! no unexpected replies.
//!
//! Failovers move the leadership. A [`Failover`] says when the nemesis
//! began it (before it killed or fenced the old leader) and when it ended
//! (every surviving node re-pointed), so each node has *eras*: from the
//! start of the failover that promoted it to the end of the one that
//! replaced it. The checker then asserts:
//! - every acknowledged write was answered by a node in one of its eras
//!   (overlapping the write's invoke..complete window): after a failover
//!   completed, the old leader acknowledges nothing;
//! - every `INFO` sample showing `role leader` and `writes ok` lies in an
//!   era of that node, and no two nodes ever showed that at one epoch;
//! - reads are held to the freshness rule only when the node answering was
//!   the sole possible leader for the whole read (unless reads are held to
//!   linearizability, below);
//! - the promoted node's contents when it was promoted after a loss hold
//!   every write acknowledged before the loss. In async mode
//!   [`excuse_lost_writes`] first marks exactly the writes the lost leader
//!   acknowledged that the promoted node did not have as
//!   [`Outcome::Excused`], so they are the only ones allowed to vanish.
//!
//! With [`Rules::linearizable_reads`] (sync mode only: there, no
//! acknowledged write may be lost, so no excuse is needed) every key's
//! history must be linearizable ([`crate::linear`]): every write, every
//! GET sent on a connection opened to a node that said it was a leader
//! taking writes, whichever node that was and whenever, failovers
//! included, and the final contents of the leader as one last read.
//! Acknowledged writes took effect between invocation and reply; writes
//! without an acknowledgement (no reply, `REPLICATION_TIMEOUT`, `ERROR`
//! from a leader stepping down) at any time after their invocation, or
//! never; refused writes never. GETs answered without a value (see
//! [`Outcome::NotServed`]) observed nothing. Those reads then skip the
//! freshness rule; GETs on connections opened to followers keep it. A key
//! the search cannot decide within its bounds fails the run.

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::history::{key_index, key_name, Kind, Op, Outcome, ValueId};
use crate::linear::{self, Action, Ending, Event, Limits, Verdict};
use crate::mset;

/// What one node holds at the end.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// For the report, e.g. `leader` or `follower 3`.
    pub name: String,
    /// Every key and its value, from `KEYS` and `GET`.
    pub data: BTreeMap<String, String>,
    /// The node's `DIGEST` reply.
    pub digest: String,
    /// Whether it leads at the end.
    pub leader: bool,
}

/// Which rules the reads are held to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// Hold every read on a connection opened to a leader to
    /// linearizability (sync mode).
    pub linearizable_reads: bool,
    /// Bounds on the search for each key.
    pub limits: Limits,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The workload key involved, if any.
    pub key: Option<u32>,
    /// When the trouble shows (µs): the bad read, or the acknowledged
    /// write that should have won; the history is printed around it.
    pub at: u64,
    pub what: String,
}

/// The acknowledged writes of one key, ordered by completion, with the
/// running maximum of their invocation times.
struct Acked<'a> {
    by_complete: Vec<&'a Op>,
    /// `max_invoke[i]` is the op with the latest invoke among
    /// `by_complete[..=i]`.
    max_invoke: Vec<&'a Op>,
}

impl<'a> Acked<'a> {
    fn new(ops: &[&'a Op]) -> Acked<'a> {
        let mut by_complete: Vec<&Op> =
            ops.iter().copied().filter(|o| o.is_acked_write()).collect();
        by_complete.sort_by_key(|o| o.complete);
        let mut max_invoke: Vec<&Op> = Vec::with_capacity(by_complete.len());
        for &op in &by_complete {
            let best = match max_invoke.last() {
                Some(&prev) if prev.invoke >= op.invoke => prev,
                _ => op,
            };
            max_invoke.push(best);
        }
        Acked {
            by_complete,
            max_invoke,
        }
    }

    /// The acknowledged write that completed before `t` and was invoked
    /// last, if any.
    fn latest_before(&self, t: u64) -> Option<&'a Op> {
        let n = self.by_complete.partition_point(|o| o.complete < t);
        n.checked_sub(1).map(|i| self.max_invoke[i])
    }

    /// The acknowledged write that rules out a source completed at
    /// `source_complete` for an observation invoked at `t`, if any.
    fn overwriter(&self, source_complete: u64, t: u64) -> Option<&'a Op> {
        self.latest_before(t)
            .filter(|a| source_complete != u64::MAX && a.invoke > source_complete)
    }
}

/// When `op` took effect for the rule: its completion if acknowledged,
/// the end of time otherwise.
fn completion(op: &Op) -> u64 {
    if op.is_acked_write() {
        op.complete
    } else {
        u64::MAX
    }
}

/// What one key's history allows. Refused writes (`WRITE_NOT_ALLOWED`)
/// never took effect, so they are no source.
struct KeyRules<'a> {
    key: u32,
    puts: HashMap<ValueId, &'a Op>,
    deletes: Vec<&'a Op>,
    acked: Acked<'a>,
}

impl<'a> KeyRules<'a> {
    fn new(key: u32, ops: &[&'a Op]) -> KeyRules<'a> {
        let mut puts = HashMap::new();
        let mut deletes = Vec::new();
        for &op in ops {
            match op.kind {
                Kind::Put(id) => {
                    puts.insert(id, op);
                }
                Kind::Delete if op.outcome != Outcome::Refused => deletes.push(op),
                Kind::Delete | Kind::Get => {}
            }
        }
        KeyRules {
            key,
            puts,
            deletes,
            acked: Acked::new(ops),
        }
    }

    /// Checks an observation of `seen` (`None` = absent) over the interval
    /// `[invoke, complete]`; `Err` says what is wrong, and when the write
    /// that should have won was sent.
    fn check(
        &self,
        seen: Option<ValueId>,
        invoke: u64,
        complete: u64,
    ) -> Result<(), (String, u64)> {
        let key = key_name(self.key);
        match seen {
            Some(id) => {
                let Some(put) = self.puts.get(&id) else {
                    return Err((format!("{key} = {id}, which no PUT to {key} wrote"), invoke));
                };
                if put.outcome == Outcome::Refused {
                    return Err((
                        format!("{key} = {id}, but its PUT was refused ({put})"),
                        put.invoke,
                    ));
                }
                if put.invoke >= complete {
                    return Err((
                        format!("{key} = {id} was seen before its PUT was sent ({put})"),
                        put.invoke,
                    ));
                }
                match self.acked.overwriter(completion(put), invoke) {
                    None => Ok(()),
                    Some(a) => Err((
                        format!("{key} = {id} from {put}, but the acknowledged {a} came after it"),
                        a.invoke,
                    )),
                }
            }
            None => {
                // Absent: the initial state, or some DELETE.
                let Some(a) = self.acked.latest_before(invoke) else {
                    return Ok(());
                };
                let ok = self.deletes.iter().any(|d| {
                    d.invoke < complete && self.acked.overwriter(completion(d), invoke).is_none()
                });
                if ok {
                    Ok(())
                } else {
                    Err((
                        format!(
                            "{key} is absent, but the acknowledged {a} was not followed by any DELETE"
                        ),
                        a.invoke,
                    ))
                }
            }
        }
    }
}

/// How a failover came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailoverKind {
    /// The leader was killed and its data deleted; a follower took over.
    Lost,
    /// The leader was alive: fenced, caught up with, then re-pointed.
    Planned,
    /// The leader hung (SIGSTOP) through the promotion, woke up believing
    /// it still led, and was re-pointed later.
    Paused,
}

impl FailoverKind {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FailoverKind::Lost => "lost-leader",
            FailoverKind::Planned => "switchover",
            FailoverKind::Paused => "pause-failover",
        }
    }
}

/// One failover the nemesis ran. Times are µs on the run's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub kind: FailoverKind,
    /// The leader before.
    pub old: u32,
    /// The node `keyval-ctl failover` promoted.
    pub new: u32,
    /// The epoch it was promoted to.
    pub epoch: u64,
    /// When the old leader stopped taking writes, or before: just after
    /// it was killed (a loss), before it was fenced (a switchover), or
    /// before it was stopped (a pause-failover).
    pub start: u64,
    /// After every surviving node followed the new leader (the old one
    /// included, unless it was lost).
    pub end: u64,
    /// After a loss: every key the promoted node held when it was promoted
    /// (read while no node took writes).
    pub promoted: Option<BTreeMap<String, String>>,
}

impl std::fmt::Display for Failover {
    /// `1.234 .. 1.567 s: switchover, node 1 -> node 2 (epoch 2)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} .. {:.3} s: {}, node {} -> node {} (epoch {})",
            self.start as f64 / 1e6,
            self.end as f64 / 1e6,
            self.kind.name(),
            self.old,
            self.new,
            self.epoch
        )
    }
}

/// An `INFO` sample in which a node said `role leader` and `writes ok`,
/// taken between `invoke` and `complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub node: u32,
    pub epoch: u64,
    pub invoke: u64,
    pub complete: u64,
}

/// Who led when: the initial leader and the failovers (in order), and what
/// the monitor saw.
#[derive(Debug, Clone, Default)]
pub struct Leadership {
    /// The id of the leader the run started with.
    pub first: u32,
    pub failovers: Vec<Failover>,
    pub samples: Vec<Sample>,
}

/// A span of time in which `node` may take writes (`[from, to]`), and the
/// part in which it is the only node that may (`[sole_from, sole_to]`).
#[derive(Debug, Clone, Copy)]
struct Era {
    node: u32,
    from: u64,
    to: u64,
    sole_from: u64,
    sole_to: u64,
}

impl Leadership {
    /// No failover yet: `first` leads.
    pub fn new(first: u32) -> Leadership {
        Leadership {
            first,
            ..Leadership::default()
        }
    }

    /// The eras of every leader, in order.
    fn eras(&self) -> Vec<Era> {
        let mut eras = vec![Era {
            node: self.first,
            from: 0,
            to: u64::MAX,
            sole_from: 0,
            sole_to: u64::MAX,
        }];
        for f in &self.failovers {
            if let Some(last) = eras.last_mut() {
                last.to = f.end;
                last.sole_to = f.start;
            }
            eras.push(Era {
                node: f.new,
                from: f.start,
                to: u64::MAX,
                sole_from: f.end,
                sole_to: u64::MAX,
            });
        }
        eras
    }
}

/// Whether `[a0, a1]` and `[b0, b1]` share an instant.
fn overlaps(a0: u64, a1: u64, b0: u64, b1: u64) -> bool {
    a0 <= b1 && b0 <= a1
}

/// Whether `node` may have taken a write at some instant of `[t0, t1]`.
fn may_lead(eras: &[Era], node: u32, t0: u64, t1: u64) -> bool {
    eras.iter()
        .any(|e| e.node == node && overlaps(t0, t1, e.from, e.to))
}

/// Whether `op` overlaps a failover that replaced the node answering it:
/// the only time a write may get `ERROR` (no disk fault is injected).
fn stepping_down(lead: &Leadership, op: &Op) -> bool {
    lead.failovers
        .iter()
        .any(|f| Some(f.old) == op.node && overlaps(op.invoke, op.complete, f.start, f.end))
}

/// Whether `node` was the only node that could take writes for all of
/// `[t0, t1]`.
fn sole_leader(eras: &[Era], node: u32, t0: u64, t1: u64) -> bool {
    eras.iter()
        .any(|e| e.node == node && e.sole_from <= t0 && t1 <= e.sole_to)
}

/// Async mode: marks as [`Outcome::Excused`] each write that a leader lost
/// for good acknowledged and the promoted node did not have; returns their
/// indices in `ops`.
///
/// The promoted node's log is a prefix of the lost leader's (the nemesis
/// lets every follower catch up with the leader's seq before it kills it,
/// so the prefix reaches into the lost leader's own era). So for a key it
/// held with the value of write `s`, the lost leader's acknowledged writes
/// to that key invoked after `s` completed are exactly the ones it lacked.
/// For a key it did not hold, `s` is the latest-completing of the initial
/// state and every DELETE sent before the loss; if one of those has no
/// acknowledgement its completion is unknown and nothing is excused.
pub fn excuse_lost_writes(ops: &mut [Op], lead: &Leadership) -> Vec<usize> {
    let eras = lead.eras();
    let mut excused = Vec::new();
    for (i, f) in lead.failovers.iter().enumerate() {
        let (FailoverKind::Lost, Some(promoted)) = (f.kind, &f.promoted) else {
            continue;
        };
        // The lost leader's era is the one the failover `i` ended.
        let Some(era) = eras.get(i) else { continue };
        let mut sources: HashMap<u32, u64> = HashMap::new();
        let mut puts: HashMap<(u32, ValueId), u64> = HashMap::new();
        let mut latest_delete: HashMap<u32, u64> = HashMap::new();
        for op in ops.iter() {
            match op.kind {
                Kind::Put(id) => {
                    puts.insert((op.key, id), completion(op));
                }
                Kind::Delete if op.outcome != Outcome::Refused && op.invoke < f.start => {
                    let d = latest_delete.entry(op.key).or_insert(0);
                    *d = (*d).max(completion(op));
                }
                Kind::Delete | Kind::Get => {}
            }
        }
        let held: HashMap<u32, Option<ValueId>> = promoted
            .iter()
            .filter_map(|(k, v)| Some((key_index(k)?, ValueId::parse(v))))
            .collect();
        let source = |key: u32, sources: &mut HashMap<u32, u64>| -> u64 {
            *sources.entry(key).or_insert_with(|| match held.get(&key) {
                // A value that is not one of ours: the checker reports it;
                // excuse nothing.
                Some(None) => u64::MAX,
                Some(Some(id)) => puts.get(&(key, *id)).copied().unwrap_or(u64::MAX),
                None => latest_delete.get(&key).copied().unwrap_or(0),
            })
        };
        for (j, op) in ops.iter_mut().enumerate() {
            if op.is_acked_write()
                && op.node == Some(era.node)
                && op.invoke >= era.from
                && op.invoke < f.start
                && op.invoke > source(op.key, &mut sources)
            {
                op.outcome = Outcome::Excused;
                excused.push(j);
            }
        }
    }
    excused
}

/// Checks the history, the leaderships and the nodes' final states;
/// returns every broken rule (empty when all is well). `keys` is the
/// workload's key count.
pub fn check(
    ops: &[Op],
    keys: u32,
    nodes: &[NodeState],
    lead: &Leadership,
    rules: Rules,
) -> Vec<Violation> {
    let eras = lead.eras();
    let mut violations = Vec::new();
    let mut by_key: HashMap<u32, Vec<&Op>> = HashMap::new();
    for op in ops {
        by_key.entry(op.key).or_default().push(op);
        if let Outcome::Unexpected(reply) = &op.outcome {
            violations.push(Violation {
                key: Some(op.key),
                at: op.invoke,
                what: format!("unexpected reply {reply:?} to {op}"),
            });
        }
        let error = op.outcome == Outcome::Failed
            || matches!(&op.outcome, Outcome::NotServed(r) if &**r == "ERROR");
        if error && !stepping_down(lead, op) {
            violations.push(Violation {
                key: Some(op.key),
                at: op.invoke,
                what: format!("ERROR from a node that was not stepping down: {op}"),
            });
        }
        if let (true, Some(node)) = (op.is_acked_write(), op.node) {
            if !may_lead(&eras, node, op.invoke, op.complete) {
                violations.push(Violation {
                    key: Some(op.key),
                    at: op.invoke,
                    what: format!(
                        "node {node} acknowledged a write while it was not the leader: {op}"
                    ),
                });
            }
        }
    }
    let key_rules: HashMap<u32, KeyRules> = (0..keys)
        .map(|k| {
            let ops = by_key.get(&k).map(Vec::as_slice).unwrap_or(&[]);
            (k, KeyRules::new(k, ops))
        })
        .collect();
    let strict = |op: &Op| rules.linearizable_reads && op.via_leader;

    // Reads during the run, where the node that answered was the only one
    // that could take writes (and the search does not judge them).
    for op in ops.iter().filter(|o| o.kind == Kind::Get && !strict(o)) {
        let seen = match op.outcome {
            Outcome::Value(id) => Some(id),
            Outcome::NotFound => None,
            _ => continue,
        };
        if !op
            .node
            .is_some_and(|n| sole_leader(&eras, n, op.invoke, op.complete))
        {
            continue;
        }
        let Some(rule) = key_rules.get(&op.key) else {
            continue;
        };
        if let Err((why, _)) = rule.check(seen, op.invoke, op.complete) {
            violations.push(Violation {
                key: Some(op.key),
                at: op.invoke,
                what: format!("stale or impossible read {op}: {why}"),
            });
        }
    }

    check_leader_samples(&eras, &lead.samples, &mut violations);

    // What each promoted node held when it was promoted after a loss.
    for f in &lead.failovers {
        if let Some(data) = &f.promoted {
            let name = format!(
                "node {} when promoted at {:.3} s",
                f.new,
                f.start as f64 / 1e6
            );
            check_contents(&name, data, keys, &key_rules, f.start, &mut violations);
        }
    }

    // Final contents.
    for node in nodes {
        check_contents(
            &node.name,
            &node.data,
            keys,
            &key_rules,
            u64::MAX,
            &mut violations,
        );
        let computed = digest_of(&node.data);
        if computed != node.digest {
            violations.push(Violation {
                key: None,
                at: u64::MAX,
                what: format!(
                    "{}: DIGEST {} does not match its own data (digest of what GET returned: {computed})",
                    node.name, node.digest
                ),
            });
        }
    }
    if let Some(first) = nodes.first() {
        for node in &nodes[1..] {
            if node.digest != first.digest {
                violations.push(Violation {
                    key: None,
                    at: u64::MAX,
                    what: format!(
                        "DIGEST differs: {} has {}, {} has {}",
                        first.name, first.digest, node.name, node.digest
                    ),
                });
            }
        }
    }
    if rules.linearizable_reads {
        let last = nodes.iter().find(|n| n.leader);
        for k in 0..keys {
            let on_key = by_key.get(&k).map(Vec::as_slice).unwrap_or(&[]);
            violations.extend(check_linearizable(k, on_key, last, lead, &rules.limits));
        }
    }
    violations.sort_by_key(|v| v.key);
    violations
}

/// One op of a key's register history, for the search and the report.
enum Item<'a> {
    Op(&'a Op),
    /// The final contents of the node that leads at the end.
    Last(&'a NodeState),
}

/// The register event an op is, if the search sees it.
fn event(op: &Op) -> Option<Event<ValueId>> {
    let write_ending = || {
        if op.is_acked_write() {
            Ending::At(op.complete)
        } else if op.outcome == Outcome::Refused {
            Ending::Failed
        } else {
            Ending::Unknown
        }
    };
    let (action, ending) = match (op.kind, &op.outcome) {
        (Kind::Put(id), _) => (Action::Write(Some(id)), write_ending()),
        (Kind::Delete, _) => (Action::Write(None), write_ending()),
        (Kind::Get, _) if !op.via_leader => return None,
        (Kind::Get, Outcome::Value(id)) => (Action::Read(Some(*id)), Ending::At(op.complete)),
        (Kind::Get, Outcome::NotFound) => (Action::Read(None), Ending::At(op.complete)),
        (Kind::Get, _) => return None,
    };
    Some(Event {
        action,
        invoke: op.invoke,
        ending,
    })
}

/// The linearizability of key `key`'s history (`ops`, with `last`'s
/// contents as a read after everything): a violation with a shrunk
/// counterexample, one saying it could not be decided, or nothing.
fn check_linearizable(
    key: u32,
    ops: &[&Op],
    last: Option<&NodeState>,
    lead: &Leadership,
    limits: &Limits,
) -> Option<Violation> {
    let mut items: Vec<Item> = Vec::new();
    let mut events: Vec<Event<ValueId>> = Vec::new();
    for &op in ops {
        if let Some(e) = event(op) {
            items.push(Item::Op(op));
            events.push(e);
        }
    }
    let end = ops
        .iter()
        .map(|o| o.complete.max(o.invoke))
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    if let Some(node) = last {
        let seen = match node.data.get(&key_name(key)) {
            None => Some(None),
            // A foreign value is reported by the content checks.
            Some(v) => ValueId::parse(v).map(Some),
        };
        if let Some(seen) = seen {
            items.push(Item::Last(node));
            events.push(Event {
                action: Action::Read(seen),
                invoke: end,
                ending: Ending::At(end),
            });
        }
    }
    let name = key_name(key);
    match linear::check(&events, limits) {
        Verdict::Linearizable => None,
        Verdict::Undecided(why) => Some(Violation {
            key: Some(key),
            at: u64::MAX,
            what: format!(
                "{name}: linearizability undecided: {why} ({} ops on the key); a run without a \
                 verdict fails",
                events.len()
            ),
        }),
        Verdict::Violation(c) => {
            let at = match items.get(c.stuck) {
                Some(Item::Op(op)) => op.invoke,
                _ => u64::MAX,
            };
            Some(Violation {
                key: Some(key),
                at,
                what: counterexample(&name, &items, &c, lead),
            })
        }
    }
}

/// What a node was for leadership over `[t0, t1]`.
fn standing(eras: &[Era], node: Option<u32>, t0: u64, t1: u64) -> &'static str {
    match node {
        Some(n) if sole_leader(eras, n, t0, t1) => "the only leader",
        Some(n) if may_lead(eras, n, t0, t1) => "a leader, during a failover",
        Some(_) => "not the leader",
        None => "unknown node",
    }
}

/// A counterexample as the report shows it: the ops, the one every order
/// gets stuck at, what each node was, and the failovers meanwhile.
fn counterexample(
    name: &str,
    items: &[Item],
    c: &linear::Counterexample,
    lead: &Leadership,
) -> String {
    let eras = lead.eras();
    let mut s = format!(
        "{name}: not linearizable: no order of these {} ops explains every read; every order \
         gets stuck at the one marked >{} (an op takes effect once between its send and its \
         reply; a write without acknowledgement at any time after its send, or never)",
        c.ops.len(),
        if c.minimal {
            ""
        } else {
            " (shrinking stopped at its bound: some may not matter)"
        }
    );
    let (mut t0, mut t1) = (u64::MAX, 0);
    for &i in &c.ops {
        let mark = if i == c.stuck { ">" } else { " " };
        match items.get(i) {
            Some(Item::Op(op)) => {
                t0 = t0.min(op.invoke);
                t1 = t1.max(op.complete);
                s.push_str(&format!(
                    "\n    {mark} {op}   [node {}: {}]",
                    op.node.map_or("?".to_string(), |n| n.to_string()),
                    standing(&eras, op.node, op.invoke, op.complete)
                ));
            }
            Some(Item::Last(node)) => {
                let value = node
                    .data
                    .get(name)
                    .and_then(|v| ValueId::parse(v))
                    .map_or("absent".to_string(), |id| format!("= {id}"));
                s.push_str(&format!(
                    "\n    {mark} [after the run] {} (the leader), final contents: {name} {value}",
                    node.name
                ));
            }
            None => {}
        }
    }
    // The failovers meanwhile, and the last one before.
    let before = lead.failovers.iter().rposition(|f| f.end < t0);
    for (i, f) in lead.failovers.iter().enumerate() {
        if Some(i) == before || overlaps(f.start, f.end, t0, t1) {
            s.push_str(&format!("\n      failover {f}"));
        }
    }
    s
}

/// Fencing: a node that said it takes writes must have been in an era of
/// its own, and one epoch belongs to one node.
fn check_leader_samples(eras: &[Era], samples: &[Sample], violations: &mut Vec<Violation>) {
    let mut epochs: BTreeMap<u64, u32> = BTreeMap::new();
    let mut reported: HashSet<(u64, u32)> = HashSet::new();
    for s in samples {
        if !may_lead(eras, s.node, s.invoke, s.complete) {
            violations.push(Violation {
                key: None,
                at: s.invoke,
                what: format!(
                    "node {} said role leader, writes ok (epoch {}) between {:.3} s and {:.3} s, \
                     when it was not the leader",
                    s.node,
                    s.epoch,
                    s.invoke as f64 / 1e6,
                    s.complete as f64 / 1e6
                ),
            });
        }
        let owner = *epochs.entry(s.epoch).or_insert(s.node);
        if owner != s.node && reported.insert((s.epoch, s.node)) {
            violations.push(Violation {
                key: None,
                at: s.invoke,
                what: format!(
                    "nodes {owner} and {} both said role leader, writes ok at epoch {}",
                    s.node, s.epoch
                ),
            });
        }
    }
}

/// Checks one node's contents, observed at `at` (`u64::MAX`: after
/// everything), against the rules of every key.
fn check_contents(
    name: &str,
    data: &BTreeMap<String, String>,
    keys: u32,
    rules: &HashMap<u32, KeyRules>,
    at: u64,
    violations: &mut Vec<Violation>,
) {
    for key in data.keys() {
        // The MSET group's keys have rules of their own (crate::mset).
        if mset::is_group_key(key) {
            continue;
        }
        if key_index(key).is_none_or(|k| k >= keys) {
            violations.push(Violation {
                key: None,
                at: u64::MAX,
                what: format!("{name}: holds key {key:?}, which the workload never wrote"),
            });
        }
    }
    for (&k, rule) in rules {
        let seen = match data.get(&key_name(k)) {
            None => None,
            Some(value) => match ValueId::parse(value) {
                Some(id) => Some(id),
                None => {
                    violations.push(Violation {
                        key: Some(k),
                        at: u64::MAX,
                        what: format!("{name}: {} holds a foreign value {value:?}", key_name(k)),
                    });
                    continue;
                }
            },
        };
        if let Err((why, when)) = rule.check(seen, at, at) {
            violations.push(Violation {
                key: Some(k),
                at: when,
                what: format!("{name}: lost or resurrected write: {why}"),
            });
        }
    }
}

/// `DIGEST` (docs/protocol.md): SHA-256 over `<key>\n<value>\n` for every key in byte
/// order, in lower-case hex.
pub fn digest_of(data: &BTreeMap<String, String>) -> String {
    let mut sha = Sha256::new();
    for (k, v) in data {
        sha.update(k.as_bytes());
        sha.update(b"\n");
        sha.update(v.as_bytes());
        sha.update(b"\n");
    }
    hex::encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ValueId {
        ValueId { client: 0, n }
    }

    /// The checker with no failover.
    fn check(ops: &[Op], keys: u32, nodes: &[NodeState]) -> Vec<Violation> {
        super::check(ops, keys, nodes, &Leadership::new(1), Rules::default())
    }

    /// The checker with reads held to linearizability.
    fn strict(ops: &[Op], nodes: &[NodeState], lead: &Leadership) -> Vec<Violation> {
        let rules = Rules {
            linearizable_reads: true,
            ..Rules::default()
        };
        super::check(ops, 1, nodes, lead, rules)
    }

    fn op(kind: Kind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            key: 0,
            kind,
            node: Some(1),
            via_leader: true,
            invoke,
            complete,
            outcome,
        }
    }

    fn put(n: u32, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        op(Kind::Put(id(n)), invoke, complete, outcome)
    }

    fn node(value: Option<u32>) -> NodeState {
        let mut data = BTreeMap::new();
        if let Some(n) = value {
            data.insert("k0".to_string(), id(n).text("pad"));
        }
        NodeState {
            name: "leader".into(),
            digest: digest_of(&data),
            data,
            leader: true,
        }
    }

    fn final_check(ops: &[Op], value: Option<u32>) -> Vec<Violation> {
        check(ops, 1, &[node(value)])
    }

    #[test]
    fn last_acknowledged_value_passes() {
        let ops = [put(1, 0, 10, Outcome::Ok), put(2, 20, 30, Outcome::Ok)];
        assert_eq!(final_check(&ops, Some(2)), vec![]);
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let ops = [put(1, 0, 10, Outcome::Ok), put(2, 20, 30, Outcome::Ok)];
        let v = final_check(&ops, Some(1));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("lost"), "{v:?}");
        assert_eq!(final_check(&ops, None).len(), 1);
    }

    #[test]
    fn concurrent_writes_may_end_either_way() {
        let ops = [put(1, 0, 30, Outcome::Ok), put(2, 10, 20, Outcome::Ok)];
        assert_eq!(final_check(&ops, Some(1)), vec![]);
        assert_eq!(final_check(&ops, Some(2)), vec![]);
    }

    #[test]
    fn unacknowledged_writes_may_or_may_not_survive() {
        let ops = [
            put(1, 0, 10, Outcome::Ok),
            put(2, 20, 30, Outcome::ReplicationTimeout),
            put(3, 40, 50, Outcome::Unknown),
        ];
        for v in [Some(1), Some(2), Some(3)] {
            assert_eq!(final_check(&ops, v), vec![], "{v:?}");
        }
        // But never a value from before an acknowledged write.
        let ops = [put(1, 0, 10, Outcome::Unknown), put(2, 20, 30, Outcome::Ok)];
        assert_eq!(final_check(&ops, Some(1)), vec![]);
        let ops = [
            put(1, 0, 10, Outcome::ReplicationTimeout),
            put(2, 20, 30, Outcome::Ok),
        ];
        assert_eq!(final_check(&ops, Some(1)), vec![]);
    }

    #[test]
    fn deletes_make_absence_legal() {
        let ops = [
            put(1, 0, 10, Outcome::Ok),
            op(Kind::Delete, 20, 30, Outcome::Ok),
        ];
        assert_eq!(final_check(&ops, None), vec![]);
        assert_eq!(final_check(&ops, Some(1)).len(), 1);
        let ops = [
            op(Kind::Delete, 0, 10, Outcome::Ok),
            put(1, 20, 30, Outcome::Ok),
        ];
        assert_eq!(final_check(&ops, None).len(), 1);
        assert_eq!(final_check(&[], None), vec![]);
        // An unacknowledged delete after the last acknowledged put.
        let ops = [
            put(1, 0, 10, Outcome::Ok),
            op(Kind::Delete, 20, 30, Outcome::Unknown),
        ];
        assert_eq!(final_check(&ops, None), vec![]);
        assert_eq!(final_check(&ops, Some(1)), vec![]);
    }

    #[test]
    fn phantom_values_and_keys_fail() {
        let ops = [put(1, 0, 10, Outcome::Ok)];
        assert_eq!(final_check(&ops, Some(7)).len(), 1);
        let mut n = node(Some(1));
        n.data.insert("zz".into(), "x".into());
        n.digest = digest_of(&n.data);
        let v = check(&ops, 1, &[n]);
        assert!(v.iter().any(|v| v.what.contains("never wrote")), "{v:?}");
    }

    #[test]
    fn stale_reads_fail_fresh_reads_pass() {
        let mut ops = vec![
            put(1, 0, 10, Outcome::Ok),
            put(2, 20, 30, Outcome::Ok),
            op(Kind::Get, 40, 50, Outcome::Value(id(2))),
            op(Kind::Get, 25, 35, Outcome::Value(id(1))),
        ];
        assert_eq!(check(&ops, 1, &[node(Some(2))]), vec![]);
        ops.push(op(Kind::Get, 40, 50, Outcome::Value(id(1))));
        let v = check(&ops, 1, &[node(Some(2))]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("stale"), "{v:?}");
        // A read of a value whose PUT had not been sent yet.
        let ops = [
            op(Kind::Get, 0, 5, Outcome::Value(id(1))),
            put(1, 10, 20, Outcome::Ok),
        ];
        assert_eq!(check(&ops, 1, &[node(Some(1))]).len(), 1);
        // NOT_FOUND after an acknowledged put and no delete.
        let ops = [
            put(1, 0, 10, Outcome::Ok),
            op(Kind::Get, 20, 30, Outcome::NotFound),
        ];
        assert_eq!(check(&ops, 1, &[node(Some(1))]).len(), 1);
    }

    #[test]
    fn digests_must_agree_and_match_the_data() {
        let ops = [put(1, 0, 10, Outcome::Ok)];
        let a = node(Some(1));
        let mut b = node(Some(1));
        b.name = "follower 2".into();
        assert_eq!(check(&ops, 1, &[a.clone(), b.clone()]), vec![]);
        b.digest = "00".repeat(32);
        let v = check(&ops, 1, &[a, b]);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn unexpected_replies_fail() {
        let ops = [put(1, 0, 10, Outcome::Unexpected("ERROR".into()))];
        let v = final_check(&ops, Some(1));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("ERROR"));
    }

    fn at(mut op: Op, node: u32) -> Op {
        op.node = Some(node);
        op
    }

    /// Node 1 led until a failover of `kind` over 100..200 promoted node 2.
    fn one_failover(kind: FailoverKind, promoted: Option<Option<u32>>) -> Leadership {
        let mut lead = Leadership::new(1);
        lead.failovers.push(Failover {
            kind,
            old: 1,
            new: 2,
            epoch: 2,
            start: 100,
            end: 200,
            promoted: promoted.map(|v| node(v).data),
        });
        lead
    }

    #[test]
    fn only_the_leader_of_the_moment_acknowledges() {
        let lead = one_failover(FailoverKind::Planned, None);
        let ops = [
            // The old leader before and during the failover, the new one
            // during and after it.
            at(put(1, 90, 250, Outcome::Ok), 1),
            at(put(2, 120, 130, Outcome::Ok), 2),
            at(put(3, 300, 310, Outcome::Ok), 2),
        ];
        assert_eq!(
            super::check(&ops, 1, &[node(Some(3))], &lead, Rules::default()),
            vec![]
        );
        // The old leader after the failover ended; the new one before it
        // began; a refusal is no acknowledgement.
        let ops = [
            at(put(1, 210, 220, Outcome::Ok), 1),
            at(put(2, 50, 60, Outcome::Ok), 2),
            at(put(3, 300, 310, Outcome::Refused), 1),
        ];
        let v = super::check(&ops, 1, &[node(Some(1))], &lead, Rules::default());
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|v| v.what.contains("not the leader")), "{v:?}");
    }

    #[test]
    fn leader_samples_must_fit_the_eras_and_own_their_epoch() {
        let mut lead = one_failover(FailoverKind::Planned, None);
        let sample = |node, epoch, t| Sample {
            node,
            epoch,
            invoke: t,
            complete: t + 5,
        };
        lead.samples = vec![sample(1, 1, 10), sample(1, 1, 150), sample(2, 2, 150)];
        lead.samples.push(sample(2, 2, 400));
        assert_eq!(
            super::check(&[], 1, &[node(None)], &lead, Rules::default()),
            vec![]
        );
        lead.samples.push(sample(1, 1, 300));
        lead.samples.push(sample(3, 2, 500));
        let v = super::check(&[], 1, &[node(None)], &lead, Rules::default());
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v.iter().any(|v| v.what.contains("both said")), "{v:?}");
    }

    #[test]
    fn reads_during_a_failover_are_not_held_to_freshness() {
        let lead = one_failover(FailoverKind::Planned, None);
        let ops = [
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(put(2, 20, 30, Outcome::Ok), 1),
            // The old leader, now a follower, may lag.
            at(op(Kind::Get, 150, 160, Outcome::Value(id(1))), 1),
            at(op(Kind::Get, 250, 260, Outcome::Value(id(1))), 1),
        ];
        assert_eq!(
            super::check(&ops, 1, &[node(Some(2))], &lead, Rules::default()),
            vec![]
        );
        let stale = [
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(put(2, 20, 30, Outcome::Ok), 1),
            at(op(Kind::Get, 40, 50, Outcome::Value(id(1))), 1),
            at(op(Kind::Get, 250, 260, Outcome::Value(id(1))), 2),
        ];
        let v = super::check(&stale, 1, &[node(Some(2))], &lead, Rules::default());
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn error_is_expected_only_from_a_leader_stepping_down() {
        let lead = one_failover(FailoverKind::Planned, None);
        let ops = [
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(put(2, 95, 105, Outcome::Failed), 1),
        ];
        // It may or may not have happened.
        assert_eq!(
            super::check(&ops, 1, &[node(Some(2))], &lead, Rules::default()),
            vec![]
        );
        assert_eq!(
            super::check(&ops, 1, &[node(Some(1))], &lead, Rules::default()),
            vec![]
        );
        let ops = [
            at(put(1, 0, 10, Outcome::Failed), 1),
            at(put(2, 120, 130, Outcome::Failed), 2),
        ];
        let v = super::check(&ops, 1, &[node(None)], &lead, Rules::default());
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn error_to_a_read_is_expected_only_from_a_leader_stepping_down() {
        let lead = one_failover(FailoverKind::Planned, None);
        let error = |t0, t1| at(op(Kind::Get, t0, t1, Outcome::NotServed("ERROR".into())), 1);
        let check = |ops: &[Op]| super::check(ops, 1, &[node(Some(1))], &lead, Rules::default());
        let ops = [at(put(1, 0, 10, Outcome::Ok), 1), error(110, 120)];
        assert_eq!(check(&ops), vec![]);
        let ops = [at(put(1, 0, 10, Outcome::Ok), 1), error(20, 30)];
        let v = check(&ops);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("not stepping down"), "{v:?}");
        // Other replies without a value are no observation, and fine.
        let ops = [
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(
                op(Kind::Get, 20, 30, Outcome::NotServed("NOT_LEADER".into())),
                1,
            ),
        ];
        assert_eq!(check(&ops), vec![]);
    }

    #[test]
    fn refused_writes_are_no_source() {
        let ops = [
            put(1, 0, 10, Outcome::Ok),
            put(2, 20, 30, Outcome::Refused),
            op(Kind::Delete, 40, 50, Outcome::Refused),
        ];
        assert_eq!(final_check(&ops, Some(1)), vec![]);
        assert_eq!(final_check(&ops, Some(2)).len(), 1);
        assert_eq!(final_check(&ops, None).len(), 1);
    }

    #[test]
    fn a_loss_in_sync_mode_keeps_every_acknowledged_write() {
        let lead = one_failover(FailoverKind::Lost, Some(Some(1)));
        let ops = [
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(put(2, 20, 30, Outcome::Ok), 1),
        ];
        // The promoted node lacked write 2; the final state is fine.
        let v = super::check(&ops, 1, &[node(Some(2))], &lead, Rules::default());
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("when promoted"), "{v:?}");
    }

    #[test]
    fn a_loss_in_async_mode_excuses_exactly_what_the_promoted_node_lacked() {
        let lead = one_failover(FailoverKind::Lost, Some(Some(2)));
        let mut ops = vec![
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(put(2, 20, 30, Outcome::Ok), 1),
            // Concurrent with 2: it may be on the promoted node or not,
            // and either is fine, so it is not excused.
            at(put(3, 25, 35, Outcome::Ok), 1),
            at(put(4, 40, 50, Outcome::Ok), 1),
            at(put(5, 60, 70, Outcome::Ok), 1),
            at(put(6, 300, 310, Outcome::Unknown), 2),
        ];
        let mut bare = ops.clone();
        assert_eq!(excuse_lost_writes(&mut ops, &lead), vec![3, 4]);
        assert_eq!(ops[3].outcome, Outcome::Excused);
        assert_eq!(
            super::check(&ops, 1, &[node(Some(2))], &lead, Rules::default()),
            vec![]
        );
        assert_eq!(
            super::check(&ops, 1, &[node(Some(6))], &lead, Rules::default()),
            vec![]
        );
        // Without the excuse the same history fails.
        assert!(!super::check(&bare, 1, &[node(Some(2))], &lead, Rules::default()).is_empty());
        // A write acknowledged before the lost leader's era is never
        // excused: it was on every follower before the loss.
        let mut lead2 = lead.clone();
        lead2.failovers.insert(
            0,
            Failover {
                kind: FailoverKind::Planned,
                old: 2,
                new: 1,
                epoch: 1,
                start: 35,
                end: 38,
                promoted: None,
            },
        );
        lead2.first = 2;
        lead2.failovers[1].epoch = 3;
        bare[3].node = Some(2);
        bare[3].invoke = 32;
        bare[3].complete = 36;
        assert_eq!(excuse_lost_writes(&mut bare, &lead2), vec![4]);
    }

    #[test]
    fn an_absent_key_excuses_writes_after_the_last_delete() {
        let lead = one_failover(FailoverKind::Lost, Some(None));
        let mut ops = vec![
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(op(Kind::Delete, 20, 30, Outcome::Ok), 1),
            at(put(2, 40, 50, Outcome::Ok), 1),
        ];
        assert_eq!(excuse_lost_writes(&mut ops, &lead), vec![2]);
        assert_eq!(
            super::check(&ops, 1, &[node(None)], &lead, Rules::default()),
            vec![]
        );
        // A DELETE without a reply may have come last: nothing is excused.
        let mut ops = vec![
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(op(Kind::Delete, 20, 30, Outcome::Unknown), 1),
            at(put(2, 40, 50, Outcome::Ok), 1),
        ];
        assert_eq!(excuse_lost_writes(&mut ops, &lead), Vec::<usize>::new());
        assert_eq!(
            super::check(&ops, 1, &[node(None)], &lead, Rules::default()),
            vec![]
        );
    }

    fn get(invoke: u64, complete: u64, seen: Option<u32>) -> Op {
        let outcome = seen.map_or(Outcome::NotFound, |n| Outcome::Value(id(n)));
        op(Kind::Get, invoke, complete, outcome)
    }

    #[test]
    fn a_read_of_a_write_the_promoted_node_lacked_is_caught_when_strict() {
        // Node 1 shows write 2 (not yet on a follower), is lost, and node
        // 2 comes back with write 1.
        let lead = one_failover(FailoverKind::Lost, Some(Some(1)));
        let ops = [
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(put(2, 20, 30, Outcome::Unknown), 1),
            at(get(40, 50, Some(2)), 1),
            at(get(250, 260, Some(1)), 2),
        ];
        assert_eq!(
            super::check(&ops, 1, &[node(Some(1))], &lead, Rules::default()),
            vec![]
        );
        let v = strict(&ops, &[node(Some(1))], &lead);
        assert_eq!(v.len(), 1, "{v:?}");
        let text = &v[0].what;
        assert!(text.starts_with("k0: not linearizable"), "{text}");
        assert!(text.contains("these 4 ops"), "{text}");
        assert!(text.contains("> ["), "{text}");
        assert!(text.contains("GET k0 -> v0.2"), "{text}");
        assert!(
            text.contains("failover 0.000 .. 0.000 s: lost-leader, node 1 -> node 2"),
            "{text}"
        );
        assert_eq!(v[0].at, 250);
        // The final contents alone show it too: the read saw write 2,
        // which is gone at the end.
        let v = strict(&ops[..3], &[node(Some(1))], &lead);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].what.contains("final contents: k0 = v0.1"),
            "{}",
            v[0].what
        );
    }

    #[test]
    fn a_deposed_leader_serving_an_old_value_is_caught_when_strict() {
        let lead = one_failover(FailoverKind::Planned, None);
        let ops = [
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(put(2, 150, 160, Outcome::Ok), 2),
            at(get(170, 175, Some(1)), 1),
        ];
        assert_eq!(
            super::check(&ops, 1, &[node(Some(2))], &lead, Rules::default()),
            vec![]
        );
        let v = strict(&ops, &[node(Some(2))], &lead);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].what.contains("[node 1: a leader, during a failover]"),
            "{}",
            v[0].what
        );
        // The same read on a connection opened to a follower is not held
        // to it.
        let mut follower = ops.clone();
        follower[2].via_leader = false;
        assert_eq!(strict(&follower, &[node(Some(2))], &lead), vec![]);
        // Nor a read that got no value.
        let mut redirected = ops.clone();
        redirected[2].outcome = Outcome::NotServed("NOT_LEADER 127.0.0.1:9".into());
        assert_eq!(strict(&redirected, &[node(Some(2))], &lead), vec![]);
    }

    #[test]
    fn linearizable_histories_pass_when_strict() {
        let lead = one_failover(FailoverKind::Planned, None);
        let ops = [
            at(put(1, 0, 10, Outcome::Ok), 1),
            at(get(20, 30, Some(1)), 1),
            // Written during the failover, with no reply; seen later.
            at(put(2, 95, 105, Outcome::Failed), 1),
            at(put(3, 120, 300, Outcome::ReplicationTimeout), 2),
            at(get(310, 320, Some(3)), 2),
            at(op(Kind::Delete, 330, 340, Outcome::Ok), 2),
            at(get(350, 360, None), 2),
            at(put(4, 400, 410, Outcome::Refused), 1),
        ];
        assert_eq!(strict(&ops, &[node(None)], &lead), vec![]);
        // A refused write's value is never a source.
        let mut bad = ops.to_vec();
        bad.push(at(get(420, 430, Some(4)), 2));
        assert!(!strict(&bad, &[node(None)], &lead).is_empty());
    }

    #[test]
    fn an_undecided_key_fails_the_run() {
        let mut ops: Vec<Op> = (1..=12).map(|n| put(n, 0, 1000, Outcome::Ok)).collect();
        ops.push(get(1100, 1200, Some(1)));
        ops.push(get(1300, 1400, Some(2)));
        let rules = Rules {
            linearizable_reads: true,
            limits: Limits {
                max_steps: 100,
                ..Limits::default()
            },
        };
        let v = super::check(&ops, 1, &[node(Some(2))], &Leadership::new(1), rules);
        assert!(
            v.iter()
                .any(|v| v.what.contains("k0: linearizability undecided")),
            "{v:?}"
        );
    }

    #[test]
    fn digest_matches_spec_layout() {
        let mut data = BTreeMap::new();
        data.insert("a".to_string(), "1".to_string());
        let want = hex::encode(Sha256::digest(b"a\n1\n"));
        assert_eq!(digest_of(&data), want);
    }
}
