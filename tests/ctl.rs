//! `keyval-ctl`'s command line against a real node: the connection
//! options (`--host`, `--port`, `--secret-file`, `--timeout-ms`) work after
//! the subcommand as well as before it, and `--help` describes every
//! option and command.

mod common;

use std::process::{Command, Output};

use common::{Node, SECRET};

/// Runs `keyval-ctl` with exactly `args`, the secret in `KEYVAL_SECRET`
/// unless `secret` is false.
fn run_ctl(args: &[&str], secret: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyval-ctl"));
    command.env_remove("KEYVAL_SECRET_FILE").args(args);
    if secret {
        command.env("KEYVAL_SECRET", SECRET);
    } else {
        command.env_remove("KEYVAL_SECRET");
    }
    command.output().expect("run keyval-ctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts exit status 0 and returns stdout.
fn succeeded(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[test]
fn connection_options_work_after_the_subcommand() {
    let node = Node::leader(&[]);
    let port = node.addr.port().to_string();
    // An ephemeral port: the default 5000 would not reach the node.
    assert_ne!(port, "5000");

    let info = succeeded(
        run_ctl(
            &[
                "info",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--timeout-ms",
                "3000",
            ],
            true,
        ),
        "info with the options after it",
    );
    assert!(info.lines().any(|l| l == "role leader"), "{info}");

    // Split around the subcommand.
    let info = succeeded(
        run_ctl(&["--host", "127.0.0.1", "info", "--port", &port], true),
        "info between the options",
    );
    assert!(info.lines().any(|l| l == "writes ok"), "{info}");

    // The secret from a file named after the subcommand.
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write secret");
    let secret_path = secret_file.to_str().expect("utf8 path");
    succeeded(
        run_ctl(
            &["info", "--port", &port, "--secret-file", secret_path],
            false,
        ),
        "info with --secret-file after it",
    );

    // The host after the subcommand is the one dialled: the node listens
    // on 127.0.0.1 only.
    let refused = run_ctl(&["info", "--host", "127.0.0.2", "--port", &port], true);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.2:{port}: unreachable")),
        "{stderr}"
    );

    // A command that changes the node, options after it.
    let fenced = succeeded(
        run_ctl(&["fence", "--host", "127.0.0.1", "--port", &port], true),
        "fence with the options after it",
    );
    assert!(
        fenced.starts_with(&format!("127.0.0.1:{port}: OK")),
        "{fenced}"
    );
    assert_eq!(node.info_field("writes"), "fenced");
}

/// Every option and every command of a `--help` page has a description:
/// no entry line ends at its name.
fn assert_all_described(help: &str, what: &str) {
    let mut in_list = false;
    for line in help.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_list = matches!(
                line,
                "Commands:" | "Arguments:" | "Options:" | "Connection options:"
            );
            continue;
        }
        if !in_list || line.trim().is_empty() {
            continue;
        }
        // Two spaces part the name from its description, which is more
        // than the default or the environment variable in brackets.
        let described = line
            .trim()
            .split_once("  ")
            .is_some_and(|(_, about)| !about.trim().is_empty() && !about.trim().starts_with('['));
        assert!(described, "{what}: no description in {line:?}\n{help}");
    }
}

#[test]
fn help_describes_every_option_and_command() {
    let top = succeeded(run_ctl(&["--help"], false), "--help");
    for word in ["info", "promote", "follow", "fence", "compact", "failover"] {
        assert!(
            top.lines().any(|l| l.trim_start().starts_with(word)),
            "--help does not list {word}:\n{top}"
        );
    }
    assert!(top.contains("before or after the command"), "{top}");
    assert_all_described(&top, "--help");
    for command in ["info", "promote", "follow", "fence", "compact", "failover"] {
        let help = succeeded(run_ctl(&[command, "--help"], false), command);
        assert!(help.contains("--port <PORT>"), "{command}:\n{help}");
        assert_all_described(&help, command);
    }
}
