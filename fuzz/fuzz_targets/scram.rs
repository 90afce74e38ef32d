//! SCRAM-SHA-256: pgfleet's server fed arbitrary client-first and client-final
//! messages, and its client fed arbitrary server-first and server-final messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pgfleet::fuzzing::scram(data);
});
