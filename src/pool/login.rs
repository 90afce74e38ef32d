//! Logging into PostgreSQL as the client's user: the authentication exchange a server
//! connection starts with, up to the first ReadyForQuery.
//!
//! pgfleet holds its clients' credentials, so it does not take the server's word for
//! more than the exchange proves: once SCRAM started, the login succeeds only after
//! the server's final message proved it knows the password (a server that answers
//! AuthenticationOk without it is refused), and a cleartext password goes only to a
//! server whose certificate was verified, or over a plain connection to a loopback
//! address.

use bytes::BytesMut;
use postgres_protocol::message::frontend as fe;

use crate::auth::{
    md5_response_for_server, Binding, ScramClient, ScramCredential, Secret, SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
};
use crate::config::ServerTlsMode;
use crate::protocol::backend::parse_error_fields;
use crate::protocol::frame::body;
use crate::tls::Stream;

use super::server::{
    read_message, record_parameter, Credentials, ServerError, ServerProtocolError,
};

/// What the connection to the server proves of it, for what pgfleet may send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Channel {
    /// TLS, with the server's certificate verified (`verify-ca`, `verify-full`).
    pub verified: bool,
    /// No TLS, to a loopback address: nobody else is on the path.
    pub plain_loopback: bool,
}

impl Channel {
    /// The channel `stream` is, made as `mode` says.
    pub fn of(stream: &Stream, mode: ServerTlsMode) -> Channel {
        let verified = stream.tls().is_some()
            && matches!(mode, ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull);
        let plain_loopback = match stream {
            Stream::Plain(tcp) => tcp.peer_addr().is_ok_and(|a| a.ip().is_loopback()),
            _ => false,
        };
        Channel {
            verified,
            plain_loopback,
        }
    }

    /// Whether a cleartext password may be sent.
    fn takes_cleartext(self) -> bool {
        self.verified || self.plain_loopback
    }
}

/// What the server tells a new session.
#[derive(Debug, Default)]
pub(super) struct Session {
    pub params: Vec<(String, String)>,
    pub pid: u32,
    pub key: u32,
}

/// Sends the startup message for `cred.user` and `database` and answers the server's
/// authentication requests, up to ReadyForQuery.
pub(super) async fn login(
    stream: &mut Stream,
    buf: &mut BytesMut,
    database: &str,
    cred: &Credentials,
    channel: Channel,
    max: usize,
) -> Result<Session, ServerError> {
    let mut out = BytesMut::new();
    let params = [
        ("user", cred.user.as_str()),
        ("database", database),
        ("client_encoding", "UTF8"),
    ];
    fe::startup_message(params.iter().copied(), &mut out)?;
    stream.send(&out).await?;
    let mut session = Session::default();
    let mut scram: Option<ScramClient> = None;
    // SCRAM started, and the server's final message not verified yet.
    let mut unproven = false;
    loop {
        let msg = read_message(stream, buf, max).await?;
        let b = body(&msg);
        match msg[0] {
            b'R' => {
                let code = b
                    .get(..4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                out.clear();
                match code {
                    Some(0) if unproven => return Err(LoginError::Unproven.into()),
                    Some(0) => continue,
                    Some(3) => {
                        let Some(Secret::Plain(pw)) = &cred.secret else {
                            return Err(LoginError::NoCleartextPassword.into());
                        };
                        if !channel.takes_cleartext() {
                            return Err(LoginError::CleartextRefused.into());
                        }
                        fe::password_message(pw.as_bytes(), &mut out)?;
                    }
                    Some(5) => {
                        let salt: [u8; 4] = b
                            .get(4..8)
                            .and_then(|s| s.try_into().ok())
                            .ok_or(ServerProtocolError::ShortMd5Request)?;
                        let secret = cred.secret.as_ref().ok_or(LoginError::NoMd5Secret)?;
                        let resp = md5_response_for_server(secret, &cred.user, salt)
                            .ok_or(LoginError::Md5WithScramSecret)?;
                        fe::password_message(resp.as_bytes(), &mut out)?;
                    }
                    Some(10) => {
                        let offers =
                            |name: &str| b[4..].split(|&c| c == 0).any(|m| m == name.as_bytes());
                        let binding = match end_point(stream) {
                            Some(hash) if offers(SCRAM_SHA_256_PLUS) => Binding::EndPoint(hash),
                            Some(_) => Binding::NotOffered,
                            None => Binding::No,
                        };
                        let mechanism = match binding {
                            Binding::EndPoint(_) => SCRAM_SHA_256_PLUS,
                            _ if offers(SCRAM_SHA_256) => SCRAM_SHA_256,
                            _ => return Err(LoginError::NoScram.into()),
                        };
                        let credential = match (&cred.secret, &cred.scram_keys) {
                            (Some(Secret::Plain(pw)), _) => ScramCredential::Password(pw.clone()),
                            (_, Some(keys)) => ScramCredential::Keys(keys.clone()),
                            _ => return Err(LoginError::NoScramCredential.into()),
                        };
                        let mut client = ScramClient::new(credential).with_binding(binding);
                        let first = client.client_first();
                        fe::sasl_initial_response(mechanism, &first, &mut out)?;
                        scram = Some(client);
                        unproven = true;
                    }
                    Some(11) => {
                        let client = scram
                            .as_mut()
                            .ok_or(ServerProtocolError::SaslContinueFirst)?;
                        let reply = client
                            .handle_server_first(&b[4..])
                            .map_err(LoginError::Scram)?;
                        fe::sasl_response(&reply, &mut out)?;
                    }
                    Some(12) => {
                        let client = scram.as_mut().ok_or(ServerProtocolError::SaslFinalFirst)?;
                        client
                            .handle_server_final(&b[4..])
                            .map_err(LoginError::Scram)?;
                        unproven = false;
                        continue;
                    }
                    _ => return Err(LoginError::Unsupported.into()),
                }
                stream.send(&out).await?;
            }
            b'S' => record_parameter(&mut session.params, b),
            b'K' if b.len() == 8 => {
                session.pid = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                session.key = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            }
            b'Z' if unproven => return Err(LoginError::NoScramFinal.into()),
            b'Z' => return Ok(session),
            b'E' => return Err(refused(b)),
            b'N' | b'v' => {}
            other => return Err(ServerProtocolError::UnexpectedAtLogin(char::from(other)).into()),
        }
    }
}

/// The `tls-server-end-point` data of the server's certificate, on TLS.
fn end_point(stream: &Stream) -> Option<Vec<u8>> {
    let certs = stream.tls()?.peer_certificates()?;
    crate::tls::end_point_hash(certs.first()?)
}

fn refused(body: &[u8]) -> ServerError {
    match parse_error_fields(body) {
        Some(f) => ServerError::Refused(f),
        None => ServerProtocolError::MalformedError.into(),
    }
}

/// Why pgfleet does not (or cannot) log in to a server as a user.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "the server accepted the login without proving it knows the password (no SCRAM \
         final message): it is not the PostgreSQL server it claims to be"
    )]
    Unproven,
    #[error("the server ended the login before SCRAM's final message")]
    NoScramFinal,
    #[error("the server asks for a cleartext password and auth_file has none")]
    NoCleartextPassword,
    #[error(
        "the server asks for a cleartext password; pgfleet sends one only to a server whose \
         certificate it verified (server_tls_sslmode = verify-ca or verify-full) or, without \
         TLS, to a loopback address"
    )]
    CleartextRefused,
    #[error("no auth_file entry for md5")]
    NoMd5Secret,
    #[error("the server asks for md5 and auth_file holds a SCRAM secret")]
    Md5WithScramSecret,
    #[error("the server offers no SCRAM-SHA-256")]
    NoScram,
    #[error("no plaintext password or SCRAM keys for this user")]
    NoScramCredential,
    /// The server's SCRAM messages do not verify or parse.
    #[error("{0}")]
    Scram(crate::auth::ScramError),
    #[error("the server asks for an unsupported authentication method")]
    Unsupported,
}

#[cfg(test)]
mod tests;
