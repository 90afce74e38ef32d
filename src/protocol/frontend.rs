//! Client messages: parsing the authentication messages a client sends (all use type
//! byte `p`), and building the messages pgfleet sends to servers in a client's name
//! (Parse, Bind, Describe and Close of a statement under pgfleet's name, Query).

use bytes::{BufMut, BytesMut};

use super::frame::{body, read_cstr};
use super::ProtocolError;

/// Appends one message: `tag`, its length, then what `fill` writes.
fn message(out: &mut BytesMut, tag: u8, fill: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u8(tag);
    out.put_u32(0);
    fill(out);
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// A Parse of statement `name`; `rest` is what follows the name in a client's Parse
/// (query text, parameter count and types), copied as it is.
pub fn parse(out: &mut BytesMut, name: &str, rest: &[u8]) {
    message(out, b'P', |out| {
        put_cstr(out, name.as_bytes());
        out.put_slice(rest);
    });
}

/// A Parse of statement `name` with `sql` and no parameter types.
pub fn parse_sql(out: &mut BytesMut, name: &str, sql: &str) {
    message(out, b'P', |out| {
        put_cstr(out, name.as_bytes());
        put_cstr(out, sql.as_bytes());
        out.put_u16(0);
    });
}

/// The front of a Bind of `portal` to statement `name`: its type, its length and the
/// two names. The `rest` bytes that follow the statement name in the client's Bind
/// (formats, parameters, result formats) go after it as the client sent them.
pub fn bind_front(out: &mut BytesMut, portal: &[u8], name: &str, rest: usize) {
    let len = 4 + portal.len() + 1 + name.len() + 1 + rest;
    out.put_u8(b'B');
    out.put_u32(len as u32);
    put_cstr(out, portal);
    put_cstr(out, name.as_bytes());
}

/// A Describe of statement `name`.
pub fn describe_statement(out: &mut BytesMut, name: &str) {
    message(out, b'D', |out| {
        out.put_u8(b'S');
        put_cstr(out, name.as_bytes());
    });
}

/// A Close of statement `name`.
pub fn close_statement(out: &mut BytesMut, name: &str) {
    message(out, b'C', |out| {
        out.put_u8(b'S');
        put_cstr(out, name.as_bytes());
    });
}

/// A simple Query.
pub fn query(out: &mut BytesMut, sql: &str) {
    message(out, b'Q', |out| put_cstr(out, sql.as_bytes()));
}

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
    fn built_messages_match_postgres_protocol() {
        let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
        query(&mut ours, "select 1");
        fe::query("select 1", &mut theirs).unwrap();
        assert_eq!(ours, theirs);
        ours.clear();
        theirs.clear();
        parse_sql(&mut ours, "s1", "select $1");
        fe::parse("s1", "select $1", std::iter::empty(), &mut theirs).unwrap();
        assert_eq!(ours, theirs);
        ours.clear();
        parse(&mut ours, "s1", b"select $1\0\0\0");
        assert_eq!(ours, theirs);
        ours.clear();
        theirs.clear();
        close_statement(&mut ours, "s1");
        fe::close(b'S', "s1", &mut theirs).unwrap();
        assert_eq!(ours, theirs);
        ours.clear();
        theirs.clear();
        describe_statement(&mut ours, "s1");
        fe::describe(b'S', "s1", &mut theirs).unwrap();
        assert_eq!(ours, theirs);
        ours.clear();
        bind_front(&mut ours, b"p", "s1", 6);
        ours.extend_from_slice(b"\0\0\0\0\0\0");
        assert_eq!(&ours[..], b"B\0\0\0\x0fp\0s1\0\0\0\0\0\0\0");
    }

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
