//! Links libtorch so that `target/*/prunex-exec` (the executor that `prunex`
//! starts for anything that needs tensors) runs with no environment variables
//! and sees CUDA where there is a GPU.
//!
//! `torch-sys` links `libtorch_cuda.so`, but it is only reached through static
//! initialisers, so a linker using `--as-needed` silently drops it and CUDA is
//! never registered. We add it again behind `--no-as-needed`, and record an
//! rpath to the libtorch folder so the loader finds it without LD_LIBRARY_PATH.
//! Before this runs, `tools/rustc-wrapper` has checked that libtorch is
//! there and is the right version.

use std::env;
use std::path::PathBuf;

/// ONNX's protobuf messages as Rust types (`$OUT_DIR/onnx.rs`), from
/// `proto/onnx.proto` as the `onnx` wheel ships it; `protox` parses it, so
/// no `protoc` is needed.
fn onnx_types() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let files = protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto parses");
    prost_build::Config::new()
        .compile_fds(files)
        .expect("prost generates the ONNX types");
}

/// The distributed shim: c10d's TCPStore, ProcessGroupGloo (and
/// ProcessGroupNCCL with the `nccl` feature), the Reducer and a synchronised
/// BatchNorm behind an `extern "C"` API (`src/exec/dist/ffi.rs`). It
/// compiles against the torch wheel's headers and gloo's (Debian's
/// libgloo-dev, which `scripts/setup` installs; `GLOO_INCLUDE` points
/// elsewhere); libtorch_cpu already holds gloo's code, so nothing else is
/// linked.
fn c10d_shim(root: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=CUDA_INCLUDE");
    let gloo = env::var_os("GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    if !gloo.join("gloo/algorithm.h").exists() {
        panic!(
            "\n\nprunex's distributed shim needs gloo's headers, which are not in {}.\n\
             Run scripts/setup (it installs Debian's libgloo-dev), or set GLOO_INCLUDE to a \
             folder that holds gloo/algorithm.h.\n",
            gloo.display()
        );
    }
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut b = cc::Build::new();
    b.cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .define("USE_DISTRIBUTED", None)
        .define("USE_C10D_GLOO", None)
        .file("csrc/c10d_shim.cpp");
    // ProcessGroupNCCL, whenever this libtorch has CUDA and the headers
    // are here: NCCL's and CUDA's from the wheel's nvidia packages (CUDA's
    // crt/ and nv/ come from nvidia-cuda-crt and nvidia-cuda-cccl, which
    // scripts/setup installs beside a CUDA wheel), or CUDA_INCLUDE. The
    // `nccl` feature insists on it.
    let nv = root
        .canonicalize()
        .unwrap_or_else(|_| root.to_path_buf())
        .parent()
        .map(|p| p.join("nvidia"))
        .unwrap_or_default();
    let cuda = env::var_os("CUDA_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| nv.join("cu13/include"));
    let has_cuda = root.join("lib/libtorch_cuda.so").exists();
    let headers = nv.join("nccl/include/nccl.h").exists()
        && cuda.join("crt/host_config.h").exists()
        && cuda.join("nv/target").exists();
    let wanted = env::var_os("CARGO_FEATURE_NCCL").is_some();
    if wanted && !(has_cuda && headers) {
        panic!(
            "\n\nthe `nccl` feature needs a CUDA libtorch ({}) and NCCL's and CUDA's headers \
             ({}, {}).\nRun scripts/setup (it installs nvidia-cuda-crt and nvidia-cuda-cccl beside a \
             CUDA torch wheel), or set CUDA_INCLUDE to a CUDA toolkit's include folder.\n",
            root.join("lib/libtorch_cuda.so").display(),
            nv.join("nccl/include").display(),
            cuda.display()
        );
    }
    if has_cuda && headers {
        b.define("USE_C10D_NCCL", None)
            .include(nv.join("nccl/include"))
            .include(&cuda);
        println!("cargo:rustc-cfg=prunex_nccl");
        // c10::cuda::set_device (each rank on its own GPU).
        println!("cargo:rustc-link-lib=c10_cuda");
    }
    println!("cargo::rustc-check-cfg=cfg(prunex_nccl)");
    b.compile("c10d_shim");
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=grammar/prune.pest");
    for dir in ["tests", "benches", "examples"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    onnx_types();
    if env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    // torch-sys (`links = "tch"`) reports the libtorch it built against.
    let lib_dir =
        PathBuf::from(env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports libtorch_lib"));
    let root = lib_dir.parent().unwrap_or(&lib_dir);
    let version = std::fs::read_to_string(root.join("build-version"))
        .ok()
        .or_else(|| {
            let py = std::fs::read_to_string(root.join("version.py")).ok()?;
            py.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PRUNEX_LIBTORCH_VERSION={}", version.trim());
    println!(
        "cargo:rustc-env=PRUNEX_LIBTORCH_LIB_DIR={}",
        lib_dir.display()
    );

    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    c10d_shim(root);
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        // Only the executor and the targets that run tensors load libtorch.
        // The `prunex` front end never calls into it, so `--as-needed` drops
        // libtorch from it entirely and `prunex check` starts in milliseconds
        // instead of the ~0.3 s that loading libtorch and CUDA takes.
        // Cargo refuses per-kind arguments for a kind the package lacks, so
        // only name the kinds whose folders hold targets.
        let mut targets = vec!["bin=prunex-exec"];
        for (dir, kind) in [
            ("tests", "tests"),
            ("benches", "benches"),
            ("examples", "examples"),
        ] {
            let has_rs = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    e.path().extension().is_some_and(|x| x == "rs")
                        || e.path().join("main.rs").exists()
                });
            if has_rs {
                targets.push(kind);
            }
        }
        for target in targets {
            println!("cargo:rustc-link-arg-{target}=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg-{target}=-ltorch_cuda");
        }
    }
}
