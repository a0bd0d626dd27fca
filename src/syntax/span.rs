//! Source files, byte spans and spanned values.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
pub type FileId = usize;

/// A byte range `start..end` in one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// The file the range is in.
    pub file: FileId,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// Creates a span.
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span { file, start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(
            self.file,
            self.start.min(other.start),
            self.end.max(other.end),
        )
    }

    /// The span as miette wants it.
    pub fn source_span(self) -> miette::SourceSpan {
        (self.start, self.end.saturating_sub(self.start)).into()
    }
}

/// A value with the span it was written at.
///
/// Equality ignores the span, so two trees that say the same thing in
/// different layouts compare equal (the formatter's round-trip test relies on it).
#[derive(Clone, Debug)]
pub struct Spanned<T> {
    /// The value.
    pub node: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Wraps a value.
    pub fn new(node: T, span: Span) -> Self {
        Spanned { node, span }
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node
    }
}

/// One source file: its display name, where it came from and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Its id in the map.
    pub id: FileId,
    /// The name shown in diagnostics (the path as the user gave it).
    pub name: String,
    /// The canonical path, when the file came from disk.
    pub path: Option<PathBuf>,
    /// The text.
    pub text: Arc<str>,
}

impl SourceFile {
    /// The source as miette renders it.
    pub fn named(&self) -> miette::NamedSource<Arc<str>> {
        miette::NamedSource::new(&self.name, self.text.clone()).with_language("prune")
    }

    /// 1-based line and column of a byte offset (column counted in characters).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// All source files seen while loading one recipe (the recipe and its includes).
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        SourceMap::default()
    }

    /// Adds a file and returns its id.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        path: Option<&Path>,
        text: impl Into<Arc<str>>,
    ) -> FileId {
        let id = self.files.len();
        self.files.push(SourceFile {
            id,
            name: name.into(),
            path: path.map(Path::to_path_buf),
            text: text.into(),
        });
        id
    }

    /// The file with this id.
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id]
    }

    /// The file a span is in, as miette renders it.
    pub fn named(&self, span: Span) -> miette::NamedSource<Arc<str>> {
        self.get(span.file).named()
    }

    /// `file:line:column` of a span's start.
    pub fn place(&self, span: Span) -> String {
        let f = self.get(span.file);
        let (line, col) = f.line_col(span.start);
        format!("{}:{line}:{col}", f.name)
    }

    /// All files, in the order they were added.
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }
}
