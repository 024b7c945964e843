//! The MSET group check, pure: the group's keys and values, what its
//! clients ([`crate::group`]) record, and the rules the history and the
//! nodes' final contents are held to. No IO; every rule is unit-tested
//! below.
//!
//! The group is [`GROUP`] keys, `g:0` to `g:7`, that only `MSET` writes,
//! all eight at once, each MSET with a generation of its own (1, 2, 3...
//! in the order sent) in every value: `<generation>.<key>.<padding>`. An
//! MSET is one record in the log, so whatever a node serves or holds, the
//! eight keys show one generation (or are all absent). The rules:
//! 1. every `MGET` of the group, on any node, shows one generation, or
//!    all eight absent; a mixed reply is a violation;
//! 2. at the end (and on every node promoted after a loss, as read then)
//!    the group holds one generation on every node;
//! 3. that generation was sent and not refused; in sync mode, where an
//!    acknowledged write survives failovers, the final generation is at
//!    least the highest acknowledged one.

use std::collections::{BTreeMap, BTreeSet};

/// Keys in the group.
pub const GROUP: u32 = 8;
/// Bad MGETs of the group shown one by one; the rest are counted.
const SHOWN_READS: usize = 10;
/// The prefix of the group's keys (the register workload's keys are
/// `k<n>`).
const PREFIX: &str = "g:";

/// The name of the group's key `i`.
pub fn key(i: u32) -> String {
    format!("{PREFIX}{i}")
}

/// Whether `name` is one of the group's keys.
pub fn is_group_key(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|i| i.parse::<u32>().ok())
        .is_some_and(|i| i < GROUP && key(i) == name)
}

/// The value generation `gen` writes to key `i`.
pub fn value(gen: u64, i: u32, padding: &str) -> String {
    format!("{gen}.{i}.{padding}")
}

/// The generation out of a value, `None` if it is not one of ours.
pub fn generation(value: &str) -> Option<u64> {
    let (gen, rest) = value.split_once('.')?;
    rest.split_once('.')?;
    gen.parse().ok().filter(|&g| g > 0)
}

/// What the reply to one MSET said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsetOutcome {
    /// `+OK`.
    Acked,
    /// `-READONLY`: not applied.
    Refused,
    /// No reply, `-REPLICATION_TIMEOUT` or `-ERR not acknowledged`: it may
    /// or may not have happened.
    Indeterminate,
    /// Any other reply, kept for the report.
    Unexpected(String),
}

/// One MSET of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mset {
    pub gen: u64,
    /// The node it was sent to.
    pub node: u32,
    pub outcome: MsetOutcome,
}

/// One MGET of the group that got an array back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mget {
    /// The node that answered.
    pub node: u32,
    /// Whether the connection was opened to the leader: the node's `INFO`
    /// said so (the writer), or it was the harness's leader (the reader).
    pub via_leader: bool,
    /// When the reply arrived (µs since the run began).
    pub at: u64,
    /// The values, in key order (`None`: nil); `Err` for a reply that is
    /// not an array of [`GROUP`] bulk strings, as text.
    pub values: Result<Vec<Option<String>>, String>,
}

/// What the group's clients recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub msets: Vec<Mset>,
    pub mgets: Vec<Mget>,
}

/// The single generation a reading of the group shows: `Ok(None)` when
/// every key is absent, `Ok(Some(g))` when every key holds generation
/// `g`, `Err` (why) otherwise.
pub fn one_generation(values: &[Option<&str>]) -> Result<Option<u64>, String> {
    if values.len() != GROUP as usize {
        return Err(format!("{} values for {GROUP} keys", values.len()));
    }
    let gens: BTreeSet<Option<u64>> = values
        .iter()
        .map(|v| v.map(|v| generation(v).ok_or_else(|| format!("foreign value {v:?}"))))
        .map(Option::transpose)
        .collect::<Result<_, _>>()?;
    match gens.len() {
        1 => Ok(gens.into_iter().next().flatten()),
        _ => Err(format!(
            "mixed generations {}",
            gens.iter()
                .map(|g| g.map_or("nil".to_string(), |g| g.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The group's values in a node's contents, in key order.
fn group_of(data: &BTreeMap<String, String>) -> Vec<Option<&str>> {
    (0..GROUP)
        .map(|i| data.get(&key(i)).map(String::as_str))
        .collect()
}

/// The counts for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub sent: usize,
    pub acked: usize,
    pub refused: usize,
    pub indeterminate: usize,
    pub mgets: usize,
    pub mgets_on_followers: usize,
    pub mixed: usize,
    /// The generation the leader holds at the end (`None`: absent).
    pub last: Option<u64>,
    pub highest_acked: Option<u64>,
}

impl Summary {
    /// The report's line.
    pub fn line(&self) -> String {
        let gen = |g: Option<u64>| g.map_or("none".to_string(), |g| g.to_string());
        format!(
            "  MSET group ({GROUP} keys): MSETs sent {}, acknowledged {}, refused {}, \
             indeterminate {}; MGETs {} ({} on connections opened to a follower); mixed {}; \
             final generation {} (highest acknowledged {})",
            self.sent,
            self.acked,
            self.refused,
            self.indeterminate,
            self.mgets,
            self.mgets_on_followers,
            self.mixed,
            gen(self.last),
            gen(self.highest_acked)
        )
    }
}

/// Holds the group's history and the nodes' contents (`(name, data)`,
/// leader first; a promoted node's contents as read then count too) to
/// the rules; `sync` is sync mode. Returns the counts and every broken
/// rule, each naming `seed`.
pub fn check(
    history: &History,
    finals: &[(String, &BTreeMap<String, String>)],
    sync: bool,
    seed: u64,
) -> (Summary, Vec<String>) {
    let mut problems = Vec::new();
    let count =
        |f: &dyn Fn(&MsetOutcome) -> bool| history.msets.iter().filter(|m| f(&m.outcome)).count();
    let mut summary = Summary {
        sent: history.msets.len(),
        acked: count(&|o| *o == MsetOutcome::Acked),
        refused: count(&|o| *o == MsetOutcome::Refused),
        indeterminate: count(&|o| *o == MsetOutcome::Indeterminate),
        mgets: history.mgets.len(),
        mgets_on_followers: history.mgets.iter().filter(|m| !m.via_leader).count(),
        highest_acked: history
            .msets
            .iter()
            .filter(|m| m.outcome == MsetOutcome::Acked)
            .map(|m| m.gen)
            .max(),
        ..Summary::default()
    };
    let sent: BTreeMap<u64, &Mset> = history.msets.iter().map(|m| (m.gen, m)).collect();
    let unsent = |gen: Option<u64>| -> Option<String> {
        let gen = gen?;
        match sent.get(&gen) {
            None => Some(format!("generation {gen}, which no MSET sent")),
            Some(m) if m.outcome == MsetOutcome::Refused => Some(format!(
                "generation {gen}, whose MSET node {} refused",
                m.node
            )),
            Some(_) => None,
        }
    };
    for m in &history.msets {
        if let MsetOutcome::Unexpected(reply) = &m.outcome {
            problems.push(format!(
                "seed {seed}: MSET generation {} to node {}: unexpected reply {reply:?}",
                m.gen, m.node
            ));
        }
    }
    let mut bad_reads = 0;
    for m in &history.mgets {
        let seen = match &m.values {
            Ok(values) => {
                let values: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
                one_generation(&values)
            }
            Err(reply) => Err(format!("not an array of {GROUP} values: {reply}")),
        };
        let what = match seen {
            Ok(gen) => unsent(gen),
            Err(why) => {
                summary.mixed += 1;
                Some(why)
            }
        };
        if let Some(what) = what {
            bad_reads += 1;
            if bad_reads > SHOWN_READS {
                continue;
            }
            problems.push(format!(
                "seed {seed}: MGET of the group at {:.3} s on node {}{} saw {what}; reply {:?}",
                m.at as f64 / 1e6,
                m.node,
                if m.via_leader {
                    ""
                } else {
                    " (opened as a follower)"
                },
                m.values
            ));
        }
    }
    if bad_reads > SHOWN_READS {
        problems.push(format!(
            "seed {seed}: {} more bad MGETs of the group not shown",
            bad_reads - SHOWN_READS
        ));
    }
    for (i, (name, data)) in finals.iter().enumerate() {
        let values = group_of(data);
        let gen = match one_generation(&values) {
            Ok(gen) => gen,
            Err(why) => {
                problems.push(format!(
                    "seed {seed}: {name} holds the group with {why}: {values:?}"
                ));
                continue;
            }
        };
        if i == 0 {
            summary.last = gen;
        }
        if let Some(what) = unsent(gen) {
            problems.push(format!("seed {seed}: {name} holds {what}"));
        }
    }
    if let (true, Some((name, data))) = (sync, finals.first()) {
        if let (Ok(gen), Some(acked)) = (one_generation(&group_of(data)), summary.highest_acked) {
            if gen.is_none_or(|g| g < acked) {
                problems.push(format!(
                    "seed {seed}: {name} ends with the group at generation {}, but MSET \
                     generation {acked} was acknowledged in sync mode",
                    gen.map_or("none".to_string(), |g| g.to_string())
                ));
            }
        }
    }
    (summary, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(gens: &[Option<u64>]) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        for (i, g) in gens.iter().enumerate() {
            if let Some(g) = g {
                d.insert(key(i as u32), value(*g, i as u32, "pad"));
            }
        }
        d.insert("k1".into(), "v0.1.x".into());
        d
    }

    fn all(gen: Option<u64>) -> Vec<Option<u64>> {
        vec![gen; GROUP as usize]
    }

    fn mset(gen: u64, outcome: MsetOutcome) -> Mset {
        Mset {
            gen,
            node: 1,
            outcome,
        }
    }

    fn mget(gens: &[Option<u64>]) -> Mget {
        Mget {
            node: 2,
            via_leader: false,
            at: 1_500_000,
            values: Ok(gens
                .iter()
                .enumerate()
                .map(|(i, g)| g.map(|g| value(g, i as u32, "p")))
                .collect()),
        }
    }

    fn run(history: &History, finals: &[Vec<Option<u64>>], sync: bool) -> (Summary, Vec<String>) {
        let datas: Vec<_> = finals.iter().map(|g| data(g)).collect();
        let named: Vec<_> = datas
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("node {}", i + 1), d))
            .collect();
        check(history, &named, sync, 42)
    }

    #[test]
    fn keys_and_values_round_trip() {
        assert!(is_group_key("g:0") && is_group_key("g:7"));
        assert!(!is_group_key("g:8") && !is_group_key("g:01") && !is_group_key("k0"));
        assert_eq!(generation(&value(17, 3, "abc.def")), Some(17));
        assert_eq!(generation("17.3"), None);
        assert_eq!(generation("0.3.x"), None);
        assert_eq!(generation("v1.2.x"), None);
    }

    #[test]
    fn one_generation_or_all_nil_passes_and_mixed_fails() {
        let v = |g: u64, i: u32| Some(value(g, i, "x"));
        let same: Vec<_> = (0..GROUP).map(|i| v(5, i)).collect();
        let refs: Vec<_> = same.iter().map(Option::as_deref).collect();
        assert_eq!(one_generation(&refs), Ok(Some(5)));
        assert_eq!(one_generation(&[None; GROUP as usize]), Ok(None));
        let mut mixed = same.clone();
        mixed[3] = v(4, 3);
        let refs: Vec<_> = mixed.iter().map(Option::as_deref).collect();
        assert_eq!(
            one_generation(&refs),
            Err("mixed generations 4, 5".to_string())
        );
        // Some absent, some present is mixed too.
        let mut partial = same.clone();
        partial[7] = None;
        let refs: Vec<_> = partial.iter().map(Option::as_deref).collect();
        assert_eq!(
            one_generation(&refs),
            Err("mixed generations nil, 5".to_string())
        );
        assert!(one_generation(&refs[..7]).is_err());
        let mut foreign = same;
        foreign[0] = Some("junk".into());
        let refs: Vec<_> = foreign.iter().map(Option::as_deref).collect();
        assert!(one_generation(&refs).is_err());
    }

    #[test]
    fn a_mixed_mget_fails_naming_seed_node_and_reply() {
        let history = History {
            msets: vec![
                mset(1, MsetOutcome::Acked),
                mset(2, MsetOutcome::Indeterminate),
            ],
            mgets: vec![mget(&all(None)), mget(&all(Some(1))), {
                let mut g = all(Some(2));
                g[6] = Some(1);
                mget(&g)
            }],
        };
        let (summary, problems) = run(&history, &[all(Some(2)), all(Some(2))], true);
        assert_eq!(summary.mixed, 1);
        assert_eq!(summary.mgets, 3);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert!(p.contains("seed 42") && p.contains("node 2"), "{p}");
        assert!(
            p.contains("mixed generations 1, 2") && p.contains("2.0.p"),
            "{p}"
        );
    }

    #[test]
    fn many_bad_mgets_are_counted_not_all_shown() {
        let mut g = all(Some(1));
        g[0] = None;
        let history = History {
            msets: vec![mset(1, MsetOutcome::Acked)],
            mgets: vec![mget(&g); SHOWN_READS + 5],
        };
        let (summary, problems) = run(&history, &[all(Some(1))], false);
        assert_eq!(summary.mixed, SHOWN_READS + 5);
        assert_eq!(problems.len(), SHOWN_READS + 1, "{problems:?}");
        assert!(problems[SHOWN_READS].contains("5 more bad MGETs"));
    }

    #[test]
    fn mgets_of_unsent_or_refused_generations_fail() {
        let history = History {
            msets: vec![mset(1, MsetOutcome::Refused), mset(2, MsetOutcome::Acked)],
            mgets: vec![mget(&all(Some(1))), mget(&all(Some(3)))],
        };
        let (summary, problems) = run(&history, &[all(Some(2))], true);
        assert_eq!(summary.mixed, 0);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("refused"), "{problems:?}");
        assert!(problems[1].contains("no MSET sent"), "{problems:?}");
    }

    #[test]
    fn final_contents_must_hold_one_generation_on_every_node() {
        let history = History {
            msets: vec![mset(1, MsetOutcome::Acked), mset(2, MsetOutcome::Acked)],
            mgets: vec![],
        };
        let mut torn = all(Some(2));
        torn[0] = Some(1);
        let (summary, problems) = run(&history, &[all(Some(2)), torn], false);
        assert_eq!(summary.last, Some(2));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("node 2 holds the group with mixed"));
        let (_, problems) = run(&history, &[all(Some(9))], false);
        assert!(problems[0].contains("no MSET sent"), "{problems:?}");
    }

    #[test]
    fn sync_mode_keeps_the_highest_acknowledged_generation() {
        let history = History {
            msets: vec![
                mset(1, MsetOutcome::Acked),
                mset(2, MsetOutcome::Acked),
                mset(3, MsetOutcome::Indeterminate),
                mset(4, MsetOutcome::Refused),
            ],
            mgets: vec![],
        };
        // An indeterminate MSET may win, or not.
        for last in [2, 3] {
            let (s, problems) = run(&history, &[all(Some(last))], true);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!((s.sent, s.acked, s.indeterminate, s.refused), (4, 2, 1, 1));
            assert_eq!(s.highest_acked, Some(2));
        }
        // Losing an acknowledged MSET fails in sync mode only.
        for last in [Some(1), None] {
            let (_, problems) = run(&history, &[all(last)], true);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains("generation 2 was acknowledged"));
            let (_, problems) = run(&history, &[all(last)], false);
            assert!(problems.is_empty(), "{problems:?}");
        }
        // A refused MSET never takes effect, in either mode.
        let (_, problems) = run(&history, &[all(Some(4))], false);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn unexpected_mset_replies_fail() {
        let history = History {
            msets: vec![mset(1, MsetOutcome::Unexpected("ERR syntax error".into()))],
            mgets: vec![],
        };
        let (_, problems) = run(&history, &[all(None)], false);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("ERR syntax error"));
    }
}
