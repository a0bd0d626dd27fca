//! This crate has no code. Its build script checks, before `torch-sys` starts
//! compiling C++ against libtorch, that libtorch is where the build expects it
//! and is the version `tch` was generated for. It passes the library folder and
//! version on to prunex's own build script through `links` metadata
//! (`DEP_PRUNEX_LIBTORCH_LIB_DIR`, `DEP_PRUNEX_LIBTORCH_VERSION`).
