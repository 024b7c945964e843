//! Where each line read on a connection goes, by what the peer is: the
//! first line is a `HELLO`; then client requests go to the node, admin
//! commands to [`admin`](super::admin), handshake answers and the link's
//! lines to [`replica`](super::replica). Frames do not come here (see
//! `Node::process_frames`).

use super::conn::{Conn, Peer};
use super::logthrottle::throttled;
use super::node::Node;
use crate::protocol::{parse_hello, parse_request, Hello, Reply, Request};
use crate::replication::handshake::Claimant;

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
        // Frames, not lines, flow on these.
        Peer::Follower(_) => {}
    }
}

fn hello(node: &mut Node, conn: &mut Conn, line: &[u8]) {
    match parse_hello(line) {
        Some(Hello::Client) => node.client_hello(conn),
        Some(Hello::Follower { id, nonce }) => node.follower_hello(conn, id, nonce),
        Some(Hello::Admin { nonce }) => node.admin_hello(conn, nonce),
        None => {
            throttled!(
                info,
                "invalid-handshake",
                "{}: invalid handshake",
                conn.peer
            );
            conn.reply(Reply::InvalidHandshake);
            conn.closing = true;
        }
    }
}
