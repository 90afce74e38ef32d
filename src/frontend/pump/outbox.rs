//! Bytes on their way to one peer: whole messages moved out of the read buffer they
//! arrived in without a copy (the two share one allocation), and, where pgfleet changed
//! or dropped a message, what goes in its place.

use bytes::{Buf, BytesMut};

/// Moves the first `len` bytes of `from` to the end of `to`: no copy while `to` is
/// empty or ends where `from` starts.
pub(super) fn take(to: &mut BytesMut, from: &mut BytesMut, len: usize) {
    if len == 0 {
        return;
    }
    let run = from.split_to(len);
    if to.is_empty() {
        *to = run;
    } else {
        to.unsplit(run);
    }
}

/// Drops the first `len` bytes of `from` (a message pgfleet replaced) and appends
/// `with` to `to`.
pub(super) fn replace(to: &mut BytesMut, from: &mut BytesMut, len: usize, with: &[u8]) {
    from.advance(len);
    to.extend_from_slice(with);
}

/// `n` bytes of `out` were written. Once all are, the read buffer they came from gets
/// its allocation back to itself (reused for the next reads without a new one).
pub(super) fn written(out: &mut BytesMut, n: usize) {
    out.advance(n);
    if out.is_empty() {
        *out = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_move_without_copy_and_replacements_keep_order() {
        let mut read = BytesMut::with_capacity(64);
        read.extend_from_slice(b"aaabbbccc");
        let start = read.as_ptr();
        let mut out = BytesMut::new();
        take(&mut out, &mut read, 3);
        assert_eq!(out.as_ptr(), start, "moved, not copied");
        replace(&mut out, &mut read, 3, b"B");
        take(&mut out, &mut read, 3);
        assert_eq!(&out[..], b"aaaBccc");
        assert!(read.is_empty());
        written(&mut out, 2);
        assert_eq!(&out[..], b"aBccc");
        written(&mut out, 5);
        assert_eq!(out.capacity(), 0, "the shared allocation is let go");
    }
}
