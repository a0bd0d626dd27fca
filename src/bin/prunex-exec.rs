//! `prunex-exec`: the libtorch executor that `prunex` starts for anything
//! that needs tensors. It is the only binary that links libtorch.

#[path = "../exec/mod.rs"]
mod exec;

fn main() -> std::process::ExitCode {
    exec::main()
}
