//! When libtorch is missing or the wrong version, the build stops before any
//! C++ is compiled, with one paragraph that says how to fix it. cargo runs
//! every rustc call through `tools/rustc-wrapper` (`.cargo/config.toml`);
//! these tests run the wrapper the way cargo does, with `echo` as "rustc".

use std::path::Path;
use std::process::{Command, Output};

const TORCH_SYS_BUILD: &str = "/registry/src/torch-sys-0.26.0/build.rs";

fn wrapper(libtorch: &Path, args: &[&str]) -> Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/rustc-wrapper"))
        .arg("echo")
        .args(args)
        .env("LIBTORCH", libtorch)
        .env_remove("LIBTORCH_USE_PYTORCH")
        .env_remove("LIBTORCH_BYPASS_VERSION_CHECK")
        .output()
        .unwrap()
}

fn fake_libtorch(version_file: &str, version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lib")).unwrap();
    std::fs::create_dir_all(dir.path().join("include/torch")).unwrap();
    std::fs::write(dir.path().join(version_file), version).unwrap();
    dir
}

#[test]
fn cargo_runs_rustc_through_the_wrapper() {
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.cargo/config.toml"))
            .unwrap();
    assert!(config.contains("rustc-wrapper = \"tools/rustc-wrapper\""));
}

#[test]
fn a_missing_libtorch_stops_torch_sys_with_one_clear_paragraph() {
    let out = wrapper(Path::new("/nowhere/libtorch"), &[TORCH_SYS_BUILD]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "prunex cannot be built: LIBTORCH is /nowhere/libtorch, but there is no libtorch there"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("Run scripts/setup from the repository root"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "rustc must not run");
}

#[test]
fn a_missing_libtorch_stops_crates_that_link_tch() {
    let out = wrapper(
        Path::new("/nowhere/libtorch"),
        &[
            "--crate-name",
            "prunex_exec",
            "--extern",
            "tch=/x/libtch.rlib",
        ],
    );
    assert!(!out.status.success());
}

#[test]
fn a_wrong_version_is_named() {
    let dir = fake_libtorch("version.py", "__version__ = '2.12.1+cpu'\n");
    let out = wrapper(dir.path(), &[TORCH_SYS_BUILD]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is version 2.12.1+cpu, but tch 0.26 needs 2.13.0"),
        "{stderr}"
    );
    let dir = fake_libtorch("build-version", "2.11.0\n");
    let stderr =
        String::from_utf8_lossy(&wrapper(dir.path(), &[TORCH_SYS_BUILD]).stderr).into_owned();
    assert!(stderr.contains("is version 2.11.0"), "{stderr}");
}

#[test]
fn the_right_version_and_other_crates_pass_through() {
    let dir = fake_libtorch("version.py", "__version__ = '2.13.0+cu130'\n");
    let out = wrapper(dir.path(), &[TORCH_SYS_BUILD]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), TORCH_SYS_BUILD);
    // Crates that do not need libtorch never look for it.
    let out = wrapper(Path::new("/nowhere"), &["--crate-name", "pest"]);
    assert!(out.status.success());
}
