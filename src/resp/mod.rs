//! The Redis protocol (RESP2 and RESP3) on the client port
//! (`docs/redis.md`): framing, commands and reply encoding.
//!
//! Pure: bytes in, commands out, bytes of replies back; no sockets, no
//! files, no clocks. The server reads a connection's first byte, and a
//! `*` (a RESP array, which every Redis client sends first) hands the
//! connection to this module instead of the line protocol.
//!
//! ```text
//! *3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n   --parse-->  args [SET, a, 1]
//! args                                        --command-> Command::Set { .. }
//! Command, executed by the server             --encode--> +OK\r\n
//! ```
//!
//! - [`parse`]: splits the input into commands (arrays of bulk strings,
//!   or inline lines), bounded before anything is allocated;
//!   [`parse::parse_resume`] goes on where an incomplete command stopped.
//! - [`command`]: turns a command's arguments into a typed [`Command`],
//!   with Redis's error texts.
//! - [`encode`]: RESP2 and RESP3 replies.
//! - [`glob`]: Redis's glob patterns, for `KEYS`, `SCAN MATCH` and
//!   `CONFIG GET`.

pub mod command;
pub mod encode;
pub mod glob;
pub mod parse;

pub use parse::{Limits, Parsed, Resume};
