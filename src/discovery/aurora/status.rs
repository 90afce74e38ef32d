//! The rows of `aurora_replica_status()` as members: checking the columns' types, the
//! 300 s rule, choosing the writer, and `instance_endpoint`.

use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;
use tracing::warn;

use crate::discovery::Member;

/// A reader whose status is older than this is gone or going (the AWS drivers' rule).
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// The `session_id` of the writer's row.
pub const WRITER_SESSION: &str = "MASTER_SESSION_ID";

/// One row of `aurora_replica_status()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The instance identifier.
    pub server_id: String,
    /// `session_id` is `MASTER_SESSION_ID`.
    pub writer: bool,
    /// `replica_lag_in_msec`.
    pub lag_ms: Option<f64>,
    /// Time since `last_update_timestamp` on the server's clock; `None` when it is NULL,
    /// as Aurora (13.9 and later) reports it for the instance asked.
    pub age: Option<Duration>,
}

/// Decodes the rows of the discovery query; the column types are checked first so a
/// surprise names the column instead of failing somewhere in the decoder.
pub fn decode(rows: &[Row]) -> anyhow::Result<Vec<Status>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(server_id) = text(row, 0, "server_id")? else {
            warn!("aurora_replica_status(): a row without server_id; ignored");
            continue;
        };
        let session_id = text(row, 1, "session_id")?;
        let lag_ms = number(row, 2, "replica_lag_in_msec")?;
        let updated = timestamp(row, 3, "last_update_timestamp")?;
        // The server's clock, in the column's own type.
        let now_column = match *column_type(row, 3)? {
            Type::TIMESTAMP => 5,
            _ => 4,
        };
        let now = timestamp(row, now_column, "now()")?;
        let age = match (updated, now) {
            (Some(updated), Some(now)) => {
                Some(now.duration_since(updated).unwrap_or(Duration::ZERO))
            }
            _ => None,
        };
        out.push(Status {
            server_id,
            writer: session_id.as_deref() == Some(WRITER_SESSION),
            lag_ms,
            age,
        });
    }
    Ok(out)
}

fn column_type(row: &Row, i: usize) -> anyhow::Result<&Type> {
    row.columns()
        .get(i)
        .map(|c| c.type_())
        .ok_or_else(|| anyhow!("the answer has no column {}", i + 1))
}

fn text(row: &Row, i: usize, name: &str) -> anyhow::Result<Option<String>> {
    let ty = column_type(row, i)?;
    if !<String as FromSql>::accepts(ty) {
        bail!("column {name} is of type {ty}, expected text");
    }
    row.try_get(i).with_context(|| format!("column {name}"))
}

fn timestamp(row: &Row, i: usize, name: &str) -> anyhow::Result<Option<SystemTime>> {
    let ty = column_type(row, i)?;
    if !<SystemTime as FromSql>::accepts(ty) {
        bail!("column {name} is of type {ty}, expected timestamp with time zone");
    }
    row.try_get(i).with_context(|| format!("column {name}"))
}

fn number(row: &Row, i: usize, name: &str) -> anyhow::Result<Option<f64>> {
    let ty = column_type(row, i)?;
    let value = match *ty {
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(i).map(|v| v.map(f64::from)),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i),
        Type::INT2 => row.try_get::<_, Option<i16>>(i).map(|v| v.map(f64::from)),
        Type::INT4 => row.try_get::<_, Option<i32>>(i).map(|v| v.map(f64::from)),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map(|v| v.map(|n| n as f64)),
        _ => bail!("column {name} is of type {ty}, expected real"),
    };
    value.with_context(|| format!("column {name}"))
}

/// The members the rows describe: the writer first, then the readers by `server_id`.
///
/// If several rows claim the writer (a failover in progress), the most recently updated
/// one is the writer and the others count as readers. A reader whose row is older than
/// [`STALE_AFTER`] is left out; the writer never is. Rows whose `server_id` cannot be
/// part of an address are left out with a warning.
///
/// An answer without a usable writer row is refused, as the AWS drivers refuse it: it
/// is a member's partial view during a failover, or an `instance_endpoint` that makes
/// no address, and an error keeps the members as they are.
pub fn members(mut rows: Vec<Status>, template: &str) -> anyhow::Result<Vec<Member>> {
    // Writer rows first, the freshest first (NULL: the instance asked, so current).
    rows.sort_by(|a, b| {
        let age = |s: &Status| s.age.unwrap_or(Duration::ZERO);
        b.writer
            .cmp(&a.writer)
            .then_with(|| {
                if a.writer {
                    age(a).cmp(&age(b))
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| a.server_id.cmp(&b.server_id))
    });
    let mut out: Vec<Member> = Vec::with_capacity(rows.len());
    let mut writer_seen = false;
    for row in rows {
        let writer = row.writer && !writer_seen;
        writer_seen |= writer;
        if !writer && row.age.is_some_and(|age| age > STALE_AFTER) {
            continue;
        }
        let Some(addr) = address(template, &row.server_id) else {
            warn!(server_id = %row.server_id, template, "aurora_replica_status(): cannot make an address of this server_id; ignored");
            continue;
        };
        if out.iter().any(|m| m.addr == addr) {
            continue;
        }
        let lag = if writer {
            Some(Duration::ZERO)
        } else {
            row.lag_ms.and_then(lag)
        };
        out.push(Member {
            addr,
            writer: Some(writer),
            lag,
            zone: None,
        });
    }
    if !out.iter().any(|m| m.writer == Some(true)) {
        bail!("its answer lists no writer: no usable row has session_id {WRITER_SESSION}");
    }
    Ok(out)
}

/// A lag in milliseconds, to the microsecond; negative, NaN or absurd lags are unknown.
fn lag(ms: f64) -> Option<Duration> {
    let micros = (ms * 1000.0).round();
    (micros >= 0.0 && micros < u64::MAX as f64).then(|| Duration::from_micros(micros as u64))
}

/// `template` with `{server_id}` replaced, if `server_id` looks like an instance
/// identifier and the result is `host:port`.
fn address(template: &str, server_id: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if server_id.is_empty() || !server_id.chars().all(allowed) {
        return None;
    }
    let addr = template.replace("{server_id}", server_id);
    split_addr(&addr)?;
    Some(addr)
}

/// `host:port` split in two; an IPv6 host keeps its brackets.
pub fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (host.contains(':') && !bracketed) {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, writer: bool, lag_ms: Option<f64>, age_s: Option<u64>) -> Status {
        Status {
            server_id: id.into(),
            writer,
            lag_ms,
            age: age_s.map(Duration::from_secs),
        }
    }

    const T: &str = "{server_id}.example.com:5432";

    fn summary(members: &[Member]) -> Vec<(&str, Option<bool>, Option<Duration>)> {
        members
            .iter()
            .map(|m| (m.addr.as_str(), m.writer, m.lag))
            .collect()
    }

    #[test]
    fn writer_first_readers_with_their_lag() {
        let rows = vec![
            row("r2", false, Some(2.5), Some(1)),
            row("w", true, None, None),
            row("r1", false, Some(10.0), None),
        ];
        assert_eq!(
            summary(&members(rows, T).unwrap()),
            [
                ("w.example.com:5432", Some(true), Some(Duration::ZERO)),
                (
                    "r1.example.com:5432",
                    Some(false),
                    Some(Duration::from_millis(10))
                ),
                (
                    "r2.example.com:5432",
                    Some(false),
                    Some(Duration::from_micros(2500))
                ),
            ]
        );
    }

    #[test]
    fn stale_readers_are_left_out_but_never_the_writer() {
        let rows = vec![
            row("w", true, None, Some(3600)),
            row("old", false, Some(1.0), Some(301)),
            row("edge", false, Some(1.0), Some(300)),
        ];
        let m = members(rows, T).unwrap();
        let addrs: Vec<&str> = m.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(addrs, ["w.example.com:5432", "edge.example.com:5432"]);
    }

    #[test]
    fn null_negative_and_absurd_lags_are_unknown() {
        let rows = vec![
            row("w", true, Some(-1.0), None),
            row("a", false, None, None),
            row("b", false, Some(-1.0), None),
            row("c", false, Some(f64::NAN), None),
            row("d", false, Some(f64::INFINITY), None),
        ];
        let m = members(rows, T).unwrap();
        assert_eq!(m[0].lag, Some(Duration::ZERO));
        assert!(m[1..].iter().all(|m| m.lag.is_none()));
    }

    #[test]
    fn of_two_writer_rows_the_freshest_is_the_writer() {
        let rows = vec![
            row("old", true, None, Some(400)),
            row("new", true, None, Some(2)),
            row("older", true, None, Some(20)),
        ];
        assert_eq!(
            summary(&members(rows, T).unwrap()),
            [
                ("new.example.com:5432", Some(true), Some(Duration::ZERO)),
                ("older.example.com:5432", Some(false), None),
            ]
        );
    }

    #[test]
    fn server_ids_that_make_no_address_are_left_out() {
        let rows = vec![
            row("w", true, None, None),
            row("", false, None, None),
            row("a b", false, None, None),
            row("x:1", false, None, None),
            row("ok", false, None, None),
            row("ok", false, None, None),
        ];
        let m = members(rows, T).unwrap();
        let addrs: Vec<&str> = m.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(addrs, ["w.example.com:5432", "ok.example.com:5432"]);
        let by_port = "127.0.0.1:{server_id}";
        let m = members(vec![row("5433", true, None, None)], by_port).unwrap();
        assert_eq!(m[0].addr, "127.0.0.1:5433");
    }

    #[test]
    fn an_answer_without_a_usable_writer_is_refused() {
        let readers = vec![row("r", false, None, None)];
        let e = members(readers, T).unwrap_err().to_string();
        assert_eq!(
            e,
            "its answer lists no writer: no usable row has session_id MASTER_SESSION_ID"
        );
        assert!(members(Vec::new(), T).is_err());
        let by_port = "127.0.0.1:{server_id}";
        assert!(members(vec![row("db1", true, None, None)], by_port).is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(split_addr("h:5432"), Some(("h", 5432)));
        assert_eq!(split_addr("[::1]:5432"), Some(("[::1]", 5432)));
        assert_eq!(split_addr("::1:5432"), None);
        assert_eq!(split_addr(":5432"), None);
        assert_eq!(split_addr("h:x"), None);
    }
}
