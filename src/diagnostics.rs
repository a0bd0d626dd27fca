//! Rendering diagnostics of every phase: for people (miette's graphical
//! report) and for machines (one JSON object per line, as cargo does).

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, Report, Severity};
use serde::Serialize;

use crate::syntax::Problem;

/// Whether a report counts as an error (warnings and advice do not fail a check).
pub fn is_error(d: &dyn Diagnostic) -> bool {
    matches!(d.severity(), None | Some(Severity::Error))
}

/// Turns a load or syntax problem into a report.
pub fn report_problem(p: Problem) -> Report {
    match p {
        Problem::Syntax(e) => Report::new(e),
        Problem::Load(e) => Report::new(e),
    }
}

/// Renders a report as text. `color` selects ANSI colors; the width is fixed
/// so that snapshots do not depend on the terminal.
pub fn render_human(report: &Report, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    if too_wide(report.as_ref()) {
        return render_plain(report.as_ref());
    }
    let mut out = String::new();
    if handler.render_report(&mut out, report.as_ref()).is_err() {
        out = format!("{report}\n");
    }
    out
}

/// Diagnostics drawn in full by [`render_many`]; the rest are counted.
pub const SHOWN: usize = 50;

/// Renders many diagnostics for people: the first [`SHOWN`] in full (each
/// followed by `sep`), then one line counting the rest by code. Drawing a
/// diagnostic reads its file up to the label, so drawing them all took time
/// quadratic in their number; counting is linear.
pub fn render_many(reports: &[Report], color: bool, sep: &str) -> String {
    let mut out = String::new();
    for r in reports.iter().take(SHOWN) {
        out += &render_human(r, color);
        out += sep;
    }
    if reports.len() > SHOWN {
        let mut by_code: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &reports[SHOWN..] {
            let code = r.code().map_or("(no code)".into(), |c| c.to_string());
            *by_code.entry(code).or_default() += 1;
        }
        let counts: Vec<String> = by_code.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
        out += &format!(
            "… and {} more not shown ({}); `prunex check --format json` lists every one\n{sep}",
            reports.len() - SHOWN,
            counts.join(", ")
        );
    }
    out
}

/// Columns past which a label is not drawn under its line: miette pads
/// with a format width, which Rust caps at 65,535 (past it, a panic), and a
/// line that long cannot be read on a terminal anyway.
const MAX_DRAWN_COLUMN: usize = 4_096;

/// Whether a label of `d` (or of a diagnostic it wraps) lies past
/// [`MAX_DRAWN_COLUMN`].
fn too_wide(d: &dyn Diagnostic) -> bool {
    let own = match (d.source_code(), d.labels()) {
        (Some(src), Some(labels)) => labels.into_iter().any(|l| {
            l.len() > MAX_DRAWN_COLUMN
                || src
                    .read_span(l.inner(), 0, 0)
                    .is_ok_and(|c| c.column() + l.len() > MAX_DRAWN_COLUMN)
        }),
        _ => false,
    };
    own || d.related().is_some_and(|mut r| r.any(too_wide))
        || d.diagnostic_source().is_some_and(too_wide)
}

/// A diagnostic as plain lines: code, message, where each label points
/// (file:line:column and its text), help.
fn render_plain(d: &dyn Diagnostic) -> String {
    let mut out = String::new();
    if let Some(code) = d.code() {
        out += &format!("{code}\n\n");
    }
    out += &format!("  × {d}\n");
    if let (Some(src), Some(labels)) = (d.source_code(), d.labels()) {
        for l in labels {
            if let Ok(c) = src.read_span(l.inner(), 0, 0) {
                out += &format!(
                    "  at {}:{}:{}{}\n",
                    c.name().unwrap_or("<input>"),
                    c.line() + 1,
                    c.column() + 1,
                    l.label().map(|t| format!(": {t}")).unwrap_or_default()
                );
            }
        }
    }
    if let Some(help) = d.help() {
        out += &format!("  help: {help}\n");
    }
    if let Some(inner) = d.diagnostic_source() {
        out += &render_plain(inner);
    }
    out
}

/// One diagnostic as a JSON line.
#[derive(Debug, Serialize, PartialEq)]
pub struct JsonDiagnostic {
    /// Stable code, e.g. `prunex::syntax::unexpected`.
    pub code: String,
    /// `error`, `warning` or `advice`.
    pub severity: &'static str,
    /// The message.
    pub message: String,
    /// The file, when the diagnostic points into one.
    pub file: Option<String>,
    /// 1-based line of the first label.
    pub line: Option<usize>,
    /// 1-based column of the first label.
    pub column: Option<usize>,
    /// 1-based line where the first label ends.
    pub end_line: Option<usize>,
    /// 1-based column where the first label ends.
    pub end_column: Option<usize>,
    /// The first label's text.
    pub label: Option<String>,
    /// How to fix it.
    pub help: Option<String>,
}

/// Describes a report for `--format json`.
pub fn to_json(report: &Report) -> JsonDiagnostic {
    let d: &dyn Diagnostic = report.as_ref();
    let severity = match d.severity() {
        None | Some(Severity::Error) => "error",
        Some(Severity::Warning) => "warning",
        Some(Severity::Advice) => "advice",
    };
    let mut out = JsonDiagnostic {
        code: d
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "prunex::error".into()),
        severity,
        message: report.to_string(),
        file: None,
        line: None,
        column: None,
        end_line: None,
        end_column: None,
        label: None,
        help: d.help().map(|h| h.to_string()),
    };
    if let (Some(src), Some(label)) = (d.source_code(), d.labels().and_then(|mut l| l.next())) {
        let start = miette::SourceSpan::from((label.offset(), 0));
        let end = miette::SourceSpan::from((label.offset() + label.len(), 0));
        if let Ok(c) = src.read_span(&start, 0, 0) {
            out.file = c.name().map(str::to_owned);
            out.line = Some(c.line() + 1);
            out.column = Some(c.column() + 1);
        }
        if let Ok(c) = src.read_span(&end, 0, 0) {
            out.end_line = Some(c.line() + 1);
            out.end_column = Some(c.column() + 1);
        }
        out.label = label.label().map(str::to_owned);
    }
    out
}

/// A diagnostic from another phase (model, weights) pinned to the recipe
/// text that caused it: it keeps the inner diagnostic's code, message and
/// help, and adds a label on the recipe.
#[derive(Debug)]
pub struct Located {
    inner: Report,
    src: miette::NamedSource<std::sync::Arc<str>>,
    span: miette::SourceSpan,
    label: String,
}

impl Located {
    /// Pins `inner` to `span` of `src`.
    pub fn new(
        inner: impl Diagnostic + Send + Sync + 'static,
        src: miette::NamedSource<std::sync::Arc<str>>,
        span: miette::SourceSpan,
        label: impl Into<String>,
    ) -> Self {
        Located {
            inner: Report::new(inner),
            src,
            span,
            label: label.into(),
        }
    }
}

impl std::fmt::Display for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl std::error::Error for Located {}

impl Diagnostic for Located {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<Severity> {
        self.inner.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.inner.help()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_with_span(Some(self.label.clone()), self.span),
        )))
    }
}
