//! Password checks against salted, memory-hard hashes (Argon2id, in the PHC string
//! format `$argon2id$v=19$m=..,t=..,p=..$salt$hash`), as a job: a check costs tens of
//! milliseconds and mebibytes by design, so it runs on a crypto worker, never on a
//! poll-mode core (inline mode excepted, as for every job).
//!
//! What it must not do: keep, log or return a password; the job owns its copy and
//! wipes it when dropped.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use zeroize::Zeroizing;

use crate::CryptoError;

/// Check `password` against `phc` (a stored hash).
pub struct PasswordCheck {
    pub phc: std::sync::Arc<str>,
    pub password: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordCheck").finish_non_exhaustive()
    }
}

/// Whether the password matches; an unreadable stored hash is an error (the users
/// file is checked when loaded, so this is a bug or a corrupted entry).
pub fn check(j: &PasswordCheck) -> Result<bool, CryptoError> {
    let hash = PasswordHash::new(&j.phc)
        .map_err(|e| CryptoError::Unavailable(format!("stored password hash: {e}")))?;
    Ok(Argon2::default()
        .verify_password(&j.password, &hash)
        .is_ok())
}

/// Whether `phc` is a hash [`check`] can use (for loading a users file).
pub fn valid_hash(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    match h.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        o => Err(format!("algorithm {o:?} is not Argon2")),
    }
}

/// A new Argon2id hash of `password` with a random salt and the crate's default cost
/// (19 MiB, 2 passes: OWASP's minimum), for a users file.
pub fn hash(password: &[u8]) -> Result<String, CryptoError> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(CryptoError::from)?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| CryptoError::Unavailable(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::Unavailable(format!("hashing: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_checks_its_password_and_no_other() {
        let h = hash(b"correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        valid_hash(&h).unwrap();
        let job = |p: &[u8]| PasswordCheck {
            phc: h.as_str().into(),
            password: Zeroizing::new(p.to_vec()),
        };
        assert!(check(&job(b"correct horse")).unwrap());
        assert!(!check(&job(b"correct horse ")).unwrap());
        assert!(!format!("{:?}", job(b"correct horse")).contains("horse"));
        assert!(valid_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
        assert!(valid_hash("plaintext").is_err());
    }
}
