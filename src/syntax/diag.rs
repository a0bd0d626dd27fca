//! Syntax diagnostics: everything the parser can say about one file.

use miette::{Diagnostic, NamedSource, SourceSpan};
use std::sync::Arc;
use thiserror::Error;

/// An error found while parsing a `.prune` file. Each kind has a stable code.
#[derive(Debug, Error, Diagnostic)]
pub enum SyntaxError {
    /// The text does not fit the grammar at this point.
    #[error("{message}")]
    #[diagnostic(code(prunex::syntax::unexpected))]
    Unexpected {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// Where.
        #[label("{label}")]
        span: SourceSpan,
        /// Headline.
        message: String,
        /// Label text.
        label: String,
        /// How to fix it, when known.
        #[help]
        help: Option<String>,
    },

    /// A statement in a block starts with a word that is not one of the
    /// block's settings.
    #[error("`{word}` is not a setting of a `{block}` block")]
    #[diagnostic(code(prunex::syntax::unknown_setting))]
    UnknownSetting {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The word.
        #[label("unknown setting")]
        span: SourceSpan,
        /// What was written.
        word: String,
        /// The block kind.
        block: &'static str,
        /// Closest setting, the block it belongs to, or the list of settings.
        #[help]
        help: Option<String>,
    },

    /// A top-level line starts with a word that does not start an item.
    #[error("`{word}` does not start a recipe item")]
    #[diagnostic(code(prunex::syntax::unknown_item))]
    UnknownItem {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The word.
        #[label("expected an item such as `model`, `data`, `prune` or `finetune`")]
        span: SourceSpan,
        /// What was written.
        word: String,
        /// Closest item keyword or the list of items.
        #[help]
        help: Option<String>,
    },

    /// A `{` with no matching `}`.
    #[error("this `{{` is never closed")]
    #[diagnostic(
        code(prunex::syntax::unclosed_block),
        help("add `}}` after the block's last setting")
    )]
    UnclosedBlock {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The opening brace.
        #[label("block opened here")]
        open: SourceSpan,
        /// Where the parser gave up.
        #[label("the file ends here, before the block's `}}`")]
        end: SourceSpan,
    },

    /// The same clause twice in one statement or the same setting twice in
    /// one block.
    #[error("{what} is given twice")]
    #[diagnostic(code(prunex::syntax::duplicate), help("keep one of them"))]
    Duplicate {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The first occurrence.
        #[label("first here")]
        first: SourceSpan,
        /// The second occurrence.
        #[label("again here")]
        second: SourceSpan,
        /// What is repeated.
        what: String,
    },

    /// An `N:M` pattern that keeps no weight, or all of them.
    #[error("`{text}` keeps {n} of every {m} weights: N must be at least 1 and below M")]
    #[diagnostic(
        code(prunex::syntax::invalid_n_m),
        help("write N:M with 1 ≤ N < M, e.g. `2:4` (NVIDIA's sparse tensor cores) or `4:8`")
    )]
    InvalidNM {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The pattern.
        #[label("N:M needs 1 ≤ N < M")]
        span: SourceSpan,
        /// As written.
        text: String,
        /// N as written.
        n: String,
        /// M as written.
        m: String,
    },

    /// A number that cannot be represented, or an `N:M` pattern that makes no sense.
    #[error("invalid number `{text}`")]
    #[diagnostic(code(prunex::syntax::invalid_number))]
    InvalidNumber {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The number.
        #[label("{reason}")]
        span: SourceSpan,
        /// As written.
        text: String,
        /// Why.
        reason: String,
    },

    /// A bug in prunex's parser: the grammar accepted something the tree
    /// builder does not know.
    #[error("internal error in the parser: {message}")]
    #[diagnostic(
        code(prunex::internal),
        help("this is a bug in prunex, not in your recipe; please report it with the recipe that caused it")
    )]
    Internal {
        /// The file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// Where.
        #[label("here")]
        span: SourceSpan,
        /// What went wrong.
        message: String,
    },
}

/// An error while loading a recipe and the files it includes.
#[derive(Debug, Error, Diagnostic)]
pub enum LoadError {
    /// The recipe file itself cannot be read.
    #[error("cannot read recipe `{path}`: {reason}")]
    #[diagnostic(
        code(prunex::syntax::unreadable),
        help("check the path; recipes are text files ending in .prune")
    )]
    Unreadable {
        /// The path as given.
        path: String,
        /// The operating system's reason.
        reason: String,
    },

    /// An included file cannot be read.
    #[error("cannot include `{path}`: {reason}")]
    #[diagnostic(code(prunex::syntax::include_not_found))]
    IncludeNotFound {
        /// The including file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The include's path literal.
        #[label("included here")]
        span: SourceSpan,
        /// The path as written.
        path: String,
        /// The operating system's reason.
        reason: String,
        /// Where it was looked for.
        #[help]
        help: String,
    },

    /// A file includes itself, directly or through other files.
    #[error("`{path}` includes itself")]
    #[diagnostic(
        code(prunex::syntax::include_cycle),
        help(
            "the chain is {chain}; move what the files share into a fragment that includes neither"
        )
    )]
    IncludeCycle {
        /// The including file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The include that closes the cycle.
        #[label("this include closes the cycle")]
        span: SourceSpan,
        /// The file included again.
        path: String,
        /// The include chain.
        chain: String,
    },

    /// Includes nested deeper than any sensible recipe repository needs.
    #[error("includes are nested more than {limit} deep")]
    #[diagnostic(
        code(prunex::syntax::include_depth),
        help("flatten the include chain; fragments should include few other files")
    )]
    IncludeDepth {
        /// The including file.
        #[source_code]
        src: NamedSource<Arc<str>>,
        /// The include.
        #[label("one include too many")]
        span: SourceSpan,
        /// The limit.
        limit: usize,
    },
}
