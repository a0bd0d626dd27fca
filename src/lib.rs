//! prunex: declarative neural-network pruning.
//!
//! The pipeline is visible in the modules: [`syntax`] (text to a spanned
//! tree, includes loaded), [`check`] (variables, values and merged settings
//! resolved into a [`check::Recipe`]) and the command line in [`cli`].
//!
//! This library never touches libtorch. The executor lives in `src/exec/`
//! and is compiled only into the `prunex-exec` binary (and the tests that
//! run tensors), so `prunex` itself does not even load libtorch: `check`,
//! `fmt` and watch-mode feedback start in milliseconds.

pub mod cache;
pub mod check;
pub mod cli;
pub mod data;
pub mod diagnostics;
pub mod distributed;
pub mod fuzz;
pub mod graph;
pub mod invocation;
pub mod models;
pub mod output;
pub mod plan;
pub mod prune;
pub mod report;
pub mod sensitivity;
pub mod syntax;
pub mod tensor;
pub mod yaml;
