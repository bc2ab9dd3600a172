#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macula_relay::fuzz::hop_request(data));
