//! The message framer, the login message parsers (PasswordMessage, SASLInitialResponse,
//! SASLResponse) and the pump's inspection of client and server messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pgfleet::fuzzing::messages(data);
});
