//! Statements that pin, and look-alikes that do not.

use super::*;

fn reasons(sql: &str) -> Vec<&'static str> {
    session_state(sql.as_bytes())
        .iter()
        .map(PinReason::name)
        .collect()
}

#[test]
fn roles() {
    for sql in [
        "SET ROLE r",
        "set session role r",
        "SET SESSION AUTHORIZATION r",
        "set session session authorization r",
        "BEGIN; SET ROLE r; COMMIT",
        "/* hi */ sEt\n\trole\n'r'",
        "select set_config('role', 'r', false)",
        "SELECT pg_catalog.set_config('session_authorization', 'r', false)",
        "select set_config('role'::text, 'r', 'false')",
    ] {
        assert_eq!(reasons(sql), ["role"], "{sql}");
    }
    for sql in [
        "SET LOCAL ROLE r",
        "set local session authorization r",
        "select set_config('role', 'r', true)",
        "select set_config('role', 'r', 'on'::boolean)",
        "select 'SET ROLE r'",
        "-- SET ROLE r\nselect 1",
        "select \"set\" from t",
        "SET search_path = a",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        assert!(reasons(sql).is_empty(), "{sql}");
    }
}

#[test]
fn set_config_of_other_settings() {
    assert_eq!(
        reasons("select set_config('search_path', 'a', false)"),
        ["set_config"]
    );
    assert_eq!(reasons("select set_config($1, $2, false)"), ["set_config"]);
    assert_eq!(reasons("select set_config('x', 'y', $3)"), ["set_config"]);
    assert!(reasons("select set_config('request.jwt', $1, true)").is_empty());
    assert!(reasons("select current_setting('role')").is_empty());
}

#[test]
fn advisory_locks() {
    for sql in [
        "select pg_advisory_lock(1)",
        "SELECT pg_catalog.PG_TRY_ADVISORY_LOCK(1, 2)",
        "select pg_advisory_lock_shared($1)",
        "with x as (select pg_try_advisory_lock_shared(1)) select * from x",
        "select \"pg_advisory_lock\" (1)",
    ] {
        assert_eq!(reasons(sql), ["advisory_lock"], "{sql}");
    }
    for sql in [
        "select pg_advisory_xact_lock(1)",
        "select pg_advisory_unlock(1)",
        "select 'pg_advisory_lock(1)'",
        "select pg_advisory_lock",
        "select $$pg_advisory_lock(1)$$",
    ] {
        assert!(reasons(sql).is_empty(), "{sql}");
    }
}

#[test]
fn temporary_objects() {
    for sql in [
        "create temp table t(a int)",
        "CREATE TEMPORARY VIEW v AS SELECT 1",
        "create global temporary table t(a int)",
        "create or replace temp view v as select 1",
        "create temp sequence s",
        "create table pg_temp.t(a int)",
        "create temp table t on commit delete rows as select 1",
        "select 1 as a into temp t",
        "SELECT * INTO TEMPORARY TABLE t FROM x",
        "create function pg_temp.f() returns int language sql as 'select 1'",
    ] {
        assert_eq!(reasons(sql), ["temp_object"], "{sql}");
    }
    for sql in [
        "create temp table t(a int) on commit drop",
        "create table temp(a int)",
        "select temp from weather",
        "create table t as select 1",
        "insert into t select * from temp",
    ] {
        assert!(reasons(sql).is_empty(), "{sql}");
    }
}

#[test]
fn the_rest() {
    assert_eq!(reasons("LISTEN channel"), ["listen"]);
    assert_eq!(reasons("prepare p as select 1"), ["prepare"]);
    assert!(reasons("PREPARE TRANSACTION 'x'").is_empty());
    assert_eq!(
        reasons("declare c cursor with hold for select 1"),
        ["hold_cursor"]
    );
    assert!(reasons("declare c cursor without hold for select 1").is_empty());
    assert_eq!(reasons("LOAD 'auto_explain'"), ["load"]);
    assert!(reasons("NOTIFY channel").is_empty());
    assert!(reasons("select 1; select 2").is_empty());
    assert_eq!(
        reasons("select 1; listen a; select pg_advisory_lock(2)"),
        ["advisory_lock", "listen"]
    );
}

#[test]
fn do_blocks_are_read() {
    assert_eq!(
        reasons("DO $$BEGIN PERFORM pg_advisory_lock(1); END$$"),
        ["advisory_lock"]
    );
    assert_eq!(
        reasons("do language plpgsql $body$ begin set role r; end $body$"),
        ["role"]
    );
    assert!(reasons("do $$begin perform pg_advisory_xact_lock(1); end$$").is_empty());
}

#[test]
fn function_calls_by_oid() {
    assert_eq!(function_call_state(2880).names(), "advisory_lock");
    assert_eq!(function_call_state(2889).names(), "advisory_lock");
    assert_eq!(function_call_state(2078).names(), "set_config");
    assert!(function_call_state(3089).is_empty());
}

#[test]
fn common_queries_are_not_read_further() {
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 52347;",
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, now());",
        "select * from t where name = 'setting'; select 2",
        "BEGIN; select 1; COMMIT",
    ] {
        assert!(!might_pin(sql.as_bytes()), "{sql}");
    }
    // A false alarm: read in full, and found to leave nothing.
    let settings = b"select temperature from pg_settings; set search_path = a";
    assert!(might_pin(settings));
    assert!(session_state(settings).is_empty());
}

#[test]
fn the_fast_look_sees_each_word_that_pins() {
    for k in LEADING {
        for sql in [
            format!("{k} x"),
            format!("select 1;\n\t ({} x", k.to_uppercase()),
        ] {
            assert!(might_pin(sql.as_bytes()), "{sql}");
        }
    }
    for k in NAMED {
        for sql in [
            format!("select {k}(1)"),
            format!("select pg_catalog.\"{}\"(1)", k.to_uppercase()),
        ] {
            assert!(might_pin(sql.as_bytes()), "{sql}");
        }
    }
    for sql in [
        "select 1 into TEMP t",
        "/* c */ set role r",
        "-- c\nload 'x'",
    ] {
        assert!(might_pin(sql.as_bytes()), "{sql}");
    }
}

/// Random statements built from the words that matter, in random case, between
/// comments, strings, quotes and separators: whenever the full reading finds session
/// state, the fast look said so.
#[test]
fn the_fast_look_never_misses_what_the_full_reading_finds() {
    const PIECES: [&str; 42] = [
        "set",
        "role",
        "session",
        "authorization",
        "local",
        "listen",
        "prepare",
        "transaction",
        "declare",
        "with",
        "hold",
        "for",
        "cursor",
        "load",
        "create",
        "temp",
        "temporary",
        "table",
        "on",
        "commit",
        "drop",
        "do",
        "begin",
        "into",
        "select",
        "pg_temp",
        "set_config",
        "pg_advisory_lock",
        "pg_try_advisory_lock_shared",
        "'role'",
        "false",
        "(",
        ")",
        ",",
        ";",
        "/* c */",
        "--c\n",
        "$$",
        "then",
        "loop",
        "'",
        "\"",
    ];
    let mut seed: u64 = 0x5eed_2026_1207;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut found = 0;
    for _ in 0..50_000 {
        let mut sql = String::new();
        for _ in 0..1 + next(10) {
            let piece = PIECES[next(PIECES.len())];
            let piece = match next(3) {
                0 => piece.to_uppercase(),
                _ => piece.to_string(),
            };
            sql.push_str(&piece);
            sql.push_str([" ", "\n", "", "."][next(4)]);
        }
        if !read(sql.as_bytes()).is_empty() {
            found += 1;
            assert!(might_pin(sql.as_bytes()), "{sql:?}");
        }
    }
    assert!(found > 2_000, "too few statements that pin: {found}");
}
