//! The fast look at a query's text that decides whether it is read in full for
//! session state (`might_pin`): run on every query in transaction mode.

/// Whether `sql` may leave session state: a fast look that never misses a statement
/// `read` would find, run on every query in transaction mode, so that the common ones
/// are not read in full. It is true when one of these holds, in any case, wherever it
/// is (in strings and comments too: a false alarm only costs the full reading):
/// - a statement starts (at the start of the text or after any `;`, past whitespace
///   and `(`, and past `BEGIN`, `THEN`, `ELSE`, `LOOP`) with a comment or with a word
///   that starts one that leaves state (`SET`, `LISTEN`, `PREPARE`, `DECLARE`, `LOAD`,
///   `CREATE`, `DO`: `LEADING`);
/// - a word starting `pg_` or `set_` is a function that pins or `pg_temp` (`NAMED`);
/// - `temp` occurs (`SELECT … INTO TEMP`).
///
/// Eight bytes at a time, it looks only at the bytes these start or end with (`;`, `_`,
/// `m`), not at every byte: most queries have few.
pub(super) fn might_pin(sql: &[u8]) -> bool {
    if leading(sql) {
        return true;
    }
    let mut chunks = sql.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        let f = flags([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if f != 0 && any_flagged(sql, base, f) {
            return true;
        }
        base += 8;
    }
    // The rest, padded with NULs (which no flag matches).
    let mut tail = [0; 8];
    for (t, &c) in tail.iter_mut().zip(chunks.remainder()) {
        *t = c;
    }
    let f = flags(tail);
    f != 0 && any_flagged(sql, base, f)
}

/// The high bit of each byte of `chunk` that is `;`, `_`, `m` or `M` (and maybe of a
/// byte above one: `flagged` checks each).
#[inline(always)]
fn flags(chunk: [u8; 8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let x = u64::from_le_bytes(chunk);
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    zero(x ^ (ONES * u64::from(b';')))
        | zero(x ^ (ONES * u64::from(b'_')))
        | zero((x | (ONES * 0x20)) ^ (ONES * u64::from(b'm')))
}

/// Whether a byte `flags` flagged in the chunk at `base` is what `might_pin` looks for.
fn any_flagged(sql: &[u8], base: usize, mut f: u64) -> bool {
    while f != 0 {
        let i = base + f.trailing_zeros() as usize / 8;
        if i < sql.len() && flagged(sql, i) {
            return true;
        }
        f &= f - 1;
    }
    false
}

/// Whether the byte at `i` starts or ends what `might_pin` looks for.
fn flagged(sql: &[u8], i: usize) -> bool {
    match sql[i] {
        b';' => leading(&sql[i + 1..]),
        b'_' => named(sql, i),
        // The `m` of `temp`.
        b'm' | b'M' => {
            i >= 2
                && letters_are(&sql[i - 2..i], "te")
                && sql.get(i + 1).is_some_and(|c| c | 0x20 == b'p')
        }
        _ => false,
    }
}

/// The first words of statements that leave session state (as `leading` reads them).
#[cfg(test)]
pub(super) const LEADING: [&str; 7] = [
    "set", "listen", "prepare", "declare", "load", "create", "do",
];

/// The words that leave session state where they occur; each starts `pg_` or `set_`.
pub(super) const NAMED: [&str; 6] = [
    "pg_temp",
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Whether the statement that may start at the start of `rest` starts with a comment
/// (what it holds is not looked into) or one of the `LEADING` words.
#[inline(never)]
fn leading(rest: &[u8]) -> bool {
    let start = rest
        .iter()
        .position(|&c| !(is_space(c) || c == b'('))
        .unwrap_or(rest.len());
    let rest = &rest[start..];
    if rest.starts_with(b"/*") || rest.starts_with(b"--") {
        return true;
    }
    let end = rest.iter().position(|&c| !is_word(c)).unwrap_or(rest.len());
    let word = &rest[..end];
    // As the full reading does for PL/pgSQL, a word after a block or control keyword
    // (`super::CONTROL`) is looked at too.
    let is = |k: &str| letters_are(word, k);
    let next = || leading(&rest[end..]);
    match (end, word.first().map_or(0, |c| c | 0x20)) {
        (2, b'd') => is("do"),
        (3, b's') => is("set"),
        (4, b'l') => is("load") || (is("loop") && next()),
        (4, b't' | b'e') => (is("then") || is("else")) && next(),
        (5, b'b') => is("begin") && next(),
        (6, b'l' | b'c') => is("listen") || is("create"),
        (7, b'p' | b'd') => is("prepare") || is("declare"),
        _ => false,
    }
}

/// Whether `bytes` are the letters of `lower` (lower case ASCII letters), in any case.
#[inline(always)]
fn letters_are(bytes: &[u8], lower: &str) -> bool {
    bytes.len() == lower.len() && bytes.iter().zip(lower.bytes()).all(|(b, l)| b | 0x20 == l)
}

/// Whether `sql[at]`, an `_`, follows `pg` or `set` at the start of a word that is one
/// of the `NAMED`.
#[inline(never)]
fn named(sql: &[u8], at: usize) -> bool {
    let start = match at {
        2.. if letters_are(&sql[at - 2..at], "pg") => at - 2,
        3.. if letters_are(&sql[at - 3..at], "set") => at - 3,
        _ => return false,
    };
    if start > 0 && is_word(sql[start - 1]) {
        return false;
    }
    let end = sql[at..]
        .iter()
        .position(|&c| !is_word(c))
        .map_or(sql.len(), |i| at + i);
    one_of(&sql[start..end], &NAMED)
}

/// Whether `word` is one of `keys`, in any case.
fn one_of(word: &[u8], keys: &[&str]) -> bool {
    keys.iter()
        .any(|k| k.len() == word.len() && word.eq_ignore_ascii_case(k.as_bytes()))
}

/// PostgreSQL's whitespace (`scan.l`: space, tab, newline, carriage return, form feed,
/// vertical tab).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b')
}

/// Whether `c` can be part of an identifier or keyword (any byte of a multibyte
/// character can).
fn is_word(c: u8) -> bool {
    WORD[c as usize]
}

static WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        c += 1;
    }
    t
};
