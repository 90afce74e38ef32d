//! The pump's reading of client and server messages that arrive in pieces: the bytes
//! each peer gets are those it gets when every message arrives whole.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pgfleet::fuzzing::pieces(data);
});
