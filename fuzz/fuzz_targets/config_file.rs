#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macula_relay::fuzz::config_file(data));
