//! Redis's glob patterns (`KEYS`, `SCAN ... MATCH`, `CONFIG GET`): `*`
//! any bytes, `?` one byte, `[abc]`, `[^a]`, `[a-z]` one of a set, `\x`
//! the byte `x`. Matching is case-sensitive and bounded: a pattern of many
//! stars cannot take exponential time.
//!
//! The rules are those of Redis 7's `stringmatchlen` (`util.c`), corner
//! cases included:
//!
//! - in a set, `\x` is the byte `x`, a range's ends may come in either
//!   order (`[z-a]` is `[a-z]`), and a range may end in `]` (`[a-]` is the
//!   bytes from `]` to `a`);
//! - a set with no closing `]` runs to the end of the pattern (`[ab` is
//!   `[ab]`), and `[^` alone matches any byte;
//! - a `\` at the very end of the pattern is itself;
//! - the empty string matches only the empty pattern (not even `*`;
//!   `KEYS *` never asks, and keyval has no empty keys).
//!
//! One difference: range ends are compared as unsigned bytes, where Redis
//! compares C `char`s, which are signed on x86, so a range with one end
//! above 0x7f differs.
//!
//! Redis matches recursively, one level per `*`. Here every element but
//! `*` matches exactly one byte, so only the last `*` seen ever needs to
//! take more bytes: the classic two-pointer matcher. It never goes back
//! past a `*` once it has passed it, and tries each text position once per
//! `*`, so it reads each pattern byte at most once per text byte: at most
//! `pattern.len() * text.len()` comparisons (for a short pattern, a few
//! times the key's length), and no allocation.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    if text.is_empty() {
        return pattern.is_empty();
    }
    let (mut p, mut t) = (0, 0);
    // After a `*`: where the pattern goes on, and the text position that
    // star's next try starts from.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            p += 1;
            star = Some((p, t));
            continue;
        }
        if p < pattern.len() {
            let (ok, next) = one(pattern, p, text[t]);
            if ok {
                p = next;
                t += 1;
                continue;
            }
        }
        // Mismatch: let the last star take one more byte.
        match star {
            Some((after, from)) => {
                star = Some((after, from + 1));
                p = after;
                t = from + 1;
            }
            None => return false,
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pattern.len()
}

/// Matches the element at `pattern[p]` (not a `*`) against `c`: whether
/// it matches, and where the next element starts.
fn one(pattern: &[u8], p: usize, c: u8) -> (bool, usize) {
    match pattern[p] {
        b'?' => (true, p + 1),
        b'[' => set(pattern, p + 1, c),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c, p + 2),
        b => (b == c, p + 1),
    }
}

/// Matches the set whose body starts at `pattern[p]` (just after its `[`)
/// against `c`, as `stringmatchlen` reads it.
fn set(pattern: &[u8], mut p: usize, c: u8) -> (bool, usize) {
    let len = pattern.len();
    let negated = pattern.get(p) == Some(&b'^');
    if negated {
        p += 1;
    }
    let mut found = false;
    loop {
        if p >= len {
            // No `]`: the set took the rest of the pattern.
            return (found != negated, len);
        }
        match pattern[p] {
            b'\\' if len - p >= 2 => {
                p += 1;
                found |= pattern[p] == c;
            }
            b']' => return (found != negated, p + 1),
            low if len - p >= 3 && pattern[p + 1] == b'-' => {
                let high = pattern[p + 2];
                found |= (low.min(high)..=low.max(high)).contains(&c);
                p += 2;
            }
            b => found |= b == c,
        }
        p += 1;
    }
}

/// The bytes every match must start with: the pattern up to its first
/// special character (unescaped). `KEYS` narrows its scan with it.
pub fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::new();
    let mut p = 0;
    while p < pattern.len() {
        match pattern[p] {
            b'*' | b'?' | b'[' => break,
            b'\\' if p + 1 < pattern.len() => {
                prefix.push(pattern[p + 1]);
                p += 2;
            }
            b => {
                prefix.push(b);
                p += 1;
            }
        }
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::xorshift;

    /// Redis 7.0's `stringmatchlen_impl`, case-sensitive, transcribed
    /// line for line (exponential on some patterns, fine for short ones).
    /// A read past the end gives 0, the C string's terminator.
    fn reference(pattern: &[u8], text: &[u8]) -> bool {
        fn at(s: &[u8], i: usize) -> u8 {
            s.get(i).copied().unwrap_or(0)
        }
        fn go(pat: &[u8], mut p: usize, s: &[u8], mut t: usize, skip_longer: &mut bool) -> bool {
            let plen = |p: usize| pat.len() - p;
            let slen = |t: usize| s.len() - t;
            while plen(p) > 0 && slen(t) > 0 {
                match pat[p] {
                    b'*' => {
                        while plen(p) > 0 && at(pat, p + 1) == b'*' {
                            p += 1;
                        }
                        if plen(p) == 1 {
                            return true;
                        }
                        while slen(t) > 0 {
                            if go(pat, p + 1, s, t, skip_longer) {
                                return true;
                            }
                            if *skip_longer {
                                return false;
                            }
                            t += 1;
                        }
                        *skip_longer = true;
                        return false;
                    }
                    b'?' => t += 1,
                    b'[' => {
                        p += 1;
                        let not = at(pat, p) == b'^';
                        if not {
                            p += 1;
                        }
                        let mut found = false;
                        loop {
                            if at(pat, p) == b'\\' && plen(p) >= 2 {
                                p += 1;
                                if pat[p] == s[t] {
                                    found = true;
                                }
                            } else if at(pat, p) == b']' {
                                break;
                            } else if plen(p) == 0 {
                                p -= 1;
                                break;
                            } else if plen(p) >= 3 && pat[p + 1] == b'-' {
                                let (mut start, mut end) = (pat[p], pat[p + 2]);
                                if start > end {
                                    std::mem::swap(&mut start, &mut end);
                                }
                                p += 2;
                                if s[t] >= start && s[t] <= end {
                                    found = true;
                                }
                            } else if pat[p] == s[t] {
                                found = true;
                            }
                            p += 1;
                        }
                        if not {
                            found = !found;
                        }
                        if !found {
                            return false;
                        }
                        t += 1;
                    }
                    b => {
                        let mut b = b;
                        if b == b'\\' && plen(p) >= 2 {
                            p += 1;
                            b = pat[p];
                        }
                        if b != s[t] {
                            return false;
                        }
                        t += 1;
                    }
                }
                p += 1;
                if slen(t) == 0 {
                    while at(pat, p) == b'*' {
                        p += 1;
                    }
                    break;
                }
            }
            plen(p) == 0 && slen(t) == 0
        }
        go(pattern, 0, text, 0, &mut false)
    }

    fn check(pattern: &str, text: &str, expect: bool) {
        let (p, t) = (pattern.as_bytes(), text.as_bytes());
        assert_eq!(matches(p, t), expect, "{pattern:?} on {text:?}");
        assert_eq!(
            reference(p, t),
            expect,
            "reference: {pattern:?} on {text:?}"
        );
    }

    #[test]
    fn redis_documented_patterns() {
        // The examples of Redis's KEYS page.
        for text in ["hello", "hallo", "hxllo"] {
            check("h?llo", text, true);
        }
        for text in ["hllo", "heeeello", "hello"] {
            check("h*llo", text, true);
        }
        check("h[ae]llo", "hello", true);
        check("h[ae]llo", "hallo", true);
        check("h[ae]llo", "hillo", false);
        check("h[^e]llo", "hallo", true);
        check("h[^e]llo", "hbllo", true);
        check("h[^e]llo", "hello", false);
        check("h[a-b]llo", "hallo", true);
        check("h[a-b]llo", "hbllo", true);
        check("h[a-b]llo", "hcllo", false);
        check("h\\*llo", "h*llo", true);
        check("h\\*llo", "hello", false);
        check("h\\?llo", "hello", false);
        check("h\\[a]llo", "h[a]llo", true);
    }

    #[test]
    fn stars() {
        check("*", "anything", true);
        check("**", "x", true);
        check("a*", "a", true);
        check("*a", "ba", true);
        check("*a", "ab", false);
        check("a*b*c", "aXbYc", true);
        check("a*b*c", "abc", true);
        check("a*b*c", "acb", false);
        check("*ab", "aab", true);
        check("foo*bar", "foobar", true);
        check("foo*bar", "foobarbaz", false);
        check("*?", "x", true);
        check("?*?", "x", false);
    }

    #[test]
    fn sets_and_escapes_corner_cases() {
        check("[z-a]", "m", true);
        check("[a-]", "^", true);
        check("[a-]", "-", false);
        check("[a-]x", "]x", false);
        check("[ab", "b", true);
        check("[ab", "bc", false);
        check("[^", "q", true);
        check("[", "[", false);
        check("[]", "]", false);
        check("[\\]]", "]", true);
        check("[\\^a]", "^", true);
        check("[a\\-z]", "-", true);
        check("[a\\-z]", "m", false);
        check("\\", "\\", true);
        check("a\\", "a\\", true);
        check("\\a", "a", true);
        check("[*]", "*", true);
        check("[?]", "x", false);
        check("x[\\", "x\\", true);
    }

    #[test]
    fn case_sensitive_binary_safe() {
        check("Hello", "hello", false);
        check("[A-Z]", "a", false);
        let (p, t) = (b"a\0*\xff", b"a\0zz\xff");
        assert!(matches(p, t) && reference(p, t));
        assert!(matches(b"[\x80-\xff]", b"\x90"));
    }

    #[test]
    fn empty_text_matches_only_the_empty_pattern() {
        check("", "", true);
        check("*", "", false);
        check("", "a", false);
    }

    #[test]
    fn many_stars_take_no_time() {
        let pattern = format!("{}b", "a*".repeat(300));
        let text = "a".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!matches(pattern.as_bytes(), text.as_bytes()));
        assert!(matches(pattern.as_bytes(), format!("{text}b").as_bytes()));
        let text = "ab".repeat(5_000);
        assert!(!matches(b"*a*a*a*a*a*a*a*a*c", text.as_bytes()));
        assert!(started.elapsed().as_secs() < 2);
    }

    #[test]
    fn agrees_with_redis_on_random_inputs() {
        let mut state = 0x5eed_0f91_0601u64;
        let pattern_bytes = b"ab*?[]^-\\";
        let text_bytes = b"ab-]^\\[*";
        for _ in 0..200_000 {
            let plen = (xorshift(&mut state) % 9) as usize;
            let tlen = (xorshift(&mut state) % 7) as usize;
            let pattern: Vec<u8> = (0..plen)
                .map(|_| pattern_bytes[(xorshift(&mut state) % 9) as usize])
                .collect();
            let text: Vec<u8> = (0..tlen)
                .map(|_| text_bytes[(xorshift(&mut state) % 8) as usize])
                .collect();
            assert_eq!(
                matches(&pattern, &text),
                reference(&pattern, &text),
                "{:?} on {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&text)
            );
            // Every match starts with the literal prefix.
            if matches(&pattern, &text) {
                assert!(text.starts_with(&literal_prefix(&pattern)));
            }
        }
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"abc"), b"abc");
        assert_eq!(literal_prefix(b"*"), b"");
        assert_eq!(literal_prefix(b"a?b"), b"a");
        assert_eq!(literal_prefix(b"a[b]"), b"a");
        assert_eq!(literal_prefix(b"a\\*b*"), b"a*b");
        assert_eq!(literal_prefix(b"a\\\\*"), b"a\\");
        assert_eq!(literal_prefix(b"a\\"), b"a\\");
        assert_eq!(literal_prefix(b"a]^-"), b"a]^-");
    }
}
