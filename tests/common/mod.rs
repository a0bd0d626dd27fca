//! Helpers shared by the test crates that compare against PyTorch.

use std::path::PathBuf;
use std::process::Command;

/// Runs `tests/parity/SCRIPT ARGS…` in the project's Python environment;
/// it must succeed. Returns what it printed.
pub fn python(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/parity").join(script))
        .args(args)
        .output()
        .expect("the project's Python environment (scripts/setup --reference)");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `tests/parity/SCRIPT` and returns the JSON it prints.
#[allow(dead_code)] // not every test crate that includes this module uses it
pub fn python_reference(script: &str) -> serde_json::Value {
    serde_json::from_slice(&python(script, &[])).unwrap()
}
