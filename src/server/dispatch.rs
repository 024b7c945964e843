//! Where each line read on a connection goes, by what the peer is: the
//! first line is a `HELLO`; then client requests go to the node, admin
//! commands to [`admin`](super::admin), handshake answers and the link's
//! lines to [`replica`](super::replica). Frames do not come here (see
//! `Node::process_frames`).

use super::conn::{Conn, Peer};
use super::logthrottle::throttled;
use super::node::Node;
use crate::config::Role;
use crate::protocol::{parse_hello, parse_request, Hello, Reply, Request};
use crate::replication::handshake::{self, Challenged, Claimant, Refusal};

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
