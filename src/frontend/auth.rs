//! Authenticating a client against `auth_file` (or, for a user not there, what
//! `auth_query` finds): SCRAM-SHA-256, md5 or trust. Unknown users get the same
//! exchange, the same hashing and the same error as a wrong password: a mock SCRAM
//! secret, or a mock md5 secret, derived from `mock_key`.

use crate::auth::{
    mock_md5_secret, verify_md5, DerivedSecrets, ScramError, ScramServer, Secret, SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
};
use crate::auth_query;
use crate::cluster::ClusterState;
use crate::config::AuthType;
use crate::pool::Credentials;
use crate::protocol::backend as msg;
use crate::protocol::frontend::{parse_password, parse_sasl_initial, parse_sasl_response};
use crate::protocol::sqlstate;
use crate::state::Topology;

use super::conn::ClientConn;
use super::error::ClientError;

/// A user's secret, if pgfleet found one, and where it looked.
pub struct UserSecret {
    pub secret: Option<Secret>,
    /// `auth_file`, or `auth_file and auth_query`, for the log line of a failed login.
    pub looked_in: &'static str,
}

/// The secret of `user`: its `auth_file` entry, else, for a client of a cluster with
/// an `auth_user` (the admin console has none), what `auth_query` finds. With
/// `auth_type = trust` no secret is looked up.
pub async fn find_secret(
    user: &str,
    topology: &Topology,
    cluster: Option<&ClusterState>,
) -> Result<UserSecret, ClientError> {
    let general = &topology.config.general;
    let in_file = |secret: Option<&Secret>| UserSecret {
        secret: secret.cloned(),
        looked_in: "auth_file",
    };
    let secret = topology.users.get(user);
    let cluster = match (secret, cluster) {
        (None, Some(c)) if general.auth_type != AuthType::Trust => c,
        _ => return Ok(in_file(secret)),
    };
    let Some(settings) = auth_query::Settings::of(general, &cluster.config(), &topology.users)
    else {
        return Ok(in_file(None));
    };
    let lookups = &cluster.auth_query;
    let found = match settings {
        // Boxed: the lookup (a connect to the server) is large, and only users missing
        // from auth_file need it; unboxed it would size every login.
        Ok(s) => Box::pin(lookups.secret(cluster, &s, general.auth_cache_ttl, user)).await,
        Err(e) => {
            tracing::warn!(cluster = %cluster.name, user, error = %e, "auth_query lookup failed");
            Err(e)
        }
    };
    match found {
        Ok(secret) => Ok(UserSecret {
            secret,
            looked_in: "auth_file and auth_query",
        }),
        Err(e) => Err(ClientError::fatal(e.sqlstate(), e.client_message(user))),
    }
}

/// Runs the authentication exchange; on success returns what pgfleet will log into the
/// servers with. AuthenticationOk is queued in `conn.out` but not flushed.
pub async fn authenticate(
    conn: &mut ClientConn,
    user: &str,
    auth_type: AuthType,
    found: UserSecret,
    derived: &DerivedSecrets,
    mock_key: &[u8],
) -> Result<Credentials, ClientError> {
    let UserSecret { secret, looked_in } = found;
    let mut cred = Credentials {
        user: user.to_owned(),
        secret: secret.clone(),
        scram_keys: None,
    };
    let use_scram = match (auth_type, &secret) {
        (AuthType::Trust, _) => {
            msg::authentication_ok(&mut conn.out);
            return Ok(cred);
        }
        (AuthType::Md5, Some(Secret::Scram(_))) => true,
        (AuthType::Md5, _) => false,
        (AuthType::ScramSha256, _) => true,
    };
    if use_scram {
        let scram_secret = secret.as_ref().map(|s| derived.for_scram(user, s));
        let server = match scram_secret.as_ref().and_then(ScramServer::new) {
            Some(s) => Ok(s),
            None => Err(ScramServer::mock(user, mock_key)),
        };
        let known = server.is_ok();
        let server = server.unwrap_or_else(|mock| mock);
        match scram_exchange(conn, server).await {
            Ok(keys) if known => {
                cred.scram_keys = Some(keys);
            }
            Ok(_) | Err(Failure::WrongPassword) => {
                return Err(wrong_password(user, &secret, looked_in))
            }
            Err(Failure::Client(e)) => return Err(e),
        }
    } else {
        let salt: [u8; 4] = rand::random();
        msg::authentication_md5(&mut conn.out, salt);
        conn.flush().await?;
        let m = conn.read_message().await?;
        let response = parse_password(&m)?;
        // An unknown user's answer is hashed and compared as a known user's is.
        let mock;
        let checked = match &secret {
            Some(s) => s,
            None => {
                mock = mock_md5_secret(user, mock_key);
                &mock
            }
        };
        let ok = verify_md5(checked, user, salt, response) && secret.is_some();
        if !ok {
            return Err(wrong_password(user, &secret, looked_in));
        }
    }
    msg::authentication_ok(&mut conn.out);
    Ok(cred)
}

enum Failure {
    WrongPassword,
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

async fn scram_exchange(
    conn: &mut ClientConn,
    mut server: ScramServer,
) -> Result<crate::auth::ClientKeys, Failure> {
    // Over TLS, channel binding is offered first, as PostgreSQL does.
    let end_point = conn.end_point.clone();
    match end_point {
        Some(_) => msg::authentication_sasl(&mut conn.out, &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]),
        None => msg::authentication_sasl(&mut conn.out, &[SCRAM_SHA_256]),
    }
    conn.flush().await?;
    let m = conn.read_message().await?;
    let (mechanism, first) = parse_sasl_initial(&m).map_err(ClientError::from)?;
    let plus = mechanism == SCRAM_SHA_256_PLUS && end_point.is_some();
    if mechanism != SCRAM_SHA_256 && !plus {
        return Err(ClientError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            "client selected an invalid SASL authentication mechanism",
        )
        .into());
    }
    if conn.stream.is_tls() {
        server = server.on_tls(end_point, plus);
    }
    let server_first = server.handle_client_first(first).map_err(scram_error)?;
    msg::authentication_sasl_continue(&mut conn.out, &server_first);
    conn.flush().await?;
    let m = conn.read_message().await?;
    let last = parse_sasl_response(&m).map_err(ClientError::from)?;
    match server.handle_client_final(last) {
        Ok((server_final, keys)) => {
            msg::authentication_sasl_final(&mut conn.out, &server_final);
            Ok(keys)
        }
        Err(ScramError::InvalidProof) => Err(Failure::WrongPassword),
        Err(e) => Err(scram_error(e)),
    }
}

fn scram_error(e: ScramError) -> Failure {
    match e {
        ScramError::InvalidProof => Failure::WrongPassword,
        other => Failure::Client(ClientError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("malformed SCRAM message: {other}"),
        )),
    }
}

fn wrong_password(user: &str, secret: &Option<Secret>, looked_in: &str) -> ClientError {
    let why = match secret {
        None => format!("no such user in {looked_in}"),
        Some(Secret::Md5(_)) => "wrong password, or an md5 secret cannot do SCRAM".into(),
        Some(_) => "wrong password".into(),
    };
    tracing::warn!(user, reason = %why, "password authentication failed");
    ClientError::fatal(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}
