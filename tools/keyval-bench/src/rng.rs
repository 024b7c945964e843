//! A small, fast pseudo-random generator (xorshift64*) for choosing keys and
//! operations. Statistical quality is ample for uniform key selection; it is
//! not meant for anything security-related. Seeded from the OS via
//! `getrandom`.

/// xorshift64* generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator with a fixed seed (0 is remapped to a non-zero state).
    pub fn with_seed(seed: u64) -> Self {
        // Scramble the seed with splitmix64 so nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    /// A generator seeded from the operating system's random source, falling
    /// back to the clock if that is unavailable.
    pub fn from_os() -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x1234_5678)
        });
        Self::with_seed(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform value in `0..n` (`n` must be non-zero), by multiply-high.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A fair coin flip.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// `len` random ASCII letters and digits (safe inside a keyval line).
    pub fn alphanumeric(&mut self, len: usize) -> Vec<u8> {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::with_seed(7);
        let mut seen = [0u32; 10];
        for _ in 0..100_000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        for (i, &c) in seen.iter().enumerate() {
            assert!((9_000..11_000).contains(&c), "bucket {i} got {c}");
        }
    }

    #[test]
    fn alphanumeric_has_no_separators() {
        let mut r = Rng::with_seed(1);
        let v = r.alphanumeric(1000);
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|b| b.is_ascii_alphanumeric()));
    }
}
