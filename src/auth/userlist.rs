//! PgBouncer's `auth_file` format.
//!
//! Each line holds `"username" "password-or-secret"`: two fields in double
//! quotes, separated by white space, a double quote inside a field written as
//! two double quotes (`""`). Anything after the second field is ignored, as
//! PgBouncer does (old `pg_auth` files had more columns). Blank lines are
//! skipped, and so are lines whose first non-blank character is `;` (the
//! comment character PgBouncer's loader accepts) or `#`. Leading white space
//! and a trailing `\r` are ignored. A user listed twice gets the last entry,
//! as in PgBouncer.
//!
//! The password field is classified by [`Secret::parse`]: an MD5 hash, a
//! SCRAM-SHA-256 secret, or a cleartext password.
//!
//! Unlike PgBouncer, which stops reading at the first broken line and keeps
//! what it read so far, a broken line here fails the whole file, with the
//! line number.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Secret;

/// What is wrong with a line of an `auth_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line does not start with `"`.
    #[error("expected '\"' to start the user name")]
    ExpectedUser,
    /// The user name's closing quote is missing.
    #[error("unterminated quote in the user name")]
    UnterminatedUser,
    /// The user name is not followed by white space and a quoted password.
    #[error("expected white space and '\"' to start the password after the user name")]
    ExpectedPassword,
    /// The password's closing quote is missing.
    #[error("unterminated quote in the password")]
    UnterminatedPassword,
}

/// Why an `auth_file` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum UserlistError {
    /// The file could not be read (or is not UTF-8).
    #[error("cannot read auth file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{}line {line}: {problem}", path_prefix(path.as_deref()))]
    Syntax {
        /// The file, when the text came from one ([`Userlist::load`]).
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: LineError,
    },
}

fn path_prefix(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("auth file {}: ", p.display()),
        None => "auth file ".to_owned(),
    }
}

/// Users and their secrets, as read from an `auth_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Userlist {
    users: HashMap<String, Secret>,
}

impl Userlist {
    /// Parses the text of an `auth_file`; see the module documentation for
    /// the format.
    pub fn parse(text: &str) -> Result<Userlist, UserlistError> {
        let mut users = HashMap::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            match parse_line(line) {
                Ok(Some((user, password))) => {
                    users.insert(user, Secret::parse(&password));
                }
                Ok(None) => {}
                Err(problem) => {
                    return Err(UserlistError::Syntax {
                        path: None,
                        line: index + 1,
                        problem,
                    })
                }
            }
        }
        Ok(Userlist { users })
    }

    /// Reads and parses the `auth_file` at `path`; errors name the path.
    pub fn load(path: &Path) -> Result<Userlist, UserlistError> {
        let text = std::fs::read_to_string(path).map_err(|source| UserlistError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Userlist::parse(&text).map_err(|err| match err {
            UserlistError::Syntax { line, problem, .. } => UserlistError::Syntax {
                path: Some(path.to_path_buf()),
                line,
                problem,
            },
            other => other,
        })
    }

    /// The secret of `user`, if listed. User names are case-sensitive.
    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    /// Adds or replaces a user.
    pub fn insert(&mut self, user: String, secret: Secret) {
        self.users.insert(user, secret);
    }

    /// All users and their secrets, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.users.iter().map(|(u, s)| (u.as_str(), s))
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Parses one line (without its line terminator): `Ok(None)` for a blank or
/// comment line, else the unquoted user name and password.
fn parse_line(line: &str) -> Result<Option<(String, String)>, LineError> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
        return Ok(None);
    }
    let rest = line.strip_prefix('"').ok_or(LineError::ExpectedUser)?;
    let (user, rest) = read_quoted(rest).ok_or(LineError::UnterminatedUser)?;
    let trimmed = rest.trim_start();
    if trimmed.len() == rest.len() {
        // No white space after the user name (or nothing at all).
        return Err(LineError::ExpectedPassword);
    }
    let rest = trimmed
        .strip_prefix('"')
        .ok_or(LineError::ExpectedPassword)?;
    let (password, _ignored) = read_quoted(rest).ok_or(LineError::UnterminatedPassword)?;
    Ok(Some((user, password)))
}

/// Reads a quoted field whose opening quote has been consumed: returns the
/// unescaped content and what follows the closing quote, or `None` if the
/// closing quote is missing.
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut rest = s;
    loop {
        let quote = rest.find('"')?;
        out.push_str(&rest[..quote]);
        let after = &rest[quote + 1..];
        match after.strip_prefix('"') {
            Some(escaped_rest) => {
                out.push('"');
                rest = escaped_rest;
            }
            None => return Some((out, after)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ScramSecret;

    const SCRAM: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn parses_a_typical_file() {
        let text = format!(
            "; PgBouncer-style comment\n\
             # shell-style comment\n\
             \n\
             \"alice\" \"wonderland\"\n\
             \x20 \t\"bob\"\t\"md53175bce1d3201d16594cebf9d7eb3f9d\" \"extra\" ignored\r\n\
             \"carol\" \"{SCRAM}\"\n\
             \x20  ; indented comment\n\
             \"we\"\"ird\" \"pa\"\"ss word\"\"\"\n\
             \"empty\" \"\"\n\
             \"\" \"\"\"\"\n"
        );
        let list = Userlist::parse(&text).unwrap();
        assert_eq!(list.len(), 6);
        assert!(!list.is_empty());
        assert_eq!(list.get("alice"), Some(&Secret::Plain("wonderland".into())));
        assert_eq!(
            list.get("bob"),
            Some(&Secret::Md5("3175bce1d3201d16594cebf9d7eb3f9d".into()))
        );
        assert_eq!(
            list.get("carol"),
            Some(&Secret::Scram(ScramSecret::parse(SCRAM).unwrap()))
        );
        assert_eq!(
            list.get("we\"ird"),
            Some(&Secret::Plain("pa\"ss word\"".into()))
        );
        assert_eq!(list.get("empty"), Some(&Secret::Plain(String::new())));
        assert_eq!(list.get(""), Some(&Secret::Plain("\"".into())));
        assert_eq!(list.get("Alice"), None);
        assert_eq!(list.iter().count(), 6);
    }

    #[test]
    fn empty_and_comment_only() {
        assert!(Userlist::parse("").unwrap().is_empty());
        assert!(Userlist::parse("\n\n  \r\n;x\n#y").unwrap().is_empty());
    }

    #[test]
    fn last_entry_wins() {
        let list = Userlist::parse("\"u\" \"one\"\n\"u\" \"two\"").unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list.get("u"), Some(&Secret::Plain("two".into())));
    }

    fn line_error(text: &str) -> (usize, LineError) {
        match Userlist::parse(text) {
            Err(UserlistError::Syntax {
                path: None,
                line,
                problem,
            }) => (line, problem),
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn errors_carry_line_numbers() {
        let ok = "; c\n\"a\" \"b\"\n";
        assert_eq!(
            line_error(&format!("{ok}alice pw")),
            (3, LineError::ExpectedUser)
        );
        assert_eq!(
            line_error(&format!("{ok}\"alice pw")),
            (3, LineError::UnterminatedUser)
        );
        assert_eq!(
            line_error(&format!("{ok}\"alice\"")),
            (3, LineError::ExpectedPassword)
        );
        assert_eq!(
            line_error(&format!("{ok}\"alice\"   ")),
            (3, LineError::ExpectedPassword)
        );
        assert_eq!(
            line_error(&format!("{ok}\"alice\" pw")),
            (3, LineError::ExpectedPassword)
        );
        assert_eq!(
            line_error(&format!("{ok}\"alice\"\"pw\"")),
            (3, LineError::ExpectedPassword)
        );
        assert_eq!(
            line_error(&format!("{ok}\"alice\" \"pw")),
            (3, LineError::UnterminatedPassword)
        );
        // A quoted field does not continue onto the next line.
        assert_eq!(
            line_error("\"a\" \"b\nc\""),
            (1, LineError::UnterminatedPassword)
        );
        let (line, problem) = line_error("\n\n\n\n\"x\" \"y\"\n\"unterminated");
        assert_eq!((line, problem), (6, LineError::UnterminatedUser));
        let msg = Userlist::parse("\"a\" \"b\"\n\"c\" \"d")
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "auth file line 2: unterminated quote in the password");
    }

    #[test]
    fn load_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("userlist.txt");
        std::fs::write(&good, "\"u\" \"md53175bce1d3201d16594cebf9d7eb3f9d\"\n").unwrap();
        let list = Userlist::load(&good).unwrap();
        assert!(matches!(list.get("u"), Some(Secret::Md5(_))));

        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "\"u\" \"p\"\n\"v\" p\n").unwrap();
        let err = Userlist::load(&bad).unwrap_err();
        assert!(matches!(err, UserlistError::Syntax { line: 2, .. }));
        let msg = err.to_string();
        assert!(msg.contains("bad.txt") && msg.contains("line 2"), "{msg}");

        let missing = dir.path().join("missing.txt");
        let err = Userlist::load(&missing).unwrap_err();
        assert!(matches!(err, UserlistError::Io { .. }));
        assert!(err.to_string().contains("missing.txt"), "{err}");
    }
}
