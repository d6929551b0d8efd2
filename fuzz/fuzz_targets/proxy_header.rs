//! The PROXY protocol header reader and its prefix handling; the body is `apigate::fuzzing::proxy_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| apigate::fuzzing::proxy_header(data));
