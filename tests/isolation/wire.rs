//! What a generated client says and hears: its markers, the frontend messages it sends
//! (built with `postgres_protocol`), the backend messages that matter for checking
//! (events), and a raw connection that reads them with a deadline on every read.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend as fe;
use postgres_protocol::IsNull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A value only one client ever asks for: `c3-17.2` is client 3's step 17, third
/// marker of the step. Markers order by (step, index), the order a client sends them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Marker {
    pub client: u32,
    pub step: u64,
    pub index: u32,
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}-{}.{}", self.client, self.step, self.index)
    }
}

impl fmt::Debug for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Marker {
    /// The first marker written in `text`, if any.
    pub fn find(text: &str) -> Option<Marker> {
        let b = text.as_bytes();
        (0..b.len()).find_map(|i| Marker::parse_at(&text[i..]))
    }

    /// `text` as a whole, if it is a marker.
    pub fn parse(text: &str) -> Option<Marker> {
        Marker::parse_at(text).filter(|m| m.to_string().len() == text.len())
    }

    fn parse_at(text: &str) -> Option<Marker> {
        let rest = text.strip_prefix('c')?;
        let (client, rest) = digits(rest)?;
        let rest = rest.strip_prefix('-')?;
        let (step, rest) = digits(rest)?;
        let rest = rest.strip_prefix('.')?;
        let (index, _) = digits(rest)?;
        Some(Marker {
            client: client as u32,
            step,
            index: index as u32,
        })
    }
}

fn digits(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n = s[..end].parse().ok()?;
    Some((n, &s[end..]))
}

/// One SQL statement, as the model of the server needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stmt {
    /// `select 'm'`
    Select(Marker),
    /// `select $1::text`: returns the marker bound to it.
    SelectParam,
    /// `select 'm'::int`: fails while parsing, naming the marker.
    Cast(Marker),
    /// `select $1::int`: fails when bound, naming the bound marker.
    CastParam,
    /// `select 1/0`
    DivZero,
    Begin,
    Commit,
    Rollback,
    /// `copy isolation_copy from stdin` (one int column).
    CopyIn,
    /// `copy (select 'm') to stdout`
    CopyOut(Marker),
    /// The empty query string.
    Empty,
}

impl Stmt {
    pub fn sql(&self) -> String {
        match self {
            Stmt::Select(m) => format!("select '{m}'"),
            Stmt::SelectParam => "select $1::text".into(),
            Stmt::Cast(m) => format!("select '{m}'::int"),
            Stmt::CastParam => "select $1::int".into(),
            Stmt::DivZero => "select 1/0".into(),
            Stmt::Begin => "begin".into(),
            Stmt::Commit => "commit".into(),
            Stmt::Rollback => "rollback".into(),
            Stmt::CopyIn => format!("copy {COPY_TABLE} from stdin"),
            Stmt::CopyOut(m) => format!("copy (select '{m}') to stdout"),
            Stmt::Empty => String::new(),
        }
    }

    /// Whether PostgreSQL runs it in an aborted transaction block.
    pub fn ends_block(&self) -> bool {
        matches!(self, Stmt::Commit | Stmt::Rollback)
    }
}

/// The table every COPY FROM writes to.
pub const COPY_TABLE: &str = "isolation_copy";

/// One row of COPY data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    Good(i32),
    /// The marker as the int column's value: the server rejects it, naming it.
    Bad(Marker),
}

/// A frontend message (the portal is always the unnamed one).
#[derive(Clone, Debug)]
pub enum Msg {
    Query(Vec<Stmt>),
    Parse(String, Stmt),
    Bind(String, Option<Marker>),
    DescribePortal,
    DescribeStatement(String),
    Execute,
    Close(String),
    Sync,
    Flush,
    CopyData(Vec<Row>),
    CopyDone,
    CopyFail(Marker),
    /// FunctionCall of `textcat(m, '')`.
    Function(Marker),
    Terminate,
    /// The first bytes of a Query, never completed.
    Partial,
}

/// Encodes `msgs` as one write; `textcat` is the function FunctionCall calls.
pub fn encode(msgs: &[Msg], textcat: u32) -> BytesMut {
    let mut out = BytesMut::new();
    for msg in msgs {
        match msg {
            Msg::Query(stmts) => {
                let sql: Vec<String> = stmts.iter().map(Stmt::sql).collect();
                fe::query(&sql.join("; "), &mut out).unwrap();
            }
            Msg::Parse(name, stmt) => fe::parse(name, &stmt.sql(), [], &mut out).unwrap(),
            Msg::Bind(name, param) => {
                let values: Vec<Option<String>> =
                    param.iter().map(|m| Some(m.to_string())).collect();
                let text = |v: Option<String>, buf: &mut BytesMut| {
                    buf.put_slice(v.unwrap_or_default().as_bytes());
                    Ok(IsNull::No)
                };
                fe::bind("", name, [0], values, text, [0], &mut out)
                    .unwrap_or_else(|_| panic!("bind {name}"));
            }
            Msg::DescribePortal => fe::describe(b'P', "", &mut out).unwrap(),
            Msg::DescribeStatement(name) => fe::describe(b'S', name, &mut out).unwrap(),
            Msg::Execute => fe::execute("", 0, &mut out).unwrap(),
            Msg::Close(name) => fe::close(b'S', name, &mut out).unwrap(),
            Msg::Sync => fe::sync(&mut out),
            Msg::Flush => fe::flush(&mut out),
            Msg::CopyData(rows) => {
                let text: String = rows
                    .iter()
                    .map(|r| match r {
                        Row::Good(i) => format!("{i}\n"),
                        Row::Bad(m) => format!("{m}\n"),
                    })
                    .collect();
                fe::CopyData::new(text.as_bytes()).unwrap().write(&mut out);
            }
            Msg::CopyDone => fe::copy_done(&mut out),
            Msg::CopyFail(m) => fe::copy_fail(&m.to_string(), &mut out).unwrap(),
            Msg::Function(m) => function_call(textcat, &[&m.to_string(), ""], &mut out),
            Msg::Terminate => fe::terminate(&mut out),
            Msg::Partial => {
                let mut q = BytesMut::new();
                fe::query("select 'never finished'", &mut q).unwrap();
                out.extend_from_slice(&q[..q.len() / 2]);
            }
        }
    }
    out
}

/// A FunctionCall with text arguments and a text result (postgres-protocol has none).
fn function_call(oid: u32, args: &[&str], out: &mut BytesMut) {
    let mut body = BytesMut::new();
    body.put_u32(oid);
    body.put_i16(1);
    body.put_i16(0);
    body.put_i16(args.len() as i16);
    for a in args {
        body.put_i32(a.len() as i32);
        body.put_slice(a.as_bytes());
    }
    body.put_i16(0);
    out.put_u8(b'F');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
}

/// What a returned value was: a marker, or text that is none.
pub type Value = Result<Marker, String>;

/// A backend message that matters for checking; the rest (ParseComplete,
/// RowDescription, CommandComplete other than COPY's, notices...) is skipped.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    Row(Value),
    /// CopyData of a COPY TO STDOUT.
    Data(Value),
    /// FunctionCallResponse.
    Function(Value),
    /// ErrorResponse: SQLSTATE and the marker its message names.
    Error(String, Option<Marker>),
    Ready(u8),
    CopyIn,
    CopyOut,
    /// CommandComplete `COPY n`.
    Copied(u64),
    /// A message type no client of ours expects.
    Unexpected(u8),
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |v: &Value| match v {
            Ok(m) => m.to_string(),
            Err(t) => format!("{t:?}"),
        };
        match self {
            Event::Row(x) => write!(f, "Row({})", v(x)),
            Event::Data(x) => write!(f, "CopyData({})", v(x)),
            Event::Function(x) => write!(f, "Function({})", v(x)),
            Event::Error(code, Some(m)) => write!(f, "Error({code} {m})"),
            Event::Error(code, None) => write!(f, "Error({code})"),
            Event::Ready(s) => write!(f, "Ready({})", *s as char),
            Event::CopyIn => write!(f, "CopyIn"),
            Event::CopyOut => write!(f, "CopyOut"),
            Event::Copied(n) => write!(f, "Copied({n})"),
            Event::Unexpected(t) => write!(f, "Unexpected({})", *t as char),
        }
    }
}

impl Event {
    /// The marker an event carries, or the text that should have been one.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Event::Row(v) | Event::Data(v) | Event::Function(v) => Some(v),
            _ => None,
        }
    }

    pub fn marker(&self) -> Option<Marker> {
        match self {
            Event::Error(_, m) => *m,
            _ => self.value().and_then(|v| v.as_ref().ok().copied()),
        }
    }
}

/// The event a whole backend message makes, if it makes one.
fn event(kind: u8, body: &[u8]) -> Option<Event> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let value = |b: &[u8]| {
        let t = text(b);
        Marker::parse(t.trim_end_matches('\n')).ok_or(t)
    };
    let i32_at = |at: usize| -> i32 {
        body.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(-1)
    };
    // The first column of a DataRow / the value of a FunctionCallResponse.
    let field = |len_at: usize| -> Value {
        let len = i32_at(len_at);
        if len < 0 {
            return Err("NULL".into());
        }
        value(
            body.get(len_at + 4..len_at + 4 + len as usize)
                .unwrap_or_default(),
        )
    };
    Some(match kind {
        b'D' => Event::Row(field(2)),
        b'V' => Event::Function(field(0)),
        b'd' => Event::Data(value(body)),
        b'Z' => Event::Ready(body.first().copied().unwrap_or(b'?')),
        b'G' => Event::CopyIn,
        b'H' => Event::CopyOut,
        b'E' => {
            let (mut code, mut message) = (String::new(), String::new());
            for f in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                match f[0] {
                    b'C' => code = text(&f[1..]),
                    b'M' => message = text(&f[1..]),
                    _ => {}
                }
            }
            Event::Error(code, Marker::find(&message))
        }
        b'C' => {
            let tag = text(body);
            let n = tag.trim_end_matches('\0').strip_prefix("COPY ")?;
            Event::Copied(n.parse().ok()?)
        }
        b'1' | b'2' | b'3' | b'T' | b't' | b'n' | b'I' | b's' | b'N' | b'S' | b'A' | b'c' => {
            return None
        }
        other => Event::Unexpected(other),
    })
}

/// Why reading stopped short.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing whole arrived within the deadline.
    Timeout,
    /// The other side closed (or reset) the connection.
    Closed(String),
}

/// A raw client connection (trust authentication as `trustuser`, database `app`).
pub struct Conn {
    sock: TcpStream,
    buf: BytesMut,
    pub timeout: Duration,
}

impl Conn {
    /// Connects and logs in, up to the first ReadyForQuery.
    pub async fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, String> {
        let connect = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
        let sock = match connect {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Err(_) => return Err("connect: timed out".into()),
        };
        sock.set_nodelay(true).ok();
        let mut conn = Conn {
            sock,
            buf: BytesMut::new(),
            timeout,
        };
        let mut out = BytesMut::new();
        fe::startup_message([("user", "trustuser"), ("database", "app")], &mut out).unwrap();
        conn.send(&out)
            .await
            .map_err(|e| format!("startup: {e:?}"))?;
        loop {
            match conn.message().await {
                Ok((b'Z', _)) => return Ok(conn),
                Ok((b'E', body)) => {
                    return Err(format!("login refused: {}", String::from_utf8_lossy(&body)))
                }
                Ok(_) => {}
                Err(e) => return Err(format!("login: {e:?}")),
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ReadError> {
        let write = tokio::time::timeout(self.timeout, self.sock.write_all(bytes)).await;
        match write {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ReadError::Closed(format!("write: {e}"))),
            Err(_) => Err(ReadError::Timeout),
        }
    }

    /// The next whole backend message (type, body).
    async fn message(&mut self) -> Result<(u8, Vec<u8>), ReadError> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let m = self.buf.split_to(total);
                    return Ok((m[0], m[5..].to_vec()));
                }
            }
            match tokio::time::timeout(self.timeout, self.sock.read_buf(&mut self.buf)).await {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Ok(0)) => return Err(ReadError::Closed("end of stream".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ReadError::Closed(e.to_string())),
            }
        }
    }

    /// The next event, skipping the messages that make none.
    pub async fn event(&mut self) -> Result<Event, ReadError> {
        loop {
            let (kind, body) = self.message().await?;
            if let Some(e) = event(kind, &body) {
                return Ok(e);
            }
        }
    }

    /// Every event that arrives until the line has been quiet for `idle`.
    pub async fn events_until_quiet(&mut self, idle: Duration) -> Result<Vec<Event>, ReadError> {
        let saved = std::mem::replace(&mut self.timeout, idle);
        let mut got = Vec::new();
        let end = loop {
            match self.event().await {
                Ok(e) => got.push(e),
                Err(ReadError::Timeout) => break Ok(got),
                Err(e) => break Err(e),
            }
        };
        self.timeout = saved;
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_print_and_parse() {
        let m = Marker {
            client: 3,
            step: 17,
            index: 2,
        };
        assert_eq!(m.to_string(), "c3-17.2");
        assert_eq!(Marker::parse("c3-17.2"), Some(m));
        assert_eq!(Marker::parse("c3-17.2x"), None);
        let msg = "invalid input syntax for type integer: \"c3-17.2\"";
        assert_eq!(Marker::find(msg), Some(m));
    }
}
