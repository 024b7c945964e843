//! The handshakes of follower and admin connections, both sides, as pure
//! steps: a line in, a line out, and at the end the [`Session`] that seals
//! everything after it.
//!
//! ```text
//! follower (Dialer)                         leader (challenge, Challenged)
//!   HELLO FOLLOWER|<id>:<fnonce>   ──▶
//!                                  ◀──      CHALLENGE <lnonce> <lproof>
//!   AUTH <fproof>                  ──▶      (proof checked, then admission)
//!                                  ◀──      HELLO LEADER    then records
//!
//! keyval-ctl (Dialer)                       any node
//!   HELLO ADMIN|<anonce>           ──▶
//!                                  ◀──      CHALLENGE <nnonce> <nproof>
//!   AUTH <aproof>                  ──▶
//!                                  ◀──      HELLO SERVER    then records
//! ```
//!
//! The proofs are [`auth`]'s: each side proves the shared secret over a
//! nonce the other chose, the node first, so neither side ever talks on to
//! an impostor. A refusal is one line (`INVALID_SECRET_KEY`, ...) and the
//! node closes the connection. The event loop moves the lines; nothing here
//! touches a socket.

use super::auth::{self, Prover};
use super::session::Session;
use crate::protocol::Reply;

/// The id an admin connection proves under.
pub const ADMIN_ID: &str = "admin";

/// Why a node turns a follower or an admin away during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A hello or an `AUTH` line that is not well formed.
    Malformed(&'static str),
    /// This node has no shared secret, so it can prove nothing.
    NoSecret,
    /// The peer's proof is wrong: another secret, or an impostor.
    WrongProof,
    /// Followers only: this node is not a leader.
    NotLeader,
    /// Followers only: the leader has `--max-followers` others.
    Full,
    /// Followers only: the follower claims the leader's own id.
    DuplicateId(u32),
}

impl Refusal {
    /// The line the peer is sent before the connection closes.
    pub fn reply(&self) -> Vec<u8> {
        match self {
            Refusal::Malformed(_) => Reply::InvalidHandshake.as_bytes().to_vec(),
            Refusal::NoSecret | Refusal::WrongProof => Reply::InvalidSecretKey.as_bytes().to_vec(),
            Refusal::NotLeader => Reply::CannotAcceptFollower.as_bytes().to_vec(),
            Refusal::Full => Reply::MaxSizeExceeded.as_bytes().to_vec(),
            Refusal::DuplicateId(_) => format!("DUPLICATE_ID {self}\n").into_bytes(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(what) => write!(f, "malformed {what}"),
            Refusal::NoSecret => write!(f, "this node has no secret configured"),
            Refusal::WrongProof => write!(f, "INVALID_SECRET_KEY"),
            Refusal::NotLeader => write!(f, "this node is not a leader"),
            Refusal::Full => write!(f, "MAX_SIZE_EXCEEDED"),
            Refusal::DuplicateId(id) => write!(
                f,
                "follower id {id} is this leader's own id; every node of a cluster needs an id \
                 no other node has"
            ),
        }
    }
}

/// Who is on the other end of a handshake a node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimant {
    /// A follower, with the `--id` it claims.
    Follower(u32),
    /// keyval-ctl.
    Admin,
}

impl Claimant {
    fn id(self) -> String {
        match self {
            Claimant::Follower(id) => id.to_string(),
            Claimant::Admin => ADMIN_ID.to_string(),
        }
    }

    fn prover(self) -> Prover {
        match self {
            Claimant::Follower(_) => Prover::Follower,
            Claimant::Admin => Prover::Admin,
        }
    }
}

/// A peer a node challenged: it must answer `AUTH <proof>`.
#[derive(Debug, Clone)]
pub struct Challenged {
    pub who: Claimant,
    fnonce: String,
    lnonce: String,
}

/// `HELLO FOLLOWER|<id>:<fnonce>` on a node: the challenge line to send
/// and what to check the answer against. Any id from 1 is challenged (a
/// deposed leader follows under its own id); the leader's own id is turned
/// away only after the proof, by the leader's admission.
///
/// # Errors
/// A malformed id or nonce, or no secret.
pub fn challenge_follower(
    secret: Option<&[u8]>,
    id: &[u8],
    fnonce: &[u8],
) -> Result<(Challenged, String), Refusal> {
    let id = std::str::from_utf8(id)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&id| id >= 1)
        .ok_or(Refusal::Malformed("HELLO FOLLOWER"))?;
    challenge(secret, Claimant::Follower(id), fnonce, "HELLO FOLLOWER")
}

/// `HELLO ADMIN|<anonce>` on a node: the challenge line to send and what
/// to check the answer against.
///
/// # Errors
/// A malformed nonce, or no secret.
pub fn challenge_admin(
    secret: Option<&[u8]>,
    anonce: &[u8],
) -> Result<(Challenged, String), Refusal> {
    challenge(secret, Claimant::Admin, anonce, "HELLO ADMIN")
}

fn challenge(
    secret: Option<&[u8]>,
    who: Claimant,
    nonce: &[u8],
    hello: &'static str,
) -> Result<(Challenged, String), Refusal> {
    if !auth::is_nonce(nonce) {
        return Err(Refusal::Malformed(hello));
    }
    let secret = secret.ok_or(Refusal::NoSecret)?;
    let challenged = Challenged {
        who,
        fnonce: String::from_utf8_lossy(nonce).into_owned(),
        lnonce: auth::new_nonce(),
    };
    let proof = auth::proof(
        secret,
        Prover::Leader,
        &who.id(),
        &challenged.fnonce,
        &challenged.lnonce,
    );
    let line = format!("CHALLENGE {} {proof}\n", challenged.lnonce);
    Ok((challenged, line))
}

impl Challenged {
    /// Checks the peer's `AUTH <proof>` line; on success, the session of
    /// the node's side. What the node sends next (`HELLO LEADER`,
    /// `HELLO SERVER`) is the last plain line.
    ///
    /// # Errors
    /// A line that is not `AUTH`, or a wrong proof.
    pub fn answer(&self, secret: &[u8], line: &[u8]) -> Result<Session, Refusal> {
        let proof = line
            .strip_prefix(b"AUTH ")
            .or_else(|| line.strip_prefix(b"auth "))
            .ok_or(Refusal::Malformed("AUTH"))?;
        let id = self.who.id();
        if !auth::verify(
            secret,
            self.who.prover(),
            &id,
            &self.fnonce,
            &self.lnonce,
            proof,
        ) {
            return Err(Refusal::WrongProof);
        }
        Ok(Session::new(
            secret,
            Prover::Leader,
            self.who.prover(),
            &id,
            &self.fnonce,
            &self.lnonce,
        ))
    }
}

/// The dialling side of a handshake: a follower's link, or keyval-ctl.
#[derive(Debug)]
pub struct Dialer {
    who: Claimant,
    fnonce: String,
    /// Sent `AUTH`: the session begins at the node's welcome line.
    session: Option<Box<Session>>,
}

/// What a dialler does after a line from the node.
#[derive(Debug)]
pub enum Dialed {
    /// Send this line (`AUTH <proof>`, with its newline).
    Auth(String),
    /// The node welcomed it: everything after that line, both ways, goes
    /// through this session.
    Welcome(Box<Session>),
}

/// Why a handshake a dialler started failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialError {
    /// The node's proof is wrong: an impostor, or another secret.
    Impostor,
    /// The node refused: its reply's first word, and the rest.
    Refused { word: String, detail: String },
}

impl DialError {
    /// Whether retrying later may work without anyone changing anything:
    /// a leader with no room now may have some later.
    pub fn is_transient(&self) -> bool {
        matches!(self, DialError::Refused { word, .. } if word == "MAX_SIZE_EXCEEDED")
    }
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Impostor => write!(
                f,
                "the node could not prove the shared secret (an impostor, or a different secret)"
            ),
            DialError::Refused { word, detail } => {
                let hint = match word.as_str() {
                    "INVALID_SECRET_KEY" => "the node does not share this secret",
                    "MAX_SIZE_EXCEEDED" => "the leader has its maximum number of followers",
                    "CANNOT_ACCEPT_FOLLOWER_CONNECTION" => "that node is not a leader",
                    "INVALID_HANDSHAKE_MESSAGE" => "the node did not accept this hello",
                    _ if !detail.is_empty() => detail,
                    _ => "unexpected reply",
                };
                write!(f, "{word}: {hint}")
            }
        }
    }
}

impl Dialer {
    /// A follower with `--id id` dialling its leader.
    pub fn follower(id: u32) -> Dialer {
        Dialer::new(Claimant::Follower(id))
    }

    /// An admin tool dialling any node.
    pub fn admin() -> Dialer {
        Dialer::new(Claimant::Admin)
    }

    fn new(who: Claimant) -> Dialer {
        Dialer {
            who,
            fnonce: auth::new_nonce(),
            session: None,
        }
    }

    /// The first line, with its newline.
    pub fn hello(&self) -> String {
        match self.who {
            Claimant::Follower(id) => format!("HELLO FOLLOWER|{id}:{}\n", self.fnonce),
            Claimant::Admin => format!("HELLO ADMIN|{}\n", self.fnonce),
        }
    }

    /// Takes the node's next line (without its newline).
    ///
    /// # Errors
    /// The node's refusal, a wrong proof, or a line out of place (taken as
    /// a refusal, with the line as its detail).
    pub fn on_line(&mut self, secret: &[u8], line: &str) -> Result<Dialed, DialError> {
        let refused = || {
            let (word, detail) = line.split_once(' ').unwrap_or((line, ""));
            DialError::Refused {
                word: word.to_string(),
                detail: detail.to_string(),
            }
        };
        let welcome = match self.who {
            Claimant::Follower(_) => "HELLO LEADER",
            Claimant::Admin => "HELLO SERVER",
        };
        if let Some(session) = self.session.take() {
            return if line == welcome {
                Ok(Dialed::Welcome(session))
            } else {
                Err(refused())
            };
        }
        let mut parts = line.splitn(3, ' ');
        let (Some("CHALLENGE"), Some(lnonce), Some(lproof)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(refused());
        };
        let id = self.who.id();
        let prover = self.who.prover();
        if !auth::verify(
            secret,
            Prover::Leader,
            &id,
            &self.fnonce,
            lnonce,
            lproof.as_bytes(),
        ) {
            return Err(DialError::Impostor);
        }
        let proof = auth::proof(secret, prover, &id, &self.fnonce, lnonce);
        self.session = Some(Box::new(Session::new(
            secret,
            prover,
            Prover::Leader,
            &id,
            &self.fnonce,
            lnonce,
        )));
        Ok(Dialed::Auth(format!("AUTH {proof}\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"shared secret";

    /// The hello's nonce, as a node reads it.
    fn hello_parts(hello: &str) -> (&[u8], &[u8]) {
        let rest = hello.trim_end().split_once('|').expect("hello").1;
        match rest.split_once(':') {
            Some((id, nonce)) => (id.as_bytes(), nonce.as_bytes()),
            None => (b"", rest.as_bytes()),
        }
    }

    /// Runs a follower handshake with the given secrets; the sessions of
    /// both sides, or where it stopped.
    fn follower_handshake(
        follower_secret: &[u8],
        leader_secret: &[u8],
    ) -> Result<(Box<Session>, Session), String> {
        let mut dialer = Dialer::follower(7);
        let hello = dialer.hello();
        let (id, nonce) = hello_parts(&hello);
        let (challenged, line) =
            challenge_follower(Some(leader_secret), id, nonce).map_err(|e| e.to_string())?;
        assert_eq!(challenged.who, Claimant::Follower(7));
        let Dialed::Auth(auth) = dialer
            .on_line(follower_secret, line.trim_end())
            .map_err(|e| e.to_string())?
        else {
            return Err("no AUTH".into());
        };
        let theirs = challenged
            .answer(leader_secret, auth.trim_end().as_bytes())
            .map_err(|e| e.to_string())?;
        match dialer.on_line(follower_secret, "HELLO LEADER") {
            Ok(Dialed::Welcome(mine)) => Ok((mine, theirs)),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn both_sides_prove_the_secret_and_get_matching_sessions() {
        let (mut follower, mut leader) = follower_handshake(SECRET, SECRET).expect("handshake");
        let mut sealed = Vec::new();
        follower
            .sealer
            .seal(b"ACK", &mut sealed)
            .expect("seal one record");
        let mut opened = Vec::new();
        let used = leader.opener.open(&sealed, &mut opened).expect("open");
        assert_eq!((used, &opened[..]), (sealed.len(), &b"ACK"[..]));
    }

    #[test]
    fn a_leader_without_the_secret_is_an_impostor_to_the_follower() {
        assert_eq!(
            follower_handshake(SECRET, b"other").err(),
            Some(DialError::Impostor.to_string())
        );
    }

    #[test]
    fn a_follower_without_the_secret_is_refused() {
        // The follower believes the leader only with the same secret, so
        // forge its answer: a proof made with another secret.
        let dialer = Dialer::follower(7);
        let hello = dialer.hello();
        let (id, nonce) = hello_parts(&hello);
        let (challenged, _) = challenge_follower(Some(SECRET), id, nonce).expect("challenge");
        let forged = format!("AUTH {}", "ab".repeat(32));
        assert_eq!(
            challenged.answer(SECRET, forged.as_bytes()).err(),
            Some(Refusal::WrongProof)
        );
        assert_eq!(
            challenged.answer(SECRET, b"PUT a 1").err(),
            Some(Refusal::Malformed("AUTH"))
        );
    }

    #[test]
    fn malformed_hellos_and_a_missing_secret_are_refused_before_any_challenge() {
        let nonce = auth::new_nonce();
        for id in [&b"0"[..], b"-1", b"x", b"", b"4294967296"] {
            assert_eq!(
                challenge_follower(Some(SECRET), id, nonce.as_bytes()).err(),
                Some(Refusal::Malformed("HELLO FOLLOWER")),
                "id {id:?}"
            );
        }
        assert_eq!(
            challenge_follower(Some(SECRET), b"1", b"short").err(),
            Some(Refusal::Malformed("HELLO FOLLOWER"))
        );
        assert_eq!(
            challenge_admin(None, nonce.as_bytes()).err(),
            Some(Refusal::NoSecret)
        );
        assert_eq!(
            Refusal::NoSecret.reply(),
            b"INVALID_SECRET_KEY\n".to_vec(),
            "the peer learns only that no proof can pass"
        );
    }

    #[test]
    fn an_admin_proof_does_not_pass_as_a_follower_s() {
        let mut admin = Dialer::admin();
        let hello = admin.hello();
        let (_, nonce) = hello_parts(&hello);
        let (challenged, line) = challenge_admin(Some(SECRET), nonce).expect("challenge");
        let Ok(Dialed::Auth(auth)) = admin.on_line(SECRET, line.trim_end()) else {
            panic!("no AUTH");
        };
        assert!(challenged
            .answer(SECRET, auth.trim_end().as_bytes())
            .is_ok());
        let as_follower = Challenged {
            who: Claimant::Follower(1),
            ..challenged
        };
        assert_eq!(
            as_follower.answer(SECRET, auth.trim_end().as_bytes()).err(),
            Some(Refusal::WrongProof)
        );
        // The admin's welcome is `HELLO SERVER`, not a follower's.
        assert!(matches!(
            admin.on_line(SECRET, "HELLO LEADER"),
            Err(DialError::Refused { .. })
        ));
    }

    #[test]
    fn a_refusal_is_explained_and_only_a_full_leader_is_worth_waiting_for() {
        let mut dialer = Dialer::follower(2);
        let err = dialer
            .on_line(SECRET, "MAX_SIZE_EXCEEDED")
            .expect_err("refused");
        assert!(err.is_transient());
        assert_eq!(
            err.to_string(),
            "MAX_SIZE_EXCEEDED: the leader has its maximum number of followers"
        );
        let dup = dialer
            .on_line(SECRET, "DUPLICATE_ID follower id 1 is this leader's own id")
            .expect_err("refused");
        assert!(!dup.is_transient());
        assert_eq!(
            dup.to_string(),
            "DUPLICATE_ID: follower id 1 is this leader's own id"
        );
        assert_eq!(
            String::from_utf8(Refusal::DuplicateId(1).reply()).expect("utf8"),
            format!("DUPLICATE_ID {}\n", Refusal::DuplicateId(1))
        );
    }
}
