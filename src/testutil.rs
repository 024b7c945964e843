//! Helpers shared by the in-module unit tests (compiled only for tests):
//! a seeded xorshift generator and the time-bounded fuzz loop that
//! `src/fuzz.rs` runs over every decoder.

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A deterministic xorshift64 generator for the fuzz-style decoder tests:
/// the same seed gives the same inputs on every run.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Seconds each fuzz target runs when `FUZZ_SECONDS` is not set (the short
/// run inside `make test`; `make fuzz` sets it).
const DEFAULT_FUZZ_SECONDS: u64 = 3;

/// One input for a fuzz target: bytes, and whether they were built to be a
/// valid encoding (so the target must accept them whole).
pub struct Input {
    pub bytes: Vec<u8>,
    pub valid: bool,
}

/// The random source of a fuzz run.
pub struct Fuzz {
    state: u64,
}

impl Fuzz {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        xorshift(&mut self.state)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Makes an input from a valid encoding: a third of the time as is,
    /// otherwise mutated with bytes from `alphabet`, or now and then
    /// replaced by up to `random_max` random bytes.
    pub fn vary(&mut self, mut bytes: Vec<u8>, random_max: usize, alphabet: &[u8]) -> Input {
        let valid = self.below(3) == 0;
        if !valid {
            if self.below(8) == 0 {
                bytes = self.bytes(random_max);
            } else {
                self.mutate(&mut bytes, alphabet);
            }
        }
        Input { bytes, valid }
    }

    /// Applies one to four random edits to `buf`: insert a byte (from
    /// `alphabet` half the time), delete one, overwrite one, flip a bit,
    /// truncate, or duplicate a slice.
    pub fn mutate(&mut self, buf: &mut Vec<u8>, alphabet: &[u8]) {
        for _ in 0..1 + self.below(4) {
            let at = self.below(buf.len() + 1);
            let byte = if self.next() & 1 == 0 && !alphabet.is_empty() {
                *self.pick(alphabet)
            } else {
                self.next() as u8
            };
            match self.below(6) {
                0 => buf.insert(at, byte),
                1 if at < buf.len() => drop(buf.remove(at)),
                2 if at < buf.len() => buf[at] = byte,
                3 if at < buf.len() => buf[at] ^= 1 << self.below(8),
                4 => buf.truncate(at),
                _ => {
                    let end = (at + self.below(16)).min(buf.len());
                    let slice = buf[at..end].to_vec();
                    buf.splice(at..at, slice);
                }
            }
        }
    }
}

/// Runs one fuzz target for `FUZZ_SECONDS` (default 3) with seed
/// `FUZZ_SEED` (default random, printed): `gen` makes inputs, `check`
/// asserts what must hold for each. A failing input is printed in hex
/// with the seed before the panic goes on, so it can become a
/// regression test.
pub fn fuzz(name: &str, mut gen: impl FnMut(&mut Fuzz) -> Input, check: impl Fn(&Input)) {
    let seconds = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_FUZZ_SECONDS);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15))
        | 1;
    let mut fuzz = Fuzz { state: seed };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let input = gen(&mut fuzz);
            if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| check(&input))) {
                eprintln!(
                    "fuzz {name}: FUZZ_SEED={seed}, input {runs} ({} bytes, valid {}): {}",
                    input.bytes.len(),
                    input.valid,
                    hex::encode(&input.bytes)
                );
                panic::resume_unwind(e);
            }
            runs += 1;
        }
    }
    eprintln!("fuzz {name}: {runs} inputs in {seconds} s, FUZZ_SEED={seed}");
}

use std::sync::{Arc, Condvar, Mutex};

/// A door threads can be held at: while it is closed, [`Gate::pass`]
/// blocks. Tests use it to keep a background fsync "in flight".
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// Makes later [`Gate::pass`] calls wait.
    pub fn close(&self) {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Lets every waiting and later caller through.
    pub fn open(&self) {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0 .1.notify_all();
    }

    /// Opens the gate from another thread after `delay`, so the caller
    /// can block on what waits behind it; join the handle at the end.
    pub fn open_after(&self, delay: std::time::Duration) -> std::thread::JoinHandle<()> {
        let gate = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            gate.open();
        })
    }

    /// Waits while the gate is closed.
    pub fn pass(&self) {
        let (closed, opened) = &*self.0;
        let mut closed = closed.lock().unwrap_or_else(|e| e.into_inner());
        while *closed {
            closed = opened.wait(closed).unwrap_or_else(|e| e.into_inner());
        }
    }
}
