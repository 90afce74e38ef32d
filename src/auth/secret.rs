//! What pgfleet knows about a user's password: the password itself, its
//! PostgreSQL MD5 hash, or its SCRAM-SHA-256 secret.

use std::fmt;

use super::scram_common::{b64, b64_decode, b64_decode32, hmac_sha256, salted_password, sha256};
use super::SCRAM_SHA_256;

/// A user's password as written in the second field of an `auth_file` line.
///
/// `Debug` shows only which kind of secret it is, never its content.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A cleartext password. An empty one never authenticates anybody (as in
    /// PostgreSQL, which refuses empty passwords).
    Plain(String),
    /// An MD5 hash as PostgreSQL stores it: the 32 lowercase hex characters
    /// that follow `md5` (`md5(password || user)`).
    Md5(String),
    /// A SCRAM-SHA-256 secret.
    Scram(ScramSecret),
}

impl Secret {
    /// Classifies a password field the way PostgreSQL does (`get_password_type`):
    /// `md5` followed by exactly 32 lowercase hex digits is [`Secret::Md5`], a
    /// well-formed `SCRAM-SHA-256$...` secret is [`Secret::Scram`], anything
    /// else (including a malformed SCRAM secret) is [`Secret::Plain`].
    pub fn parse(field: &str) -> Secret {
        if let Some(hex) = field.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                return Secret::Md5(hex.to_owned());
            }
        }
        if let Some(scram) = ScramSecret::parse(field) {
            return Secret::Scram(scram);
        }
        Secret::Plain(field.to_owned())
    }

    /// A short name of the kind of secret, for log lines: `"plain"`, `"md5"`
    /// or `"scram-sha-256"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram-sha-256",
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(..)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(..)"),
            Secret::Scram(s) => write!(f, "Secret::Scram({s:?})"),
        }
    }
}

/// A SCRAM-SHA-256 secret as PostgreSQL stores it in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
///
/// `Debug` shows the iteration count and salt length only.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iteration count (at least 1).
    pub iterations: u32,
    /// The salt, raw bytes.
    pub salt: Vec<u8>,
    /// `StoredKey = SHA-256(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Parses `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    ///
    /// Returns `None` unless every part is present and well formed: a decimal
    /// iteration count of at least 1, valid padded base64 everywhere, and
    /// exactly 32 bytes for each key.
    pub fn parse(s: &str) -> Option<ScramSecret> {
        let rest = s.strip_prefix(SCRAM_SHA_256)?.strip_prefix('$')?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        if !iterations.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let iterations: u32 = iterations.parse().ok()?;
        if iterations == 0 {
            return None;
        }
        Some(ScramSecret {
            iterations,
            salt: b64_decode(salt.as_bytes())?,
            stored_key: b64_decode32(stored_key.as_bytes())?,
            server_key: b64_decode32(server_key.as_bytes())?,
        })
    }

    /// Derives the secret for `password` with the given salt and iteration
    /// count, as `CREATE ROLE ... PASSWORD` does in PostgreSQL
    /// (`SaltedPassword` by PBKDF2-HMAC-SHA-256).
    ///
    /// SASLprep is not applied: the password's bytes are used as they are,
    /// which is what PostgreSQL and libpq do when a password is not valid
    /// UTF-8 or contains characters SASLprep prohibits. For ASCII passwords
    /// this is the same as SASLprep; a non-ASCII password that SASLprep would
    /// change (NFKC normalization, non-ASCII spaces, soft hyphens...) gives a
    /// different secret than PostgreSQL computes.
    ///
    /// An iteration count of 0 is taken as 1. This runs PBKDF2, which costs
    /// CPU time proportional to `iterations` (about a millisecond for 4096 in
    /// a release build).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let iterations = iterations.max(1);
        let salted = salted_password(password.as_bytes(), salt, iterations);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        }
    }

    /// The secret in PostgreSQL's text form, which [`ScramSecret::parse`] reads
    /// back (suitable for an `auth_file` line or `ALTER ROLE ... PASSWORD`).
    pub fn to_pg_string(&self) -> String {
        format!(
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            b64(&self.salt),
            b64(&self.stored_key),
            b64(&self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret PostgreSQL stores for password "pencil" with RFC 7677's salt.
    const PENCIL: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn from_password_matches_known_secret() {
        let salt = b64_decode(b"W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let s = ScramSecret::from_password("pencil", &salt, 4096);
        assert_eq!(s.to_pg_string(), PENCIL);
        assert_eq!(ScramSecret::parse(PENCIL), Some(s));
    }

    #[test]
    fn agrees_with_postgres_protocol() {
        let text = postgres_protocol::password::scram_sha_256(b"s3cret!");
        let parsed = ScramSecret::parse(&text).expect("postgres-protocol secret parses");
        assert_eq!(parsed.iterations, 4096);
        assert_eq!(parsed.salt.len(), 16);
        let mine = ScramSecret::from_password("s3cret!", &parsed.salt, parsed.iterations);
        assert_eq!(mine, parsed);
        assert_eq!(mine.to_pg_string(), text);
    }

    #[test]
    fn parse_rejects_malformed() {
        let bad = [
            "",
            "SCRAM-SHA-256",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$+4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q==:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
            "SCRAM-SHA-256$4096$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=$",
        ];
        for b in bad {
            assert_eq!(ScramSecret::parse(b), None, "{b:?}");
        }
    }

    #[test]
    fn secret_parse_classifies() {
        assert_eq!(
            Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d"),
            Secret::Md5("3175bce1d3201d16594cebf9d7eb3f9d".into())
        );
        // Upper case, wrong length or non-hex: PostgreSQL takes these as plain text.
        for plain in [
            "md53175BCE1D3201D16594CEBF9D7EB3F9D",
            "md53175bce1d3201d16594cebf9d7eb3f9",
            "md53175bce1d3201d16594cebf9d7eb3f9dd",
            "md53175bce1d3201d16594cebf9d7eb3f9g",
            "md5",
            "hunter2",
            "",
            "SCRAM-SHA-256$4096:bad",
        ] {
            assert_eq!(
                Secret::parse(plain),
                Secret::Plain(plain.into()),
                "{plain:?}"
            );
        }
        assert!(matches!(Secret::parse(PENCIL), Secret::Scram(s) if s.iterations == 4096));
    }

    #[test]
    fn debug_does_not_leak() {
        let shown = format!(
            "{:?} {:?} {:?}",
            Secret::parse("hunter2"),
            Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d"),
            Secret::parse(PENCIL)
        );
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("3175bce1"));
        assert!(!shown.contains("W22Z"));
        assert!(!shown.contains("WG5d"));
        assert_eq!(Secret::parse(PENCIL).kind(), "scram-sha-256");
    }
}
