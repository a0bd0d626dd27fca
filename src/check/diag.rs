//! Check diagnostics: what is wrong with a recipe that parses.

use miette::{Diagnostic, NamedSource, SourceSpan};
use std::sync::Arc;
use thiserror::Error;

/// A problem found while resolving and checking a recipe. Each kind has a
/// stable code.
#[derive(Debug, Error, Diagnostic)]
pub enum CheckError {
    /// `$name` is used but never defined with `let` or `--set`.
    #[error("variable `${name}` is not defined")]
    #[diagnostic(code(prunex::check::undefined_variable))]
    UndefinedVariable {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The reference.
        #[label("used here")]
        span: SourceSpan,
        /// The name.
        name: String,
        /// Closest defined name, or how to define it.
        #[help]
        help: String,
    },

    /// `let name` twice.
    #[error("variable `{name}` is defined twice")]
    #[diagnostic(
        code(prunex::check::duplicate_variable),
        help("a recipe defines each variable once; to change it for one run, use `--set {name}=VALUE`")
    )]
    DuplicateVariable {
        /// The file of the second definition.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The second definition.
        #[label("defined again here (first defined at {first})")]
        span: SourceSpan,
        /// The name.
        name: String,
        /// Where the first definition is (file:line).
        first: String,
    },

    /// A variable defined with `let` and never used.
    #[error("variable `{name}` is never used")]
    #[diagnostic(
        code(prunex::check::unused_variable),
        severity(Warning),
        help("use it as `${name}`, or remove the `let`")
    )]
    UnusedVariable {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The definition.
        #[label("defined here")]
        span: SourceSpan,
        /// The name.
        name: String,
    },

    /// `--set name=value` names a variable the recipe does not define.
    #[error("`--set {name}=...` names a variable the recipe does not define")]
    #[diagnostic(code(prunex::check::unknown_override))]
    UnknownOverride {
        /// The name.
        name: String,
        /// The variables the recipe defines.
        #[help]
        help: String,
    },

    /// `--set` text that is not `name=value` with a literal value.
    #[error("cannot read `--set {text}`: {reason}")]
    #[diagnostic(
        code(prunex::check::bad_override),
        help("write `--set name=value`, where value is a number (0.5, 1e-3), a percentage (50%) or text")
    )]
    BadOverride {
        /// The argument.
        text: String,
        /// Why.
        reason: String,
    },

    /// A value of the wrong kind for its slot (text where a number is
    /// expected, a fraction where a whole number is expected).
    #[error("expected {expected}, found {found}")]
    #[diagnostic(code(prunex::check::type_mismatch))]
    TypeMismatch {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The value.
        #[label("{label}")]
        span: SourceSpan,
        /// What the slot takes.
        expected: String,
        /// What it got.
        found: String,
        /// Label text.
        label: String,
        /// Where a variable got its value, when it did.
        #[help]
        help: Option<String>,
    },

    /// A number outside the range its setting allows.
    #[error("{message}")]
    #[diagnostic(code(prunex::check::out_of_range))]
    OutOfRange {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The value.
        #[label("{label}")]
        span: SourceSpan,
        /// Headline.
        message: String,
        /// Label text.
        label: String,
        /// The fix.
        #[help]
        help: String,
    },

    /// A word that is not one of the values a setting allows.
    #[error("{message}")]
    #[diagnostic(code(prunex::check::invalid_value))]
    InvalidValue {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The value.
        #[label("{label}")]
        span: SourceSpan,
        /// Headline.
        message: String,
        /// Label text.
        label: String,
        /// The allowed values, or the closest one.
        #[help]
        help: String,
    },

    /// A setting that may appear once per recipe appears twice in one file.
    #[error("`{what}` is given twice in this file")]
    #[diagnostic(
        code(prunex::check::duplicate_item),
        help("keep one; a file may override what an included file sets, but not itself")
    )]
    DuplicateItem {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The first one.
        #[label("first here")]
        first: SourceSpan,
        /// The second one.
        #[label("again here")]
        second: SourceSpan,
        /// The keyword.
        what: String,
    },

    /// A recipe without something every run needs.
    #[error("this recipe has no `{what}`")]
    #[diagnostic(code(prunex::check::missing_item))]
    MissingItem {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The recipe header.
        #[label("recipe declared here")]
        span: SourceSpan,
        /// What is missing.
        what: &'static str,
        /// An example of it.
        #[help]
        help: String,
    },
}
