//! keyval: a replicated key-value server.
//!
//! ```text
//!            clients (nc, keyval-bench)          followers
//!                      │ lines                       │
//!              ┌───────▼─────────────────────────────▼──────┐
//!  server      │ mio loop: accept, read, parse, execute,     │
//!              │ group commit, release replies, flush        │
//!              └───┬──────────────┬──────────────────┬──────┘
//!   protocol (pure)│    store (pure)│          wal     │ file IO
//!   lines ⇄ Request│   HashSet map  │  append/commit/replay,
//!                  │                │  sync thread (fdatasync),
//!                  │                │  compaction thread,
//!                  │                │  DIGEST/KEYS worker (scan)
//! ```
//!
//! - [`protocol`]: the client line protocol (`docs/protocol.md`), pure.
//! - [`store`]: the in-memory map, pure.
//! - [`query`]: `DIGEST` and `KEYS` from the store or from replayed
//!   writes, pure.
//! - [`wal`]: the write-ahead log, its byte format, the sync thread and
//!   compaction.
//! - [`replication`]: handshake proofs, session records, frames, the
//!   leader's feed and the follower's checks; never owns a socket.
//! - [`server`]: the event loop and connections; the only user of mio.
//! - [`config`]: flags and `KEYVAL_*` environment.
//! - [`access`]: the client password gate and protected mode, pure.
//! - [`reads`]: which writes a read on the leader must not show yet, pure.
//! - [`error`]: the top-level error.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub(crate) mod access;
pub mod config;
pub mod error;
pub(crate) mod protocol;
pub(crate) mod query;
pub(crate) mod reads;
pub mod replication;
pub(crate) mod resp;
pub mod server;
pub(crate) mod store;
pub(crate) mod wal;

/// The log's byte format, for tools and tests that build or damage log
/// files.
pub use wal::record;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod testutil;
