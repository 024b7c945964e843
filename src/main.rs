//! The `keyval` binary: parse flags, set up logging, run the node.
//! Bad flags exit 2 with one line; a fatal error exits 1.

#![warn(clippy::unwrap_used)]

use std::process::ExitCode;

use clap::Parser;
use keyval::config::{usage_error_line, Cli, Config, LogLevel};
use keyval::server::{report_fatal, Server};
use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line naming the problem; `--help` has the rest.
            eprintln!("keyval: {}", usage_error_line(&e.to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let config = match Config::from_cli(
        cli,
        std::env::var("KEYVAL_SECRET").ok(),
        std::env::var("KEYVAL_PASSWORD").ok(),
    ) {
        Ok(config) => config,
        Err(msg) => {
            eprintln!("keyval: {msg}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_level);
    let result = Server::bind(config).and_then(Server::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_fatal(&e);
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: LogLevel) {
    let filter = match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    };
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .build();
    let _ = TermLogger::init(filter, config, TerminalMode::Stderr, ColorChoice::Never);
}
