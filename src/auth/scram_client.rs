//! pgfleet as the SCRAM-SHA-256 client, logging into PostgreSQL as the
//! client's user (RFC 5802, RFC 7677), with `tls-server-end-point` channel binding
//! (SCRAM-SHA-256-PLUS, RFC 5929) over TLS when the server offers it.

use std::fmt;

use super::scram_common::{
    b64, b64_decode, b64_decode32, ct_eq, hmac_sha256, is_printable, random_nonce, salted_password,
    sha256, xor32, Attrs, ClientKeys, ScramError, MAX_MESSAGE_LEN,
};

/// Largest iteration count the client accepts from a server when it has to
/// run PBKDF2 itself ([`ScramCredential::Password`]); a larger one fails with
/// [`ScramError::InvalidIterationCount`] instead of burning CPU on a hostile
/// or misconfigured server's request.
pub const MAX_CLIENT_ITERATIONS: u32 = 1_000_000;

/// What pgfleet proves its identity with.
#[derive(Clone)]
pub enum ScramCredential {
    /// The cleartext password. SASLprep is not applied (see
    /// [`ScramSecret::from_password`](super::ScramSecret::from_password)).
    Password(String),
    /// Keys recovered from the client's own exchange with pgfleet
    /// ([`ScramServer::handle_client_final`](super::ScramServer::handle_client_final)),
    /// as PgBouncer does with SCRAM secrets: the proof is
    /// `ClientKey XOR HMAC(H(ClientKey), AuthMessage)` and the server's
    /// signature is checked with `ServerKey`. The server's salt and iteration
    /// count are not needed, but the server must hold the same SCRAM secret.
    Keys(ClientKeys),
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramCredential::Password(_) => f.write_str("ScramCredential::Password(..)"),
            ScramCredential::Keys(_) => f.write_str("ScramCredential::Keys(..)"),
        }
    }
}

/// Client side of one SCRAM-SHA-256 exchange.
///
/// Send [`client_first`](Self::client_first) in `SASLInitialResponse` (with
/// mechanism [`SCRAM_SHA_256`](super::SCRAM_SHA_256)); pass the
/// `AuthenticationSASLContinue` data to
/// [`handle_server_first`](Self::handle_server_first) and send the result in
/// `SASLResponse`; pass the `AuthenticationSASLFinal` data to
/// [`handle_server_final`](Self::handle_server_final). Any error ends the
/// exchange.
pub struct ScramClient {
    credential: ScramCredential,
    /// User name sent in client-first-message; PostgreSQL ignores it, so it
    /// is empty except in tests against RFC vectors.
    username: String,
    /// Fixed client nonce (tests only); random otherwise.
    fixed_nonce: Option<String>,
    binding: Binding,
    state: State,
}

/// What the gs2 header says of channel binding.
#[derive(Debug, Clone)]
pub enum Binding {
    /// `n,,`: no TLS, no channel binding.
    No,
    /// `y,,`: over TLS, but the server offered no SCRAM-SHA-256-PLUS.
    NotOffered,
    /// `p=tls-server-end-point,,` with the server certificate's hash
    /// (SCRAM-SHA-256-PLUS).
    EndPoint(Vec<u8>),
}

impl Binding {
    fn gs2_header(&self) -> &'static [u8] {
        match self {
            Binding::No => b"n,,",
            Binding::NotOffered => b"y,,",
            Binding::EndPoint(_) => b"p=tls-server-end-point,,",
        }
    }

    /// The `c=` attribute's value: base64 of the gs2 header and the binding data.
    fn c_attribute(&self) -> String {
        let mut data = self.gs2_header().to_vec();
        if let Binding::EndPoint(hash) = self {
            data.extend_from_slice(hash);
        }
        b64(&data)
    }
}

enum State {
    Initial,
    /// client-first-message sent.
    First {
        client_nonce: String,
        client_first_bare: Vec<u8>,
    },
    /// client-final-message sent; the signature the server must answer with.
    Final {
        server_signature: [u8; 32],
    },
    Done,
}

impl ScramClient {
    /// A client that will prove knowledge of `cred`.
    pub fn new(cred: ScramCredential) -> ScramClient {
        ScramClient {
            credential: cred,
            username: String::new(),
            fixed_nonce: None,
            binding: Binding::No,
            state: State::Initial,
        }
    }

    /// The same client, binding the exchange to the TLS channel as `binding` says.
    pub fn with_binding(self, binding: Binding) -> ScramClient {
        ScramClient { binding, ..self }
    }

    /// A client with a given user name and nonce (RFC test vectors, fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn with_fixed_nonce(cred: ScramCredential, user: &str, nonce: &str) -> ScramClient {
        ScramClient {
            username: user.to_owned(),
            fixed_nonce: Some(nonce.to_owned()),
            ..ScramClient::new(cred)
        }
    }

    /// Starts (or restarts) the exchange: returns client-first-message, the gs2
    /// header then `n=,r=<nonce>` with a fresh random nonce (PostgreSQL ignores `n=`).
    pub fn client_first(&mut self) -> Vec<u8> {
        let client_nonce = self.fixed_nonce.clone().unwrap_or_else(random_nonce);
        let client_first_bare = format!("n={},r={client_nonce}", self.username).into_bytes();
        let mut message = self.binding.gs2_header().to_vec();
        message.extend_from_slice(&client_first_bare);
        self.state = State::First {
            client_nonce,
            client_first_bare,
        };
        message
    }

    /// Handles server-first-message and returns client-final-message.
    ///
    /// Checks that the server's nonce extends ours and that the iteration
    /// count is at least 1 (and, with a password, at most
    /// [`MAX_CLIENT_ITERATIONS`]). With a password this runs PBKDF2.
    pub fn handle_server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::First {
            client_nonce,
            client_first_bare,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::InvalidState(
                "server-first-message before client-first-message, or after it",
            ));
        };
        if data.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::Malformed("server-first-message too long"));
        }

        // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
        let mut attrs = Attrs::new(data);
        if attrs.peek_name() == Some(b'm') {
            return Err(ScramError::Unsupported("mandatory extension (m=)"));
        }
        let nonce = attrs.expect(b'r', "server-first-message: expected nonce (r=)")?;
        if !is_printable(nonce) {
            return Err(ScramError::Malformed("server-first-message: invalid nonce"));
        }
        if nonce.len() <= client_nonce.len() || !nonce.starts_with(client_nonce.as_bytes()) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = attrs.expect(b's', "server-first-message: expected salt (s=)")?;
        let salt = b64_decode(salt)
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::Malformed("server-first-message: invalid salt"))?;
        let iterations =
            attrs.expect(b'i', "server-first-message: expected iteration count (i=)")?;
        let iterations = parse_iterations(iterations)?;
        while attrs
            .next_any("server-first-message: malformed extension")?
            .is_some()
        {}

        let (client_key, server_key) = match &self.credential {
            ScramCredential::Password(password) => {
                if iterations > MAX_CLIENT_ITERATIONS {
                    return Err(ScramError::InvalidIterationCount(iterations));
                }
                let salted = salted_password(password.as_bytes(), &salt, iterations);
                (
                    hmac_sha256(&salted, &[b"Client Key"]),
                    hmac_sha256(&salted, &[b"Server Key"]),
                )
            }
            ScramCredential::Keys(keys) => (keys.client_key, keys.server_key),
        };

        let mut without_proof = format!("c={},r=", self.binding.c_attribute()).into_bytes();
        without_proof.extend_from_slice(nonce);
        let auth_message: [&[u8]; 5] = [&client_first_bare, b",", data, b",", &without_proof];
        let client_signature = hmac_sha256(&sha256(&client_key), &auth_message);
        let proof = xor32(&client_key, &client_signature);
        let server_signature = hmac_sha256(&server_key, &auth_message);

        let mut message = without_proof;
        message.extend_from_slice(b",p=");
        message.extend_from_slice(b64(&proof).as_bytes());
        self.state = State::Final { server_signature };
        Ok(message)
    }

    /// Handles server-final-message: `Ok` if it carries the expected server
    /// signature (`v=...`), [`ScramError::Server`] with the server's text for
    /// `e=...`, [`ScramError::ServerSignatureMismatch`] otherwise.
    pub fn handle_server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let State::Final { server_signature } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::InvalidState(
                "server-final-message before server-first-message, or after it",
            ));
        };
        if data.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::Malformed("server-final-message too long"));
        }
        // server-final-message = (server-error / verifier) ["," extensions]
        let mut attrs = Attrs::new(data);
        let (name, value) = attrs
            .next_any("server-final-message: expected v= or e=")?
            .ok_or(ScramError::Malformed("server-final-message: empty"))?;
        match name {
            b'e' => Err(ScramError::Server(
                String::from_utf8_lossy(value).into_owned(),
            )),
            b'v' => {
                let signature = b64_decode32(value).ok_or(ScramError::Malformed(
                    "server-final-message: invalid server signature",
                ))?;
                while attrs
                    .next_any("server-final-message: malformed extension")?
                    .is_some()
                {}
                if ct_eq(&signature, &server_signature) {
                    Ok(())
                } else {
                    Err(ScramError::ServerSignatureMismatch)
                }
            }
            _ => Err(ScramError::Malformed(
                "server-final-message: expected v= or e=",
            )),
        }
    }
}

/// Parses a positive decimal iteration count.
fn parse_iterations(value: &[u8]) -> Result<u32, ScramError> {
    let invalid = ScramError::Malformed("server-first-message: invalid iteration count");
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid);
    }
    let text = std::str::from_utf8(value).map_err(|_| invalid.clone())?;
    match text.parse::<u32>() {
        Ok(0) => Err(ScramError::InvalidIterationCount(0)),
        Ok(n) => Ok(n),
        // Too many digits for a u32: certainly above any limit.
        Err(_) => Err(ScramError::InvalidIterationCount(u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> (ScramClient, String) {
        let mut c = ScramClient::new(ScramCredential::Password("pw".into()));
        let first = String::from_utf8(c.client_first()).unwrap();
        let nonce = first.strip_prefix("n,,n=,r=").unwrap().to_owned();
        (c, nonce)
    }

    #[test]
    fn client_first_format() {
        let (_, nonce) = started();
        assert_eq!(nonce.len(), 24);
        assert!(is_printable(nonce.as_bytes()));
        let (_, other) = started();
        assert_ne!(nonce, other);
    }

    #[test]
    fn rejects_bad_server_first() {
        let cases: Vec<(String, ScramError)> = vec![
            (String::new(), ScramError::Malformed("")),
            ("r={n}S".into(), ScramError::Malformed("")),
            ("r={n}S,s=c2FsdA==".into(), ScramError::Malformed("")),
            ("r={n}S,s=c2FsdA==,i=".into(), ScramError::Malformed("")),
            ("r={n}S,s=c2FsdA==,i=-1".into(), ScramError::Malformed("")),
            (
                "r={n}S,s=c2FsdA==,i=4096,".into(),
                ScramError::Malformed(""),
            ),
            (
                "r={n}S,s=c2FsdA==,i=4096x".into(),
                ScramError::Malformed(""),
            ),
            ("r={n}S,s=,i=4096".into(), ScramError::Malformed("")),
            ("r={n}S,s=c2FsdA=,i=4096".into(), ScramError::Malformed("")),
            ("r={n}S,i=4096,s=c2FsdA==".into(), ScramError::Malformed("")),
            ("s=c2FsdA==,r={n}S,i=4096".into(), ScramError::Malformed("")),
            (
                "r={n} S,s=c2FsdA==,i=4096".into(),
                ScramError::Malformed(""),
            ),
            (
                "m=x,r={n}S,s=c2FsdA==,i=4096".into(),
                ScramError::Unsupported(""),
            ),
            ("r={n},s=c2FsdA==,i=4096".into(), ScramError::NonceMismatch),
            ("r=X{n},s=c2FsdA==,i=4096".into(), ScramError::NonceMismatch),
            ("r=abc,s=c2FsdA==,i=4096".into(), ScramError::NonceMismatch),
            (
                "r={n}S,s=c2FsdA==,i=0".into(),
                ScramError::InvalidIterationCount(0),
            ),
            (
                "r={n}S,s=c2FsdA==,i=1000001".into(),
                ScramError::InvalidIterationCount(1_000_001),
            ),
            (
                "r={n}S,s=c2FsdA==,i=4294967295".into(),
                ScramError::InvalidIterationCount(u32::MAX),
            ),
            (
                "r={n}S,s=c2FsdA==,i=99999999999999999999".into(),
                ScramError::InvalidIterationCount(u32::MAX),
            ),
        ];
        for (template, want) in cases {
            let (mut c, nonce) = started();
            let input = template.replace("{n}", &nonce);
            let got = c.handle_server_first(input.as_bytes()).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{input:?}: {got}"
            );
            if let ScramError::InvalidIterationCount(n) = want {
                assert_eq!(got, ScramError::InvalidIterationCount(n));
            }
            assert!(matches!(
                c.handle_server_first(input.as_bytes()),
                Err(ScramError::InvalidState(_))
            ));
        }
        let (mut c, _) = started();
        assert!(c.handle_server_first(b"r=\xff\xfe,s=c2FsdA==,i=1").is_err());
    }

    #[test]
    fn keys_ignore_iteration_cap() {
        // With keys no PBKDF2 runs, so a large (legitimate) count is fine.
        let keys = ClientKeys {
            client_key: [1; 32],
            server_key: [2; 32],
        };
        let mut c = ScramClient::new(ScramCredential::Keys(keys));
        let first = String::from_utf8(c.client_first()).unwrap();
        let nonce = first.strip_prefix("n,,n=,r=").unwrap();
        let server_first = format!("r={nonce}S,s=c2FsdA==,i=2000000000,x=ext");
        assert!(c.handle_server_first(server_first.as_bytes()).is_ok());
    }

    fn at_final() -> ScramClient {
        let (mut c, nonce) = started();
        c.handle_server_first(format!("r={nonce}S,s=c2FsdA==,i=1").as_bytes())
            .unwrap();
        c
    }

    #[test]
    fn rejects_bad_server_final() {
        let sig32 = b64(&[0u8; 32]);
        let cases: Vec<(String, ScramError)> = vec![
            (String::new(), ScramError::Malformed("")),
            ("v".into(), ScramError::Malformed("")),
            ("v=".into(), ScramError::Malformed("")),
            ("v=AAAA".into(), ScramError::Malformed("")),
            ("v=%%%".into(), ScramError::Malformed("")),
            ("x=1".into(), ScramError::Malformed("")),
            (format!("v={sig32},"), ScramError::Malformed("")),
            (format!("v={sig32}"), ScramError::ServerSignatureMismatch),
            (
                format!("v={sig32},x=ext"),
                ScramError::ServerSignatureMismatch,
            ),
            ("e=invalid-proof".into(), ScramError::Server(String::new())),
        ];
        for (input, want) in cases {
            let mut c = at_final();
            let got = c.handle_server_final(input.as_bytes()).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{input:?}: {got}"
            );
        }
        let mut c = at_final();
        assert_eq!(
            c.handle_server_final(b"e=other-error"),
            Err(ScramError::Server("other-error".into()))
        );
    }

    #[test]
    fn out_of_order_calls() {
        let mut c = ScramClient::new(ScramCredential::Password("pw".into()));
        assert!(matches!(
            c.handle_server_first(b"r=a,s=c2FsdA==,i=1"),
            Err(ScramError::InvalidState(_))
        ));
        assert!(matches!(
            c.handle_server_final(b"v=x"),
            Err(ScramError::InvalidState(_))
        ));
        let (mut c, _) = started();
        assert!(matches!(
            c.handle_server_final(b"v=x"),
            Err(ScramError::InvalidState(_))
        ));
    }
}
