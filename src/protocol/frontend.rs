//! Parsing the authentication messages a client sends (all use type byte `p`).

use super::frame::{body, read_cstr};
use super::ProtocolError;

/// A PasswordMessage's password (md5 or cleartext response), without its NUL.
pub fn parse_password(message: &[u8]) -> Result<&[u8], ProtocolError> {
    let b = body(message);
    match b.split_last() {
        Some((0, password)) if message.first() == Some(&b'p') => Ok(password),
        _ => Err(ProtocolError::Malformed { what: "password" }),
    }
}

/// A SASLInitialResponse: the chosen mechanism and the client-first-message.
pub fn parse_sasl_initial(message: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let malformed = ProtocolError::Malformed {
        what: "SASLInitialResponse",
    };
    if message.first() != Some(&b'p') {
        return Err(malformed);
    }
    let b = body(message);
    let mut pos = 0;
    let mechanism = read_cstr(b, &mut pos).ok_or(malformed.clone())?;
    let len_bytes = b.get(pos..pos + 4).ok_or(malformed.clone())?;
    let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    let data = &b[pos + 4..];
    if len < 0 || len as usize != data.len() {
        return Err(malformed);
    }
    Ok((mechanism, data))
}

/// A SASLResponse: the client-final-message.
pub fn parse_sasl_response(message: &[u8]) -> Result<&[u8], ProtocolError> {
    if message.first() != Some(&b'p') {
        return Err(ProtocolError::Malformed {
            what: "SASLResponse",
        });
    }
    Ok(body(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use postgres_protocol::message::frontend as fe;

    #[test]
    fn password() {
        let mut m = BytesMut::new();
        fe::password_message(b"md5abc", &mut m).unwrap();
        assert_eq!(parse_password(&m), Ok(&b"md5abc"[..]));
        assert!(parse_password(&[b'p', 0, 0, 0, 4]).is_err());
    }

    #[test]
    fn sasl() {
        let mut m = BytesMut::new();
        fe::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", &mut m).unwrap();
        assert_eq!(
            parse_sasl_initial(&m),
            Ok(("SCRAM-SHA-256", &b"n,,n=,r=abc"[..]))
        );
        let mut bad = m.to_vec();
        bad.truncate(bad.len() - 1);
        assert!(parse_sasl_initial(&bad).is_err());
        m.clear();
        fe::sasl_response(b"c=biws", &mut m).unwrap();
        assert_eq!(parse_sasl_response(&m), Ok(&b"c=biws"[..]));
    }
}
