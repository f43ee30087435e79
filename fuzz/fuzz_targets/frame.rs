#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitewatch_fuzz::frame::check(data));
