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
//! workload's, and no unexpected replies.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::history::{key_index, key_name, Kind, Op, Outcome, ValueId};

/// What one node holds at the end.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// For the report, e.g. `leader` or `follower 3`.
    pub name: String,
    /// Every key and its value, from `KEYS` and `GET`.
    pub data: BTreeMap<String, String>,
    /// The node's `DIGEST` reply.
    pub digest: String,
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

/// What one key's history allows.
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
                Kind::Delete => deletes.push(op),
                Kind::Get => {}
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

/// Checks the history and the nodes' final states; returns every broken
/// rule (empty when all is well). `keys` is the workload's key count.
pub fn check(ops: &[Op], keys: u32, nodes: &[NodeState]) -> Vec<Violation> {
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
    }
    let rules: HashMap<u32, KeyRules> = (0..keys)
        .map(|k| {
            let ops = by_key.get(&k).map(Vec::as_slice).unwrap_or(&[]);
            (k, KeyRules::new(k, ops))
        })
        .collect();

    // Reads during the run (all on the leader).
    for op in ops.iter().filter(|o| o.kind == Kind::Get) {
        let seen = match op.outcome {
            Outcome::Value(id) => Some(id),
            Outcome::NotFound => None,
            _ => continue,
        };
        let Some(rule) = rules.get(&op.key) else {
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

    // Final contents.
    for node in nodes {
        for name in node.data.keys() {
            if key_index(name).is_none_or(|k| k >= keys) {
                violations.push(Violation {
                    key: None,
                    at: u64::MAX,
                    what: format!(
                        "{}: holds key {name:?}, which the workload never wrote",
                        node.name
                    ),
                });
            }
        }
        for (&k, rule) in &rules {
            let seen = match node.data.get(&key_name(k)) {
                None => None,
                Some(value) => match ValueId::parse(value) {
                    Some(id) => Some(id),
                    None => {
                        violations.push(Violation {
                            key: Some(k),
                            at: u64::MAX,
                            what: format!(
                                "{}: {} holds a foreign value {value:?}",
                                node.name,
                                key_name(k)
                            ),
                        });
                        continue;
                    }
                },
            };
            if let Err((why, at)) = rule.check(seen, u64::MAX, u64::MAX) {
                violations.push(Violation {
                    key: Some(k),
                    at,
                    what: format!("{}: lost or resurrected write: {why}", node.name),
                });
            }
        }
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
    violations.sort_by_key(|v| v.key);
    violations
}

/// SPEC's `DIGEST`: SHA-256 over `<key>\n<value>\n` for every key in byte
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

    fn op(kind: Kind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            key: 0,
            kind,
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

    #[test]
    fn digest_matches_spec_layout() {
        let mut data = BTreeMap::new();
        data.insert("a".to_string(), "1".to_string());
        let want = hex::encode(Sha256::digest(b"a\n1\n"));
        assert_eq!(digest_of(&data), want);
    }
}
