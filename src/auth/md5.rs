//! PostgreSQL's MD5 password authentication (`AuthenticationMD5Password`).
//!
//! The stored secret is `"md5" + hex(md5(password || user))`; the client
//! answers a 4-byte salt with `"md5" + hex(md5(hex_secret || salt))`, where
//! `hex_secret` is the 32 hex characters of the secret without `md5`.

use ::md5::{Digest, Md5};

use super::scram_common::ct_eq;
use super::Secret;

/// Lowercase hex of an MD5 digest of the concatenation of `parts`.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(32);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The MD5 secret PostgreSQL stores for `user` with `password`:
/// `"md5" + hex(md5(password || user))`.
pub fn md5_secret(user: &str, password: &str) -> String {
    format!("md5{}", md5_hex(&[password.as_bytes(), user.as_bytes()]))
}

/// The answer to an MD5 challenge with `salt`, given the 32 hex characters of
/// the stored secret (without the `md5` prefix):
/// `"md5" + hex(md5(secret_hex || salt))`. This is what a client sends in its
/// `PasswordMessage`.
pub fn md5_response(secret_hex: &str, salt: [u8; 4]) -> String {
    format!("md5{}", md5_hex(&[secret_hex.as_bytes(), &salt]))
}

/// The 32 hex characters of the MD5 secret of `user`, if `secret` allows MD5.
fn secret_hex(secret: &Secret, user: &str) -> Option<String> {
    match secret {
        Secret::Plain(password) => Some(md5_hex(&[password.as_bytes(), user.as_bytes()])),
        Secret::Md5(hex) => Some(hex.clone()),
        Secret::Scram(_) => None,
    }
}

/// Checks a client's answer to an MD5 challenge with `salt`.
///
/// `response` is the `PasswordMessage` payload; one trailing NUL byte, if
/// present, is ignored. Works with [`Secret::Plain`] and [`Secret::Md5`]; a
/// [`Secret::Scram`] cannot verify MD5 and an empty plain password never
/// verifies, so both give `false`. The comparison runs in constant time.
pub fn verify_md5(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let Some(hex) = secret_hex(secret, user) else {
        return false;
    };
    let response = response.strip_suffix(&[0]).unwrap_or(response);
    let expected = md5_response(&hex, salt);
    let matches = ct_eq(expected.as_bytes(), response);
    // Checked after the same hashing as any other password.
    matches && !matches!(secret, Secret::Plain(p) if p.is_empty())
}

/// The MD5 secret an unknown `user` is checked against, so that the exchange and its
/// work are those of a wrong password: `HMAC-SHA-256(mock_key, "md5" || user)` as 32
/// hex digits, the same for a given user and key. No password has it in practice,
/// and the caller fails the login whatever [`verify_md5`] says.
pub fn mock_md5_secret(user: &str, mock_key: &[u8]) -> Secret {
    let mac = super::scram_common::hmac_sha256(mock_key, &[b"md5", user.as_bytes()]);
    let mut hex = String::with_capacity(32);
    for byte in &mac[..16] {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    Secret::Md5(hex)
}

/// What pgfleet sends to a PostgreSQL server that asked for MD5 with `salt`,
/// logging in as `user`: `Some` for [`Secret::Plain`] and [`Secret::Md5`],
/// `None` for [`Secret::Scram`] (MD5 cannot be answered from a SCRAM secret).
/// The protocol layer appends the terminating NUL.
pub fn md5_response_for_server(secret: &Secret, user: &str, salt: [u8; 4]) -> Option<String> {
    secret_hex(secret, user).map(|hex| md5_response(&hex, salt))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 4] = [0x01, 0x02, 0xfe, 0xff];

    #[test]
    fn known_secret() {
        assert_eq!(
            md5_secret("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
        assert_eq!(
            md5_secret("alice", "wonder land"),
            postgres_protocol::password::md5(b"wonder land", "alice")
        );
    }

    #[test]
    fn response_matches_postgres_protocol() {
        let ours = md5_response("3175bce1d3201d16594cebf9d7eb3f9d", SALT);
        let theirs = postgres_protocol::authentication::md5_hash(b"postgres", b"postgres", SALT);
        assert_eq!(ours, theirs);
        assert_eq!(ours.len(), 35);
    }

    #[test]
    fn verify_plain_and_md5() {
        let response = postgres_protocol::authentication::md5_hash(b"postgres", b"postgres", SALT);
        let plain = Secret::Plain("postgres".into());
        let md5 = Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d");
        assert!(matches!(md5, Secret::Md5(_)));
        for secret in [&plain, &md5] {
            assert!(verify_md5(secret, "postgres", SALT, response.as_bytes()));
            // The PasswordMessage payload with its NUL terminator.
            let mut with_nul = response.clone().into_bytes();
            with_nul.push(0);
            assert!(verify_md5(secret, "postgres", SALT, &with_nul));
            // Wrong salt, truncated, garbage, empty.
            assert!(!verify_md5(
                secret,
                "postgres",
                [0, 0, 0, 0],
                response.as_bytes()
            ));
            assert!(!verify_md5(
                secret,
                "postgres",
                SALT,
                &response.as_bytes()[..34]
            ));
            assert!(!verify_md5(secret, "postgres", SALT, b"md5\xff\xfe"));
            assert!(!verify_md5(secret, "postgres", SALT, b""));
        }
        // For a plain secret the user name matters.
        assert!(!verify_md5(&plain, "other", SALT, response.as_bytes()));
        let wrong = postgres_protocol::authentication::md5_hash(b"postgres", b"nope", SALT);
        assert!(!verify_md5(&plain, "postgres", SALT, wrong.as_bytes()));
    }

    #[test]
    fn scram_and_empty_never_verify() {
        let scram = Secret::Scram(crate::auth::ScramSecret::from_password("x", b"salt", 1));
        assert!(!verify_md5(&scram, "u", SALT, b"md5whatever"));
        assert_eq!(md5_response_for_server(&scram, "u", SALT), None);
        let empty = Secret::Plain(String::new());
        let response = postgres_protocol::authentication::md5_hash(b"u", b"", SALT);
        assert!(!verify_md5(&empty, "u", SALT, response.as_bytes()));
    }

    #[test]
    fn mock_secret_is_stable_per_user_and_key() {
        let a = mock_md5_secret("ghost", b"key");
        assert!(matches!(&a, Secret::Md5(hex) if hex.len() == 32));
        assert_eq!(a, mock_md5_secret("ghost", b"key"));
        assert_ne!(a, mock_md5_secret("ghost2", b"key"));
        assert_ne!(a, mock_md5_secret("ghost", b"other"));
    }

    #[test]
    fn response_for_server() {
        let expected = postgres_protocol::authentication::md5_hash(b"bob", b"pw", SALT);
        let plain = Secret::Plain("pw".into());
        let md5 = Secret::parse(&md5_secret("bob", "pw"));
        assert_eq!(
            md5_response_for_server(&plain, "bob", SALT),
            Some(expected.clone())
        );
        assert_eq!(md5_response_for_server(&md5, "bob", SALT), Some(expected));
    }
}
