//! Where each line read on a connection goes, by what the peer is: the
//! first line is a `HELLO`; then client requests go to the node, admin
//! commands to [`admin`](super::admin), handshake answers and the link's
//! lines to [`replica`](super::replica). A Redis client's input is split
//! into commands here too ([`resp`]), which go to
//! [`redis`](super::redis). Frames do not come here (see
//! `Node::process_frames`).

use log::debug;

use super::conn::{Conn, Peer};
use super::logthrottle::throttled;
use super::node::Node;
use super::slots::{Class, Slots};
use crate::config::Role;
use crate::protocol::{parse_hello, parse_request, Hello, Reply, Request};
use crate::replication::handshake::{self, Challenged, Claimant, Refusal};
use crate::resp::{self, Parsed, Resume};

/// Executes one line from `conn` (connection `key`).
pub fn line(node: &mut Node, conn: &mut Conn, key: usize, line: &[u8]) {
    match &conn.kind {
        Peer::AwaitHello => hello(node, conn, line),
        Peer::Client | Peer::Admin => match parse_request(line) {
            Ok(Request::Admin(admin)) if matches!(conn.kind, Peer::Admin) => {
                node.admin(conn, admin)
            }
            Ok(request) => node.execute(conn, key, request),
            Err(_) => conn.reply(Reply::InvalidCommand),
        },
        Peer::Challenged(challenged) => {
            let challenged = challenged.clone();
            match challenged.who {
                Claimant::Follower(_) => node.follower_auth(conn, key, &challenged, line),
                Claimant::Admin => node.admin_auth(conn, &challenged, line),
            }
        }
        Peer::Leader if node.repl.link.is_current(key) => node.link_line(conn, line),
        // A replaced link's lines are ignored until it closes.
        Peer::Leader => {}
        // Frames, not lines, flow on these; RESP commands on a Redis
        // client's (`Node::redis_command`).
        Peer::Follower(_) | Peer::Redis(_) => {}
    }
}

fn hello(node: &mut Node, conn: &mut Conn, line: &[u8]) {
    match parse_hello(line) {
        Some(Hello::Client) => node.client_hello(conn),
        Some(Hello::Follower { id, nonce }) => {
            let challenge = if node.role.role == Role::Leader {
                handshake::challenge_follower(node.config.secret.as_deref(), id, nonce)
            } else {
                Err(Refusal::NotLeader)
            };
            challenge_or_refuse(conn, challenge, "follower");
        }
        Some(Hello::Admin { nonce }) => {
            let challenge = handshake::challenge_admin(node.config.secret.as_deref(), nonce);
            challenge_or_refuse(conn, challenge, "admin");
        }
        None => {
            throttled!(
                info,
                "invalid-handshake",
                "{}: invalid handshake",
                conn.peer
            );
            conn.refuse(Reply::InvalidHandshake.as_bytes());
        }
    }
}

/// Sends a follower's or an admin's challenge (`who` says which), or the
/// refusal of its hello.
fn challenge_or_refuse(
    conn: &mut Conn,
    challenge: Result<(Challenged, String), Refusal>,
    who: &str,
) {
    match challenge {
        Ok((challenged, line)) => {
            conn.reply_with(|out| out.extend_from_slice(line.as_bytes()));
            conn.kind = Peer::Challenged(Box::new(challenged));
        }
        Err(refusal) => {
            throttled!(
                warn,
                &format!("{who}-refused"),
                "{}: {who} refused: {refusal}",
                conn.peer
            );
            conn.refuse(&refusal.reply());
        }
    }
}

/// What [`resp`] did with a Redis client's input.
pub struct Step {
    /// Bytes used up: a command run, or skipped.
    pub used: usize,
    /// Read no further this time: the command is not whole yet, the
    /// connection closes, or it must pause.
    pub stop: bool,
    /// A query found no room for its reply: pause until output drains,
    /// leaving the command unread.
    pub paused: bool,
}

/// Runs the first command in `input`, from the Redis client on `conn`
/// (connection `key`).
pub fn resp(node: &mut Node, slots: &Slots, conn: &mut Conn, key: usize, input: &[u8]) -> Step {
    let Peer::Redis(client) = &mut conn.kind else {
        return Step {
            used: 0,
            stop: true,
            paused: false,
        };
    };
    let max_line = node.config.max_line_bytes;
    let limits = resp::Limits {
        max_bulk: node.config.max_value_bytes,
        max_inline: max_line,
        max_request: node.config.max_value_bytes + max_line,
    };
    // The command's arguments so far and where its parse stopped stay
    // with the connection while it trickles in.
    let mut args = std::mem::take(&mut client.args);
    let mut resume = client.resume;
    let parsed = resp::parse::parse_resume(input, &limits, &mut args, &mut resume);
    let welcomed = client.welcomed;
    let mut step = Step {
        used: 0,
        stop: false,
        paused: false,
    };
    match parsed {
        Ok(Parsed::Command { .. }) if !welcomed => {
            // Its handshake ends here: a client slot, protected mode. The
            // command runs on the next step.
            if !slots.refuse_redis(conn) {
                node.redis_welcome(conn);
            }
            step.stop = conn.closing;
        }
        Ok(Parsed::Command { used }) => {
            let command = &input[..used];
            // Most commands have a few arguments: those need no allocation.
            let mut few: [&[u8]; 4] = [&[]; 4];
            let many: Vec<&[u8]>;
            let words = if args.len() <= few.len() {
                for (word, range) in few.iter_mut().zip(&args) {
                    *word = &command[range.clone()];
                }
                &few[..args.len()]
            } else {
                many = args.iter().map(|range| &command[range.clone()]).collect();
                &many[..]
            };
            node.clients = slots.table.count(Class::Client);
            node.redis_command(conn, key, words);
            if conn.deferred.is_some() {
                resume = Resume::default();
                step.stop = true;
                step.paused = true;
            } else {
                step.used = used;
            }
        }
        Ok(Parsed::Skip { used }) => step.used = used,
        Ok(Parsed::Incomplete) => {
            if conn.peer_eof {
                // Half a command and no more to come.
                step.used = input.len();
            }
            step.stop = true;
        }
        Err(e) => {
            debug!("{}: RESP protocol error: {e}", conn.peer);
            let text = format!("ERR Protocol error: {e}");
            conn.reply_with(|out| resp::encode::error(out, &text));
            conn.closing = true;
            step.stop = true;
        }
    }
    if let Peer::Redis(client) = &mut conn.kind {
        // A command of many arguments leaves no large buffer behind.
        if args.capacity() > 1024 && resume == Resume::default() {
            args = Vec::new();
        }
        client.args = args;
        client.resume = resume;
    }
    step
}
