//! Messages pgfleet sends to clients in the server's role, and the parsing of the
//! backend messages pgfleet needs to understand (errors, parameter status).

use bytes::{BufMut, BytesMut};

use super::frame::read_cstr;

/// Appends a message: type byte, length, then what `body` writes.
fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - len_at) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

pub fn authentication_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_u32(0));
}

pub fn authentication_md5(out: &mut BytesMut, salt: [u8; 4]) {
    message(out, b'R', |b| {
        b.put_u32(5);
        b.put_slice(&salt);
    });
}

pub fn authentication_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    message(out, b'R', |b| {
        b.put_u32(10);
        for m in mechanisms {
            put_cstr(b, m);
        }
        b.put_u8(0);
    });
}

pub fn authentication_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_u32(11);
        b.put_slice(data);
    });
}

pub fn authentication_sasl_final(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_u32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: u32, key: u32) {
    message(out, b'K', |b| {
        b.put_u32(pid);
        b.put_u32(key);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |b| b.put_u8(status));
}

/// RowDescription of text columns (type `text`, OID 25), as the admin console answers.
pub fn row_description(out: &mut BytesMut, columns: &[&str]) {
    message(out, b'T', |b| {
        b.put_u16(columns.len() as u16);
        for name in columns {
            put_cstr(b, name);
            b.put_u32(0); // table OID
            b.put_u16(0); // column number
            b.put_u32(25); // text
            b.put_i16(-1); // variable size
            b.put_i32(-1); // no type modifier
            b.put_u16(0); // text format
        }
    });
}

/// DataRow with text values; `None` is NULL.
pub fn data_row(out: &mut BytesMut, values: &[Option<&str>]) {
    message(out, b'D', |b| {
        b.put_u16(values.len() as u16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_u32(v.len() as u32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

pub fn empty_query_response(out: &mut BytesMut) {
    message(out, b'I', |_| {});
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', |b| put_cstr(b, tag));
}

/// NegotiateProtocolVersion: the newest minor version pgfleet supports (0) and the
/// protocol options (`_pq_.*`) it did not recognise.
pub fn negotiate_protocol_version(out: &mut BytesMut, unrecognized: &[&str]) {
    message(out, b'v', |b| {
        b.put_u32(3 << 16);
        b.put_u32(unrecognized.len() as u32);
        for o in unrecognized {
            put_cstr(b, o);
        }
    });
}

/// How bad an error is, as PostgreSQL's `S`/`V` fields say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the connection goes on.
    Error,
    /// The connection ends after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

pub fn error_response(out: &mut BytesMut, severity: Severity, code: &str, text: &str) {
    message(out, b'E', |b| {
        for (field, value) in [
            (b'S', severity.as_str()),
            (b'V', severity.as_str()),
            (b'C', code),
            (b'M', text),
        ] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// A NoticeResponse (severity `NOTICE`, SQLSTATE 00000) with `text`.
pub fn notice_response(out: &mut BytesMut, text: &str) {
    message(out, b'N', |b| {
        for (field, value) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', text),
        ] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// The fields of an ErrorResponse or NoticeResponse body that pgfleet looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// Parses the body of an ErrorResponse/NoticeResponse; unknown fields are skipped.
pub fn parse_error_fields(body: &[u8]) -> Option<ErrorFields> {
    let mut fields = ErrorFields::default();
    let mut pos = 0;
    loop {
        let kind = *body.get(pos)?;
        pos += 1;
        if kind == 0 {
            return Some(fields);
        }
        let value = read_cstr(body, &mut pos)?;
        match kind {
            b'V' => fields.severity = value.to_owned(),
            b'S' if fields.severity.is_empty() => fields.severity = value.to_owned(),
            b'C' => fields.code = value.to_owned(),
            b'M' => fields.message = value.to_owned(),
            _ => {}
        }
    }
}

/// Parses the body of a ParameterStatus message.
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let mut pos = 0;
    let name = read_cstr(body, &mut pos)?;
    let value = read_cstr(body, &mut pos)?;
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::super::frame::body;
    use super::*;

    #[test]
    fn ready_for_query_bytes() {
        let mut out = BytesMut::new();
        ready_for_query(&mut out, b'I');
        assert_eq!(&out[..], &[b'Z', 0, 0, 0, 5, b'I']);
    }

    #[test]
    fn auth_messages_bytes() {
        let mut out = BytesMut::new();
        authentication_ok(&mut out);
        assert_eq!(&out[..], &[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
        out.clear();
        authentication_md5(&mut out, [1, 2, 3, 4]);
        assert_eq!(&out[..], &[b'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4]);
        out.clear();
        authentication_sasl(&mut out, &["SCRAM-SHA-256"]);
        assert_eq!(&out[..9], &[b'R', 0, 0, 0, 23, 0, 0, 0, 10]);
        assert_eq!(&out[9..], b"SCRAM-SHA-256\0\0");
    }

    #[test]
    fn key_data_and_status() {
        let mut out = BytesMut::new();
        backend_key_data(&mut out, 7, 9);
        assert_eq!(&out[..], &[b'K', 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 9]);
        out.clear();
        parameter_status(&mut out, "a", "b");
        assert_eq!(&out[..], &[b'S', 0, 0, 0, 8, b'a', 0, b'b', 0]);
        assert_eq!(parse_parameter_status(body(&out)), Some(("a", "b")));
    }

    #[test]
    fn error_round_trip() {
        let mut out = BytesMut::new();
        error_response(&mut out, Severity::Fatal, "28P01", "nope");
        let f = parse_error_fields(body(&out)).unwrap();
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.code, "28P01");
        assert_eq!(f.message, "nope");
        assert_eq!(parse_error_fields(b"Sx"), None);
    }
}
