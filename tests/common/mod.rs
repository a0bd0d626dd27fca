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

/// References generated once by `tests/parity/SCRIPT make DIR DIR/cases.json`
/// and kept under `target/tmp/NAME/<hash of the cases and the script>`, so
/// that later runs reuse them and a changed script or case regenerates them.
/// Older generations are removed; nothing is left in the system's
/// temporary folder.
#[allow(dead_code)]
pub fn generated(name: &str, script: &str, cases: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/parity")
        .join(script);
    let mut h = blake3::Hasher::new();
    h.update(cases.as_bytes());
    h.update(&std::fs::read(&path).unwrap());
    let key = h.finalize().to_hex()[..16].to_string();
    let dir = root.join(&key);
    if dir.is_dir() {
        return dir;
    }
    std::fs::create_dir_all(&root).unwrap();
    for old in std::fs::read_dir(&root).unwrap().flatten() {
        // Another generation, or one a killed run left half-written.
        let _ = std::fs::remove_dir_all(old.path());
    }
    let tmp = tempfile::tempdir_in(&root).unwrap();
    let spec = tmp.path().join("cases.json");
    std::fs::write(&spec, cases).unwrap();
    python(
        script,
        &["make".as_ref(), tmp.path().as_os_str(), spec.as_os_str()],
    );
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dir).is_err() {
        // A concurrent test process finished first; use its copy.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// An IDX images file: the header for `n` images of `h`×`w` and `data`
/// bytes of pixels (fewer than the header promises makes a truncated file).
#[allow(dead_code)]
pub fn idx_images(n: u32, h: u32, w: u32, data: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x0803u32, n, h, w] {
        v.extend(x.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(7u8, data));
    v
}

/// An IDX labels file of `n` labels.
#[allow(dead_code)]
pub fn idx_labels(n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x0801u32, n] {
        v.extend(x.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(1u8, n as usize));
    v
}

/// Moves `conv.weight` of `prunex::fuzz::tiny_onnx` to the external data
/// file `location` (offset 0, with `length` when given), as the dynamo
/// exporter stores weights.
#[allow(dead_code)]
pub fn external(
    m: &mut prunex::models::onnx::proto::ModelProto,
    location: &str,
    length: Option<u64>,
) {
    use prunex::models::onnx::proto::{tensor_proto::DataLocation, StringStringEntryProto};
    let g = m.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name() == "conv.weight")
        .unwrap();
    t.float_data.clear();
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some(location.into()),
    }];
    if let Some(l) = length {
        t.external_data.push(StringStringEntryProto {
            key: Some("length".into()),
            value: Some(l.to_string()),
        });
    }
}

/// `prunex::fuzz::tiny_onnx` with `conv.weight` in `net.onnx.data`: the
/// model file and the data file, whose values are `values`.
#[allow(dead_code)]
pub fn tiny_onnx_external(values: &[f32]) -> (Vec<u8>, Vec<u8>) {
    use prost::Message;
    let mut m =
        prunex::models::onnx::proto::ModelProto::decode(&prunex::fuzz::tiny_onnx()[..]).unwrap();
    let data: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    external(&mut m, "net.onnx.data", Some(data.len() as u64));
    (m.encode_to_vec(), data)
}

/// Reads a child's stream until NEEDLE appears; returns everything read.
/// Fails when the stream ends first.
#[allow(dead_code)] // not every test crate that includes this module uses it
pub fn read_until(stream: &mut impl std::io::Read, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the run ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}
