//! Parse, check and format arbitrary recipe text: nothing may panic, and the
//! formatter must keep meaning and comments (see `prunex::fuzz::exercise`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        prunex::fuzz::exercise(text);
    }
});
