//! The guided manual failover: survey every node, stop the old leader's
//! writes if it is reachable and let the best follower catch up, promote
//! that follower, and re-point everyone else at it. Each step is printed;
//! the first failure stops the run with what was done so far on screen.
//! Also the wait for a re-pointed node's link, which `follow` uses.

use std::thread;
use std::time::{Duration, Instant};

use keyval::config::LeaderAddr;

use crate::session::{Info, Session};

/// How often a catching-up follower is polled.
const POLL: Duration = Duration::from_millis(50);

/// One node of the `--nodes` list, as surveyed.
struct Node {
    addr: String,
    session: Option<Session>,
    info: Option<Info>,
}

impl Node {
    fn role(&self) -> Option<&str> {
        self.info.as_ref().and_then(|i| i.get("role"))
    }

    fn is_writable_leader(&self) -> bool {
        self.role() == Some("leader")
            && self.info.as_ref().and_then(|i| i.get("writes")) == Some("ok")
    }
}

/// Picks the follower to promote: the highest epoch, then the highest seq
/// (the one holding the most of the newest history); the first on ties.
pub fn choose<'a>(followers: impl Iterator<Item = (usize, &'a Info)>) -> Option<usize> {
    let mut best: Option<(usize, (u64, u64))> = None;
    for (i, info) in followers {
        let rank = (info.num("epoch"), info.num("seq"));
        if best.is_none_or(|(_, b)| rank > b) {
            best = Some((i, rank));
        }
    }
    best.map(|(i, _)| i)
}

/// Runs the failover over `addrs` (`host:port` each).
///
/// # Errors
/// A one-line reason; what was already done has been printed.
pub fn run(
    addrs: &[String],
    secret: &[u8],
    timeout: Duration,
    catch_up: Duration,
) -> Result<(), String> {
    let mut nodes: Vec<Node> = addrs
        .iter()
        .map(|addr| {
            let mut node = Node {
                addr: addr.clone(),
                session: None,
                info: None,
            };
            match Session::open(addr, secret, timeout).and_then(|mut s| {
                let info = s.info()?;
                Ok((s, info))
            }) {
                Ok((session, info)) => {
                    println!(
                        "{addr}: {} epoch {} seq {} writes {}",
                        info.get("role").unwrap_or("?"),
                        info.num("epoch"),
                        info.num("seq"),
                        info.get("writes").unwrap_or("?")
                    );
                    node.session = Some(session);
                    node.info = Some(info);
                }
                Err(e) => println!("{addr}: unreachable ({e})"),
            }
            node
        })
        .collect();
    let leaders: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].is_writable_leader())
        .collect();
    if leaders.len() > 1 {
        return Err("more than one node takes writes; fence all but one by hand first".into());
    }
    let old_leader = leaders.first().copied();
    let chosen = choose(
        nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role() == Some("follower"))
            .filter_map(|(i, n)| n.info.as_ref().map(|info| (i, info))),
    )
    .ok_or("no reachable follower to promote")?;
    if let Some(l) = old_leader {
        let reply = call(&mut nodes[l], "FENCE")?;
        let seq: u64 = reply
            .strip_prefix("OK seq ")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{}: FENCE answered {reply:?}", nodes[l].addr))?;
        println!(
            "{}: fenced (takes no more writes), last seq {seq}",
            nodes[l].addr
        );
        wait_for_seq(&mut nodes[chosen], seq, catch_up).map_err(|e| {
            format!(
                "{e}; the old leader {} stays fenced (keyval-ctl promote on it takes it back)",
                nodes[l].addr
            )
        })?;
        println!("{}: caught up to seq {seq}", nodes[chosen].addr);
    } else {
        println!("no reachable leader takes writes: promoting without a final catch-up");
    }
    let reply = call(&mut nodes[chosen], "PROMOTE")?;
    if !reply.starts_with("OK") {
        return Err(format!("{}: PROMOTE answered {reply}", nodes[chosen].addr));
    }
    println!("{}: promoted ({reply})", nodes[chosen].addr);
    let LeaderAddr { host, port } = LeaderAddr::parse(&nodes[chosen].addr)
        .ok_or("the chosen node's address is not host:port")?;
    let new_leader = nodes[chosen].addr.clone();
    let mut unreachable = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        if i == chosen {
            continue;
        }
        if node.session.is_none() {
            unreachable.push(node.addr.clone());
            continue;
        }
        let reply = call(node, &format!("FOLLOW {host} {port}"))?;
        if reply != "OK" {
            return Err(format!("{}: FOLLOW answered {reply}", node.addr));
        }
        println!("{}: now follows {new_leader}", node.addr);
    }
    for addr in unreachable {
        let target = LeaderAddr::parse(&addr).map_or_else(
            || format!("--host {addr}"),
            |a| format!("--host {} --port {}", a.host, a.port),
        );
        println!(
            "{addr}: not re-pointed; when it is back, run: keyval-ctl {target} follow {host} {port}"
        );
    }
    println!("done: {new_leader} is the leader");
    Ok(())
}

fn call(node: &mut Node, request: &str) -> Result<String, String> {
    let session = node
        .session
        .as_mut()
        .ok_or_else(|| format!("{}: unreachable", node.addr))?;
    session.call(request)
}

/// How a re-pointed node's link to its leader turned out.
pub enum Link {
    /// `leader_link up`; the node's `INFO`.
    Up(Info),
    /// `leader_link refused`, with the node's reason (`leader_link_error`).
    Refused(String),
    /// Still down when the wait ran out (the node keeps dialling), with
    /// the last refusal the node saw, if any.
    Down(Option<String>),
}

/// Polls the node's `INFO` until `leader_link` is `up` or `refused`, for at
/// most `limit`.
///
/// # Errors
/// The node stopped answering.
pub fn wait_for_link(session: &mut Session, limit: Duration) -> Result<Link, String> {
    let deadline = Instant::now() + limit;
    loop {
        let info = session.info()?;
        match info.get("leader_link") {
            Some("up") => return Ok(Link::Up(info)),
            Some("refused") => {
                let why = info
                    .get("leader_link_error")
                    .unwrap_or("no reason given; see the node's log")
                    .to_string();
                return Ok(Link::Refused(why));
            }
            _ if Instant::now() >= deadline => {
                return Ok(Link::Down(
                    info.get("leader_link_error").map(str::to_string),
                ))
            }
            _ => thread::sleep(POLL),
        }
    }
}

/// Polls `node`'s `INFO` until its seq reaches `seq`.
fn wait_for_seq(node: &mut Node, seq: u64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let session = node
            .session
            .as_mut()
            .ok_or_else(|| format!("{}: unreachable", node.addr))?;
        let have = session.info()?.num("seq");
        if have >= seq {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{}: still at seq {have} of {seq} after {limit:?}",
                node.addr
            ));
        }
        thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(epoch: u64, seq: u64) -> Info {
        Info {
            fields: vec![
                ("epoch".into(), epoch.to_string()),
                ("seq".into(), seq.to_string()),
            ],
        }
    }

    #[test]
    fn the_newest_epoch_then_the_longest_log_wins() {
        let nodes = [info(1, 90), info(2, 10), info(2, 40), info(2, 40)];
        assert_eq!(choose(nodes.iter().enumerate()), Some(2));
        assert_eq!(choose(nodes[..1].iter().enumerate()), Some(0));
        assert_eq!(choose(std::iter::empty()), None);
    }
}
