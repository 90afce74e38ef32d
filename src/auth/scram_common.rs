//! Pieces shared by the SCRAM-SHA-256 server and client: the error type, the
//! key material recovered from an exchange, the primitives of RFC 5802 and a
//! small attribute parser for SCRAM messages.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Iteration count used for secrets derived on the fly (PostgreSQL's default).
pub(crate) const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length used for secrets derived on the fly (PostgreSQL's default).
pub(crate) const DEFAULT_SALT_LEN: usize = 16;
/// Number of random bytes behind a nonce (PostgreSQL's `SCRAM_RAW_NONCE_LEN`).
pub(crate) const RAW_NONCE_LEN: usize = 18;
/// Largest SCRAM message accepted from a peer (PostgreSQL's
/// `PG_MAX_AUTH_TOKEN_LENGTH`).
pub(crate) const MAX_MESSAGE_LEN: usize = 65535;

/// Why a SCRAM exchange failed. The messages are meant for a log line; none
/// of them contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The peer's message does not follow the SCRAM grammar; the text says what is wrong.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (`p=...` gs2 header), which is not offered.
    #[error("SCRAM channel binding is not supported")]
    ChannelBindingNotSupported,
    /// The peer used an optional SCRAM feature that is not implemented
    /// (authorization identity, mandatory extensions).
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// The nonce in the message is not the one agreed so far.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client's proof does not match the secret: wrong password (or an
    /// unknown user, when the exchange ran against a mock server).
    #[error("SCRAM client proof is invalid (wrong password)")]
    InvalidProof,
    /// The server's signature does not match: the server does not know the secret.
    #[error("SCRAM server signature mismatch")]
    ServerSignatureMismatch,
    /// The server asked for an iteration count of zero or above the client's limit.
    #[error("SCRAM iteration count {0} is out of range")]
    InvalidIterationCount(u32),
    /// The server ended the exchange with `e=...`; carries the server's text.
    #[error("SCRAM server error: {0}")]
    Server(String),
    /// A step of the exchange was called out of order (or after a failure).
    #[error("SCRAM exchange step out of order: {0}")]
    InvalidState(&'static str),
}

/// Keys recovered from a successful SCRAM exchange with a client.
///
/// With these, pgfleet can log into a PostgreSQL server that holds the same
/// SCRAM secret without knowing the password (what PgBouncer does with SCRAM
/// secrets in its `auth_file`). `Debug` does not print the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKeys {
    /// `ClientKey = HMAC(SaltedPassword, "Client Key")`.
    pub client_key: [u8; 32],
    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKeys { .. }")
    }
}

/// `HMAC-SHA-256(key, parts[0] || parts[1] || ...)`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .expect("HMAC-SHA-256 accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `SHA-256(data)`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `SaltedPassword = Hi(password, salt, iterations)` (PBKDF2-HMAC-SHA-256).
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations.max(1))
}

/// Element-wise XOR of two 32-byte strings.
pub(crate) fn xor32(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Standard (padded) base64.
pub(crate) fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes standard (padded) base64.
pub(crate) fn b64_decode(data: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(data).ok()
}

/// Decodes base64 that must hold exactly 32 bytes.
pub(crate) fn b64_decode32(data: &[u8]) -> Option<[u8; 32]> {
    b64_decode(data)?.try_into().ok()
}

/// A fresh random nonce: base64 of [`RAW_NONCE_LEN`] random bytes.
pub(crate) fn random_nonce() -> String {
    let mut raw = [0u8; RAW_NONCE_LEN];
    rand::Rng::fill(&mut rand::thread_rng(), &mut raw[..]);
    b64(&raw)
}

/// RFC 5802 `printable`: `%x21-2B / %x2D-7E` (visible ASCII except `,`).
pub(crate) fn is_printable(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&c| (0x21..=0x7e).contains(&c) && c != b',')
}

/// Sequential reader of `name=value` attributes separated by `,`.
pub(crate) struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Attrs { rest: data }
    }

    /// Whether everything has been consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The name of the next attribute, if there is one.
    pub(crate) fn peek_name(&self) -> Option<u8> {
        match self.rest {
            [name, b'=', ..] => Some(*name),
            _ => None,
        }
    }

    /// The bytes not consumed yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Reads the next attribute, which must be called `name`; `err` describes
    /// the failure. Returns its value.
    pub(crate) fn expect(&mut self, name: u8, err: &'static str) -> Result<&'a [u8], ScramError> {
        match self.next_any(err)? {
            Some((n, value)) if n == name => Ok(value),
            _ => Err(ScramError::Malformed(err)),
        }
    }

    /// Reads the next attribute, whatever its name: `Ok(None)` at the end.
    pub(crate) fn next_any(
        &mut self,
        err: &'static str,
    ) -> Result<Option<(u8, &'a [u8])>, ScramError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let name = match self.rest {
            [name, b'=', ..] if name.is_ascii_alphabetic() => *name,
            _ => return Err(ScramError::Malformed(err)),
        };
        let body = &self.rest[2..];
        let (value, rest) = match body.iter().position(|&c| c == b',') {
            Some(i) => {
                let rest = &body[i + 1..];
                if rest.is_empty() {
                    // A trailing comma with nothing after it.
                    return Err(ScramError::Malformed(err));
                }
                (&body[..i], rest)
            }
            None => (body, &body[body.len()..]),
        };
        self.rest = rest;
        Ok(Some((name, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_reads_in_order() {
        let mut a = Attrs::new(b"r=abc,s=,i=4096");
        assert_eq!(a.peek_name(), Some(b'r'));
        assert_eq!(a.expect(b'r', "r").unwrap(), b"abc");
        assert_eq!(a.expect(b's', "s").unwrap(), b"");
        assert_eq!(a.next_any("x").unwrap(), Some((b'i', &b"4096"[..])));
        assert!(a.is_empty());
        assert_eq!(a.next_any("x").unwrap(), None);
    }

    #[test]
    fn attrs_rejects_garbage() {
        assert!(Attrs::new(b"r").expect(b'r', "r").is_err());
        assert!(Attrs::new(b"=x").expect(b'r', "r").is_err());
        assert!(Attrs::new(b"1=x").next_any("x").is_err());
        assert!(Attrs::new(b"r=x,").next_any("x").is_err());
        assert!(Attrs::new(b"s=x").expect(b'r', "r").is_err());
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn printable() {
        assert!(is_printable(
            b"rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        ));
        assert!(!is_printable(b"a,b"));
        assert!(!is_printable(b"a b"));
        assert!(!is_printable(b"\x7f"));
    }

    #[test]
    fn debug_hides_keys() {
        let keys = ClientKeys {
            client_key: [7; 32],
            server_key: [9; 32],
        };
        assert_eq!(format!("{keys:?}"), "ClientKeys { .. }");
    }
}
