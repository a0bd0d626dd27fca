//! Helpers shared by the test crates that compare against PyTorch.

use std::path::PathBuf;
use std::process::Command;

/// Runs `tests/parity/SCRIPT` in the project's Python environment and
/// returns the JSON it prints.
pub fn python_reference(script: &str) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/parity").join(script))
        .output()
        .expect("the project's Python environment (scripts/setup --reference)");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
