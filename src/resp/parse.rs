//! Splits a RESP connection's input into commands.
//!
//! A command is an array of bulk strings (`*<n>\r\n` then `n` times
//! `$<len>\r\n<bytes>\r\n`), which is what every Redis client sends, or an
//! inline command: a line of words split on spaces (what a person types).
//! An empty line between commands is skipped, as Redis does.
//!
//! Pure, and bounded before it allocates: an array longer than
//! [`MAX_ARGS`], a bulk string longer than [`Limits::max_bulk`], a request
//! longer than [`Limits::max_request`] or an inline line longer than
//! [`Limits::max_inline`] is a [`ProtocolError`] as soon as its header (or
//! that many bytes) arrived, so a client cannot make the server buffer
//! more than the limits. The arguments are ranges into the caller's
//! buffer: nothing is copied.

use std::fmt;
use std::ops::Range;

/// Most elements in one command array (Redis's limit too).
pub const MAX_ARGS: usize = 1 << 20;

/// The bounds a connection's input is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (`--max-value-bytes`).
    pub max_bulk: usize,
    /// Longest inline command line (`--max-line-bytes`).
    pub max_inline: usize,
    /// Most bytes one command may take in all, headers included.
    pub max_request: usize,
}

/// What [`parse`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command of `used` bytes; its arguments' ranges are in the
    /// `args` vector passed in (at least one).
    Command { used: usize },
    /// `used` bytes that hold no command (an empty line, an empty array):
    /// drop them and parse on.
    Skip { used: usize },
    /// The command is not complete yet: read more.
    Incomplete,
}

/// Why the input is not RESP. The connection is answered
/// `-ERR Protocol error: <this>` and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*<n>` that is not a number, or above [`MAX_ARGS`].
    InvalidMultibulkLength,
    /// `$<n>` that is not a number, negative, or above
    /// [`Limits::max_bulk`].
    InvalidBulkLength,
    /// An array element that is not a bulk string (`got` is its first
    /// byte).
    ExpectedBulk { got: u8 },
    /// A length line that does not end in `\r\n` soon enough.
    TooBigCountString,
    /// An inline line longer than [`Limits::max_inline`].
    TooBigInline,
    /// A command longer than [`Limits::max_request`].
    TooBigRequest,
    /// A bulk string not followed by `\r\n`.
    MissingCrlf,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("Redis's texts: 'invalid multibulk length', 'invalid bulk length', \"expected '$', got 'x'\", ...")
    }
}

/// Parses the command at the start of `buf`, filling `args` (cleared
/// first) with its arguments' ranges in `buf`.
///
/// # Errors
/// A [`ProtocolError`]: the connection must be closed after its reply.
pub fn parse(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    let _ = (buf, limits, args);
    todo!()
}
