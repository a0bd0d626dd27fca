//! Finds libtorch the way `torch-sys` does and fails early, with one paragraph
//! that says how to fix it, when it is missing or the wrong version.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

/// The libtorch version `tch` 0.26 was generated against.
const EXPECTED: &str = "2.13.0";

fn fail(problem: &str) -> ! {
    eprintln!(
        "\n\nprunex cannot be built: {problem}\n\
         prunex links against libtorch {EXPECTED}, taken from the PyPI wheel torch=={EXPECTED}. \
         Run `scripts/setup` from the repository root: it creates the project-local Python \
         environment .venv with torch=={EXPECTED} and the link .venv/libtorch that \
         .cargo/config.toml points LIBTORCH at, then build again. To use another libtorch \
         {EXPECTED} install, set LIBTORCH to its folder (the one holding lib/ and include/), \
         or set LIBTORCH_USE_PYTORCH=1 with a Python whose torch is {EXPECTED}.\n\n"
    );
    println!("cargo:warning=libtorch check failed: {problem}; run scripts/setup");
    exit(1);
}

fn rerun_env(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads the version string from a libtorch folder: `build-version` for the
/// C++ distribution, `version.py` for the Python wheel.
fn version_in(dir: &Path) -> Option<String> {
    if let Ok(v) = std::fs::read_to_string(dir.join("build-version")) {
        return Some(v.trim().to_owned());
    }
    let py = std::fs::read_to_string(dir.join("version.py")).ok()?;
    py.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_owned())
}

fn from_python() -> (PathBuf, Option<String>) {
    let python = if env::var_os("VIRTUAL_ENV").is_some() {
        "python"
    } else {
        "python3"
    };
    let out = Command::new(python)
        .args([
            "-c",
            "import torch, os; print(os.path.dirname(torch.__file__)); print(torch.__version__)",
        ])
        .output()
        .unwrap_or_else(|e| {
            fail(&format!(
                "LIBTORCH_USE_PYTORCH is set but `{python}` could not be run ({e})."
            ))
        });
    if !out.status.success() {
        fail(&format!(
            "LIBTORCH_USE_PYTORCH is set but `{python}` cannot import torch."
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next().unwrap_or_default());
    (dir, lines.next().map(str::to_owned))
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let (dir, version) = if rerun_env("LIBTORCH_USE_PYTORCH").is_some() {
        from_python()
    } else if let Some(dir) = rerun_env("LIBTORCH") {
        let dir = PathBuf::from(dir);
        if !dir.join("lib").is_dir() || !dir.join("include").is_dir() {
            fail(&format!(
                "LIBTORCH is {} but that folder has no libtorch (no lib/ and include/ inside).",
                dir.display()
            ));
        }
        let v = version_in(&dir);
        (dir, v)
    } else if Path::new("/usr/lib/libtorch.so").exists() {
        (PathBuf::from("/usr"), None)
    } else {
        fail("no libtorch was found (LIBTORCH is not set and there is no /usr/lib/libtorch.so).");
    };
    let lib_dir = dir.join("lib");
    println!("cargo:rerun-if-changed={}", lib_dir.display());
    let version = version.unwrap_or_else(|| "unknown".to_owned());
    let bare = version.split('+').next().unwrap_or_default();
    if bare != EXPECTED && rerun_env("LIBTORCH_BYPASS_VERSION_CHECK").is_none() {
        fail(&format!(
            "libtorch in {} is version {version}, but tch 0.26 needs {EXPECTED}.",
            dir.display()
        ));
    }
    println!("cargo:lib_dir={}", lib_dir.display());
    println!("cargo:version={version}");
}
