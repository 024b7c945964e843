//! The short version of `make torture`: runs the real `keyval-torture`
//! binary against the real `keyval` for `TORTURE_TEST_SECONDS` (default 30)
//! with a random seed (failovers included), and fails if the harness
//! reports any checker failure. The seed is in the output; rerun it with
//! `SEED=<n> make torture` (or `SEED=<n> cargo test --test torture`).
//!
//! `keyval-torture` is a crate of its own in the workspace (tools/), so
//! it is not one of this package's binaries: the test runs the one built
//! beside `keyval`, which `cargo test` at the root (or `--workspace`)
//! builds.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Time on top of the nemesis run for start, healing, catch-up and checks.
const SLACK: Duration = Duration::from_secs(240);

/// The workspace's `keyval-torture`, in the same target directory as
/// the `keyval` under test.
fn torture_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_keyval")).with_file_name("keyval-torture");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace (cargo test --workspace, or cargo build -p \
         keyval-torture)",
        bin.display()
    );
    bin
}

#[test]
fn short_torture_run_loses_nothing() {
    let seconds: u64 = std::env::var("TORTURE_TEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut cmd = Command::new(torture_bin());
    cmd.args(["--seconds", &seconds.to_string()])
        .arg("--keyval-bin")
        .arg(env!("CARGO_BIN_EXE_keyval"))
        .arg("--keyval-ctl-bin")
        .arg(env!("CARGO_BIN_EXE_keyval-ctl"))
        .env_remove("TORTURE_SECONDS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn keyval-torture");
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(seconds) + SLACK;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // SIGTERM first: the harness then kills its nodes and reports.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + Duration::from_secs(30);
            while Instant::now() < grace && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (
        out.join().expect("stdout drain"),
        err.join().expect("stderr drain"),
    );
    println!("{out}");
    eprintln!("{err}");
    match status {
        Some(s) => assert!(s.success(), "keyval-torture failed ({s}); report above"),
        None => panic!("keyval-torture did not finish within {seconds} s + {SLACK:?}"),
    }
}
