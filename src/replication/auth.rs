//! The mutual HMAC-SHA256 challenge of the follower and admin handshakes
//! (`docs/protocol.md`). Pure apart from drawing
//! random nonces.
//!
//! ```text
//! F: HELLO FOLLOWER|<id>:<fnonce>
//! L: CHALLENGE <lnonce> <lproof>    lproof = HMAC(secret, "keyval-leader|<id>|<fnonce>|<lnonce>")
//! F: AUTH <fproof>                  fproof = HMAC(secret, "keyval-follower|<id>|<fnonce>|<lnonce>")
//! L: HELLO LEADER
//! ```
//!
//! Both sides prove the secret over nonces the other side chose, so neither
//! a recorded exchange nor an impostor without the secret gets through, and
//! the secret itself never crosses the wire. Proofs are compared in
//! constant time (`Mac::verify_slice`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Hex digits in a nonce (16 random bytes).
pub const NONCE_HEX_LEN: usize = 32;

/// Who a proof speaks for; the word that starts the proved message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prover {
    /// The leader answering a follower's hello.
    Leader,
    /// A follower answering the leader's challenge.
    Follower,
    /// An operator's tool answering the challenge of an admin connection.
    Admin,
}

impl Prover {
    fn word(self) -> &'static str {
        match self {
            Prover::Leader => "keyval-leader",
            Prover::Follower => "keyval-follower",
            Prover::Admin => "keyval-admin",
        }
    }
}

/// A fresh random nonce: 32 lower-case hex digits.
pub fn new_nonce() -> String {
    hex::encode(crate::wal::new_history_id())
}

/// Whether `text` is a well-formed nonce: exactly 32 hex digits.
pub fn is_nonce(text: &[u8]) -> bool {
    text.len() == NONCE_HEX_LEN && text.iter().all(u8::is_ascii_hexdigit)
}

/// `HMAC-SHA256(secret, "<parts joined by |>")`, not yet finalized.
fn mac_of(secret: &[u8], parts: &[&str]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(b"|");
        }
        mac.update(part.as_bytes());
    }
    mac
}

fn mac(secret: &[u8], prover: Prover, id: &str, fnonce: &str, lnonce: &str) -> Hmac<Sha256> {
    mac_of(secret, &[prover.word(), id, fnonce, lnonce])
}

/// The key that seals what `sender` sends after the handshake
/// ([`session`](super::session)):
/// `HMAC-SHA256(secret, "keyval-session|<word>|<id>|<fnonce>|<lnonce>")`.
/// It never crosses the wire, and no proof equals it (a proof's message
/// starts with the prover's word).
pub fn session_key(
    secret: &[u8],
    sender: Prover,
    id: &str,
    fnonce: &str,
    lnonce: &str,
) -> [u8; 32] {
    mac_of(
        secret,
        &["keyval-session", sender.word(), id, fnonce, lnonce],
    )
    .finalize()
    .into_bytes()
    .into()
}

/// The proof `prover` sends: lower-case hex of
/// `HMAC-SHA256(secret, "<word>|<id>|<fnonce>|<lnonce>")`.
pub fn proof(secret: &[u8], prover: Prover, id: &str, fnonce: &str, lnonce: &str) -> String {
    hex::encode(
        mac(secret, prover, id, fnonce, lnonce)
            .finalize()
            .into_bytes(),
    )
}

/// Checks a received proof in constant time. Malformed hex is simply a
/// wrong proof.
pub fn verify(
    secret: &[u8],
    prover: Prover,
    id: &str,
    fnonce: &str,
    lnonce: &str,
    proof_hex: &[u8],
) -> bool {
    let Ok(tag) = hex::decode(proof_hex) else {
        return false;
    };
    mac(secret, prover, id, fnonce, lnonce)
        .verify_slice(&tag)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn proofs_are_hmac_of_the_spec_string() {
        let f = "00112233445566778899aabbccddeeff";
        let l = "ffeeddccbbaa99887766554433221100";
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"s3cret").expect("key");
        mac.update(format!("keyval-leader|2|{f}|{l}").as_bytes());
        assert_eq!(
            proof(b"s3cret", Prover::Leader, "2", f, l),
            hex::encode(mac.finalize().into_bytes())
        );
        // Known answer (computed independently with Python's hmac module),
        // so a change in the message layout cannot go unnoticed.
        assert_eq!(
            proof(b"s3cret", Prover::Follower, "2", f, l),
            "4b20e75cb2c448c0d44fd359210cac811694657f15e52232bcec21ee1f208dc1"
        );
    }

    #[test]
    fn verify_accepts_only_the_right_proof() {
        let (f, l) = (new_nonce(), new_nonce());
        let good = proof(b"k", Prover::Follower, "3", &f, &l);
        assert!(verify(b"k", Prover::Follower, "3", &f, &l, good.as_bytes()));
        assert!(!verify(
            b"other",
            Prover::Follower,
            "3",
            &f,
            &l,
            good.as_bytes()
        ));
        assert!(!verify(b"k", Prover::Leader, "3", &f, &l, good.as_bytes()));
        assert!(!verify(
            b"k",
            Prover::Follower,
            "4",
            &f,
            &l,
            good.as_bytes()
        ));
        assert!(!verify(
            b"k",
            Prover::Follower,
            "3",
            &l,
            &f,
            good.as_bytes()
        ));
        assert!(!verify(b"k", Prover::Follower, "3", &f, &l, b"zz"));
        assert!(!verify(
            b"k",
            Prover::Follower,
            "3",
            &f,
            &l,
            &good.as_bytes()[..62]
        ));
    }

    #[test]
    fn nonces_are_fresh_hex() {
        let (a, b) = (new_nonce(), new_nonce());
        assert!(is_nonce(a.as_bytes()) && is_nonce(b.as_bytes()));
        assert_ne!(a, b);
        assert!(!is_nonce(b"0011"));
        assert!(!is_nonce(b"zz112233445566778899aabbccddeeff"));
    }
}
