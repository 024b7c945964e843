//! The crate-wide error: what can stop a node from starting or running.
//! Each layer keeps its own enum ([`WalError`]); this one wraps them for
//! `main`, which prints it as one line and exits non-zero.

use std::fmt;
use std::io;

use crate::wal::WalError;

/// A fatal error of the node.
#[derive(Debug)]
pub enum Error {
    /// The log could not be opened, replayed or written.
    Wal(WalError),
    /// Some other IO step failed; `what` names it.
    Io { what: String, source: io::Error },
}

impl Error {
    /// Wraps an IO error with a fixed description, for `map_err`.
    pub fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io {
            what: what.to_string(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Wal(e) => write!(f, "{e}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Wal(e) => Some(e),
            Error::Io { source, .. } => Some(source),
        }
    }
}

impl From<WalError> for Error {
    fn from(e: WalError) -> Error {
        Error::Wal(e)
    }
}
