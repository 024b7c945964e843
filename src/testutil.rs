//! Helpers shared by the in-module unit tests (compiled only for tests).

/// A deterministic xorshift64 generator for the fuzz-style decoder tests:
/// the same seed gives the same inputs on every run.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
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
