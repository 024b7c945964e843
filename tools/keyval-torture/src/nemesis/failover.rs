//! The failover faults of the nemesis: `lose-leader` (the leader's machine
//! is gone: kill -9, data deleted, `keyval-ctl failover`, later a new empty
//! node joins), `switchover` (planned: `keyval-ctl failover` with the
//! leader alive, which fences it, lets the best follower catch up, promotes
//! it and re-points the old leader) and `pause-failover` (the leader hangs:
//! SIGSTOP, `keyval-ctl failover` over the followers, SIGCONT; the old
//! leader believes it still leads until the operator re-points it, seconds
//! later, as `keyval-ctl` tells them to once the node is back).
//!
//! A failover first takes the cluster to itself: no other fault starts,
//! and it waits (bounded) for the faults in force to end, so every node is
//! up and every link passes. That is the situation the runbooks describe;
//! a failover while a follower is paused is an operator error, not a
//! fault. What it did goes to the report as a [`Failover`], which the
//! checker uses to know who led when.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::{
    lock, Failover, FailoverKind, Fault, Nemesis, CATCH_UP_TIMEOUT, DRAIN_TIMEOUT, REQUEST_TIMEOUT,
    SETTLE_TIMEOUT,
};
use keyval_testkit::LineClient;

use crate::client::{self, field};
use crate::ctl::Promotion;
use crate::proxy::LinkMode;

/// Running nodes: id and address.
type Nodes = Vec<(u32, SocketAddr)>;

/// A follower's seq and contents, read after a loss.
type Held = (u64, BTreeMap<String, String>);

/// A node's `INFO` `seq`.
fn seq_of(addr: SocketAddr) -> Result<u64, String> {
    let info = LineClient::connect_client(addr, REQUEST_TIMEOUT)
        .and_then(|mut c| c.info())
        .map_err(|e| format!("{addr}: INFO failed: {e}"))?;
    field(&info, "seq")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: INFO has no numeric seq"))
}

impl Nemesis {
    /// Runs a failover fault with the cluster to itself. `Ok(false)` when
    /// it did not run (another failover holds the cluster, the faults in
    /// force did not end in time, or the followers did not catch up).
    pub(super) fn failover(&mut self, fault: Fault) -> Result<bool, String> {
        {
            let mut gate = self.gate();
            if gate.exclusive.is_some() {
                return Ok(false);
            }
            gate.exclusive = Some(self.lane);
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.gate().running > 0 {
            if Instant::now() >= deadline || !self.nap(super::POLL) {
                self.release();
                self.note(format!(
                    "{}: skipped, the faults in force did not end",
                    fault.name()
                ));
                return Ok(false);
            }
        }
        self.gate().running += 1;
        let result = match fault {
            Fault::LoseLeader => self.lose_leader(),
            Fault::PauseFailover => self.pause_failover(),
            _ => self.switchover(),
        };
        self.release();
        self.gate().running -= 1;
        result
    }

    /// Lets the other lanes fault again (if this lane held them off).
    fn release(&self) {
        let mut gate = self.gate();
        if gate.exclusive == Some(self.lane) {
            gate.exclusive = None;
        }
    }

    /// Every node's address, all of which must be running and not paused.
    fn all_up(&self) -> Result<Vec<(u32, SocketAddr)>, String> {
        let c = lock(&self.shared.cluster);
        match c.nodes.iter().find(|n| !n.is_running() || n.is_paused()) {
            Some(n) => Err(format!("{} is down or paused", n.name())),
            None => Ok(c.running()),
        }
    }

    /// The leader's id and address, and every other running node.
    fn leader_and_followers(&self) -> Result<(u32, SocketAddr, Nodes), String> {
        let nodes = self.all_up()?;
        let old = lock(&self.shared.cluster).leader();
        let leader_addr = nodes
            .iter()
            .find(|(id, _)| *id == old)
            .map(|(_, a)| *a)
            .ok_or("the leader has no address")?;
        let followers = nodes.into_iter().filter(|(id, _)| *id != old).collect();
        Ok((old, leader_addr, followers))
    }

    /// The planned switchover.
    fn switchover(&mut self) -> Result<bool, String> {
        let nodes = self.all_up()?;
        let old = lock(&self.shared.cluster).leader();
        let start = self.clock.now();
        self.note(format!("switchover: keyval-ctl failover, node {old} alive"));
        let (new, promotion) = self.run_failover(&nodes)?;
        self.repoint(new)?;
        self.record(FailoverKind::Planned, old, new, &promotion, start, None);
        Ok(true)
    }

    /// The leader hangs, and the operator fails over without it (once
    /// every follower has the leader's seq, as for a loss).
    ///
    /// In sync mode the woken leader cannot acknowledge a write (its
    /// followers follow the new leader), but it still answers reads on the
    /// connections its clients kept, until it is re-pointed 2.5 to 5 s
    /// later: longer than the sync timeout, so that its writers give up on
    /// it and write to the new leader meanwhile.
    fn pause_failover(&mut self) -> Result<bool, String> {
        let (old, leader_addr, followers) = self.leader_and_followers()?;
        if followers.is_empty()
            || self
                .caught_up("pause-failover", leader_addr, &followers)?
                .is_none()
        {
            return Ok(false);
        }
        let start = self.clock.now();
        self.last_sample(old);
        lock(&self.shared.cluster).node_mut(old)?.set_paused(true)?;
        self.note(format!(
            "pause-failover: SIGSTOP node {old} (the leader); keyval-ctl failover over the followers"
        ));
        let promoted = self.run_failover(&followers).and_then(|(new, promotion)| {
            self.repoint_others(new, old)?;
            Ok((new, promotion))
        });
        // Whatever happened, the node runs again.
        let resumed = lock(&self.shared.cluster)
            .node_mut(old)
            .and_then(|n| n.set_paused(false));
        let (new, promotion) = promoted?;
        resumed?;
        let hold = self.millis(2500, 5000);
        self.note(format!(
            "pause-failover: SIGCONT node {old}, which believes it leads; re-pointed in {hold:?}"
        ));
        self.nap(hold);
        let (addr, proxy) = {
            let c = lock(&self.shared.cluster);
            let node = c.node(old)?;
            let addr = node.addr().ok_or("the old leader is not running")?;
            (addr, node.proxy.addr())
        };
        self.shared.ctl.follow(addr, proxy)?;
        self.note(format!(
            "node {old} follows node {new} through its proxy {proxy}"
        ));
        self.record(FailoverKind::Paused, old, new, &promotion, start, None);
        Ok(true)
    }

    /// The leader's machine is lost for good.
    ///
    /// Before the kill, every follower must reach the seq the leader has
    /// when the fault begins (bounded; otherwise the fault is skipped). So
    /// whatever was acknowledged before the lost leader's own era (and any
    /// torn follower tail) is on every follower, and in async mode the
    /// writes the promoted node lacks are exactly writes the lost leader
    /// acknowledged: those the checker may excuse.
    fn lose_leader(&mut self) -> Result<bool, String> {
        let (old, leader_addr, followers) = self.leader_and_followers()?;
        if followers.is_empty() {
            return Ok(false);
        }
        let Some(target) = self.caught_up("lose-leader", leader_addr, &followers)? else {
            return Ok(false);
        };
        // Half the time the leader's network goes first: its followers'
        // links are cut for a moment while it keeps taking writes. In
        // async mode it acknowledges writes no follower gets (the loss the
        // checker must excuse exactly); in sync mode it cannot.
        let cut = self.rng.bool().then(|| self.millis(200, 1500));
        if let Some(hold) = cut {
            self.set_links(LinkMode::Cut);
            self.note(format!(
                "lose-leader: cut every follower's link for {hold:?}"
            ));
            self.nap(hold);
        }
        self.gate().replacing += 1;
        self.last_sample(old);
        lock(&self.shared.cluster).lose(old)?;
        if cut.is_some() {
            self.set_links(LinkMode::Pass);
        }
        // After the kill: every write the lost leader took was sent before.
        let start = self.clock.now();
        self.note(format!(
            "lose-leader: kill -9 node {old} and delete its data (followers were at seq >= {target})"
        ));
        let held = self.settle(&followers)?;
        let (new, promotion) = self.run_failover(&followers)?;
        let (seq, data) = held
            .get(&new)
            .cloned()
            .ok_or_else(|| format!("keyval-ctl promoted node {new}, which was not read"))?;
        if seq != promotion.seq {
            return Err(format!(
                "node {new} was at seq {seq} when read after the loss, but was promoted at seq {}",
                promotion.seq
            ));
        }
        self.repoint(new)?;
        self.record(FailoverKind::Lost, old, new, &promotion, start, Some(data));
        // The others may fault again while the machine is replaced.
        self.release();
        let down = self.millis(1000, 4000);
        self.nap(down);
        // The `follow` runs under the cluster lock: the other lanes may
        // fault again, and must not kill or restart the new node (which
        // moves it to another port) before it has been told to follow.
        let id = {
            let mut c = lock(&self.shared.cluster);
            let id = c.add_follower()?;
            let node = c.node(id)?;
            let addr = node.addr().ok_or("the new node is not running")?;
            self.shared.ctl.follow(addr, node.proxy.addr())?;
            id
        };
        self.gate().replacing -= 1;
        self.note(format!(
            "lose-leader: new empty node {id} replaces node {old}; keyval-ctl follow through its proxy"
        ));
        Ok(true)
    }

    /// Waits (bounded) until every follower has the seq the leader has
    /// now, and returns that seq; `None` (noted) if they did not. A
    /// follower whose log was torn may have lost writes it had
    /// acknowledged; the catch-up brings them back, and a failover must
    /// not promote it before.
    fn caught_up(
        &mut self,
        fault: &str,
        leader: SocketAddr,
        followers: &[(u32, SocketAddr)],
    ) -> Result<Option<u64>, String> {
        let target = seq_of(leader)?;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let behind = followers
                .iter()
                .filter(|(_, a)| seq_of(*a).map_or(true, |s| s < target))
                .count();
            if behind == 0 {
                return Ok(Some(target));
            }
            if Instant::now() >= deadline || !self.nap(super::POLL) {
                self.note(format!(
                    "{fault}: skipped, {behind} followers did not reach seq {target}"
                ));
                return Ok(None);
            }
        }
    }

    /// Sets every node's link.
    fn set_links(&self, mode: LinkMode) {
        for node in &lock(&self.shared.cluster).nodes {
            node.proxy.set_mode(mode);
        }
    }

    /// After a loss: waits until no follower's seq moves (bytes the proxy
    /// still held may land), then reads each one's seq and contents.
    fn settle(&mut self, followers: &[(u32, SocketAddr)]) -> Result<BTreeMap<u32, Held>, String> {
        let seqs = |f: &[(u32, SocketAddr)]| -> Result<Vec<u64>, String> {
            f.iter().map(|(_, a)| seq_of(*a)).collect()
        };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = seqs(followers)?;
        loop {
            self.nap(super::POLL * 3);
            let now = seqs(followers)?;
            if now == last {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the followers kept moving {SETTLE_TIMEOUT:?} after the leader was lost"
                ));
            }
            last = now;
        }
        let mut held = BTreeMap::new();
        for (&(id, addr), seq) in followers.iter().zip(last) {
            let data = LineClient::connect_client(addr, REQUEST_TIMEOUT)
                .and_then(|mut c| client::contents(&mut c))
                .map_err(|e| format!("node {id}: reading its contents failed: {e}"))?;
            held.insert(id, (seq, data));
        }
        Ok(held)
    }

    /// Runs `keyval-ctl failover` over `nodes` and says which one it
    /// promoted.
    fn run_failover(&mut self, nodes: &[(u32, SocketAddr)]) -> Result<(u32, Promotion), String> {
        let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, a)| *a).collect();
        let (out, promotion) = self.shared.ctl.failover(&addrs)?;
        for line in out.lines() {
            self.note(format!("  keyval-ctl: {line}"));
        }
        let new = nodes
            .iter()
            .find(|(_, a)| *a == promotion.leader)
            .map(|(id, _)| *id)
            .ok_or_else(|| format!("keyval-ctl promoted {}, no node of ours", promotion.leader))?;
        Ok((new, promotion))
    }

    /// Makes `new` the harness's leader (clients, every proxy), then tells
    /// every other running node to follow it through its own proxy.
    fn repoint(&mut self, new: u32) -> Result<(), String> {
        self.repoint_others(new, new)
    }

    /// As [`Nemesis::repoint`], but leaves node `skip` alone too.
    fn repoint_others(&mut self, new: u32, skip: u32) -> Result<(), String> {
        let others: Vec<(u32, SocketAddr, SocketAddr)> = {
            let mut c = lock(&self.shared.cluster);
            c.set_leader(new)?;
            c.nodes
                .iter()
                .filter(|n| n.id != new && n.id != skip)
                .filter_map(|n| Some((n.id, n.addr()?, n.proxy.addr())))
                .collect()
        };
        for (id, addr, proxy) in others {
            self.shared.ctl.follow(addr, proxy)?;
            self.note(format!(
                "node {id} follows node {new} through its proxy {proxy}"
            ));
        }
        Ok(())
    }

    fn record(
        &mut self,
        kind: FailoverKind,
        old: u32,
        new: u32,
        promotion: &Promotion,
        start: u64,
        promoted: Option<BTreeMap<String, String>>,
    ) {
        let end = self.clock.now();
        self.note(format!(
            "{}: node {new} leads at epoch {} (was node {old})",
            kind.name(),
            promotion.epoch
        ));
        self.report.failovers.push(Failover {
            kind,
            old,
            new,
            epoch: promotion.epoch,
            start,
            end,
            promoted,
        });
    }
}
