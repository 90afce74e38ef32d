//! PostgreSQL's lexical rules (`scan.l`), enough to read statements safely: comments
//! (`--`, nested `/* */`), string constants in every form (`'…'` with `''`, `E'…'` with
//! backslash escapes, `B'…'`, `X'…'`, `N'…'`, `U&'…'`, dollar quotes `$tag$…$tag$`),
//! quoted identifiers (`"…"`, `U&"…"`), parameters (`$1`), numbers, operators and
//! punctuation. No allocation: tokens borrow the text. Text the lexer cannot end (an
//! unterminated comment or string) ends the token stream there.

/// One token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted keyword or identifier, as written (compare without case).
    Word(&'a [u8]),
    /// A quoted identifier's contents (a doubled quote stays doubled).
    Quoted(&'a [u8]),
    /// A string constant's contents, escapes as written.
    Str(&'a [u8]),
    /// A parameter (`$1`).
    Param,
    Number,
    /// An operator (`+`, `<>`, `::`…).
    Operator,
    /// `(`, `)`, `,`, `;`, `[`, `]`, `.`, or any other single byte.
    Punct(u8),
}

impl Token<'_> {
    /// Whether this is the unquoted word `keyword` (lower case), in any case.
    pub fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword.as_bytes()))
    }

    /// The name this token spells, if it is an identifier: an unquoted word (any case)
    /// or a quoted one (exactly).
    pub fn names(&self, name: &str) -> bool {
        match self {
            Token::Word(w) => w.eq_ignore_ascii_case(name.as_bytes()),
            Token::Quoted(q) => *q == name.as_bytes(),
            _ => false,
        }
    }
}

/// The tokens of a text.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        Lexer { s, pos: 0 }
    }

    fn peek(&self, at: usize) -> u8 {
        self.s.get(self.pos + at).copied().unwrap_or(0)
    }

    /// Skips whitespace and comments; false if an unterminated comment ends the text.
    fn skip_blank(&mut self) -> bool {
        loop {
            match (self.peek(0), self.peek(1)) {
                (b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b', _) => self.pos += 1,
                (b'-', b'-') => match self.s[self.pos..].iter().position(|&c| c == b'\n') {
                    Some(n) => self.pos += n + 1,
                    None => self.pos = self.s.len(),
                },
                (b'/', b'*') => {
                    let mut depth = 0usize;
                    loop {
                        match (self.peek(0), self.peek(1)) {
                            (b'/', b'*') => {
                                depth += 1;
                                self.pos += 2;
                            }
                            (b'*', b'/') => {
                                depth -= 1;
                                self.pos += 2;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ if self.pos >= self.s.len() => return false,
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return true,
            }
        }
    }

    /// A quoted run starting after its opening `quote`: up to the closing one, a doubled
    /// quote standing for itself (and, with `backslash`, a backslash escaping the next
    /// byte). `None` if the text ends first.
    fn quoted(&mut self, quote: u8, backslash: bool) -> Option<&'a [u8]> {
        let start = self.pos;
        loop {
            let c = *self.s.get(self.pos)?;
            if backslash && c == b'\\' {
                self.pos += 2;
                continue;
            }
            self.pos += 1;
            if c == quote {
                if self.peek(0) == quote {
                    self.pos += 1;
                    continue;
                }
                return Some(&self.s[start..self.pos - 1]);
            }
        }
    }

    /// A dollar-quoted string whose opening `$tag$` starts here, or `None` if what
    /// starts here is not one.
    fn dollar_quoted(&mut self) -> Option<Option<&'a [u8]>> {
        let rest = &self.s[self.pos + 1..];
        let tag_len = rest.iter().position(|&c| c == b'$')?;
        let tag = &rest[..tag_len];
        let valid = match tag.first() {
            None => true,
            Some(&c) => ident_start(c) && tag.iter().all(|&c| ident_start(c) || c.is_ascii_digit()),
        };
        if !valid {
            return None;
        }
        let open = tag_len + 2;
        let body_start = self.pos + open;
        let delimiter = &self.s[self.pos..body_start];
        let body = &self.s[body_start..];
        match body.windows(delimiter.len()).position(|w| w == delimiter) {
            Some(end) => {
                self.pos = body_start + end + delimiter.len();
                Some(Some(&body[..end]))
            }
            None => {
                self.pos = self.s.len();
                Some(None)
            }
        }
    }
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn ident_cont(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

const OPERATOR: &[u8] = b"+-*/<>=~!@#%^&|`?";

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if !self.skip_blank() || self.pos >= self.s.len() {
            return None;
        }
        let c = self.s[self.pos];
        let next = self.peek(1);
        // String constants with a prefix, and U& quoted identifiers.
        let prefixed = match (c.to_ascii_lowercase(), next) {
            (b'e', b'\'') => Some((1, true)),
            (b'b' | b'x' | b'n', b'\'') => Some((1, false)),
            (b'u', b'&') if matches!(self.peek(2), b'\'' | b'"') => Some((2, false)),
            _ => None,
        };
        if let Some((skip, backslash)) = prefixed {
            self.pos += skip;
            let quote = self.s[self.pos];
            self.pos += 1;
            let text = self.quoted(quote, backslash)?;
            return Some(match quote {
                b'"' => Token::Quoted(text),
                _ => Token::Str(text),
            });
        }
        match c {
            b'\'' => {
                self.pos += 1;
                self.quoted(b'\'', false).map(Token::Str)
            }
            b'"' => {
                self.pos += 1;
                self.quoted(b'"', false).map(Token::Quoted)
            }
            b'$' if next.is_ascii_digit() => {
                self.pos += 1;
                while self.peek(0).is_ascii_digit() {
                    self.pos += 1;
                }
                Some(Token::Param)
            }
            b'$' => match self.dollar_quoted() {
                Some(body) => body.map(Token::Str),
                None => {
                    self.pos += 1;
                    Some(Token::Punct(b'$'))
                }
            },
            c if ident_start(c) => {
                let start = self.pos;
                while ident_cont(self.peek(0)) {
                    self.pos += 1;
                }
                Some(Token::Word(&self.s[start..self.pos]))
            }
            c if c.is_ascii_digit() || (c == b'.' && next.is_ascii_digit()) => {
                while self.peek(0).is_ascii_alphanumeric() || matches!(self.peek(0), b'.' | b'_') {
                    self.pos += 1;
                }
                Some(Token::Number)
            }
            b':' if next == b':' => {
                self.pos += 2;
                Some(Token::Operator)
            }
            c if OPERATOR.contains(&c) => {
                // An operator never contains the start of a comment.
                self.pos += 1;
                while OPERATOR.contains(&self.peek(0))
                    && !matches!((self.peek(0), self.peek(1)), (b'-', b'-') | (b'/', b'*'))
                {
                    self.pos += 1;
                }
                Some(Token::Operator)
            }
            c => {
                self.pos += 1;
                Some(Token::Punct(c))
            }
        }
    }
}

/// The statements of a text: its tokens split at each `;` outside parentheses.
pub fn statements(text: &[u8]) -> impl Iterator<Item = Vec<Token<'_>>> + '_ {
    let mut lexer = Lexer::new(text);
    std::iter::from_fn(move || {
        let mut statement = Vec::new();
        let mut depth = 0usize;
        loop {
            match lexer.next() {
                None if statement.is_empty() => return None,
                None => return Some(statement),
                Some(Token::Punct(b';')) if depth == 0 => {
                    if !statement.is_empty() {
                        return Some(statement);
                    }
                }
                Some(t) => {
                    match t {
                        Token::Punct(b'(' | b'[') => depth += 1,
                        Token::Punct(b')' | b']') => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                    statement.push(t);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Token::*;

    fn tokens(s: &str) -> Vec<Token<'_>> {
        Lexer::new(s.as_bytes()).collect()
    }

    #[test]
    fn words_strings_and_comments() {
        assert_eq!(
            tokens("SELECT 'it''s' -- no\n, e'a\\'b' /* x /* nested */ y */ \"Q\"\"x\""),
            [
                Word(b"SELECT"),
                Str(b"it''s"),
                Punct(b','),
                Str(b"a\\'b"),
                Quoted(b"Q\"\"x")
            ]
        );
    }

    #[test]
    fn dollar_quotes_and_parameters() {
        assert_eq!(
            tokens("do $f$ begin perform 1; end $f$; select $1, $$a;b$$, a$b"),
            [
                Word(b"do"),
                Str(b" begin perform 1; end "),
                Punct(b';'),
                Word(b"select"),
                Param,
                Punct(b','),
                Str(b"a;b"),
                Punct(b','),
                Word(b"a$b")
            ]
        );
    }

    #[test]
    fn operators_numbers_and_casts() {
        assert_eq!(
            tokens("1.5e3 <> x::int-- c\n+.5"),
            [
                Number,
                Operator,
                Word(b"x"),
                Operator,
                Word(b"int"),
                Operator,
                Number
            ]
        );
    }

    #[test]
    fn prefixed_strings() {
        assert_eq!(
            tokens("B'101' X'ff' N'n' U&'d\\0061' U&\"i\""),
            [
                Str(b"101"),
                Str(b"ff"),
                Str(b"n"),
                Str(b"d\\0061"),
                Quoted(b"i")
            ]
        );
    }

    #[test]
    fn unterminated_text_ends_the_stream() {
        assert_eq!(tokens("select 'abc"), [Word(b"select")]);
        assert_eq!(tokens("select /* abc"), [Word(b"select")]);
        assert_eq!(tokens("select $x$ abc"), [Word(b"select")]);
    }

    #[test]
    fn statements_split_outside_parentheses() {
        let all: Vec<_> = statements(b"select f(';'); ;select (1;2); ").collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].len(), 6);
    }
}
