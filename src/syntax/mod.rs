//! Syntax: `.prune` text to a spanned tree, and back (the formatter).
//!
//! Everything here is pure and free of libtorch: [`parse`] maps one file's
//! text to a [`ast::File`] and every syntax error in it; [`fmt::format`]
//! prints a tree canonically, keeping comments.

pub mod ast;
pub mod diag;
pub mod fmt;
pub mod keywords;
pub mod load;
mod lower;
pub mod names;
pub mod parser;
pub mod span;

pub use diag::{LoadError, SyntaxError};
pub use load::{load, Entry, FsLoader, Loader, MemLoader, Problem, UnresolvedRecipe};
pub use parser::{parse, Parsed};
pub use span::{FileId, SourceFile, SourceMap, Span, Spanned};
