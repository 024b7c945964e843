//! The command line of `keyval-bench`, run as the binary: its help, how a
//! load against a port nobody listens on fails, how a suite asked for a
//! Redis that is not there fails, and how its redis-benchmark part says
//! that it skips when a tool is missing.

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

#[test]
fn a_suite_with_a_missing_redis_fails_before_any_case() {
    // Any file will do as the keyval binary: nothing is started.
    let keyval = env!("CARGO_BIN_EXE_keyval-bench");
    let out = bench(&[
        "suite",
        "--keyval-bin",
        keyval,
        "--redis-bin",
        "/nonexistent/redis-server",
        "--only",
        "standard",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--redis-bin /nonexistent/redis-server: no such file"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_redis_benchmark_part_says_why_it_skips() {
    // Any file will do as the keyval binary: nothing is started.
    let keyval = env!("CARGO_BIN_EXE_keyval-bench");
    let out = bench(&[
        "suite",
        "--keyval-bin",
        keyval,
        "--redis-bin",
        "none",
        "--only",
        "redis-benchmark",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout,
        "# no Redis comparison: --redis-bin none\n\
         # redis-benchmark part skipped: no Redis to compare with: --redis-bin none\n"
    );

    // A redis-server (a mere file) with no redis-benchmark beside it or
    // on the search path.
    let dir = tempfile::tempdir().expect("temp dir");
    let server = dir.path().join("redis-server");
    std::fs::write(&server, "").expect("write redis-server");
    let out = Command::new(keyval)
        .args(["suite", "--keyval-bin", keyval, "--redis-bin"])
        .arg(&server)
        .args(["--only", "redis-benchmark"])
        .env_remove("KEYVAL_BENCH_LOG")
        .env("PATH", dir.path())
        .output()
        .expect("run keyval-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "# redis-benchmark part skipped: no redis-benchmark beside {} or on PATH; \
             install it (Debian, Ubuntu: apt-get install redis-tools)",
            server.display()
        )),
        "{stdout}"
    );
}
