//! Linearizability of one register, decided by search. Pure: no IO, no
//! threads; the only outside input is the clock a [`Limits::deadline`]
//! is read against.
//!
//! The register starts absent (`None`). A write sets it (a PUT to its
//! value, a DELETE to `None`); a read returns it. Every [`Event`] has an
//! invocation time and an [`Ending`]: a reply at a time (it took effect
//! once, somewhere in between), no telling reply (it took effect at some
//! time after its invocation, or never: "completes at +infinity and is
//! optional"), or a failure (it did not take effect, so it is left out).
//! A read without a reply observed nothing and is left out too.
//!
//! The history is linearizable when some order of the ops that respects
//! real time (an op that completed before another was invoked comes
//! first; ties count as overlapping) explains every read. The search is
//! Wing and Gong's, with the refinements of Lowe and porcupine:
//!
//! - **P-compositionality.** Each key is its own register, so the caller
//!   checks keys one at a time. Within a key, the history is also cut
//!   where no mandatory op is in flight: everything before a cut precedes
//!   everything after it. Each segment is searched from every
//!   configuration the one before may end in (the state, and the optional
//!   writes that may still take effect), so memory and work are those of
//!   the busiest segment, and the segment that fails names the place.
//! - **Memoization.** Calls and returns form a linked list in time order;
//!   the search linearizes a call that the state allows, lifts it out of
//!   the list, and backtracks when it meets the return of an op it has not
//!   linearized. A configuration (which ops are linearized, and the state)
//!   already seen is not explored again. It is keyed small: every op whose
//!   return was passed is linearized, and only ops called before the first
//!   remaining return can be, so the state, the mandatory ops called
//!   before the first mandatory return and not yet linearized (a window as
//!   wide as the concurrency), and the optional writes still pending fix
//!   it. One that an explored configuration dominates (same state and
//!   window, more optional writes pending) is not explored either.
//! - **Early pruning.** Before any search, writes no reply confirmed are
//!   narrowed without changing the verdict. Values name their write, so
//!   an unconfirmed PUT that no read saw can be dropped (it may never have
//!   happened), and one that a read saw must have happened before the
//!   earliest such read completed. An unconfirmed DELETE matters only to
//!   reads of "absent" that completed at or after its invocation: without
//!   any it is dropped; otherwise it stays optional, ending at the last of
//!   them. A read of a value no write wrote, or that completed before the
//!   only write of its value was invoked, is a violation found without
//!   search. During the search, each rule below keeps at least one valid
//!   order if there is one (the comments at [`children`] and [`Move`] say
//!   why): a read that may go now and matches the state goes first, alone;
//!   an optional write takes effect only together with a read of its
//!   value right after it, and of interchangeable ones (same value) only
//!   the one whose end comes first; it is given up only when its end is
//!   the next return.
//!
//! The search is bounded ([`Limits`]: steps, configurations, a deadline);
//! past a bound the verdict is [`Verdict::Undecided`], never a pass.
//!
//! A violation comes with a counterexample: a subset of the ops that is
//! not linearizable by itself, shrunk by removals that keep it so (delta
//! debugging). Only removals that cannot turn a linearizable history into
//! a non-linearizable one are tried: any read; a PUT whose value no
//! remaining read returned; a DELETE that no remaining read of "absent"
//! could follow directly (each such read completed before the DELETE was
//! invoked, or an acknowledged write certainly lies between the two). So
//! the counterexample alone proves the whole history not linearizable.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Instant;

/// What an op does to the register (`None` is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<V> {
    /// Sets the register (a PUT; `None`: a DELETE).
    Write(Option<V>),
    /// Returned this value.
    Read(Option<V>),
}

/// How an op ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A reply at this time: the op took effect once, between its
    /// invocation and now.
    At(u64),
    /// No telling reply (none, or a timeout): a write took effect at some
    /// time after its invocation, or never; a read observed nothing.
    Unknown,
    /// It did not take effect.
    Failed,
}

/// One op on the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<V> {
    pub action: Action<V>,
    pub invoke: u64,
    pub ending: Ending,
}

/// Bounds on one verdict (the search and the shrinking of a
/// counterexample each get these).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Configurations tried.
    pub max_steps: u64,
    /// Configurations remembered (the memory bound).
    pub max_configs: usize,
    /// Wall-clock bound, if any.
    pub deadline: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_steps: 20_000_000,
            max_configs: 4_000_000,
            deadline: None,
        }
    }
}

/// A subset of the ops (indices into the caller's slice, by invocation)
/// that is not linearizable by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counterexample {
    pub ops: Vec<usize>,
    /// Where every order got stuck: the op whose reply came before any
    /// order could place it (in the furthest any order got).
    pub stuck: usize,
    /// Whether shrinking finished: removing any one op that may be removed
    /// makes the rest linearizable. False when it ran out of budget.
    pub minimal: bool,
}

/// The verdict on one register's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation(Counterexample),
    /// A bound was reached first; says which.
    Undecided(String),
}

/// Decides whether `events` are linearizable, within `limits`; a violation
/// comes with a counterexample shrunk within the same limits.
pub fn check<V: Copy + Eq + Hash>(events: &[Event<V>], limits: &Limits) -> Verdict {
    let all: Vec<usize> = (0..events.len()).collect();
    let mut budget = Budget::new(limits);
    match run(events, &all, &mut budget) {
        Run::Linearizable => Verdict::Linearizable,
        Run::Undecided(why) => Verdict::Undecided(why),
        Run::Stuck(stuck) => {
            let mut shrink = Budget::new(limits);
            let (ops, minimal) = shrink_counterexample(events, all, stuck, &mut shrink);
            // The stuck op of what is left (the set is not linearizable,
            // so this only fails if the budget ran out: keep the first).
            let stuck = match run(events, &ops, &mut Budget::new(limits)) {
                Run::Stuck(s) => s,
                _ => stuck,
            };
            Verdict::Violation(Counterexample {
                ops,
                stuck,
                minimal,
            })
        }
    }
}

/// What is left of a bound.
struct Budget {
    steps: u64,
    max_steps: u64,
    max_configs: usize,
    deadline: Option<Instant>,
}

impl Budget {
    fn new(limits: &Limits) -> Budget {
        Budget {
            steps: 0,
            max_steps: limits.max_steps,
            max_configs: limits.max_configs,
            deadline: limits.deadline,
        }
    }

    /// Counts a step; `Err` names the bound once one is reached.
    fn step(&mut self) -> Result<(), String> {
        self.steps += 1;
        if self.steps > self.max_steps {
            return Err(format!("{} search steps", self.max_steps));
        }
        if self.steps.is_multiple_of(1024) && self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err("the deadline".to_string());
        }
        Ok(())
    }
}

/// The outcome of one search.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    Linearizable,
    /// Not linearizable; the stuck op (an index into the events).
    Stuck(usize),
    Undecided(String),
}

/// An op as the search sees it, after pruning.
#[derive(Debug, Clone, Copy)]
struct Prep<V> {
    /// Index into the caller's events.
    orig: usize,
    action: Action<V>,
    invoke: u64,
    /// When it must have taken effect by.
    end: u64,
    /// Whether it may also not take effect at all.
    optional: bool,
}

/// Checks the subset `ops` (indices into `events`).
fn run<V: Copy + Eq + Hash>(events: &[Event<V>], ops: &[usize], budget: &mut Budget) -> Run {
    match prepare(events, ops) {
        Ok(prep) => search(&prep, budget),
        Err(stuck) => Run::Stuck(stuck),
    }
}

/// Drops what cannot matter and narrows the unconfirmed writes (see the
/// module doc); `Err` is a read that no search could explain.
fn prepare<V: Copy + Eq + Hash>(events: &[Event<V>], ops: &[usize]) -> Result<Vec<Prep<V>>, usize> {
    let mut writes_of: HashMap<V, Vec<usize>> = HashMap::new();
    let mut reads_of: HashMap<Option<V>, Vec<(usize, u64)>> = HashMap::new();
    for &i in ops {
        let e = &events[i];
        match (e.action, e.ending) {
            (_, Ending::Failed) | (Action::Read(_), Ending::Unknown) => {}
            (Action::Write(Some(v)), _) => writes_of.entry(v).or_default().push(i),
            (Action::Write(None), _) => {}
            (Action::Read(v), Ending::At(t)) => reads_of.entry(v).or_default().push((i, t)),
        }
    }
    let mut prep = Vec::with_capacity(ops.len());
    for &i in ops {
        let e = &events[i];
        let mut p = Prep {
            orig: i,
            action: e.action,
            invoke: e.invoke,
            end: e.invoke,
            optional: false,
        };
        match (e.action, e.ending) {
            (_, Ending::Failed) | (Action::Read(_), Ending::Unknown) => continue,
            (Action::Read(Some(v)), Ending::At(t)) => {
                let Some(writes) = writes_of.get(&v) else {
                    return Err(i);
                };
                if writes.iter().all(|&w| events[w].invoke > t) {
                    return Err(i);
                }
                p.end = t;
            }
            (Action::Read(None) | Action::Write(_), Ending::At(t)) => p.end = t,
            (Action::Write(Some(v)), Ending::Unknown) => {
                let readers = reads_of.get(&Some(v)).map_or(&[][..], Vec::as_slice);
                let unique = writes_of.get(&v).is_some_and(|w| w.len() == 1);
                if !unique {
                    p.end = u64::MAX;
                    p.optional = true;
                } else if let Some(first) = readers.iter().map(|&(_, t)| t).min() {
                    // Seen: it happened, before the first read that saw it
                    // completed (that read was invoked after it: checked
                    // above).
                    p.end = first.max(e.invoke);
                } else {
                    continue;
                }
            }
            (Action::Write(None), Ending::Unknown) => {
                let readers = reads_of.get(&None).map_or(&[][..], Vec::as_slice);
                match readers
                    .iter()
                    .map(|&(_, t)| t)
                    .filter(|&t| t >= e.invoke)
                    .max()
                {
                    Some(last) => {
                        p.end = last;
                        p.optional = true;
                    }
                    None => continue,
                }
            }
        }
        prep.push(p);
    }
    Ok(prep)
}

/// A search frame: the choices from one configuration, and how to undo
/// the step that led to it.
struct Frame<V> {
    /// The moves from here, in the order they are tried.
    children: Vec<Move<V>>,
    next: usize,
    /// The move that led here, and the state before it.
    undo: Option<(Move<V>, Option<V>)>,
    /// The configuration, to mark explored when the frame is done.
    at: SeenAt<V>,
}

/// One step of the search: an op linearized (a read, a mandatory write,
/// or an optional write given up), or an optional write taking effect
/// together with a read that returns its value, right after it. (In some
/// valid order every optional write that takes effect is followed at once
/// by such a read: otherwise nothing saw it, and giving it up instead
/// changes nothing.)
#[derive(Debug, Clone, Copy)]
struct Move<V> {
    op: usize,
    read: Option<usize>,
    after: Option<V>,
}

const NIL: usize = usize::MAX;

/// The calls and returns, in time order, as a doubly linked list out of
/// which linearized ops are lifted (and put back on backtracking, in
/// reverse order).
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each entry: its op and whether it is the call.
    op: Vec<(usize, bool)>,
    call_at: Vec<usize>,
    return_at: Vec<usize>,
    head: usize,
    /// For each op: whether it is optional, and whether it is lifted.
    optional: Vec<bool>,
    lifted: Vec<bool>,
    /// The optional ops, in order.
    optionals: Vec<u32>,
}

/// Where the search stands, read off the list.
struct Window {
    /// The ops called before the first remaining return: what may go next.
    calls: Vec<u32>,
    /// That return's op (`None`: nothing is left).
    first_return: Option<usize>,
    /// The mandatory ops called before the first remaining return of a
    /// mandatory op: with the state and the pending optional writes, they
    /// fix which ops are linearized.
    mandatory: Vec<u32>,
}

impl Entries {
    fn new<V>(ops: &[Prep<V>]) -> Entries {
        // Calls before returns at equal times: ops that touch overlap.
        let mut order: Vec<(u64, bool, usize)> = ops
            .iter()
            .enumerate()
            .flat_map(|(i, p)| [(p.invoke, false, i), (p.end, true, i)])
            .collect();
        order.sort_unstable();
        let m = order.len();
        let head = m;
        let mut e = Entries {
            next: vec![NIL; m + 1],
            prev: vec![NIL; m + 1],
            op: Vec::with_capacity(m),
            call_at: vec![0; ops.len()],
            return_at: vec![0; ops.len()],
            head,
            optional: ops.iter().map(|p| p.optional).collect(),
            lifted: vec![false; ops.len()],
            optionals: (0..ops.len())
                .filter(|&i| ops[i].optional)
                .map(|i| i as u32)
                .collect(),
        };
        let mut last = head;
        for (pos, &(_, is_return, i)) in order.iter().enumerate() {
            e.op.push((i, !is_return));
            if is_return {
                e.return_at[i] = pos;
            } else {
                e.call_at[i] = pos;
            }
            e.next[last] = pos;
            e.prev[pos] = last;
            last = pos;
        }
        e
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_at[op]);
        self.unlink(self.return_at[op]);
        self.lifted[op] = true;
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.return_at[op]);
        self.relink(self.call_at[op]);
        self.lifted[op] = false;
    }

    fn window(&self) -> Window {
        let mut w = Window {
            calls: Vec::new(),
            first_return: None,
            mandatory: Vec::new(),
        };
        let mut at = self.next[self.head];
        while at != NIL {
            let (op, is_call) = self.op[at];
            // Ops are counted in u32 (checked when the segment is built).
            let id = op as u32;
            if is_call {
                if w.first_return.is_none() {
                    w.calls.push(id);
                }
                if !self.optional[op] {
                    w.mandatory.push(id);
                }
            } else {
                w.first_return = w.first_return.or(Some(op));
                if !self.optional[op] {
                    break;
                }
            }
            at = self.next[at];
        }
        w
    }

    /// The optional writes not yet linearized (taken or given up).
    fn pending(&self) -> Vec<u32> {
        self.optionals
            .iter()
            .copied()
            .filter(|&i| !self.lifted[i as usize])
            .collect()
    }
}

/// The states `op` may leave behind from `state`, if it may go now.
fn step<V: Copy + Eq>(p: &Prep<V>, state: Option<V>) -> Option<Option<V>> {
    match p.action {
        Action::Read(v) => (v == state).then_some(state),
        Action::Write(v) => Some(v),
    }
}

/// One segment of a key's history: mandatory ops that overlap one another
/// in a chain, with the optional writes that may take effect there.
struct Segment<V> {
    ops: Vec<Prep<V>>,
    /// For each op: whether it is an optional write that may already have
    /// taken effect (or been given up) in an earlier segment.
    carried_in: Vec<bool>,
    /// For each op: whether it may still take effect after the segment
    /// (its return is then past every other entry).
    carried_out: Vec<bool>,
    /// For each op: the index of the whole history's op it is.
    global: Vec<usize>,
}

/// A configuration at a cut between segments: the state, and the optional
/// writes (whole-history indices, sorted) that may still take effect.
type Frontier<V> = (Option<V>, Vec<usize>);

/// Cuts the history where no mandatory op is in flight. Each optional
/// write joins every segment from the one it was invoked in (or the next)
/// to the one its end falls in; one invoked after every mandatory op can
/// change nothing anyone saw and is dropped.
fn segments<V: Copy>(ops: &[Prep<V>]) -> Vec<Segment<V>> {
    let mut mandatory: Vec<usize> = (0..ops.len()).filter(|&i| !ops[i].optional).collect();
    mandatory.sort_by_key(|&i| (ops[i].invoke, i));
    // (first invoke, last end, ops)
    let mut spans: Vec<(u64, u64, Vec<usize>)> = Vec::new();
    for i in mandatory {
        match spans.last_mut() {
            Some(last) if ops[i].invoke <= last.1 => {
                last.1 = last.1.max(ops[i].end);
                last.2.push(i);
            }
            _ => spans.push((ops[i].invoke, ops[i].end, vec![i])),
        }
    }
    // (op, carried in, carried out)
    let mut members: Vec<Vec<(usize, bool, bool)>> = spans
        .iter()
        .map(|s| s.2.iter().map(|&i| (i, false, false)).collect())
        .collect();
    for (i, p) in ops.iter().enumerate().filter(|(_, p)| p.optional) {
        let first = spans.partition_point(|s| s.1 < p.invoke);
        if first == spans.len() {
            continue;
        }
        let last = spans
            .partition_point(|s| s.0 <= p.end)
            .saturating_sub(1)
            .max(first);
        for (k, m) in members.iter_mut().enumerate().take(last + 1).skip(first) {
            m.push((i, k > first, k < last));
        }
    }
    members
        .into_iter()
        .map(|m| {
            let ops_here: Vec<Prep<V>> = m
                .iter()
                .map(|&(i, _, out)| {
                    let mut p = ops[i];
                    if out {
                        p.end = u64::MAX;
                    }
                    p
                })
                .collect();
            Segment {
                carried_in: m.iter().map(|&(_, into, _)| into).collect(),
                carried_out: m.iter().map(|&(_, _, out)| out).collect(),
                global: m.iter().map(|&(i, _, _)| i).collect(),
                ops: ops_here,
            }
        })
        .collect()
}

/// The configurations seen in a segment: by state and the mandatory ops of
/// the window (which fix the mandatory ops linearized), the sets of
/// optional writes that were still pending, and whether that one is still
/// being explored. A configuration with the same key and a superset
/// pending can do all this one can (it gives the extra writes up when
/// their ends come), so once it has been explored this one need not be.
/// One still being explored is an ancestor, which reaches this one by
/// giving writes up: it covers nothing yet.
struct Seen<V: Eq + Hash> {
    map: HashMap<SeenKey<V>, Vec<Pending>>,
    len: usize,
}

/// The state and the mandatory ops of the window.
type SeenKey<V> = (Option<V>, Box<[u32]>);

/// The optional writes pending, and whether that configuration is still
/// being explored.
type Pending = (Box<[u32]>, bool);

/// Where a configuration is in [`Seen`], to mark it explored.
type SeenAt<V> = (SeenKey<V>, usize);

/// The moves from a configuration, and where it is in [`Seen`].
type Visit<V> = (Vec<Move<V>>, SeenAt<V>);

impl<V: Copy + Eq + Hash> Seen<V> {
    fn new() -> Seen<V> {
        Seen {
            map: HashMap::new(),
            len: 0,
        }
    }

    /// Records the configuration as being explored; `None` if it, or one
    /// explored that can do all it can, was seen.
    fn insert(
        &mut self,
        state: Option<V>,
        mandatory: &[u32],
        pending: Vec<u32>,
    ) -> Option<SeenAt<V>> {
        let key = (state, Box::<[u32]>::from(mandatory));
        let sets = self.map.entry(key.clone()).or_default();
        let covered = sets.iter().any(|(s, exploring)| {
            if *exploring {
                **s == *pending
            } else {
                pending.iter().all(|o| s.binary_search(o).is_ok())
            }
        });
        if covered {
            return None;
        }
        sets.push((pending.into_boxed_slice(), true));
        self.len += 1;
        Some((key, sets.len() - 1))
    }

    /// Marks a configuration explored.
    fn explored(&mut self, at: &SeenAt<V>) {
        if let Some(entry) = self.map.get_mut(&at.0).and_then(|sets| sets.get_mut(at.1)) {
            entry.1 = false;
        }
    }
}

/// Keeps the frontier configurations no other can do all of: per state,
/// the pending sets that are not inside another.
fn undominated<V: Copy + Eq>(mut ends: Vec<Frontier<V>>) -> Vec<Frontier<V>> {
    ends.sort_by_key(|(_, pending)| std::cmp::Reverse(pending.len()));
    let mut kept: Vec<Frontier<V>> = Vec::new();
    for (state, pending) in ends {
        let covered = kept
            .iter()
            .any(|(s, p)| *s == state && pending.iter().all(|o| p.binary_search(o).is_ok()));
        if !covered {
            kept.push((state, pending));
        }
    }
    kept
}

/// Searches one segment from each start configuration; returns the
/// configurations it may end in (empty: none), or the bound reached. On
/// failure `stuck` is the op at which the deepest attempt got stuck.
fn search_segment<V: Copy + Eq + Hash>(
    seg: &Segment<V>,
    starts: &[Frontier<V>],
    budget: &mut Budget,
    stuck: &mut Option<usize>,
) -> Result<Vec<Frontier<V>>, String> {
    if seg.ops.len() >= u32::MAX as usize {
        return Err("more ops than one search can index".into());
    }
    let mut x = Explorer {
        seg,
        list: Entries::new(&seg.ops),
        seen: Seen::new(),
        ends: Vec::new(),
        deepest: 0,
        stuck: None,
    };
    for (start, pending) in starts {
        // Carried-in writes no longer pending took effect (or were given
        // up) already.
        let done: Vec<usize> = (0..seg.ops.len())
            .filter(|&i| seg.carried_in[i] && pending.binary_search(&seg.global[i]).is_err())
            .collect();
        for &i in &done {
            x.list.lift(i);
        }
        let result = x.explore(*start, budget);
        for &i in done.iter().rev() {
            x.list.unlift(i);
        }
        result?;
    }
    *stuck = x.stuck;
    Ok(undominated(x.ends))
}

/// What may be tried from a configuration: mandatory ops first (in time
/// order), then optional writes with a read of their value; and an
/// optional write whose end comes first may be given up.
///
/// Of the optional writes of one value that may go now, only the one whose
/// end comes first is tried: if an order uses another there, swapping the
/// two gives an order that uses this one (the other can go wherever this
/// one went later, its end being no earlier).
fn children<V: Copy + Eq>(
    ops: &[Prep<V>],
    list: &mut Entries,
    calls: &[u32],
    first_return: Option<usize>,
    state: Option<V>,
) -> Vec<Move<V>> {
    // A read that may go now and returns the state goes first, alone: any
    // order from here can be rearranged to begin with it (it changes
    // nothing, and whatever had to precede it already went).
    if let Some(&c) = calls
        .iter()
        .find(|&&c| ops[c as usize].action == Action::Read(state))
    {
        return vec![Move {
            op: c as usize,
            read: None,
            after: state,
        }];
    }
    let mut out = Vec::with_capacity(calls.len() + 1);
    for &c in calls {
        let i = c as usize;
        if !ops[i].optional {
            if let Some(after) = step(&ops[i], state) {
                out.push(Move {
                    op: i,
                    read: None,
                    after,
                });
            }
        }
    }
    for &c in calls {
        let i = c as usize;
        let Action::Write(value) = ops[i].action else {
            continue;
        };
        if !ops[i].optional {
            continue;
        }
        let first = calls.iter().map(|&o| o as usize).find(|&o| {
            ops[o].optional
                && ops[o].action == Action::Write(value)
                && (ops[o].end, o) <= (ops[i].end, i)
        });
        if first != Some(i) {
            continue;
        }
        // The reads that may go right after it.
        list.lift(i);
        let next = list.window();
        list.unlift(i);
        for &r in &next.calls {
            let r = r as usize;
            if ops[r].action == Action::Read(value) {
                out.push(Move {
                    op: i,
                    read: Some(r),
                    after: value,
                });
            }
        }
    }
    if let Some(r) = first_return.filter(|&r| ops[r].optional) {
        out.push(Move {
            op: r,
            read: None,
            after: state,
        });
    }
    out
}

/// The depth-first search of one segment.
struct Explorer<'a, V: Copy + Eq + Hash> {
    seg: &'a Segment<V>,
    list: Entries,
    seen: Seen<V>,
    /// The configurations the segment may end in.
    ends: Vec<Frontier<V>>,
    deepest: usize,
    stuck: Option<usize>,
}

impl<V: Copy + Eq + Hash> Explorer<'_, V> {
    /// Visits the configuration the list is in with `state`: the choices
    /// to explore from it, or none (seen before, or the segment's end).
    fn visit(
        &mut self,
        state: Option<V>,
        depth: usize,
        budget: &Budget,
    ) -> Result<Option<Visit<V>>, String> {
        let seg = self.seg;
        let Window {
            calls,
            first_return,
            mandatory,
        } = self.list.window();
        let pending = self.list.pending();
        let Some(at) = self.seen.insert(state, &mandatory, pending.clone()) else {
            return Ok(None);
        };
        if self.seen.len > budget.max_configs {
            return Err(format!("{} configurations", budget.max_configs));
        }
        match first_return {
            None => {
                self.seen.explored(&at);
                self.ends.push((state, Vec::new()));
                Ok(None)
            }
            Some(r) if seg.carried_out[r] => {
                // Only writes that may take effect later are left.
                self.seen.explored(&at);
                let mut pending: Vec<usize> =
                    pending.iter().map(|&c| seg.global[c as usize]).collect();
                pending.sort_unstable();
                self.ends.push((state, pending));
                Ok(None)
            }
            Some(r) => {
                if depth >= self.deepest {
                    self.deepest = depth;
                    self.stuck = Some(seg.global[r]);
                }
                let kids = children(&seg.ops, &mut self.list, &calls, first_return, state);
                Ok(Some((kids, at)))
            }
        }
    }

    fn apply(&mut self, m: Move<V>) {
        self.list.lift(m.op);
        if let Some(r) = m.read {
            self.list.lift(r);
        }
    }

    fn undo(&mut self, m: Move<V>) {
        if let Some(r) = m.read {
            self.list.unlift(r);
        }
        self.list.unlift(m.op);
    }

    fn explore(&mut self, start: Option<V>, budget: &mut Budget) -> Result<(), String> {
        let mut state = start;
        let mut stack: Vec<Frame<V>> = Vec::new();
        if let Some((children, at)) = self.visit(state, 0, budget)? {
            stack.push(Frame {
                children,
                next: 0,
                undo: None,
                at,
            });
        }
        while let Some(top) = stack.last_mut() {
            if let Some(&m) = top.children.get(top.next) {
                top.next += 1;
                budget.step()?;
                self.apply(m);
                match self.visit(m.after, stack.len(), budget)? {
                    Some((children, at)) => {
                        stack.push(Frame {
                            children,
                            next: 0,
                            undo: Some((m, state)),
                            at,
                        });
                        state = m.after;
                    }
                    None => self.undo(m),
                }
            } else if let Some(done) = stack.pop() {
                self.seen.explored(&done.at);
                if let Some((m, before)) = done.undo {
                    self.undo(m);
                    state = before;
                }
            }
        }
        Ok(())
    }
}

/// The search over every segment in turn, carrying the configurations a
/// segment may end in to the next.
fn search<V: Copy + Eq + Hash>(ops: &[Prep<V>], budget: &mut Budget) -> Run {
    let mut frontier: Vec<Frontier<V>> = vec![(None, Vec::new())];
    for seg in segments(ops) {
        let mut stuck = None;
        match search_segment(&seg, &frontier, budget, &mut stuck) {
            Err(bound) => {
                return Run::Undecided(format!("the search reached its bound of {bound}"))
            }
            Ok(ends) if ends.is_empty() => {
                let op = stuck.or_else(|| seg.global.first().copied()).unwrap_or(0);
                return Run::Stuck(ops[op].orig);
            }
            Ok(ends) => frontier = ends,
        }
    }
    Run::Linearizable
}

/// Whether the subset `keep` (indices into `events`) is not linearizable,
/// within the budget (`None` once the budget ran out).
fn fails<V: Copy + Eq + Hash>(
    events: &[Event<V>],
    keep: &[usize],
    budget: &mut Budget,
) -> Option<bool> {
    match run(events, keep, budget) {
        Run::Stuck(_) => Some(true),
        Run::Linearizable => Some(false),
        Run::Undecided(_) => None,
    }
}

/// When an op certainly took effect by, if it certainly did.
fn acked_end<V: Copy>(e: &Event<V>) -> Option<u64> {
    match (e.action, e.ending) {
        (Action::Write(_), Ending::At(t)) => Some(t),
        _ => None,
    }
}

/// The part of `chunk` that may be removed from `keep` soundly (see the
/// module doc): every read, then the writes no remaining op depends on.
/// Writes that stay are witnesses for the others, so this shrinks to a
/// fixed point.
fn removable<V: Copy + Eq + Hash>(
    events: &[Event<V>],
    keep: &[usize],
    chunk: &[usize],
) -> Vec<usize> {
    let in_chunk: HashSet<usize> = chunk.iter().copied().collect();
    // The reads that stay: the values they saw, and the reads of "absent"
    // by invocation with the running maximum of their completions.
    let mut seen: HashSet<V> = HashSet::new();
    let mut absent: Vec<(u64, u64)> = Vec::new();
    for &i in keep.iter().filter(|i| !in_chunk.contains(i)) {
        match (events[i].action, events[i].ending) {
            (Action::Read(Some(v)), Ending::At(_)) => {
                seen.insert(v);
            }
            (Action::Read(None), Ending::At(t)) => absent.push((events[i].invoke, t)),
            _ => {}
        }
    }
    absent.sort_unstable();
    let mut latest = 0;
    let absent_max: Vec<(u64, u64)> = absent
        .iter()
        .map(|&(inv, t)| {
            latest = latest.max(t);
            (inv, latest)
        })
        .collect();
    // Whether a read of "absent" invoked by `by` completed at or after
    // `after`.
    let absent_after = |by: u64, after: u64| {
        let n = absent_max.partition_point(|&(inv, _)| inv <= by);
        n > 0 && absent_max[n - 1].1 >= after
    };
    let mut out: Vec<usize> = chunk.to_vec();
    loop {
        let gone: HashSet<usize> = out.iter().copied().collect();
        // Certain writes that stay, by invocation, with the earliest
        // completion among those invoked at or after each.
        let mut witnesses: Vec<(u64, u64)> = keep
            .iter()
            .filter(|i| !gone.contains(i))
            .filter_map(|&i| Some((events[i].invoke, acked_end(&events[i])?)))
            .collect();
        witnesses.sort_unstable();
        let mut earliest = u64::MAX;
        let mut suffix_min = vec![u64::MAX; witnesses.len()];
        for (k, &(_, end)) in witnesses.iter().enumerate().rev() {
            earliest = earliest.min(end);
            suffix_min[k] = earliest;
        }
        let before = out.len();
        out.retain(|&i| {
            let e = &events[i];
            match (e.action, e.ending) {
                (Action::Read(_), _) | (_, Ending::Failed) => true,
                (Action::Write(Some(v)), _) => !seen.contains(&v),
                (Action::Write(None), ending) => {
                    // The first certain write after this DELETE completed
                    // (none for an unconfirmed one: it may happen late).
                    let between = match ending {
                        Ending::At(done) => {
                            let k = witnesses.partition_point(|&(inv, _)| inv <= done);
                            suffix_min.get(k).copied().unwrap_or(u64::MAX)
                        }
                        _ => u64::MAX,
                    };
                    // No read of "absent" completed after it was invoked
                    // and began before that write certainly ended.
                    !absent_after(between, e.invoke)
                }
            }
        });
        if out.len() == before {
            return out;
        }
    }
}

/// Tries to remove the removable part of `chunk` from `keep`; keeps the
/// removal if what is left still fails. `None` once the budget ran out.
fn try_remove<V: Copy + Eq + Hash>(
    events: &[Event<V>],
    keep: &mut Vec<usize>,
    chunk: &[usize],
    budget: &mut Budget,
) -> Option<bool> {
    let gone: HashSet<usize> = removable(events, keep, chunk).into_iter().collect();
    if gone.is_empty() {
        return Some(false);
    }
    let rest: Vec<usize> = keep.iter().copied().filter(|i| !gone.contains(i)).collect();
    let still = fails(events, &rest, budget)?;
    if still {
        *keep = rest;
    }
    Some(still)
}

/// When an op's reply came, for the windows (`u64::MAX` without one).
fn end_of<V>(e: &Event<V>) -> u64 {
    match e.ending {
        Ending::At(t) => t,
        _ => u64::MAX,
    }
}

/// Shrinks the failing subset `keep`; returns it (by invocation) and
/// whether shrinking finished.
fn shrink_counterexample<V: Copy + Eq + Hash>(
    events: &[Event<V>],
    mut keep: Vec<usize>,
    stuck: usize,
    budget: &mut Budget,
) -> (Vec<usize>, bool) {
    keep.sort_by_key(|&i| (events[i].invoke, i));
    let finished = shrink(events, &mut keep, stuck, budget).is_some();
    (keep, finished)
}

fn shrink<V: Copy + Eq + Hash>(
    events: &[Event<V>],
    keep: &mut Vec<usize>,
    stuck: usize,
    budget: &mut Budget,
) -> Option<()> {
    let horizon = end_of(&events[stuck]);
    // What began after the stuck op's reply.
    let later: Vec<usize> = keep
        .iter()
        .copied()
        .filter(|&i| events[i].invoke > horizon)
        .collect();
    try_remove(events, keep, &later, budget)?;
    // Then everything before a window that ends at the stuck op's reply,
    // the smallest window that still fails.
    if horizon != u64::MAX {
        let first = keep.iter().map(|&i| events[i].invoke).min().unwrap_or(0);
        let mut width = 1000u64;
        while width < horizon.saturating_sub(first) {
            let cut = horizon - width;
            let early: Vec<usize> = keep
                .iter()
                .copied()
                .filter(|&i| end_of(&events[i]) < cut)
                .collect();
            if try_remove(events, keep, &early, budget)? {
                break;
            }
            width = width.saturating_mul(2);
        }
    }
    // Delta debugging: halves, quarters, ... then one op at a time until
    // nothing more goes.
    let mut size = keep.len() / 2;
    while size > 1 {
        let mut at = 0;
        while at < keep.len() {
            let chunk: Vec<usize> = keep[at..(at + size).min(keep.len())].to_vec();
            if !try_remove(events, keep, &chunk, budget)? {
                at += size;
            }
        }
        size /= 2;
    }
    loop {
        let mut changed = false;
        let mut at = keep.len();
        while at > 0 {
            at -= 1;
            if at < keep.len() && try_remove(events, keep, &[keep[at]], budget)? {
                changed = true;
            }
        }
        if !changed {
            return Some(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastrand::Rng;

    type E = Event<u32>;

    fn put(v: u32, invoke: u64, complete: u64) -> E {
        Event {
            action: Action::Write(Some(v)),
            invoke,
            ending: Ending::At(complete),
        }
    }

    fn del(invoke: u64, complete: u64) -> E {
        Event {
            action: Action::Write(None),
            invoke,
            ending: Ending::At(complete),
        }
    }

    fn get(v: Option<u32>, invoke: u64, complete: u64) -> E {
        Event {
            action: Action::Read(v),
            invoke,
            ending: Ending::At(complete),
        }
    }

    fn ending(mut e: E, ending: Ending) -> E {
        e.ending = ending;
        e
    }

    fn verdict(events: &[E]) -> Verdict {
        check(events, &Limits::default())
    }

    fn ok(events: &[E]) -> bool {
        match verdict(events) {
            Verdict::Linearizable => true,
            Verdict::Violation(_) => false,
            Verdict::Undecided(why) => panic!("undecided: {why}"),
        }
    }

    fn counterexample(events: &[E]) -> Counterexample {
        match verdict(events) {
            Verdict::Violation(c) => c,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_sequential_histories() {
        assert!(ok(&[]));
        assert!(ok(&[get(None, 0, 1)]));
        assert!(ok(&[
            put(1, 0, 1),
            get(Some(1), 2, 3),
            del(4, 5),
            get(None, 6, 7)
        ]));
        assert!(!ok(&[put(1, 0, 1), get(None, 2, 3)]));
        assert!(!ok(&[put(1, 0, 1), put(2, 2, 3), get(Some(1), 4, 5)]));
        assert!(!ok(&[put(1, 0, 1), del(2, 3), get(Some(1), 4, 5)]));
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_either() {
        assert!(ok(&[put(1, 0, 1), put(2, 10, 20), get(Some(1), 12, 14)]));
        assert!(ok(&[put(1, 0, 1), put(2, 10, 20), get(Some(2), 12, 14)]));
        // Touching intervals overlap.
        assert!(ok(&[put(1, 0, 10), get(None, 10, 12)]));
    }

    #[test]
    fn new_then_old_is_not_linearizable() {
        // Both reads overlap the write, but once one saw the new value a
        // later one may not see the old.
        let h = [
            put(1, 0, 1),
            put(2, 10, 100),
            get(Some(2), 20, 30),
            get(Some(1), 40, 50),
        ];
        assert!(!ok(&h));
        let c = counterexample(&h);
        assert_eq!(c.ops, vec![0, 1, 2, 3]);
        assert_eq!(c.stuck, 3);
        assert!(c.minimal);
        // Reads that overlap each other may be ordered either way.
        let h = [
            put(1, 0, 1),
            put(2, 10, 100),
            get(Some(2), 20, 45),
            get(Some(1), 40, 50),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn concurrent_writes_need_one_order_for_all_readers() {
        let w = [put(1, 0, 100), put(2, 0, 100)];
        let mut h = w.to_vec();
        h.extend([get(Some(1), 110, 120), get(Some(1), 130, 140)]);
        assert!(ok(&h));
        let mut h = w.to_vec();
        h.extend([
            get(Some(1), 10, 20),
            get(Some(2), 30, 40),
            get(Some(1), 50, 60),
        ]);
        assert!(!ok(&h));
        let mut h = w.to_vec();
        h.extend([
            get(Some(1), 10, 20),
            get(Some(2), 30, 40),
            get(Some(2), 110, 120),
        ]);
        assert!(ok(&h));
        // Two readers, each seeing the writes in a different order.
        let mut h = w.to_vec();
        h.extend([
            get(Some(1), 10, 20),
            get(Some(2), 30, 40),
            get(Some(2), 10, 20),
            get(Some(1), 30, 40),
        ]);
        assert!(!ok(&h));
    }

    #[test]
    fn phantom_and_premature_reads_fail_without_search() {
        let h = [put(1, 0, 1), get(Some(7), 2, 3)];
        let c = counterexample(&h);
        assert_eq!((c.ops.clone(), c.stuck), (vec![1], 1));
        let h = [get(Some(1), 0, 5), put(1, 10, 20)];
        let c = counterexample(&h);
        assert_eq!(c.stuck, 0);
        assert_eq!(c.ops, vec![0, 1]);
    }

    #[test]
    fn unknown_writes_may_happen_late_or_never() {
        let maybe = |e| ending(e, Ending::Unknown);
        // Never seen: fine either way.
        assert!(ok(&[
            put(1, 0, 1),
            maybe(put(2, 10, 11)),
            get(Some(1), 20, 21)
        ]));
        // Seen long after it was sent: it may have taken effect then.
        assert!(ok(&[
            put(1, 0, 1),
            maybe(put(2, 10, 11)),
            get(Some(1), 20, 21),
            get(Some(2), 1000, 1001),
        ]));
        // Seen, then gone: it took effect, and an older value came back.
        let h = [
            put(1, 0, 1),
            maybe(put(2, 10, 11)),
            get(Some(2), 20, 21),
            get(Some(1), 30, 31),
        ];
        let c = counterexample(&h);
        assert_eq!(c.ops, vec![0, 1, 2, 3]);
        assert_eq!(c.stuck, 3);
        // REPLICATION_TIMEOUT is the same: its caller passes Unknown.
        // An unknown DELETE may explain a later absence, or not happen.
        let h = [put(1, 0, 1), maybe(del(10, 11)), get(None, 500, 501)];
        assert!(ok(&h));
        let h = [
            put(1, 0, 1),
            maybe(del(10, 11)),
            get(Some(1), 400, 401),
            get(None, 500, 501),
        ];
        assert!(ok(&h));
        let h = [
            put(1, 0, 1),
            maybe(del(10, 11)),
            get(None, 400, 401),
            get(Some(1), 500, 501),
        ];
        assert!(!ok(&h));
        // Overwritten after it may have happened.
        let h = [
            maybe(del(10, 11)),
            put(1, 0, 1),
            get(None, 20, 21),
            put(2, 30, 31),
            get(Some(2), 40, 41),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn failed_ops_did_not_happen_and_unanswered_reads_say_nothing() {
        let failed = |e| ending(e, Ending::Failed);
        assert!(!ok(&[
            put(1, 0, 1),
            failed(put(2, 2, 3)),
            get(Some(2), 4, 5)
        ]));
        assert!(ok(&[put(1, 0, 1), failed(del(2, 3)), get(Some(1), 4, 5)]));
        assert!(!ok(&[put(1, 0, 1), failed(del(2, 3)), get(None, 4, 5)]));
        let unanswered = ending(get(Some(9), 2, 3), Ending::Unknown);
        assert!(ok(&[put(1, 0, 1), unanswered]));
    }

    #[test]
    fn a_long_history_shrinks_to_the_ops_that_matter() {
        let mut h = Vec::new();
        let mut t = 0;
        for v in 1..200u32 {
            h.push(put(v, t, t + 5));
            h.push(get(Some(v), t + 3, t + 9));
            h.push(get(Some(v), t + 10, t + 12));
            if v % 7 == 0 {
                h.push(del(t + 13, t + 14));
                h.push(get(None, t + 15, t + 16));
                h.push(put(v + 1000, t + 17, t + 18));
            }
            t += 20;
        }
        assert!(ok(&h));
        // Deep inside: a read returns the value two writes back.
        let stale = h.len();
        h.push(get(Some(120), 125 * 20 + 11, 125 * 20 + 12));
        h.sort_by_key(|e| e.invoke);
        let c = counterexample(&h);
        assert!(c.minimal);
        assert!(c.ops.len() <= 4, "{:?}", c.ops);
        let stuck = &h[c.stuck];
        assert_eq!(stuck.action, Action::Read(Some(120)));
        assert!(c.ops.contains(&c.stuck));
        // The counterexample alone fails.
        let alone: Vec<E> = c.ops.iter().map(|&i| h[i]).collect();
        assert!(!ok(&alone));
        let _ = stale;
    }

    #[test]
    fn bounds_make_it_undecided_not_passing() {
        // Many overlapping writes, then two reads that no order explains:
        // the search tries every subset of the writes first.
        let mut h: Vec<E> = (1..=14).map(|v| put(v, 0, 1000)).collect();
        h.push(get(Some(1), 1100, 1200));
        h.push(get(Some(2), 1300, 1400));
        assert!(!ok(&h));
        let tight = Limits {
            max_steps: 1000,
            ..Limits::default()
        };
        match check(&h, &tight) {
            Verdict::Undecided(why) => assert!(why.contains("1000"), "{why}"),
            other => panic!("{other:?}"),
        }
        let few = Limits {
            max_configs: 100,
            ..Limits::default()
        };
        assert!(matches!(check(&h, &few), Verdict::Undecided(_)));
        let past = Limits {
            deadline: Some(Instant::now()),
            ..Limits::default()
        };
        assert!(matches!(check(&h, &past), Verdict::Undecided(_)));
    }

    /// A register history that is linearizable by construction: clients
    /// with one op at a time, each op taking effect at a random instant of
    /// its interval (an unconfirmed write: later, or never).
    fn simulated(rng: &mut Rng, clients: usize, ops: usize) -> Vec<E> {
        let mut clock = vec![0u64; clients];
        // (effect time, index): the events, then the values reads return.
        let mut effects: Vec<(u64, usize)> = Vec::new();
        let mut h: Vec<E> = Vec::new();
        for n in 0..ops {
            let c = rng.usize(..clients);
            let invoke = clock[c] + rng.u64(0..50);
            let complete = invoke + rng.u64(1..200);
            clock[c] = complete;
            let value = u32::try_from(n).expect("few ops");
            let action = match rng.u32(..10) {
                0..3 => Action::Write(Some(value)),
                3 => Action::Write(None),
                _ => Action::Read(None),
            };
            let unknown = matches!(action, Action::Write(_)) && rng.u32(..20) == 0;
            let at = if unknown {
                // Maybe much later, maybe never.
                (rng.bool()).then(|| invoke + rng.u64(0..5000))
            } else {
                Some(rng.u64(invoke..=complete))
            };
            if let Some(at) = at {
                effects.push((at, h.len()));
            }
            h.push(Event {
                action,
                invoke,
                ending: if unknown {
                    Ending::Unknown
                } else {
                    Ending::At(complete)
                },
            });
        }
        effects.sort_unstable();
        let mut state = None;
        for (_, i) in effects {
            match h[i].action {
                Action::Write(v) => state = v,
                Action::Read(_) => h[i].action = Action::Read(state),
            }
        }
        h
    }

    #[test]
    fn a_long_busy_linearizable_history_passes_and_one_stale_read_fails() {
        let mut rng = Rng::with_seed(3);
        let mut h = simulated(&mut rng, 4, 20_000);
        let started = Instant::now();
        assert!(ok(&h));
        // One read that returns the value of a write completed well
        // before another one.
        let last = h.iter().map(|e| e.invoke).max().unwrap_or(0);
        let acked: Vec<(u32, u64)> = h
            .iter()
            .filter_map(|e| match (e.action, e.ending) {
                (Action::Write(Some(v)), Ending::At(t)) => Some((v, t)),
                _ => None,
            })
            .collect();
        let (old, done) = acked[acked.len() / 2];
        assert!(acked.iter().any(|&(_, t)| t > done + 1000));
        h.push(get(Some(old), last + 10_000, last + 10_001));
        let c = counterexample(&h);
        assert!(c.minimal, "{c:?}");
        assert!(c.ops.len() <= 4, "{c:?}");
        assert_eq!(c.stuck, h.len() - 1);
        assert!(started.elapsed().as_secs() < 60);
    }

    /// Linearizability by brute force: every order of every subset of the
    /// optional ops.
    fn brute(events: &[E]) -> bool {
        let live: Vec<usize> = (0..events.len())
            .filter(|&i| {
                !matches!(
                    (events[i].action, events[i].ending),
                    (_, Ending::Failed) | (Action::Read(_), Ending::Unknown)
                )
            })
            .collect();
        let end = |i: usize| end_of(&events[i]);
        fn go(
            events: &[E],
            end: &dyn Fn(usize) -> u64,
            left: &mut Vec<usize>,
            state: Option<u32>,
        ) -> bool {
            // Done when only optional ops are left (they never happen).
            if left.iter().all(|&i| events[i].ending == Ending::Unknown) {
                return true;
            }
            for k in 0..left.len() {
                let i = left[k];
                // i may go first if no other left op ended before it began.
                if left.iter().any(|&j| j != i && end(j) < events[i].invoke) {
                    continue;
                }
                let next = match events[i].action {
                    Action::Read(v) if v == state => state,
                    Action::Read(_) => continue,
                    Action::Write(v) => v,
                };
                left.remove(k);
                let found = go(events, end, left, next);
                left.insert(k, i);
                if found {
                    return true;
                }
            }
            false
        }
        go(events, &end, &mut live.clone(), None)
    }

    fn random_history(rng: &mut Rng) -> Vec<E> {
        let n = rng.usize(1..=8);
        let mut next_value = 1;
        // Short ops spread wide make many segments, with unconfirmed
        // writes carried across them.
        let (spread, length) = if rng.bool() { (40, 25) } else { (100, 8) };
        (0..n)
            .map(|_| {
                let invoke = rng.u64(0..spread);
                let complete = invoke + rng.u64(0..length);
                let e = match rng.u32(0..10) {
                    // Now and then a value written twice.
                    0 if next_value > 1 && rng.u32(0..4) == 0 => {
                        put(next_value - 1, invoke, complete)
                    }
                    0..3 => {
                        next_value += 1;
                        put(next_value - 1, invoke, complete)
                    }
                    3 => del(invoke, complete),
                    _ => {
                        let v = rng.u32(0..next_value + 1);
                        get(if v == 0 { None } else { Some(v) }, invoke, complete)
                    }
                };
                match rng.u32(0..8) {
                    0 | 2 => ending(e, Ending::Unknown),
                    1 => ending(e, Ending::Failed),
                    _ => e,
                }
            })
            .collect()
    }

    #[test]
    fn the_search_agrees_with_brute_force() {
        let rounds = 20_000;
        let mut rng = Rng::with_seed(7);
        let (mut yes, mut no) = (0, 0);
        for round in 0..rounds {
            let h = random_history(&mut rng);
            let want = brute(&h);
            match verdict(&h) {
                Verdict::Linearizable => {
                    assert!(want, "round {round}: {h:?} passed, brute force says no");
                    yes += 1;
                }
                Verdict::Violation(c) => {
                    assert!(!want, "round {round}: {h:?} failed, brute force says yes");
                    let alone: Vec<E> = c.ops.iter().map(|&i| h[i]).collect();
                    assert!(
                        !brute(&alone),
                        "round {round}: {h:?}: {c:?} is linearizable"
                    );
                    assert!(c.ops.contains(&c.stuck), "round {round}: {c:?}");
                    // Minimal: each op that could go, once gone, leaves a
                    // linearizable rest.
                    assert!(c.minimal, "round {round}: {c:?}");
                    for &i in &c.ops {
                        if removable(&h, &c.ops, &[i]).is_empty() {
                            continue;
                        }
                        let rest: Vec<E> =
                            c.ops.iter().filter(|&&j| j != i).map(|&j| h[j]).collect();
                        assert!(brute(&rest), "round {round}: {h:?}: {c:?} without {i}");
                    }
                    no += 1;
                }
                Verdict::Undecided(why) => panic!("round {round}: {why}"),
            }
        }
        // Both verdicts are well represented.
        assert!(yes > 2000 && no > 2000, "{yes} {no}");
    }
}
