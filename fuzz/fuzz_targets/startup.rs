//! The startup packet parser and the handling of its parameters (user, database,
//! `options`, settings for the servers), fed arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pgfleet::fuzzing::startup(data);
});
