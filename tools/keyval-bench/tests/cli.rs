//! The command line of `keyval-bench`, run as the binary: its help, and
//! how a load against a port nobody listens on fails.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyval-bench"))
        .args(args)
        .env_remove("KEYVAL_BENCH_LOG")
        .output()
        .expect("run keyval-bench")
}

#[test]
fn run_help_shows_the_default_port() {
    let out = bench(&["run", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: 5000]"), "{help}");
}

#[test]
fn a_load_nobody_answers_fails_with_one_line() {
    // A port that was free a moment ago: nothing listens there.
    let port = keyval_testkit::free_port().expect("port").to_string();
    let out = bench(&[
        "run",
        "--port",
        &port,
        "--requests",
        "1",
        "--connections",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "keyval-bench: load against 127.0.0.1:{port} failed"
        )),
        "{stderr}"
    );
}
