//! Pruning: importance, selection and physical surgery (plain Rust), and the
//! unstructured and N:M masks.

pub mod importance;
pub mod surgery;
