//! The command line of `keyval-torture`, run as the binary: it checks the
//! binaries it is to drive before it starts anything.
//!
//! (Being an integration test, this also has cargo build the binary, which
//! the server's `tests/torture.rs` runs.)

use std::process::{Command, Output};

fn torture(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyval-torture"))
        .args(args)
        .env_remove("TORTURE_SECONDS")
        .env_remove("SEED")
        .output()
        .expect("run keyval-torture")
}

#[test]
fn a_missing_keyval_binary_is_a_usage_error() {
    let out = torture(&["--seconds", "1", "--keyval-bin", "/nonexistent/keyval"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/keyval does not exist"),
        "{stderr}"
    );
}

#[test]
fn help_names_the_seed() {
    let out = torture(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--seed <SEED>"));
}
