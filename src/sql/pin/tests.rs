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
    assert!(!might_pin(
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 52347;"
    ));
    // A false alarm: read in full, and found to leave nothing.
    let update = b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1;";
    assert!(might_pin(update));
    assert!(session_state(update).is_empty());
}

#[test]
fn trigger_words() {
    for k in [
        "set",
        "listen",
        "prepare",
        "declare",
        "load",
        "create",
        "do",
        "into",
        "pg_temp",
        "set_config",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    ] {
        assert!(
            trigger(k.as_bytes()) && trigger(k.to_uppercase().as_bytes()),
            "{k}"
        );
    }
    for w in ["sex", "dot", "select", "pg_temps", "reset", "setx"] {
        assert!(!trigger(w.as_bytes()), "{w}");
    }
}
