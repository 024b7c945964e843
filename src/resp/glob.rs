//! Redis's glob patterns (`KEYS`, `SCAN ... MATCH`, `CONFIG GET`): `*`
//! any bytes, `?` one byte, `[abc]`, `[^a]`, `[a-z]` one of a set, `\x`
//! the byte `x`. Matching is case-sensitive and bounded: a pattern of many
//! stars cannot take exponential time.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let _ = (pattern, text);
    todo!()
}

/// The bytes every match must start with: the pattern up to its first
/// special character (unescaped). `KEYS` narrows its scan with it.
pub fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let _ = pattern;
    todo!()
}
