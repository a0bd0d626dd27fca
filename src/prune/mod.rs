//! Pruning: importance, selection and physical surgery (plain Rust), and the
//! unstructured and N:M masks.

pub mod blocks;
pub mod importance;
pub mod mask;
pub mod surgery;
