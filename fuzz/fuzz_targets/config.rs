//! The configuration file parser and compile; the body is `apigate::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| apigate::fuzzing::config(data));
