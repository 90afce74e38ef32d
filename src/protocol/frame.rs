//! Framing of the regular message stream: a one-byte type, a four-byte length that
//! counts itself, then the body.

use super::ProtocolError;

/// The header of one complete message found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// The message type byte (`b'Q'`, `b'Z'`, ...).
    pub tag: u8,
    /// The whole message's size in bytes: type byte, length field and body.
    pub total: usize,
}

/// Looks at the start of `buf` for one whole message.
///
/// `Ok(None)` means more bytes are needed; `Err` means the announced length is invalid
/// or larger than `max` (the connection cannot continue). This is the cheap "is a whole
/// message here?" check the pump runs before forwarding.
pub fn next_message(buf: &[u8], max: usize) -> Result<Option<MessageHeader>, ProtocolError> {
    let Some(total) = announced_size(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(MessageHeader { tag: buf[0], total }))
}

/// The whole size of the message starting at `buf`, as soon as its header is in.
pub fn announced_size(buf: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(ProtocolError::InvalidLength(len));
    }
    if len > max {
        return Err(ProtocolError::TooLarge { len, max });
    }
    Ok(Some(len + 1))
}

/// The body of a whole message (after the type byte and length).
pub fn body(message: &[u8]) -> &[u8] {
    message.get(5..).unwrap_or_default()
}

/// Reads a NUL-terminated string from `buf` at `*pos`, advancing past the NUL.
pub fn read_cstr<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a str> {
    let start = *pos;
    let bytes = read_cstr_bytes(buf, pos)?;
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s),
        Err(_) => {
            *pos = start;
            None
        }
    }
}

/// Reads a NUL-terminated byte string from `buf` at `*pos`, advancing past the NUL.
pub fn read_cstr_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = buf.get(*pos..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    *pos += end + 1;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_partial_messages() {
        let msg = [b'Z', 0, 0, 0, 5, b'I'];
        assert_eq!(
            next_message(&msg, 1024),
            Ok(Some(MessageHeader {
                tag: b'Z',
                total: 6
            }))
        );
        assert_eq!(next_message(&msg[..5], 1024), Ok(None));
        assert_eq!(next_message(&msg[..2], 1024), Ok(None));
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert_eq!(
            next_message(&[b'Q', 0, 0, 0, 3], 1024),
            Err(ProtocolError::InvalidLength(3))
        );
        assert_eq!(
            next_message(&[b'Q', 0, 1, 0, 0], 1024),
            Err(ProtocolError::TooLarge {
                len: 65536,
                max: 1024
            })
        );
    }

    #[test]
    fn cstrings() {
        let buf = b"user\0app\0\0";
        let mut pos = 0;
        assert_eq!(read_cstr(buf, &mut pos), Some("user"));
        assert_eq!(read_cstr(buf, &mut pos), Some("app"));
        assert_eq!(read_cstr(buf, &mut pos), Some(""));
        assert_eq!(read_cstr(buf, &mut pos), None);
    }
}
