//! Structure-aware: a small ONNX model damaged from the fuzzer's bytes, or
//! the bytes themselves (see `prunex::fuzz::exercise_onnx`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    prunex::fuzz::exercise_onnx(data);
});
