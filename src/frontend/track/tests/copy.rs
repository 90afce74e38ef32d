//! COPY in and out, message sequence by message sequence (notation as in `tests.rs`).

use super::*;

#[test]
fn copy_in_simple() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "G");
    send(&mut t, "dddc");
    assert!(!t.idle());
    recv(&mut t, "C Z");
    at_rest(&t);
}

#[test]
fn copy_in_with_data_sent_before_the_server_answered() {
    let mut t = Tracker::new(false);
    send(&mut t, "Qddc");
    recv(&mut t, "G C Z");
    at_rest(&t);
}

#[test]
fn copy_in_ignores_sync_and_flush_inside() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "G");
    send(&mut t, "dHdSdc");
    recv(&mut t, "C Z");
    at_rest(&t);
}

#[test]
fn copy_fail() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "G");
    send(&mut t, "ddf");
    recv(&mut t, "E Z");
    at_rest(&t);
}

#[test]
fn copy_aborted_by_the_server_then_more_data() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "G");
    send(&mut t, "d");
    recv(&mut t, "E Z");
    assert!(t.idle(), "the client's next data is ignored by the server");
    send(&mut t, "ddc");
    at_rest(&t);
    // A Sync the client sends once it saw the error is answered.
    send(&mut t, "S");
    assert!(!t.idle());
    recv(&mut t, "Z");
    at_rest(&t);
}

#[test]
fn copy_aborted_with_a_sync_after_data_is_settled_by_the_next_answer() {
    // The reproduction: COPY FROM STDIN, then a bad row and a Sync in one write. The
    // server answers the failed COPY, and then the Sync, or not: it depends on whether
    // it read the Sync before the error. Until another answer settles it, the
    // connection is not idle.
    for answered in [true, false] {
        let mut t = Tracker::new(false);
        send(&mut t, "Q");
        recv(&mut t, "G");
        send(&mut t, "dS");
        recv(&mut t, "E Z");
        assert!(t.lost().is_none());
        assert!(!t.idle(), "a ReadyForQuery may still come");
        if answered {
            recv(&mut t, "Z");
        }
        // The client's next request settles it either way.
        send(&mut t, "Q");
        recv(&mut t, "T D C Z");
        at_rest(&t);
    }
}

#[test]
fn copy_aborted_then_a_sync_sent_after_the_maybe_ones() {
    // The client also sent a Sync of its own after seeing the error: one or two
    // ReadyForQuery come before its next query's rows.
    for extra in ["", "Z"] {
        let mut t = Tracker::new(false);
        send(&mut t, "Q");
        recv(&mut t, "G");
        send(&mut t, "ddSdS");
        recv(&mut t, "E Z");
        send(&mut t, "S");
        recv(&mut t, "Z");
        recv(&mut t, extra);
        send(&mut t, "PBES");
        recv(&mut t, "1 2 C Z");
        at_rest(&t);
    }
}

#[test]
fn too_many_ready_for_query_after_an_aborted_copy_is_lost() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "G");
    send(&mut t, "dS");
    recv(&mut t, "E Z Z Z");
    assert!(t.lost().is_some());
}

#[test]
fn copy_aborted_with_another_request_inside_is_lost() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "G");
    send(&mut t, "dQ");
    recv(&mut t, "E Z");
    assert!(t.lost().is_some());
    assert!(!t.idle(), "a lost tracker never says idle");
}

#[test]
fn extended_copy_aborted_with_a_sync_after_data_is_lost() {
    let mut t = Tracker::new(false);
    send(&mut t, "PBE");
    recv(&mut t, "1 2 G");
    send(&mut t, "dS");
    recv(&mut t, "E");
    assert!(t.lost().is_some());
}

#[test]
fn copy_in_extended_ignores_the_sync_after_execute() {
    let mut t = Tracker::new(false);
    // libpq pipelines Parse/Bind/Execute/Sync; the Sync arrives inside the COPY.
    send(&mut t, "PBES");
    recv(&mut t, "1 2 G");
    send(&mut t, "ddc");
    recv(&mut t, "C");
    assert!(
        !t.idle(),
        "the Sync sent inside the COPY was ignored: another is needed"
    );
    send(&mut t, "S");
    recv(&mut t, "Z");
    at_rest(&t);
}

#[test]
fn copy_in_extended_aborted_after_the_sync_that_followed_execute() {
    // tokio-postgres: Bind, Execute, Sync; the data; the server rejects a row. The
    // Sync was read inside the COPY (before any data), so ignored.
    let mut t = Tracker::new(false);
    send(&mut t, "BES");
    recv(&mut t, "2 G");
    send(&mut t, "dd");
    recv(&mut t, "E");
    assert!(t.lost().is_none());
    send(&mut t, "cS");
    recv(&mut t, "Z");
    at_rest(&t);
}

#[test]
fn copy_in_extended_aborted() {
    let mut t = Tracker::new(false);
    send(&mut t, "PBE");
    recv(&mut t, "1 2 G");
    send(&mut t, "dd");
    recv(&mut t, "E");
    send(&mut t, "cS");
    recv(&mut t, "Z");
    at_rest(&t);
}

#[test]
fn copy_out() {
    let mut t = Tracker::new(false);
    send(&mut t, "QQ");
    recv(&mut t, "H d d c C Z");
    assert!(!t.idle());
    recv(&mut t, "H d c C Z");
    at_rest(&t);
    send(&mut t, "PBES");
    recv(&mut t, "1 2 H d c C Z");
    at_rest(&t);
}

#[test]
fn copy_messages_outside_copy_are_ignored() {
    let mut t = Tracker::new(false);
    send(&mut t, "dcf");
    at_rest(&t);
    send(&mut t, "dQ");
    recv(&mut t, "C Z");
    at_rest(&t);
}

#[test]
fn copy_in_completed_past_another_request_is_lost() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "G");
    send(&mut t, "dQc");
    recv(&mut t, "C");
    assert!(t.lost().is_some());
}

#[test]
fn long_copy_is_one_entry() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "G");
    for _ in 0..100_000 {
        send(&mut t, "d");
    }
    assert!(t.queue.len() <= 1);
    send(&mut t, "c");
    recv(&mut t, "C Z");
    at_rest(&t);
}
