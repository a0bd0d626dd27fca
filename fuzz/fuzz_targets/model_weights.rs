//! Structure-aware: model descriptions and safetensors headers built and
//! damaged from the fuzzer's bytes (see `prunex::fuzz::exercise_structured`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    prunex::fuzz::exercise_structured(data);
});
