//! What keyval's tools (`keyval-bench`, `keyval-torture`) and the server's
//! integration tests share to drive real `keyval` processes on loopback:
//!
//! - [`ChildGuard`] owns a child process and kills and reaps it when
//!   dropped, so no exit path (an error, a panic) leaves one running;
//!   [`run_bounded`] runs a command to its end within a time limit;
//! - [`Output`] reads a child's piped output line by line on background
//!   threads and notes the address of its `listening on <addr>` line
//!   ([`parse_listening`]), which [`wait_listening`] waits for;
//! - [`LineClient`] speaks the line protocol over a blocking socket whose
//!   connect, reads and writes are all bounded;
//! - [`free_port`] and [`rss_bytes`] for the rest.
//!
//! Nothing here panics on what a process or a socket sends: every
//! failure is an `io::Error` (or a [`NotListening`]), and the tests wrap
//! them in their own `expect`s.

mod client;
mod output;
mod process;

pub use client::LineClient;
pub use output::{parse_listening, wait_listening, NotListening, Output};
pub use process::{free_port, rss_bytes, run_bounded, ChildGuard, Finished};
