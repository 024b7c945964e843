//! Connection slots under attack, against the real binary: silent and
//! slowloris sockets filling `--max-clients` must not lock out a follower
//! or `keyval-ctl`, a socket that never finishes its handshake is closed
//! after `--handshake-timeout-ms`, and running out of file descriptors
//! does not kill the listener.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{count_log, free_port, leader_on, start_follower, wait_followers};
use common::{ctl, keyval_bin, wait_until, Client, Node, WAIT};

/// Whether the server closed `stream` (EOF, a reset, or a refusal line
/// followed by EOF), checked without blocking.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut buf = [0u8; 64];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            // A `TOO_MANY_CONNECTIONS` line: the close follows.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    let _ = stream.set_nonblocking(false);
    closed
}

/// Sockets that connect and never finish a handshake: `silent` ones send
/// nothing, `slow` ones send one byte of a line that never ends every few
/// hundred milliseconds. Sockets the server closes are opened again, so
/// the pressure stays on until the attack is dropped.
struct Attack {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Attack {
    fn start(addr: SocketAddr, silent: usize, slow: usize) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let open = move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok();
        let mut silent_socks: Vec<Option<TcpStream>> = (0..silent).map(|_| open()).collect();
        let mut slow_socks: Vec<Option<TcpStream>> = (0..slow).map(|_| open()).collect();
        let thread = thread::spawn(move || {
            let mut last_byte = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let drip = last_byte.elapsed() >= Duration::from_millis(300);
                if drip {
                    last_byte = Instant::now();
                }
                for sock in silent_socks.iter_mut().chain(slow_socks.iter_mut()) {
                    if sock.as_mut().is_none_or(closed_by_server) {
                        *sock = open();
                    }
                }
                if drip {
                    for sock in slow_socks.iter_mut().flatten() {
                        let _ = sock.write_all(b"H");
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        Attack {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_restarted_follower_and_keyval_ctl_get_in_past_silent_and_slow_sockets() {
    // A handshake timeout longer than the test: the reserved slots alone
    // must let the follower and the operator in.
    let leader = leader_on(
        free_port(),
        &[
            "--max-clients",
            "50",
            "--sync-followers",
            "1",
            "--handshake-timeout-ms",
            "120000",
        ],
    );
    let mut follower = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    assert_eq!(leader.client().call("PUT before attack"), "OK");
    follower.kill9();
    wait_followers(&leader, 0);

    // 60 silent sockets and 5 slowloris ones: more than --max-clients,
    // and with the refused ones reopened, enough to fill every slot.
    let attack = Attack::start(leader.addr, 60, 5);
    wait_until("the attack to take the client slots", || {
        count_log(&leader, ": connected (conn") >= 51
    });

    follower.restart();
    wait_followers(&leader, 1);
    let mut client = leader.client();
    assert_eq!(client.call("PUT during attack"), "OK");

    let out = ctl(leader.addr.port(), &["info"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keyval-ctl failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("role leader"), "{stdout}");

    // The follower has the write made under attack.
    wait_until("the follower to have the write", || {
        follower.client().call("GET during") == "attack"
    });
    drop(attack);
}

#[test]
fn a_socket_that_never_finishes_its_handshake_is_closed() {
    let node = Node::leader(&["--handshake-timeout-ms", "300"]);
    let started = Instant::now();
    let mut silent = TcpStream::connect(node.addr).expect("connect");
    let mut slow = TcpStream::connect(node.addr).expect("connect");
    let mut client = node.client();
    for stream in [&silent, &slow] {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
    }
    // A slowloris: one byte of a line that never ends, every 100 ms.
    let writer = {
        let mut slow = slow.try_clone().expect("clone");
        thread::spawn(move || {
            while slow.write_all(b"H").is_ok() && started.elapsed() < WAIT {
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut buf = [0u8; 16];
    assert!(
        matches!(silent.read(&mut buf), Ok(0) | Err(_)),
        "the silent socket got data"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the silent socket was closed only after {:?}",
        started.elapsed()
    );
    assert!(
        matches!(slow.read(&mut buf), Ok(0) | Err(_)),
        "the slowloris socket got data"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    writer.join().expect("writer");

    // The client that said HELLO CLIENT stays, well past the timeout.
    thread::sleep(Duration::from_millis(600));
    assert_eq!(client.call("PING"), "PONG");
    node.wait_log("no handshake within 300 ms");
}

#[test]
fn the_listener_survives_running_out_of_file_descriptors() {
    let temp = tempfile::tempdir().expect("tempdir");
    // A hard and soft limit of 64 descriptors, well below what
    // --max-clients 10000 needs.
    let mut command = Command::new("sh");
    command.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\"", keyval_bin()]);
    let node = Node::spawn(temp.path(), &["--role", "leader"], command)
        .unwrap_or_else(|(status, log)| panic!("start: {status}\n{log}"));

    // Connect until the node refuses: it must answer every connection,
    // with HELLO SERVER or TOO_MANY_CONNECTIONS, never leave one hanging.
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() < 200, "no refusal after 200 connections");
        let mut stream = TcpStream::connect(node.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = stream.write_all(b"HELLO CLIENT\n");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        let answer = loop {
            match stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break String::from_utf8_lossy(&reply).into_owned(),
                Ok(1) => reply.push(byte[0]),
                Ok(_) => break "closed".to_string(),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    panic!(
                        "connection {} got no answer: the listener is dead",
                        held.len()
                    )
                }
                Err(_) => break "reset".to_string(),
            }
        };
        if answer != "HELLO SERVER" {
            break answer;
        }
        held.push(stream);
    };
    assert!(
        refused == "TOO_MANY_CONNECTIONS" || refused == "closed" || refused == "reset",
        "{refused:?}"
    );
    assert!(held.len() > 10, "refused after only {} clients", held.len());
    drop(held);

    // Once descriptors are free again, a new client is served.
    wait_until("a new client to be served", || {
        let mut c = Client::connect(node.addr);
        c.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        c.try_call("HELLO CLIENT").as_deref() == Some("HELLO SERVER")
            && c.try_call("PING").as_deref() == Some("PONG")
    });
    // The operator was told at start.
    node.wait_log("open-file limit is 64");
}
