//! The tracker, message sequence by message sequence. Client messages are written by
//! their type bytes (`"QPBES"`), server messages as space-separated tokens, with
//! ReadyForQuery as `Z` (idle), `ZT` (in a transaction block) or `ZE` (failed block).

use super::*;

fn send(t: &mut Tracker, tags: &str) {
    for tag in tags.bytes() {
        t.sent(Sent::client(Frontend::from_tag(tag)), None);
    }
}

fn recv(t: &mut Tracker, messages: &str) -> Vec<Answer> {
    messages
        .split_whitespace()
        .map(|m| {
            let b = m.as_bytes();
            let status: &[u8] = match (b[0], b.get(1)) {
                (b'Z', Some(s)) => std::slice::from_ref(s),
                (b'Z', None) => b"I",
                _ => b"",
            };
            t.server(Backend::from_tag(b[0]), status)
        })
        .collect()
}

fn at_rest(t: &Tracker) {
    assert!(t.lost().is_none(), "lost: {:?}", t.lost());
    assert!(t.idle(), "not idle: {t:?}");
}

mod copy;

#[test]
fn simple_query_with_rows() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    assert!(!t.idle());
    recv(&mut t, "T D D C");
    assert!(!t.idle());
    recv(&mut t, "Z");
    at_rest(&t);
}

#[test]
fn pipelined_queries_release_only_after_the_last() {
    let mut t = Tracker::new(false);
    send(&mut t, "QQ");
    recv(&mut t, "T D C Z");
    assert!(!t.idle(), "a second query is still running");
    assert_eq!(t.owed(), Some(1));
    recv(&mut t, "T D C Z");
    at_rest(&t);
}

#[test]
fn transaction_block_is_not_idle() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "C ZT");
    assert!(!t.idle());
    assert!(t.idle_in_transaction());
    send(&mut t, "Q");
    recv(&mut t, "E ZE");
    assert!(t.idle_in_transaction());
    send(&mut t, "Q");
    recv(&mut t, "C Z");
    at_rest(&t);
}

#[test]
fn extended_batch() {
    let mut t = Tracker::new(false);
    send(&mut t, "PBDES");
    recv(&mut t, "1 2 T D D C");
    assert!(!t.idle());
    recv(&mut t, "Z");
    at_rest(&t);
}

#[test]
fn extended_without_sync_holds_an_implicit_transaction() {
    let mut t = Tracker::new(false);
    send(&mut t, "PBEH");
    recv(&mut t, "1 2 C");
    assert!(t.quiet());
    assert!(
        !t.idle(),
        "unsynced: the server is inside an implicit transaction"
    );
    assert!(t.idle_in_transaction());
    send(&mut t, "S");
    recv(&mut t, "Z");
    at_rest(&t);
}

#[test]
fn error_mid_pipeline_skips_to_the_sync() {
    let mut t = Tracker::new(false);
    // Two batches; the first fails at its second Execute: the server skips the rest
    // of the batch (a Query in it too) and answers its Sync; the second batch runs.
    send(&mut t, "PBEBEQBES");
    send(&mut t, "BES");
    recv(&mut t, "1 2 C E");
    assert!(!t.idle());
    recv(&mut t, "Z");
    assert!(!t.idle(), "the second batch is still running");
    recv(&mut t, "2 C Z");
    at_rest(&t);
}

#[test]
fn describe_statement_and_portal() {
    let mut t = Tracker::new(false);
    send(&mut t, "PDSBDES");
    recv(&mut t, "1 t T Z 2 n C Z");
    at_rest(&t);
}

#[test]
fn portal_suspended_and_empty_query() {
    let mut t = Tracker::new(false);
    send(&mut t, "PBEES");
    recv(&mut t, "1 2 D s D C Z");
    at_rest(&t);
    send(&mut t, "Q");
    recv(&mut t, "I Z");
    at_rest(&t);
}

#[test]
fn function_call() {
    let mut t = Tracker::new(false);
    send(&mut t, "F");
    recv(&mut t, "V Z");
    at_rest(&t);
    send(&mut t, "F");
    recv(&mut t, "E Z");
    at_rest(&t);
}

#[test]
fn error_at_sync_commit() {
    let mut t = Tracker::new(false);
    send(&mut t, "PBES");
    recv(&mut t, "1 2 C E Z");
    at_rest(&t);
}

#[test]
fn flush_gets_no_answer() {
    let mut t = Tracker::new(false);
    send(&mut t, "PH");
    recv(&mut t, "1");
    send(&mut t, "BEHS");
    recv(&mut t, "2 C Z");
    at_rest(&t);
    // At rest, a Flush is answered by nothing: the connection stays idle.
    send(&mut t, "H");
    at_rest(&t);
    send(&mut t, "Q");
    recv(&mut t, "C Z");
    at_rest(&t);
}

#[test]
fn surplus_ready_for_query_is_lost() {
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "C Z Z");
    assert!(t.lost().is_some());
    assert!(!t.idle());
}

#[test]
fn answer_without_request_is_lost() {
    for stray in ["1", "2", "3", "C", "D", "E", "G", "V", "n"] {
        let mut t = Tracker::new(false);
        recv(&mut t, stray);
        assert!(t.lost().is_some(), "{stray} with nothing sent");
    }
}

#[test]
fn wrong_answer_is_lost() {
    let mut t = Tracker::new(false);
    send(&mut t, "PS");
    recv(&mut t, "2");
    assert!(t.lost().is_some());
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "1");
    assert!(t.lost().is_some());
    let mut t = Tracker::new(false);
    send(&mut t, "Q");
    recv(&mut t, "W");
    assert!(t.lost().is_some(), "COPY BOTH");
}

#[test]
fn ready_for_query_with_bad_status_is_lost() {
    let mut t = Tracker::new(false);
    send(&mut t, "S");
    recv(&mut t, "ZX");
    assert!(t.lost().is_some());
}

#[test]
fn asynchronous_messages_answer_nothing() {
    let mut t = Tracker::new(false);
    recv(&mut t, "N S A");
    at_rest(&t);
    send(&mut t, "Q");
    recv(&mut t, "N T A D S C Z");
    at_rest(&t);
}

#[test]
fn injected_answers_are_swallowed_or_converted() {
    let mut t = Tracker::new(false);
    let injected = Sent {
        kind: Frontend::Parse,
        answer: Answer::Swallow,
        statement: true,
    };
    let as_parse = Sent {
        kind: Frontend::Close,
        answer: Answer::AsParse,
        statement: false,
    };
    t.sent(injected, None);
    t.sent(as_parse, None);
    send(&mut t, "BES");
    assert_eq!(
        recv(&mut t, "1 3 2 C Z"),
        [
            Answer::Swallow,
            Answer::AsParse,
            Answer::Forward,
            Answer::Forward,
            Answer::Forward
        ]
    );
    at_rest(&t);
    assert!(!t.statements_need_reset());
}

#[test]
fn skipped_statement_makes_the_list_unsure() {
    let mut t = Tracker::new(false);
    send(&mut t, "P");
    t.sent(
        Sent {
            kind: Frontend::Parse,
            answer: Answer::Swallow,
            statement: true,
        },
        None,
    );
    send(&mut t, "S");
    recv(&mut t, "E Z");
    at_rest(&t);
    assert!(t.statements_need_reset());
}

#[test]
fn session_commands_take_effect_outside_a_block_without_error() {
    let set = |v: &str| SqlCommand::Set {
        name: "x".into(),
        sql: format!("SET x = {v}"),
    };
    let mut t = Tracker::new(false);
    t.sent(Sent::client(Frontend::Query), Some(set("1")));
    recv(&mut t, "C Z");
    t.sent(Sent::client(Frontend::Query), Some(set("2")));
    recv(&mut t, "E Z");
    t.sent(Sent::client(Frontend::Query), Some(set("3")));
    recv(&mut t, "C ZT");
    assert!(t.untracked_set());
    assert_eq!(t.take_commands(), [set("1")]);
    // Skipped after an error: never ran.
    send(&mut t, "PBE");
    t.sent(Sent::client(Frontend::Bind), Some(set("4")));
    send(&mut t, "ES");
    recv(&mut t, "1 2 E Z");
    assert!(t.take_commands().is_empty());
}

#[test]
fn owed_requests() {
    let mut t = Tracker::new(false);
    assert_eq!(t.owed(), Some(0));
    send(&mut t, "QHS");
    assert_eq!(t.owed(), Some(2));
    recv(&mut t, "T");
    assert_eq!(t.owed(), Some(2));
    recv(&mut t, "C Z");
    assert_eq!(t.owed(), Some(1));
    send(&mut t, "P");
    assert_eq!(t.owed(), None);
}

#[test]
fn restart_is_new() {
    let mut t = Tracker::new(false);
    t.sent(Sent::client(Frontend::Query), Some(SqlCommand::DiscardAll));
    send(&mut t, "PBES");
    recv(&mut t, "C ZT");
    recv(&mut t, "Z Z");
    assert!(t.lost().is_some());
    t.restart(true);
    assert_eq!(format!("{t:?}"), format!("{:?}", Tracker::new(true)));
}
