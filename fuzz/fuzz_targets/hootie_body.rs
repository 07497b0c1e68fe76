#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nfsprov_fuzz::check_hootie_body(data));
