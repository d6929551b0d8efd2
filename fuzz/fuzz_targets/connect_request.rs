//! The CONNECT request reader and destination routing; the body is `apigate::fuzzing::connect_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| apigate::fuzzing::connect_request(data));
