//! ClientHello peeking and routing by SNI; the body is `apigate::fuzzing::client_hello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| apigate::fuzzing::client_hello(data));
