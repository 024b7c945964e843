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
//!
//! The rules follow Redis 7's `processMultibulkBuffer` and
//! `processInlineBuffer` (`networking.c`). Where they differ, this side
//! is stricter: the byte after a length line's `\r` must be `\n`, a bulk
//! string must be followed by `\r\n` (Redis skips whatever two bytes come
//! next), a length line may be at most [`MAX_LENGTH_LINE`] bytes (Redis
//! allows 64 KiB, for a number of at most 20 digits), an element that
//! does not start with `$` is refused at its first byte (Redis waits for
//! its line), and a whole command is held to [`Limits::max_request`].
//! Inline commands have no quoting (see [`parse`]).
//!
//! ```text
//! *2\r\n$3\r\nGET\r\n$1\r\na\r\n     Command { used: 20 }, args [GET, a]
//! GET a\r\n                          Command { used: 7 },  args [GET, a]
//! \r\n   *0\r\n   *-1\r\n             Skip
//! *2\r\n$3\r\nGE                     Incomplete
//! ```
//!
//! [`parse`] starts from the command's first byte on every call; that is
//! cheap (bulk bytes are skipped by their length, not read), but a command
//! of many small arguments trickling in byte by byte would be read again
//! for every byte. [`parse_resume`] carries a [`Resume`] between calls and
//! goes on where the last call stopped, so a command costs time linear in
//! its length however it arrives.

use std::fmt;
use std::ops::Range;

/// Most elements in one command array (Redis 6's limit; Redis 7 takes
/// up to `INT_MAX`, which only memory bounds).
pub const MAX_ARGS: usize = 1 << 20;

/// Longest length line (`*<n>` or `$<n>`, without its `\r\n`): a number
/// that fits in 64 bits takes at most 20 bytes, so 32 leaves room while
/// still refusing a client that sends digits forever. Longer is
/// [`ProtocolError::TooBigCountString`] or
/// [`ProtocolError::TooBigBulkCountString`].
pub const MAX_LENGTH_LINE: usize = 32;

/// Bytes of the smallest array element, `$0\r\n\r\n`: an array of `n`
/// elements takes at least `n` times this, which [`Limits::max_request`]
/// is checked against as soon as the count is read.
const MIN_ELEMENT: usize = 6;

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
/// `-ERR Protocol error: <this>` and closed: `Display` gives the text
/// after `Protocol error: `, Redis's own where Redis has one (for
/// example `invalid multibulk length`, `expected '$', got 'x'`,
/// `too big inline request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*<n>` that is not a number, or above [`MAX_ARGS`]:
    /// `invalid multibulk length`.
    InvalidMultibulkLength,
    /// `$<n>` that is not a number, negative, or above
    /// [`Limits::max_bulk`]: `invalid bulk length`.
    InvalidBulkLength,
    /// An array element that is not a bulk string (`got` is its first
    /// byte): `expected '$', got '<got>'`. `\r` and `\n` show as a
    /// space, as in Redis's reply; a byte above 0x7f shows as `\xNN`,
    /// since the text is a Rust string (Redis writes the raw byte).
    ExpectedBulk { got: u8 },
    /// An array's count line (`*<n>`) that does not end in `\r\n` within
    /// [`MAX_LENGTH_LINE`] bytes: `too big mbulk count string`.
    TooBigCountString,
    /// A bulk string's length line (`$<n>`) that does not end in `\r\n`
    /// within [`MAX_LENGTH_LINE`] bytes: `too big bulk count string`.
    TooBigBulkCountString,
    /// An inline line longer than [`Limits::max_inline`]:
    /// `too big inline request`.
    TooBigInline,
    /// A command longer than [`Limits::max_request`]: `too big request`
    /// (Redis has no such reply: it closes a client whose query buffer
    /// grows past its limit without one).
    TooBigRequest,
    /// A bulk string not followed by `\r\n`:
    /// `expected CRLF after bulk string` (Redis does not check).
    MissingCrlf,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedBulk { got: b'\r' | b'\n' } => {
                f.write_str("expected '$', got ' '")
            }
            ProtocolError::ExpectedBulk { got } if got.is_ascii() => {
                write!(f, "expected '$', got '{}'", char::from(*got))
            }
            ProtocolError::ExpectedBulk { got } => write!(f, "expected '$', got '\\x{got:02x}'"),
            ProtocolError::TooBigCountString => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCountString => f.write_str("too big bulk count string"),
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::TooBigRequest => f.write_str("too big request"),
            ProtocolError::MissingCrlf => f.write_str("expected CRLF after bulk string"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Where [`parse_resume`] stopped in a command that is not complete yet,
/// so that the next call goes on from there. `Resume::default()` starts
/// at the command's first byte; every outcome other than
/// [`Parsed::Incomplete`] resets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume {
    state: State,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Nothing read yet.
    #[default]
    Start,
    /// An inline line whose first `scanned` bytes hold no `\n`.
    Inline { scanned: usize },
    /// An array with `left` elements to go, the next one's header at
    /// `at`; the `done` before it are in `args`.
    Array { left: usize, at: usize, done: usize },
}

/// Parses the command at the start of `buf`, filling `args` (cleared
/// first) with its arguments' ranges in `buf`.
///
/// An inline command (any first byte but `*`) is the line up to `\n`,
/// without a `\r` before it, split on runs of spaces and tabs (and the
/// other bytes C's `isspace` takes: `\r`, `\x0b`, `\x0c`). Quotes mean
/// nothing: `SET k "a b"` is four arguments, quotes included (Redis's own
/// inline parser honours quotes and `\x` escapes). A blank line is
/// [`Parsed::Skip`]. After [`Parsed::Incomplete`], `args` holds the
/// arguments read so far.
///
/// # Errors
/// A [`ProtocolError`]: the connection must be closed after its reply.
/// What `args` holds then is unspecified.
#[cfg(test)]
pub fn parse(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    parse_resume(buf, limits, args, &mut Resume::default())
}

/// [`parse`], going on from where the previous call on the same command
/// stopped.
///
/// Between a call that answered [`Parsed::Incomplete`] and the next one,
/// `buf` must start at the same command and may only have grown, and
/// `args` must be left as that call left it; only `Resume::default()`
/// may start a new command. A `resume` that cannot belong to `buf` and
/// `args` (a shorter buffer, a changed `args`) is dropped and the command
/// read from its start, so a mistake costs time, never a panic or a range
/// outside `buf`.
///
/// # Errors
/// As [`parse`].
pub fn parse_resume(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
    resume: &mut Resume,
) -> Result<Parsed, ProtocolError> {
    let state = match std::mem::take(&mut resume.state) {
        State::Inline { scanned } if scanned <= buf.len() && buf.first() != Some(&b'*') => {
            State::Inline { scanned }
        }
        State::Array { left, at, done }
            if at <= buf.len() && done == args.len() && buf.first() == Some(&b'*') =>
        {
            State::Array { left, at, done }
        }
        _ => State::Start,
    };
    let (result, next) = match state {
        State::Start => {
            args.clear();
            match buf.first() {
                None => (Ok(Parsed::Incomplete), State::Start),
                Some(b'*') => array(buf, limits, args),
                Some(_) => inline(buf, limits, args, 0),
            }
        }
        State::Inline { scanned } => inline(buf, limits, args, scanned),
        State::Array { left, at, .. } => elements(buf, limits, args, left, at),
    };
    if result == Ok(Parsed::Incomplete) {
        resume.state = next;
    }
    result
}

/// What a call got to: the result, and where to resume if it is
/// [`Parsed::Incomplete`].
type Step = (Result<Parsed, ProtocolError>, State);

fn fail(e: ProtocolError) -> Step {
    (Err(e), State::Start)
}

/// An inline line: `scanned` bytes are known to hold no `\n`.
fn inline(buf: &[u8], limits: &Limits, args: &mut Vec<Range<usize>>, scanned: usize) -> Step {
    let max = limits.max_inline;
    // The `\n` of a line of `max` bytes is at `max`, or at `max + 1`
    // after a `\r`: there is no need to look further.
    let window = buf.len().min(max.saturating_add(2));
    let from = scanned.min(window);
    let Some(newline) = buf[from..window]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| from + i)
    else {
        // Longer than `max` for sure: `max + 2` bytes, or `max + 1` that
        // do not end in the `\r` of a line of exactly `max`.
        let too_long = buf.len() > max && (buf.len() - max > 1 || buf[max] != b'\r');
        if too_long {
            return fail(ProtocolError::TooBigInline);
        }
        return (Ok(Parsed::Incomplete), State::Inline { scanned: window });
    };
    let end = match buf[..newline] {
        [.., b'\r'] => newline - 1,
        _ => newline,
    };
    if end > max {
        return fail(ProtocolError::TooBigInline);
    }
    let mut start = None;
    for (i, &b) in buf[..end].iter().enumerate() {
        match (is_space(b), start) {
            (true, Some(s)) => {
                args.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        args.push(s..end);
    }
    let used = newline + 1;
    if args.is_empty() {
        (Ok(Parsed::Skip { used }), State::Start)
    } else {
        (Ok(Parsed::Command { used }), State::Start)
    }
}

/// The bytes C's `isspace` takes (`\n` never reaches the splitter).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\x0b' | b'\x0c')
}

/// An array's count line, then its elements.
fn array(buf: &[u8], limits: &Limits, args: &mut Vec<Range<usize>>) -> Step {
    let (n, next) = match length_line(buf, 0) {
        LengthLine::Incomplete => return (Ok(Parsed::Incomplete), State::Start),
        LengthLine::TooLong => return fail(ProtocolError::TooBigCountString),
        LengthLine::Invalid => return fail(ProtocolError::InvalidMultibulkLength),
        LengthLine::Number(n, next) => (n, next),
    };
    if n <= 0 {
        // Redis takes `*0` and `*-1` (and any negative count) as nothing.
        return (Ok(Parsed::Skip { used: next }), State::Start);
    }
    let Some(n) = usize::try_from(n).ok().filter(|&n| n <= MAX_ARGS) else {
        return fail(ProtocolError::InvalidMultibulkLength);
    };
    if next + n * MIN_ELEMENT > limits.max_request {
        return fail(ProtocolError::TooBigRequest);
    }
    elements(buf, limits, args, n, next)
}

/// `left` bulk strings, the first one's header at `at`.
fn elements(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
    mut left: usize,
    mut at: usize,
) -> Step {
    while left > 0 {
        let incomplete = (
            Ok(Parsed::Incomplete),
            State::Array {
                left,
                at,
                done: args.len(),
            },
        );
        match buf.get(at) {
            None => return incomplete,
            Some(b'$') => {}
            Some(&got) => return fail(ProtocolError::ExpectedBulk { got }),
        }
        let (len, start) = match length_line(buf, at) {
            LengthLine::Incomplete => return incomplete,
            LengthLine::TooLong => return fail(ProtocolError::TooBigBulkCountString),
            LengthLine::Invalid => return fail(ProtocolError::InvalidBulkLength),
            LengthLine::Number(len, start) => (len, start),
        };
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|&len| len <= limits.max_bulk)
        else {
            return fail(ProtocolError::InvalidBulkLength);
        };
        // The whole command so far, this element's `\r\n` included.
        let end = start.checked_add(len);
        let Some(end) = end.filter(|&end| end.saturating_add(2) <= limits.max_request) else {
            return fail(ProtocolError::TooBigRequest);
        };
        match (buf.get(end), buf.get(end + 1)) {
            (None, _) | (Some(b'\r'), None) => return incomplete,
            (Some(b'\r'), Some(b'\n')) => {}
            _ => return fail(ProtocolError::MissingCrlf),
        }
        args.push(start..end);
        at = end + 2;
        left -= 1;
    }
    (Ok(Parsed::Command { used: at }), State::Start)
}

/// A length line (`*<n>\r\n` or `$<n>\r\n`) read at `at`.
enum LengthLine {
    /// Its `\r\n` has not arrived yet.
    Incomplete,
    /// No `\r` within [`MAX_LENGTH_LINE`] bytes.
    TooLong,
    /// Not a number as Redis reads one, or `\r` not followed by `\n`.
    Invalid,
    /// The number, and where the line's next byte is.
    Number(i64, usize),
}

fn length_line(buf: &[u8], at: usize) -> LengthLine {
    let from = at + 1;
    let window = buf.len().min(from + MAX_LENGTH_LINE);
    let Some(cr) = buf
        .get(from..window)
        .and_then(|line| line.iter().position(|&b| b == b'\r'))
        .map(|i| from + i)
    else {
        return if buf.len() >= from + MAX_LENGTH_LINE {
            LengthLine::TooLong
        } else {
            LengthLine::Incomplete
        };
    };
    match buf.get(cr + 1) {
        None => LengthLine::Incomplete,
        Some(b'\n') => match integer(&buf[from..cr]) {
            Some(n) => LengthLine::Number(n, cr + 2),
            None => LengthLine::Invalid,
        },
        Some(_) => LengthLine::Invalid,
    }
}

/// The value of a run of decimal digits (and nothing else), within 64
/// bits.
pub(super) fn digits_value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Reads a decimal integer as Redis's `string2ll` does: an optional `-`,
/// then digits without a leading zero (`0` alone is fine, `-0` is not),
/// no `+`, no spaces, within `i64`.
pub(super) fn integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'0'] => return Some(0),
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) || digits.len() > 19 {
        return None;
    }
    let value = digits_value(digits)?;
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk: 1 << 20,
        max_inline: 64,
        max_request: 1 << 22,
    };

    /// Parses `input` with `limits`; the arguments as byte strings.
    fn parse_with(input: &[u8], limits: &Limits) -> Result<(Parsed, Vec<Vec<u8>>), ProtocolError> {
        let mut args = Vec::new();
        let parsed = parse(input, limits, &mut args)?;
        Ok((
            parsed,
            args.iter().map(|r| input[r.clone()].to_vec()).collect(),
        ))
    }

    fn parse_all(input: &[u8]) -> Result<(Parsed, Vec<Vec<u8>>), ProtocolError> {
        parse_with(input, &LIMITS)
    }

    fn err(input: &[u8]) -> ProtocolError {
        match parse_all(input) {
            Err(e) => e,
            Ok(ok) => panic!("{input:?} parsed: {ok:?}"),
        }
    }

    fn command(input: &[u8], used: usize, expect: &[&[u8]]) {
        let (parsed, args) = parse_all(input).expect("parses");
        assert_eq!(parsed, Parsed::Command { used }, "{input:?}");
        assert_eq!(args, expect, "{input:?}");
    }

    /// The RESP encoding of `args`.
    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn array_of_bulk_strings() {
        command(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n", 20, &[b"GET", b"a"]);
        command(b"*1\r\n$4\r\nPING\r\n", 14, &[b"PING"]);
        command(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", 20, &[b"ECHO", b""]);
        let big = vec![b'v'; 10_000];
        let input = encode(&[b"SET", b"k", &big]);
        command(&input, input.len(), &[b"SET", b"k", &big]);
    }

    #[test]
    fn bulk_contents_are_binary() {
        let value: &[u8] = b"a\r\nb\0\r\n*1\r\n$\xff";
        let input = encode(&[b"SET", b"k", value]);
        command(&input, input.len(), &[b"SET", b"k", value]);
        command(b"*1\r\n$2\r\n\r\n\r\n", 12, &[b"\r\n"]);
    }

    #[test]
    fn pipelined_commands_parse_one_after_another() {
        let mut input = encode(&[b"SET", b"a", b"1"]);
        input.extend_from_slice(b"\r\n*0\r\nPING\r\n*-1\r\n");
        input.extend(encode(&[b"GET", b"a"]));
        input.extend_from_slice(b"ECHO  x\ty\n");
        let mut rest = &input[..];
        let mut seen = Vec::new();
        let mut args = Vec::new();
        while !rest.is_empty() {
            match parse(rest, &LIMITS, &mut args) {
                Ok(Parsed::Command { used }) => {
                    seen.push(
                        args.iter()
                            .map(|r| String::from_utf8_lossy(&rest[r.clone()]).into_owned())
                            .collect::<Vec<_>>()
                            .join(" "),
                    );
                    rest = &rest[used..];
                }
                Ok(Parsed::Skip { used }) => {
                    seen.push("skip".into());
                    rest = &rest[used..];
                }
                other => panic!("{other:?} at {rest:?}"),
            }
        }
        assert_eq!(
            seen,
            ["SET a 1", "skip", "skip", "PING", "skip", "GET a", "ECHO x y"]
        );
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let inputs: Vec<Vec<u8>> = vec![
            encode(&[b"SET", b"key", b"a\r\nvalue\0"]),
            encode(&[b"PING"]),
            encode(&[b"ECHO", b""]),
            b"SET k v\r\n".to_vec(),
            b"PING\n".to_vec(),
            b"*0\r\n".to_vec(),
            b"*-1\r\n".to_vec(),
            b"\r\n".to_vec(),
        ];
        for input in inputs {
            let whole = parse_all(&input).expect("whole");
            assert!(whole.0 != Parsed::Incomplete, "{input:?}");
            for cut in 0..input.len() {
                assert_eq!(
                    parse_all(&input[..cut]).map(|(p, _)| p),
                    Ok(Parsed::Incomplete),
                    "{:?}",
                    &input[..cut]
                );
            }
            // Fed a byte at a time through one `Resume`, the same result.
            let mut resume = Resume::default();
            let mut args = Vec::new();
            for cut in 0..=input.len() {
                let got = parse_resume(&input[..cut], &LIMITS, &mut args, &mut resume);
                if cut < input.len() {
                    assert_eq!(got, Ok(Parsed::Incomplete));
                } else {
                    assert_eq!(got, Ok(whole.0));
                    let args: Vec<Vec<u8>> =
                        args.iter().map(|r| input[r.clone()].to_vec()).collect();
                    assert_eq!(args, whole.1);
                }
            }
            assert_eq!(resume, Resume::default());
        }
    }

    #[test]
    fn empty_and_negative_arrays_are_skipped() {
        assert_eq!(parse_all(b"*0\r\n"), Ok((Parsed::Skip { used: 4 }, vec![])));
        assert_eq!(
            parse_all(b"*-1\r\nPING"),
            Ok((Parsed::Skip { used: 5 }, vec![]))
        );
        assert_eq!(
            parse_all(b"*-5\r\n"),
            Ok((Parsed::Skip { used: 5 }, vec![]))
        );
        assert_eq!(parse_all(b""), Ok((Parsed::Incomplete, vec![])));
    }

    #[test]
    fn inline_commands_split_on_blanks() {
        command(b"PING\r\n", 6, &[b"PING"]);
        command(b"PING\n", 5, &[b"PING"]);
        command(b"  set\tk  v \r\nGET", 13, &[b"set", b"k", b"v"]);
        command(b"ECHO \"a b\"\n", 11, &[b"ECHO", b"\"a", b"b\""]);
        command(b"PING\r\r\n", 7, &[b"PING"]);
        command(b"A\x0bB\x0cC\rD\n", 8, &[b"A", b"B", b"C", b"D"]);
        command(b"a\0b\n", 4, &[b"a\0b"]);
        assert_eq!(parse_all(b"\r\n"), Ok((Parsed::Skip { used: 2 }, vec![])));
        assert_eq!(parse_all(b"\n"), Ok((Parsed::Skip { used: 1 }, vec![])));
        assert_eq!(
            parse_all(b" \t \r\nX"),
            Ok((Parsed::Skip { used: 5 }, vec![]))
        );
        assert_eq!(parse_all(b"PING"), Ok((Parsed::Incomplete, vec![])));
        assert_eq!(parse_all(b"PING\r"), Ok((Parsed::Incomplete, vec![])));
    }

    #[test]
    fn inline_limit_counts_the_line_without_its_newline() {
        let limits = Limits {
            max_inline: 4,
            ..LIMITS
        };
        let ok = |input: &[u8]| parse_with(input, &limits).map(|(p, _)| p);
        assert_eq!(ok(b"abcd\r\n"), Ok(Parsed::Command { used: 6 }));
        assert_eq!(ok(b"abcd\n"), Ok(Parsed::Command { used: 5 }));
        assert_eq!(ok(b"abcd"), Ok(Parsed::Incomplete));
        assert_eq!(ok(b"abcd\r"), Ok(Parsed::Incomplete));
        assert_eq!(ok(b"abcde\n"), Err(ProtocolError::TooBigInline));
        assert_eq!(ok(b"abcde"), Err(ProtocolError::TooBigInline));
        assert_eq!(ok(b"abcd\rx"), Err(ProtocolError::TooBigInline));
        assert_eq!(ok(b"abc\r\r\n"), Ok(Parsed::Command { used: 6 }));
        assert_eq!(ok(b"abcd\r\r\n"), Err(ProtocolError::TooBigInline));
        assert_eq!(ok(b"abcdefgh\n"), Err(ProtocolError::TooBigInline));
        // The limit is not on the buffer: a second line may follow.
        assert_eq!(ok(b"ab\r\nabcdefgh"), Ok(Parsed::Command { used: 4 }));
    }

    #[test]
    fn invalid_multibulk_length() {
        for input in [
            &b"*abc\r\n"[..],
            b"*\r\n",
            b"*+1\r\n",
            b"*01\r\n",
            b"*-0\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*-\r\n",
            b"*1048577\r\n",
            b"*99999999999999999999\r\n",
            b"*1\rX",
            b"*1\r\r\n",
        ] {
            assert_eq!(
                err(input),
                ProtocolError::InvalidMultibulkLength,
                "{input:?}"
            );
        }
        let at_max = format!("*{MAX_ARGS}\r\n");
        let limits = Limits {
            max_request: usize::MAX,
            ..LIMITS
        };
        assert_eq!(
            parse_with(at_max.as_bytes(), &limits),
            Ok((Parsed::Incomplete, vec![]))
        );
    }

    #[test]
    fn invalid_bulk_length_as_soon_as_its_line_is_complete() {
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$abc\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$01\r\n",
            b"*1\r\n$+1\r\n",
            b"*1\r\n$1048577\r\n",
            b"*1\r\n$99999999999999999999\r\n",
            b"*1\r\n$1\rx",
            b"*2\r\n$1\r\na\r\n$-5\r\n",
        ] {
            assert_eq!(err(input), ProtocolError::InvalidBulkLength, "{input:?}");
        }
        // At the limit, fine: waits for the bytes.
        assert_eq!(
            parse_all(b"*1\r\n$1048576\r\n"),
            Ok((Parsed::Incomplete, vec![]))
        );
    }

    #[test]
    fn expected_bulk() {
        assert_eq!(
            err(b"*2\r\n$3\r\nGET\r\nx\r\n"),
            ProtocolError::ExpectedBulk { got: b'x' }
        );
        // Known from the first byte, before the line is complete.
        assert_eq!(err(b"*1\r\n:"), ProtocolError::ExpectedBulk { got: b':' });
        assert_eq!(
            err(b"*1\r\n\r\n"),
            ProtocolError::ExpectedBulk { got: b'\r' }
        );
        assert_eq!(
            err(b"*1\r\n*1\r\n"),
            ProtocolError::ExpectedBulk { got: b'*' }
        );
    }

    #[test]
    fn count_strings_are_short() {
        let digits = "1".repeat(MAX_LENGTH_LINE);
        let array = format!("*{digits}");
        assert_eq!(err(array.as_bytes()), ProtocolError::TooBigCountString);
        assert_eq!(
            parse_all(&array.as_bytes()[..MAX_LENGTH_LINE]),
            Ok((Parsed::Incomplete, vec![]))
        );
        let bulk = format!("*1\r\n${digits}");
        assert_eq!(err(bulk.as_bytes()), ProtocolError::TooBigBulkCountString);
        assert_eq!(
            parse_all(&bulk.as_bytes()[..bulk.len() - 1]),
            Ok((Parsed::Incomplete, vec![]))
        );
        // A line of exactly MAX_LENGTH_LINE bytes is a number (not one
        // that fits, here).
        let longest = format!("*{}\r\n", "1".repeat(MAX_LENGTH_LINE - 1));
        assert_eq!(
            err(longest.as_bytes()),
            ProtocolError::InvalidMultibulkLength
        );
    }

    #[test]
    fn bulk_must_end_in_crlf() {
        assert_eq!(err(b"*1\r\n$3\r\nabcXY"), ProtocolError::MissingCrlf);
        assert_eq!(err(b"*1\r\n$3\r\nabcX"), ProtocolError::MissingCrlf);
        assert_eq!(err(b"*1\r\n$3\r\nabc\rY"), ProtocolError::MissingCrlf);
        assert_eq!(err(b"*1\r\n$3\r\nabc\n\r"), ProtocolError::MissingCrlf);
        assert_eq!(
            parse_all(b"*1\r\n$3\r\nabc\r"),
            Ok((Parsed::Incomplete, vec![]))
        );
    }

    #[test]
    fn request_limit_is_checked_on_headers() {
        let limits = Limits {
            max_request: 37,
            ..LIMITS
        };
        let input = encode(&[b"SET", b"k", b"0123456789"]);
        assert_eq!(input.len(), 37);
        assert!(matches!(
            parse_with(&input, &limits),
            Ok((Parsed::Command { used: 37 }, _))
        ));
        let input = encode(&[b"SET", b"k", b"0123456789A"]);
        // Refused as soon as the third header arrives.
        let header_end = input.len() - 13;
        assert_eq!(
            parse_with(&input[..header_end], &limits),
            Err(ProtocolError::TooBigRequest)
        );
        assert_eq!(
            parse_with(&input[..header_end - 1], &limits),
            Ok((Parsed::Incomplete, vec![b"SET".to_vec(), b"k".to_vec()]))
        );
        // An array too long to fit even with empty elements, at its count.
        assert_eq!(
            parse_with(b"*6\r\n", &limits),
            Err(ProtocolError::TooBigRequest)
        );
        assert_eq!(
            parse_with(b"*5\r\n", &limits),
            Ok((Parsed::Incomplete, vec![]))
        );
        // A length that would overflow the arithmetic is refused, not wrapped.
        let huge = Limits {
            max_bulk: usize::MAX,
            max_request: usize::MAX,
            ..LIMITS
        };
        let input = format!("*1\r\n${}\r\n", i64::MAX);
        assert_eq!(
            parse_with(input.as_bytes(), &huge),
            Ok((Parsed::Incomplete, vec![]))
        );
    }

    #[test]
    fn resume_survives_misuse() {
        let input = encode(&[b"SET", b"key", b"value"]);
        let mut args = Vec::new();
        let mut resume = Resume::default();
        let half = input.len() / 2;
        assert_eq!(
            parse_resume(&input[..half], &LIMITS, &mut args, &mut resume),
            Ok(Parsed::Incomplete)
        );
        assert_ne!(resume, Resume::default());
        // `args` cleared behind its back: read again from the start.
        args.clear();
        let got = parse_resume(&input, &LIMITS, &mut args, &mut resume);
        assert_eq!(got, Ok(Parsed::Command { used: input.len() }));
        assert_eq!(args.len(), 3);
        // A resume from a longer buffer, on a shorter one.
        let mut resume = Resume::default();
        let _ = parse_resume(&input[..half], &LIMITS, &mut args, &mut resume);
        let got = parse_resume(&input[..3], &LIMITS, &mut args, &mut resume);
        assert_eq!(got, Ok(Parsed::Incomplete));
        // An inline resume on a buffer that now starts with `*`.
        let mut resume = Resume::default();
        let _ = parse_resume(b"PIN", &LIMITS, &mut args, &mut resume);
        let got = parse_resume(&input, &LIMITS, &mut args, &mut resume);
        assert_eq!(got, Ok(Parsed::Command { used: input.len() }));
    }

    #[test]
    fn many_arguments_fed_byte_by_byte_stay_linear() {
        // 100k arguments, fed one byte at a time: with `parse` alone this
        // would read the headers again for each of 600k bytes.
        let arg_count = 100_000;
        let mut input = format!("*{arg_count}\r\n").into_bytes();
        for _ in 0..arg_count {
            input.extend_from_slice(b"$0\r\n\r\n");
        }
        let mut args = Vec::new();
        let mut resume = Resume::default();
        let started = std::time::Instant::now();
        for cut in 0..input.len() {
            let got = parse_resume(&input[..cut], &LIMITS, &mut args, &mut resume);
            assert_eq!(got, Ok(Parsed::Incomplete));
        }
        let got = parse_resume(&input, &LIMITS, &mut args, &mut resume);
        assert_eq!(got, Ok(Parsed::Command { used: input.len() }));
        assert_eq!(args.len(), arg_count);
        assert!(started.elapsed().as_secs() < 10);
    }

    #[test]
    fn integers_read_as_redis_does() {
        for (text, value) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("99999999999999999999", None),
            ("-0", None),
            ("00", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1x", None),
        ] {
            assert_eq!(integer(text.as_bytes()), value, "{text:?}");
        }
    }

    #[test]
    fn error_texts_are_redis_s() {
        for (e, text) in [
            (
                ProtocolError::InvalidMultibulkLength,
                "invalid multibulk length",
            ),
            (ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (
                ProtocolError::ExpectedBulk { got: b'x' },
                "expected '$', got 'x'",
            ),
            (
                ProtocolError::ExpectedBulk { got: b'\r' },
                "expected '$', got ' '",
            ),
            (
                ProtocolError::ExpectedBulk { got: 0xfe },
                "expected '$', got '\\xfe'",
            ),
            (
                ProtocolError::TooBigCountString,
                "too big mbulk count string",
            ),
            (
                ProtocolError::TooBigBulkCountString,
                "too big bulk count string",
            ),
            (ProtocolError::TooBigInline, "too big inline request"),
            (ProtocolError::TooBigRequest, "too big request"),
            (
                ProtocolError::MissingCrlf,
                "expected CRLF after bulk string",
            ),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }
}
