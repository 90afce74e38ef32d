//! The untyped first packet a client sends: StartupMessage, SSLRequest, GSSENCRequest
//! or CancelRequest.

use super::frame::read_cstr;
use super::ProtocolError;

/// PostgreSQL's limit for a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// The most parameters a StartupMessage may carry, counting each setting of its
/// `options` parameter too. PostgreSQL has no such limit; real clients send fewer than
/// ten, and every setting becomes work on each server connection the client uses.
pub const MAX_STARTUP_PARAMS: usize = 64;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// One parsed startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// A StartupMessage for protocol 3.x: `minor` and the name/value parameters in order.
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running on the connection identified by (pid, key).
    Cancel { pid: u32, key: u32 },
    /// A protocol version pgfleet does not speak (major.minor).
    Unsupported { major: u16, minor: u16 },
}

/// Parses the first packet of a connection from the start of `buf`.
///
/// Returns `Ok(None)` until the whole packet is there, and the packet with its size.
pub fn parse_startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(ProtocolError::InvalidLength(len));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[8..len];
    let packet = match code {
        SSL_REQUEST if body.is_empty() => StartupPacket::SslRequest,
        GSSENC_REQUEST if body.is_empty() => StartupPacket::GssEncRequest,
        CANCEL_REQUEST if body.len() == 8 => StartupPacket::Cancel {
            pid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            key: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        },
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            return Err(ProtocolError::Malformed { what: "startup" })
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                StartupPacket::Unsupported { major, minor }
            } else {
                StartupPacket::Startup {
                    minor,
                    params: parse_params(body)?,
                }
            }
        }
    };
    Ok(Some((packet, len)))
}

fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let malformed = ProtocolError::Malformed { what: "startup" };
    let mut params = Vec::new();
    let mut pos = 0;
    loop {
        let name = read_cstr(body, &mut pos).ok_or(malformed.clone())?;
        if name.is_empty() {
            break;
        }
        let value = read_cstr(body, &mut pos).ok_or(malformed.clone())?;
        if params.len() == MAX_STARTUP_PARAMS {
            return Err(ProtocolError::TooManyParameters {
                max: MAX_STARTUP_PARAMS,
            });
        }
        params.push((name.to_owned(), value.to_owned()));
    }
    if pos != body.len() {
        return Err(malformed);
    }
    Ok(params)
}

/// Splits the `options` startup parameter (`-c name=value --name=value ...`, with `\`
/// escaping a space) into name/value pairs, as the PostgreSQL backend does.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next().ok_or("-c without a setting")?
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_owned()
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_owned()
        } else {
            return Err(format!("unsupported option \"{w}\""));
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("option \"{setting}\" has no value"))?;
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn startup_v3() {
        let p = packet(196_608, b"user\0app\0database\0db\0\0");
        let (got, len) = parse_startup(&p).unwrap().unwrap();
        assert_eq!(len, p.len());
        assert_eq!(
            got,
            StartupPacket::Startup {
                minor: 0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ]
            }
        );
        assert_eq!(parse_startup(&p[..p.len() - 1]), Ok(None));
    }

    #[test]
    fn special_requests() {
        let ssl = packet(SSL_REQUEST, b"");
        assert_eq!(
            parse_startup(&ssl).unwrap().unwrap().0,
            StartupPacket::SslRequest
        );
        let gss = packet(GSSENC_REQUEST, b"");
        assert_eq!(
            parse_startup(&gss).unwrap().unwrap().0,
            StartupPacket::GssEncRequest
        );
        let cancel = packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 1, 0]);
        assert_eq!(
            parse_startup(&cancel).unwrap().unwrap().0,
            StartupPacket::Cancel { pid: 7, key: 256 }
        );
    }

    #[test]
    fn other_versions_and_garbage() {
        let v2 = packet(2 << 16, b"");
        assert_eq!(
            parse_startup(&v2).unwrap().unwrap().0,
            StartupPacket::Unsupported { major: 2, minor: 0 }
        );
        assert!(parse_startup(&[0, 0, 0, 4, 1, 2, 3, 4]).is_err());
        assert!(parse_startup(&[0, 1, 0, 0]).is_err());
        let unterminated = packet(196_608, b"user\0app");
        assert!(parse_startup(&unterminated).is_err());
        let bad_cancel = packet(CANCEL_REQUEST, &[1, 2, 3]);
        assert!(parse_startup(&bad_cancel).is_err());
    }

    #[test]
    fn parameter_count_is_bounded() {
        let params = |n: usize| -> Vec<u8> {
            let mut body = Vec::new();
            for i in 0..n {
                body.extend_from_slice(format!("p{i}\0v\0").as_bytes());
            }
            body.push(0);
            packet(196_608, &body)
        };
        let (got, _) = parse_startup(&params(MAX_STARTUP_PARAMS)).unwrap().unwrap();
        assert!(
            matches!(got, StartupPacket::Startup { params, .. } if params.len() == MAX_STARTUP_PARAMS)
        );
        assert_eq!(
            parse_startup(&params(MAX_STARTUP_PARAMS + 1)),
            Err(ProtocolError::TooManyParameters {
                max: MAX_STARTUP_PARAMS
            })
        );
    }

    #[test]
    fn options() {
        assert_eq!(
            parse_options("-c search_path=a,b --DateStyle=ISO -cwork_mem=1MB").unwrap(),
            vec![
                ("search_path".into(), "a,b".into()),
                ("DateStyle".into(), "ISO".into()),
                ("work_mem".into(), "1MB".into())
            ]
        );
        assert_eq!(
            parse_options(r"-c application_name=a\ b").unwrap(),
            vec![("application_name".into(), "a b".into())]
        );
        assert!(parse_options("-x").is_err());
        assert!(parse_options("-c").is_err());
    }
}
