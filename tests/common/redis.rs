//! Test helpers for the Redis face (`docs/redis.md`): a RESP client over a
//! plain socket that reads replies as values or compares them byte for
//! byte, and the outside tools the tests drive keyval with (`redis-cli`,
//! `redis-benchmark`, `python3` with redis-py, `nutcracker`,
//! `prometheus-redis-exporter`).
//!
//! A missing tool fails the test that needs it, naming the script that
//! installs it: these tests never skip, so a CI run without the tools is
//! a failing run, not a quiet one.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyval_testkit::{run_bounded, Finished};

use super::WAIT;

/// The script that installs every tool below (`make test` runs it).
pub const DEPS_SCRIPT: &str = "scripts/test-deps.sh";

// ---------------------------------------------------------------------------
// Tools

/// The path of the program `name`, from `PATH` or a sbin directory
/// (`nutcracker` is in `/usr/sbin`); panics naming [`DEPS_SCRIPT`] when
/// there is none.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run {DEPS_SCRIPT} (as root or through sudo), \
                 or `make test`, which runs it"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `python3` that imports redis-py: the one on `PATH`, or the system's
/// (Debian's `python3-redis` is for `/usr/bin/python3`, which a `PATH`
/// with another Python first does not reach).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        ["python3", "/usr/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|py| {
                Command::new(py)
                    .args(["-c", "import redis"])
                    .output()
                    .is_ok_and(|out| out.status.success())
            })
    });
    found.as_deref().unwrap_or_else(|| {
        panic!(
            "no python3 imports redis (redis-py): run {DEPS_SCRIPT} (as root or through \
             sudo), or `make test`, which runs it"
        )
    })
}

/// Runs `command` to its end within [`WAIT`]; panics if it overruns.
pub fn run(command: &mut Command) -> Finished {
    let done = run_bounded(command, WAIT).unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    if done.status.is_none() {
        panic!(
            "{command:?} did not finish within {WAIT:?}\nstdout:\n{}\nstderr:\n{}",
            done.stdout, done.stderr
        );
    }
    done
}

/// Runs `command` and returns its stdout; panics unless it exits 0.
pub fn run_ok(command: &mut Command) -> String {
    let done = run(command);
    assert!(
        done.status.is_some_and(|s| s.success()),
        "{command:?} exited with {:?}\nstdout:\n{}\nstderr:\n{}",
        done.status,
        done.stdout,
        done.stderr
    );
    done.stdout
}

/// `redis-cli -p <port> <args>`: its stdout (it must exit 0).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    run_ok(
        Command::new(tool("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
    )
}

/// Runs a Python script (with redis-py) with `args` as `sys.argv[1:]`;
/// returns its stdout. The script fails the test by raising or exiting
/// non-zero; its output is in the panic message.
pub fn python_script(script: &str, args: &[&str]) -> String {
    run_ok(Command::new(python()).arg("-c").arg(script).args(args))
}

// ---------------------------------------------------------------------------
// RESP

/// A RESP reply, as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+text`.
    Simple(String),
    /// `-text`.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` and its bytes.
    Bulk(Vec<u8>),
    /// RESP2's null: `$-1` (or `*-1`).
    Nil,
    /// RESP3's null: `_`.
    Null,
    /// `*n`.
    Array(Vec<Value>),
    /// RESP3's `%n`: pairs.
    Map(Vec<(Value, Value)>),
    /// RESP3's `~n`.
    Set(Vec<Value>),
    /// RESP3's `=n`: the format (`txt`) and the text.
    Verbatim(String, Vec<u8>),
}

impl Value {
    /// A bulk string of `text`.
    pub fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".to_string())
    }

    /// The bytes of a bulk string or a verbatim string; panics otherwise.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Value::Bulk(b) | Value::Verbatim(_, b) => b,
            other => panic!("not a bulk string: {other:?}"),
        }
    }

    /// A bulk string as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes().to_vec()).expect("utf8")
    }

    /// An integer; panics otherwise.
    pub fn int(&self) -> i64 {
        match self {
            Value::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// The elements of an array (or a set); panics otherwise.
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(items) | Value::Set(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }
}

/// `args` as a RESP array of bulk strings, as every client sends them.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// [`encode`] of text arguments.
pub fn cmd(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&args)
}

/// Bytes as a Rust byte string literal would show them, for messages.
pub fn show(bytes: &[u8]) -> String {
    let shown: String = bytes.escape_ascii().to_string();
    if shown.len() > 2000 {
        format!("{}... ({} bytes)", &shown[..2000], bytes.len())
    } else {
        shown
    }
}

/// A connection to a node's client port speaking RESP. Reads and writes
/// are bounded by [`WAIT`].
pub struct Resp {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Resp {
    /// Connects; nothing is sent (the first command makes it a Redis
    /// client).
    pub fn connect(addr: SocketAddr) -> Resp {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Resp { stream, reader }
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends bytes as they are; an error when the connection broke.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one command of any bytes.
    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&encode(args));
    }

    /// Sends one command and reads its reply.
    pub fn call_bytes(&mut self, args: &[&[u8]]) -> Value {
        self.send(args);
        self.reply()
    }

    /// Sends one command of text arguments and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Value {
        self.send_raw(&cmd(args));
        self.reply()
    }

    /// Sends `request` and checks the next bytes are exactly `reply`.
    pub fn expect(&mut self, request: &[u8], reply: &[u8]) {
        self.send_raw(request);
        self.expect_reply(reply, &show(request));
    }

    /// Checks the next bytes received are exactly `want` (`what` names
    /// the request in the message). Fails as soon as they part, without
    /// waiting for the rest.
    pub fn expect_reply(&mut self, want: &[u8], what: &str) {
        let mut got = Vec::new();
        while got.len() < want.len() {
            let chunk = match self.reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) => panic!("{what}: wanted {}, got {} then {e}", show(want), show(&got)),
            };
            if chunk.is_empty() {
                panic!(
                    "{what}: wanted {}, got {} then the connection closed",
                    show(want),
                    show(&got)
                );
            }
            let take = chunk.len().min(want.len() - got.len());
            got.extend_from_slice(&chunk[..take]);
            self.reader.consume(take);
            if !want.starts_with(&got) {
                // Collect a little more, so the message shows the reply.
                let _ = self
                    .stream
                    .set_read_timeout(Some(Duration::from_millis(200)));
                let mut more = [0u8; 512];
                if let Ok(n) = self.reader.read(&mut more) {
                    got.extend_from_slice(&more[..n]);
                }
                panic!("{what}:\n  wanted {}\n  got    {}", show(want), show(&got));
            }
        }
    }

    /// Checks the server closes the connection now, with nothing more to
    /// say.
    pub fn expect_closed(&mut self, what: &str) {
        match self.reader.fill_buf() {
            Ok([]) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(more) => panic!("{what}: wanted the connection closed, got {}", show(more)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: wanted the connection closed; still open after {WAIT:?}")
            }
            Err(e) => panic!("{what}: wanted the connection closed, got {e}"),
        }
    }

    /// Checks nothing arrives within `quiet` (the connection stays open
    /// and silent).
    pub fn expect_silence(&mut self, quiet: Duration, what: &str) {
        self.stream
            .set_read_timeout(Some(quiet))
            .expect("read timeout");
        match self.reader.fill_buf() {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok([]) => panic!("{what}: the connection closed"),
            Ok(more) => panic!("{what}: wanted nothing yet, got {}", show(more)),
            Err(e) => panic!("{what}: {e}"),
        }
        self.stream.set_read_timeout(Some(WAIT)).expect("timeout");
    }

    /// Reads one reply.
    pub fn reply(&mut self) -> Value {
        self.try_reply()
            .unwrap_or_else(|e| panic!("reading a RESP reply: {e}"))
    }

    /// Reads one reply; an error when the connection ends or breaks
    /// first, or the bytes are not RESP.
    pub fn try_reply(&mut self) -> std::io::Result<Value> {
        read_value(&mut self.reader)
    }
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, what)
}

/// One line up to `\r\n`, without it.
fn read_line(reader: &mut dyn BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(if line.is_empty() {
            std::io::Error::new(ErrorKind::UnexpectedEof, "the connection closed")
        } else {
            bad(format!("a line without \\r\\n: {}", show(&line)))
        });
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|e| bad(format!("not UTF-8: {e}")))
}

fn read_len(text: &str) -> std::io::Result<i64> {
    text.parse()
        .map_err(|_| bad(format!("not a length: {text:?}")))
}

/// Reads one RESP2 or RESP3 value.
pub fn read_value(reader: &mut dyn BufRead) -> std::io::Result<Value> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let blob = |reader: &mut dyn BufRead, len: i64| -> std::io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| bad("length".into()))? + 2];
        reader.read_exact(&mut bytes)?;
        if !bytes.ends_with(b"\r\n") {
            return Err(bad(format!("a blob without \\r\\n: {}", show(&bytes))));
        }
        bytes.truncate(bytes.len() - 2);
        Ok(bytes)
    };
    let items = |reader: &mut dyn BufRead, n: i64| -> std::io::Result<Vec<Value>> {
        (0..n).map(|_| read_value(reader)).collect()
    };
    Ok(match kind {
        "+" => Value::Simple(rest.to_string()),
        "-" => Value::Error(rest.to_string()),
        ":" => Value::Int(read_len(rest)?),
        "_" if rest.is_empty() => Value::Null,
        "$" | "*" if rest == "-1" => Value::Nil,
        "$" => Value::Bulk(blob(reader, read_len(rest)?)?),
        "*" => Value::Array(items(reader, read_len(rest)?)?),
        "~" => Value::Set(items(reader, read_len(rest)?)?),
        "%" => {
            let flat = items(reader, 2 * read_len(rest)?)?;
            let mut pairs = Vec::new();
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
        "=" => {
            let bytes = blob(reader, read_len(rest)?)?;
            if bytes.len() < 4 || bytes[3] != b':' {
                return Err(bad(format!("a verbatim string without a format: {line}")));
            }
            let format = String::from_utf8_lossy(&bytes[..3]).into_owned();
            Value::Verbatim(format, bytes[4..].to_vec())
        }
        _ => return Err(bad(format!("not a RESP type: {line:?}"))),
    })
}

/// `INFO`'s text as (field, value) pairs, headers and blank lines left
/// out; each line must end in `\r\n`, as Redis writes it.
pub fn info_fields(text: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8(text.to_vec()).expect("INFO is UTF-8");
    assert!(
        text.ends_with("\r\n"),
        "INFO does not end in \\r\\n: {text:?}"
    );
    text.split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("INFO line without ':': {l:?} in {text:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// One field of `INFO`'s text; panics when it is not there.
pub fn info_field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no INFO field {name} in {fields:?}"))
}

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
