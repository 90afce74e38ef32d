//! pgfleet as the SCRAM-SHA-256 server, towards clients (RFC 5802, RFC 7677),
//! following PostgreSQL's implementation: `tls-server-end-point` channel binding
//! (SCRAM-SHA-256-PLUS) over TLS, the user name in client-first-message is ignored
//! (the startup packet's user counts), no authorization identity, no
//! mandatory extensions.

use super::scram_common::{
    b64, b64_decode, b64_decode32, ct_eq, hmac_sha256, is_printable, random_nonce, sha256, xor32,
    Attrs, ClientKeys, ScramError, DEFAULT_ITERATIONS, DEFAULT_SALT_LEN, MAX_MESSAGE_LEN,
};
use super::{ScramSecret, Secret};

/// Server side of one SCRAM-SHA-256 exchange.
///
/// Feed it the client's `SASLInitialResponse` payload with
/// [`handle_client_first`](Self::handle_client_first) and send the result in
/// `AuthenticationSASLContinue`; feed it the client's `SASLResponse` payload
/// with [`handle_client_final`](Self::handle_client_final) and, on success,
/// send the result in `AuthenticationSASLFinal`. Any error ends the exchange
/// (later calls return [`ScramError::InvalidState`]); answer the client with
/// an `ErrorResponse` (`28P01`, "password authentication failed for user ...").
pub struct ScramServer {
    secret: ScramSecret,
    /// Our half of the nonce.
    server_nonce: String,
    /// A mock exchange for an unknown user: always fails at the proof.
    doomed: bool,
    /// pgfleet's certificate's `tls-server-end-point` data, when the client is on TLS
    /// and SCRAM-SHA-256-PLUS was offered.
    end_point: Option<Vec<u8>>,
    /// The client selected SCRAM-SHA-256-PLUS.
    plus: bool,
    state: State,
}

enum State {
    Initial,
    /// server-first-message sent.
    First {
        /// What c= must hold: the gs2 header as sent by the client, followed by the
        /// channel-binding data when it uses channel binding.
        binding: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        /// Client nonce followed by server nonce.
        nonce: Vec<u8>,
    },
    Done,
}

impl ScramServer {
    /// A server for a user whose secret is `secret`.
    ///
    /// [`Secret::Scram`] is used as is. [`Secret::Plain`] is turned into a
    /// SCRAM secret with a random 16-byte salt and 4096 iterations (this runs
    /// PBKDF2 now: about a millisecond of CPU in a release build, so callers
    /// may prefer to derive it once and pass a [`Secret::Scram`]). Returns
    /// `None` for [`Secret::Md5`] (SCRAM cannot be verified from an MD5 hash)
    /// and for an empty plain password (never accepted, as in PostgreSQL).
    pub fn new(secret: &Secret) -> Option<ScramServer> {
        let secret = match secret {
            Secret::Scram(s) => s.clone(),
            Secret::Plain(p) if !p.is_empty() => {
                let mut salt = [0u8; DEFAULT_SALT_LEN];
                rand::Rng::fill(&mut rand::thread_rng(), &mut salt[..]);
                ScramSecret::from_password(p, &salt, DEFAULT_ITERATIONS)
            }
            Secret::Plain(_) | Secret::Md5(_) => return None,
        };
        Some(ScramServer::with_secret(secret, false))
    }

    /// A server for a user that does not exist, as PostgreSQL's mock
    /// authentication: the exchange runs to the end with a salt derived from
    /// `HMAC-SHA-256(mock_key, user)` (first 16 bytes, so it looks like a real
    /// one and stays the same for a given user) and 4096 iterations, and
    /// always fails with [`ScramError::InvalidProof`], so an attacker cannot
    /// tell an unknown user from a wrong password.
    ///
    /// `mock_key` should be random and secret, generated once per process (or
    /// persisted, so that salts stay stable across restarts as they do for
    /// real users).
    pub fn mock(user: &str, mock_key: &[u8]) -> ScramServer {
        let salt = hmac_sha256(mock_key, &[user.as_bytes()])[..DEFAULT_SALT_LEN].to_vec();
        let secret = ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt,
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        ScramServer::with_secret(secret, true)
    }

    fn with_secret(secret: ScramSecret, doomed: bool) -> ScramServer {
        ScramServer {
            secret,
            server_nonce: random_nonce(),
            doomed,
            end_point: None,
            plus: false,
            state: State::Initial,
        }
    }

    /// The same server on a TLS connection: `end_point` is pgfleet's certificate's
    /// `tls-server-end-point` data when SCRAM-SHA-256-PLUS was offered, `plus` whether
    /// the client selected it.
    pub fn on_tls(self, end_point: Option<Vec<u8>>, plus: bool) -> ScramServer {
        ScramServer {
            end_point,
            plus,
            ..self
        }
    }

    /// Replaces the random server nonce (RFC test vectors, fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn with_server_nonce(mut self, nonce: &str) -> ScramServer {
        self.server_nonce = nonce.to_owned();
        self
    }

    /// Handles client-first-message (the `SASLInitialResponse` data) and
    /// returns server-first-message (`r=<nonce>,s=<salt>,i=<iterations>`).
    pub fn handle_client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Done;
            return Err(ScramError::InvalidState(
                "client-first-message already handled",
            ));
        }
        self.state = State::Done;
        if data.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::Malformed("client-first-message too long"));
        }
        let (gs2_header, bare) = split_gs2_header(data)?;
        let mut binding = gs2_header.to_vec();
        match (gs2_header[0], &self.end_point) {
            (b'p', None) => return Err(ScramError::ChannelBindingNotSupported),
            (b'p', Some(_)) if !self.plus => {
                return Err(ScramError::Malformed(
                    "the client selected SCRAM-SHA-256 without channel binding, but the message includes channel binding data",
                ))
            }
            (b'p', Some(_)) if gs2_header != b"p=tls-server-end-point,," => {
                return Err(ScramError::Unsupported("channel-binding type"))
            }
            (b'p', Some(hash)) => binding.extend_from_slice(hash),
            (_, _) if self.plus => {
                return Err(ScramError::Malformed(
                    "the client selected SCRAM-SHA-256-PLUS, but the message does not include channel binding data",
                ))
            }
            (b'y', Some(_)) => {
                return Err(ScramError::Malformed(
                    "channel binding negotiation error: the client supports channel binding but thinks the server does not; this server does",
                ))
            }
            _ => {}
        }

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attrs = Attrs::new(bare);
        if attrs.peek_name() == Some(b'm') {
            return Err(ScramError::Unsupported("mandatory extension (m=)"));
        }
        // The user name is ignored: PostgreSQL uses the startup packet's.
        attrs.expect(b'n', "client-first-message: expected user name (n=)")?;
        let client_nonce = attrs.expect(b'r', "client-first-message: expected nonce (r=)")?;
        if client_nonce.is_empty() || !is_printable(client_nonce) {
            return Err(ScramError::Malformed("client-first-message: invalid nonce"));
        }
        // Extensions are ignored but must be well formed.
        while attrs
            .next_any("client-first-message: malformed extension")?
            .is_some()
        {}

        let mut nonce = client_nonce.to_vec();
        nonce.extend_from_slice(self.server_nonce.as_bytes());
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(
            format!(",s={},i={}", b64(&self.secret.salt), self.secret.iterations).as_bytes(),
        );
        self.state = State::First {
            binding,
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Handles client-final-message (the `SASLResponse` data): checks the
    /// channel binding, the nonce and, in constant time, the proof. On success
    /// returns server-final-message (`v=<signature>`) and the client's keys,
    /// with which pgfleet can log into a server holding the same secret.
    pub fn handle_client_final(
        &mut self,
        data: &[u8],
    ) -> Result<(Vec<u8>, ClientKeys), ScramError> {
        let State::First {
            binding,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::InvalidState(
                "client-final-message before client-first-message, or after the end",
            ));
        };
        if data.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::Malformed("client-final-message too long"));
        }

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let mut attrs = Attrs::new(data);
        let cbind = attrs.expect(b'c', "client-final-message: expected channel binding (c=)")?;
        let cbind = b64_decode(cbind).ok_or(ScramError::Malformed(
            "client-final-message: invalid channel binding base64",
        ))?;
        if cbind != binding {
            return Err(ScramError::Malformed(
                "client-final-message: channel binding does not match the gs2 header",
            ));
        }
        let final_nonce = attrs.expect(b'r', "client-final-message: expected nonce (r=)")?;
        if final_nonce != nonce.as_slice() {
            return Err(ScramError::NonceMismatch);
        }
        let (proof, without_proof) = loop {
            let rest_len = attrs.rest().len();
            match attrs.next_any("client-final-message: malformed attribute")? {
                Some((b'p', value)) => {
                    if !attrs.is_empty() {
                        return Err(ScramError::Malformed(
                            "client-final-message: attributes after the proof",
                        ));
                    }
                    // Everything before ",p=".
                    let without_proof_len = data.len() - rest_len - 1;
                    break (value, &data[..without_proof_len]);
                }
                Some(_) => {} // extension, ignored
                None => {
                    return Err(ScramError::Malformed(
                        "client-final-message: expected proof (p=",
                    ))
                }
            }
        };
        let proof = b64_decode32(proof)
            .ok_or(ScramError::Malformed("client-final-message: invalid proof"))?;

        let auth_message: [&[u8]; 5] =
            [&client_first_bare, b",", &server_first, b",", without_proof];
        let client_signature = hmac_sha256(&self.secret.stored_key, &auth_message);
        let client_key = xor32(&proof, &client_signature);
        let matches = ct_eq(&sha256(&client_key), &self.secret.stored_key);
        if !matches || self.doomed {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac_sha256(&self.secret.server_key, &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(b64(&server_signature).as_bytes());
        let keys = ClientKeys {
            client_key,
            server_key: self.secret.server_key,
        };
        Ok((server_final, keys))
    }
}

/// Splits client-first-message into the gs2 header (`n,,`, `y,,` or
/// `p=<type>,,`) and client-first-message-bare.
fn split_gs2_header(data: &[u8]) -> Result<(&[u8], &[u8]), ScramError> {
    // The flag runs to the first comma: `n`, `y`, or `p=` and a binding type.
    let flag_end = match data.first() {
        Some(b'n') | Some(b'y') => 1,
        Some(b'p') if data.get(1) == Some(&b'=') => {
            let name_len = data[2..].iter().position(|&c| c == b',');
            match name_len {
                Some(n) if n > 0 => 2 + n,
                _ => {
                    return Err(ScramError::Malformed(
                        "client-first-message: malformed channel binding type",
                    ))
                }
            }
        }
        _ => {
            return Err(ScramError::Malformed(
                "client-first-message: expected channel binding flag (n, y or p)",
            ))
        }
    };
    match data.get(flag_end..flag_end + 2) {
        Some(b",,") => Ok((&data[..flag_end + 2], &data[flag_end + 2..])),
        Some([b',', b'a']) => Err(ScramError::Unsupported("authorization identity (a=)")),
        _ => Err(ScramError::Malformed(
            "client-first-message: malformed gs2 header",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ScramServer {
        ScramServer::new(&Secret::Scram(ScramSecret::from_password(
            "pw", b"salt", 16,
        )))
        .unwrap()
    }

    fn after_first(client_first: &[u8]) -> (ScramServer, String) {
        let mut s = server();
        let first = s.handle_client_first(client_first).unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce = first
            .strip_prefix("r=")
            .and_then(|r| r.split(',').next())
            .unwrap()
            .to_owned();
        (s, nonce)
    }

    #[test]
    fn server_first_format() {
        let (_, nonce) = after_first(b"n,,n=,r=abc");
        assert!(nonce.starts_with("abc"));
        // Server part: base64 of 18 bytes.
        assert_eq!(nonce.len(), 3 + 24);
        let mut s = server();
        let first = s.handle_client_first(b"y,,n=whoever,r=abc,x=ext").unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(first.ends_with(",s=c2FsdA==,i=16"), "{first}");
    }

    #[test]
    fn rejects_bad_client_first() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"", ScramError::Malformed("")),
            (b"n", ScramError::Malformed("")),
            (b"n,", ScramError::Malformed("")),
            (b"n,,", ScramError::Malformed("")),
            (b"x,,n=,r=abc", ScramError::Malformed("")),
            (
                b"p=tls-server-end-point,,n=,r=abc",
                ScramError::ChannelBindingNotSupported,
            ),
            (b"p,,n=,r=abc", ScramError::Malformed("")),
            (b"n,a=admin,n=,r=abc", ScramError::Unsupported("")),
            (b"n,,m=ext,n=,r=abc", ScramError::Unsupported("")),
            (b"n,,r=abc", ScramError::Malformed("")),
            (b"n,,n=", ScramError::Malformed("")),
            (b"n,,n=,", ScramError::Malformed("")),
            (b"n,,n=,r=", ScramError::Malformed("")),
            (b"n,,n=,r=a b", ScramError::Malformed("")),
            (b"n,,n=,r=\xff", ScramError::Malformed("")),
            (b"n,,n=,r=abc,", ScramError::Malformed("")),
            (b"n,,n=,r=abc,garbage", ScramError::Malformed("")),
        ];
        for (input, want) in cases {
            let got = server().handle_client_first(input).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(want),
                "{:?}: {got}",
                String::from_utf8_lossy(input)
            );
        }
        let huge = vec![b'a'; MAX_MESSAGE_LEN + 1];
        assert!(server().handle_client_first(&huge).is_err());
    }

    #[test]
    fn rejects_bad_client_final() {
        let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cases: Vec<(String, ScramError)> = vec![
            (String::new(), ScramError::Malformed("")),
            ("c=biws".into(), ScramError::Malformed("")),
            ("c=biws,r={n}".into(), ScramError::Malformed("")),
            ("c=biws,r={n},".into(), ScramError::Malformed("")),
            (
                format!("c=biws,r={{n}},{proof},x=1"),
                ScramError::Malformed(""),
            ),
            (format!("c=eSws,r={{n}},{proof}"), ScramError::Malformed("")),
            (format!("c=!!!,r={{n}},{proof}"), ScramError::Malformed("")),
            (format!("r={{n}},c=biws,{proof}"), ScramError::Malformed("")),
            (
                format!("c=biws,r={{n}}X,{proof}"),
                ScramError::NonceMismatch,
            ),
            (format!("c=biws,r=abc,{proof}"), ScramError::NonceMismatch),
            ("c=biws,r={n},p=".into(), ScramError::Malformed("")),
            ("c=biws,r={n},p=AAAA".into(), ScramError::Malformed("")),
            (
                "c=biws,r={n},p=not base64!".into(),
                ScramError::Malformed(""),
            ),
            (
                format!("c=biws,r={{n}},x=ext,{proof}"),
                ScramError::InvalidProof,
            ),
            (format!("c=biws,r={{n}},{proof}"), ScramError::InvalidProof),
        ];
        for (template, want) in cases {
            let (mut s, nonce) = after_first(b"n,,n=,r=abc");
            let input = template.replace("{n}", &nonce);
            let got = s.handle_client_final(input.as_bytes()).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{input:?}: {got}"
            );
            // The exchange is over after an error.
            assert!(matches!(
                s.handle_client_final(input.as_bytes()),
                Err(ScramError::InvalidState(_))
            ));
        }
    }

    #[test]
    fn out_of_order_calls() {
        let mut s = server();
        assert!(matches!(
            s.handle_client_final(b"c=biws,r=x,p=x"),
            Err(ScramError::InvalidState(_))
        ));
        let (mut s, _) = after_first(b"n,,n=,r=abc");
        assert!(matches!(
            s.handle_client_first(b"n,,n=,r=abc"),
            Err(ScramError::InvalidState(_))
        ));
    }

    #[test]
    fn new_rejects_md5_and_empty() {
        assert!(ScramServer::new(&Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d")).is_none());
        assert!(ScramServer::new(&Secret::Plain(String::new())).is_none());
        let s = ScramServer::new(&Secret::Plain("pw".into())).unwrap();
        assert_eq!(s.secret.iterations, DEFAULT_ITERATIONS);
        assert_eq!(s.secret.salt.len(), DEFAULT_SALT_LEN);
    }
}
