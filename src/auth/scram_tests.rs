//! Tests of whole SCRAM exchanges: RFC 7677's vector, pgfleet's server against
//! postgres-protocol's client, pgfleet's client against pgfleet's server.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::scram_common::b64_decode;
use super::*;

// RFC 7677, section 3.
const RFC_USER: &str = "user";
const RFC_PASSWORD: &str = "pencil";
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_secret() -> ScramSecret {
    let salt = b64_decode(RFC_SALT.as_bytes()).unwrap();
    ScramSecret::from_password(RFC_PASSWORD, &salt, 4096)
}

fn rfc_server() -> ScramServer {
    static SECRET: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| Secret::Scram(rfc_secret()));
    ScramServer::new(secret)
        .unwrap()
        .with_server_nonce(RFC_SERVER_NONCE)
}

fn rfc_client(cred: ScramCredential) -> ScramClient {
    ScramClient::with_fixed_nonce(cred, RFC_USER, RFC_CLIENT_NONCE)
}

#[test]
fn rfc7677_vector_client_and_server() {
    let mut client = rfc_client(ScramCredential::Password(RFC_PASSWORD.into()));
    let mut server = rfc_server();

    let client_first = client.client_first();
    assert_eq!(client_first, RFC_CLIENT_FIRST.as_bytes());
    let server_first = server.handle_client_first(&client_first).unwrap();
    assert_eq!(server_first, RFC_SERVER_FIRST.as_bytes());
    let client_final = client.handle_server_first(&server_first).unwrap();
    assert_eq!(client_final, RFC_CLIENT_FINAL.as_bytes());
    let (server_final, keys) = server.handle_client_final(&client_final).unwrap();
    assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
    client.handle_server_final(&server_final).unwrap();

    // The recovered keys reproduce the same messages (PgBouncer pass-through).
    let mut client = rfc_client(ScramCredential::Keys(keys));
    assert_eq!(client.client_first(), RFC_CLIENT_FIRST.as_bytes());
    let client_final = client
        .handle_server_first(RFC_SERVER_FIRST.as_bytes())
        .unwrap();
    assert_eq!(client_final, RFC_CLIENT_FINAL.as_bytes());
    client
        .handle_server_final(RFC_SERVER_FINAL.as_bytes())
        .unwrap();
}

#[test]
fn rfc7677_vector_server_alone() {
    // The RFC's messages fed one by one to a server built from the secret.
    let mut server = rfc_server();
    server
        .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    let (server_final, _) = server
        .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap();
    assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
}

/// Runs postgres-protocol's client against `server`; returns the server's verdict.
fn pp_exchange(
    server: &mut ScramServer,
    password: &str,
    channel_binding: ChannelBinding,
) -> Result<ClientKeys, ScramError> {
    let mut client = ScramSha256::new(password.as_bytes(), channel_binding);
    let server_first = server.handle_client_first(client.message())?;
    client
        .update(&server_first)
        .expect("client accepts server-first");
    let (server_final, keys) = server.handle_client_final(client.message())?;
    client
        .finish(&server_final)
        .expect("client accepts server-final");
    Ok(keys)
}

#[test]
fn server_against_postgres_protocol_client() {
    let pg_text = postgres_protocol::password::scram_sha_256(b"correct horse");
    let secrets = [
        Secret::Plain("correct horse".into()),
        Secret::Scram(ScramSecret::from_password(
            "correct horse",
            b"0123456789abcdef",
            4096,
        )),
        Secret::parse(&pg_text),
    ];
    assert!(matches!(secrets[2], Secret::Scram(_)));
    for secret in &secrets {
        for cb in [ChannelBinding::unsupported, ChannelBinding::unrequested] {
            let mut server = ScramServer::new(secret).unwrap();
            assert!(
                pp_exchange(&mut server, "correct horse", cb()).is_ok(),
                "{secret:?}"
            );
            let mut server = ScramServer::new(secret).unwrap();
            assert_eq!(
                pp_exchange(&mut server, "battery staple", cb()).unwrap_err(),
                ScramError::InvalidProof,
                "{secret:?}"
            );
        }
    }
}

#[test]
fn server_rejects_channel_binding_without_tls() {
    let client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(vec![1, 2, 3]));
    let mut server = ScramServer::new(&Secret::Plain("pw".into())).unwrap();
    assert_eq!(
        server.handle_client_first(client.message()).unwrap_err(),
        ScramError::ChannelBindingNotSupported
    );
}

fn plus_server(end_point: &[u8], plus: bool) -> ScramServer {
    let secret = Secret::Scram(ScramSecret::from_password("pw", b"salt", 16));
    let server = ScramServer::new(&secret).unwrap();
    server.on_tls(Some(end_point.to_vec()), plus)
}

#[test]
fn channel_binding_with_postgres_protocol_client() {
    let hash = [7u8; 32];
    let bound = ChannelBinding::tls_server_end_point(hash.to_vec());
    pp_exchange(&mut plus_server(&hash, true), "pw", bound).unwrap();
    // Bound to another certificate (a man in the middle): refused at c=.
    let other = ChannelBinding::tls_server_end_point(vec![8u8; 32]);
    let err = pp_exchange(&mut plus_server(&hash, true), "pw", other).unwrap_err();
    assert!(matches!(err, ScramError::Malformed(_)), "{err:?}");
    // No channel binding while PLUS is offered but not selected: accepted (`n`).
    pp_exchange(
        &mut plus_server(&hash, false),
        "pw",
        ChannelBinding::unsupported(),
    )
    .unwrap();
    // `y`: the client thinks the server offers no PLUS, but it does: a downgrade.
    let err = pp_exchange(
        &mut plus_server(&hash, false),
        "pw",
        ChannelBinding::unrequested(),
    );
    assert!(matches!(err, Err(ScramError::Malformed(_))), "{err:?}");
    // PLUS selected without binding data, or binding data under plain SCRAM-SHA-256.
    let err = pp_exchange(
        &mut plus_server(&hash, true),
        "pw",
        ChannelBinding::unsupported(),
    );
    assert!(matches!(err, Err(ScramError::Malformed(_))), "{err:?}");
    let bound = ChannelBinding::tls_server_end_point(hash.to_vec());
    let err = pp_exchange(&mut plus_server(&hash, false), "pw", bound);
    assert!(matches!(err, Err(ScramError::Malformed(_))), "{err:?}");
}

#[test]
fn channel_binding_between_pgfleet_client_and_server() {
    let hash = vec![3u8; 48];
    let cred = ScramCredential::Password("pw".into());
    let mut client = ScramClient::new(cred.clone()).with_binding(Binding::EndPoint(hash.clone()));
    exchange(&mut client, &mut plus_server(&hash, true)).unwrap();
    let mut client = ScramClient::new(cred.clone()).with_binding(Binding::EndPoint(vec![4u8; 48]));
    let err = exchange(&mut client, &mut plus_server(&hash, true)).unwrap_err();
    assert!(matches!(err, ScramError::Malformed(_)), "{err:?}");
    // Over TLS towards a server without PLUS: `y,,`, accepted by a server without TLS.
    let mut client = ScramClient::new(cred).with_binding(Binding::NotOffered);
    let mut server = ScramServer::new(&Secret::Plain("pw".into())).unwrap();
    exchange(&mut client, &mut server).unwrap();
}

/// Runs `client` against `server` to the end.
fn exchange(client: &mut ScramClient, server: &mut ScramServer) -> Result<ClientKeys, ScramError> {
    let server_first = server.handle_client_first(&client.client_first())?;
    let client_final = client.handle_server_first(&server_first)?;
    let (server_final, keys) = server.handle_client_final(&client_final)?;
    client.handle_server_final(&server_final)?;
    Ok(keys)
}

#[test]
fn client_password_against_server() {
    let secret = Secret::Scram(ScramSecret::from_password("sekrit", b"pepper", 4096));
    for s in [&secret, &Secret::Plain("sekrit".into())] {
        let mut client = ScramClient::new(ScramCredential::Password("sekrit".into()));
        let mut server = ScramServer::new(s).unwrap();
        exchange(&mut client, &mut server).unwrap();

        let mut client = ScramClient::new(ScramCredential::Password("wrong".into()));
        let mut server = ScramServer::new(s).unwrap();
        assert_eq!(
            exchange(&mut client, &mut server),
            Err(ScramError::InvalidProof)
        );
    }
}

#[test]
fn keys_pass_through_to_a_second_server() {
    // The userlist holds a SCRAM secret; the same secret is on PostgreSQL.
    let secret = ScramSecret::from_password("sekrit", b"pepper and salt", 4096);

    // 1. The client logs into pgfleet (postgres-protocol plays the client).
    let mut front = ScramServer::new(&Secret::Scram(secret.clone())).unwrap();
    let keys = pp_exchange(&mut front, "sekrit", ChannelBinding::unsupported()).unwrap();

    // 2. pgfleet logs into "PostgreSQL" with the recovered keys, twice.
    for _ in 0..2 {
        let mut backend = ScramServer::new(&Secret::Scram(secret.clone())).unwrap();
        let mut client = ScramClient::new(ScramCredential::Keys(keys.clone()));
        let backend_keys = exchange(&mut client, &mut backend).unwrap();
        assert_eq!(backend_keys, keys);
    }

    // 3. The keys are useless against a server with another salt.
    let other = ScramSecret::from_password("sekrit", b"other salt", 4096);
    let mut backend = ScramServer::new(&Secret::Scram(other)).unwrap();
    let mut client = ScramClient::new(ScramCredential::Keys(keys.clone()));
    assert_eq!(
        exchange(&mut client, &mut backend),
        Err(ScramError::InvalidProof)
    );

    // 4. A server that knows StoredKey but not ServerKey is caught by the client.
    let mut impostor_secret = secret.clone();
    impostor_secret.server_key = [0x5a; 32];
    let mut impostor = ScramServer::new(&Secret::Scram(impostor_secret)).unwrap();
    let mut client = ScramClient::new(ScramCredential::Keys(keys));
    assert_eq!(
        exchange(&mut client, &mut impostor),
        Err(ScramError::ServerSignatureMismatch)
    );
}

#[test]
fn keys_from_plain_secret_match_password_derivation() {
    // With a Plain secret the server's salt is random per exchange; the keys
    // still are those of the password with that salt.
    let mut server = ScramServer::new(&Secret::Plain("pw".into())).unwrap();
    let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
    let server_first = server.handle_client_first(client.message()).unwrap();
    let salt_b64 = std::str::from_utf8(&server_first)
        .unwrap()
        .split(',')
        .find_map(|a| a.strip_prefix("s="))
        .unwrap()
        .to_owned();
    client.update(&server_first).unwrap();
    let (_, keys) = server.handle_client_final(client.message()).unwrap();
    let secret = ScramSecret::from_password("pw", &b64_decode(salt_b64.as_bytes()).unwrap(), 4096);
    assert_eq!(keys.server_key, secret.server_key);
    assert_eq!(scram_common::sha256(&keys.client_key), secret.stored_key);
}

fn salt_of(server_first: &[u8]) -> String {
    std::str::from_utf8(server_first)
        .unwrap()
        .split(',')
        .find_map(|a| a.strip_prefix("s="))
        .unwrap()
        .to_owned()
}

#[test]
fn mock_server_always_fails_with_stable_salt() {
    let key = b"per-process mock key";
    let first_of = |user: &str, key: &[u8]| {
        let mut server = ScramServer::mock(user, key);
        let client = ScramSha256::new(b"x", ChannelBinding::unsupported());
        server.handle_client_first(client.message()).unwrap()
    };
    let alice1 = first_of("alice", key);
    let alice2 = first_of("alice", key);
    let bob = first_of("bob", key);
    let alice_other_key = first_of("alice", b"another key");
    assert_eq!(salt_of(&alice1), salt_of(&alice2));
    assert_ne!(salt_of(&alice1), salt_of(&bob));
    assert_ne!(salt_of(&alice1), salt_of(&alice_other_key));
    // Looks like a real server-first: 16-byte salt, 4096 iterations.
    assert_eq!(b64_decode(salt_of(&alice1).as_bytes()).unwrap().len(), 16);
    assert!(alice1.ends_with(b",i=4096"));

    // Whatever the password, the exchange runs to the end and fails at the proof.
    for password in ["", "x", "alice", "correct horse"] {
        let mut server = ScramServer::mock("alice", key);
        assert_eq!(
            pp_exchange(&mut server, password, ChannelBinding::unsupported()).unwrap_err(),
            ScramError::InvalidProof
        );
        let mut server = ScramServer::mock("alice", key);
        let mut client = ScramClient::new(ScramCredential::Password(password.into()));
        assert_eq!(
            exchange(&mut client, &mut server),
            Err(ScramError::InvalidProof)
        );
    }
    // Malformed input is still reported as such.
    let mut server = ScramServer::mock("alice", key);
    assert_eq!(
        server.handle_client_first(b"p=x,,n=,r=a").unwrap_err(),
        ScramError::ChannelBindingNotSupported
    );
}

#[test]
fn client_against_server_with_tampered_messages() {
    let secret = Secret::Scram(ScramSecret::from_password("pw", b"salt", 4096));
    // Server nonce replaced by the attacker: the client's nonce prefix is gone.
    let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
    let mut server = ScramServer::new(&secret).unwrap();
    let server_first = server.handle_client_first(&client.client_first()).unwrap();
    let tampered = String::from_utf8(server_first)
        .unwrap()
        .replacen("r=", "r=evil", 1);
    assert_eq!(
        client.handle_server_first(tampered.as_bytes()),
        Err(ScramError::NonceMismatch)
    );
    // Client-final replayed against a fresh exchange: nonce mismatch.
    let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
    let mut server = ScramServer::new(&secret).unwrap();
    let server_first = server.handle_client_first(&client.client_first()).unwrap();
    let client_final = client.handle_server_first(&server_first).unwrap();
    let mut fresh = ScramServer::new(&secret).unwrap();
    fresh.handle_client_first(b"n,,n=,r=somethingelse").unwrap();
    assert_eq!(
        fresh.handle_client_final(&client_final).unwrap_err(),
        ScramError::NonceMismatch
    );
    // A flipped proof bit: invalid proof.
    let mut bad = client_final.clone();
    // A character well inside the proof: the last one before '=' carries padding bits,
    // and changing those makes the base64 invalid rather than the proof wrong.
    let inside = bad.len() - 10;
    bad[inside] = if bad[inside] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        server.handle_client_final(&bad).unwrap_err(),
        ScramError::InvalidProof
    );
}

#[test]
fn truncated_and_random_inputs_never_panic() {
    use rand::{Rng, SeedableRng};

    // Every prefix of every RFC message, at every step.
    for len in 0..RFC_CLIENT_FIRST.len() {
        let _ = rfc_server().handle_client_first(&RFC_CLIENT_FIRST.as_bytes()[..len]);
    }
    for len in 0..RFC_CLIENT_FINAL.len() {
        let mut server = rfc_server();
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        assert!(server
            .handle_client_final(&RFC_CLIENT_FINAL.as_bytes()[..len])
            .is_err());
    }
    let keys = ClientKeys {
        client_key: [3; 32],
        server_key: [4; 32],
    };
    for len in 0..RFC_SERVER_FIRST.len() {
        let mut client = rfc_client(ScramCredential::Keys(keys.clone()));
        client.client_first();
        // Some prefixes are valid (a shorter iteration count): no panic is all we ask.
        let _ = client.handle_server_first(&RFC_SERVER_FIRST.as_bytes()[..len]);
    }
    for len in 0..RFC_SERVER_FINAL.len() {
        let mut client = rfc_client(ScramCredential::Password(RFC_PASSWORD.into()));
        client.client_first();
        client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        assert!(client
            .handle_server_final(&RFC_SERVER_FINAL.as_bytes()[..len])
            .is_err());
    }

    // Random bytes drawn mostly from SCRAM's own alphabet.
    let alphabet = b"nyprsicvem=,abAB09+/\xff\x00 ";
    let mut rng = rand::rngs::StdRng::seed_from_u64(7677);
    for _ in 0..2000 {
        let len = rng.gen_range(0..40);
        let input: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let mut server = rfc_server();
        if server.handle_client_first(&input).is_err() {
            let mut server = rfc_server();
            server
                .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
                .unwrap();
            let _ = server.handle_client_final(&input);
        }
        let mut client = rfc_client(ScramCredential::Keys(keys.clone()));
        client.client_first();
        if client.handle_server_first(&input).is_err() {
            let mut client = rfc_client(ScramCredential::Keys(keys.clone()));
            client.client_first();
            client
                .handle_server_first(RFC_SERVER_FIRST.as_bytes())
                .unwrap();
            let _ = client.handle_server_final(&input);
        }
    }
}
