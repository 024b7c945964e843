//! Helpers shared by the in-module unit tests (compiled only for tests).

/// A deterministic xorshift64 generator for the fuzz-style decoder tests:
/// the same seed gives the same inputs on every run.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
