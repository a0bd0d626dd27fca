//! Value coercion: a literal (or a variable's value) checked for the kind
//! and range a setting takes, with a diagnostic that says which.

use std::path::{Path, PathBuf};

use super::resolve::Resolver;
use crate::check::diag::CheckError;
use crate::syntax::ast::{SValue, Value};
use crate::syntax::{Span, Spanned};

/// Describes a literal for "found ..." messages.
/// The largest whole number a recipe's numbers (read as f64) hold exactly.
pub(super) const MAX_EXACT: u64 = (1 << 53) - 1;

/// Upper bounds of counts that would otherwise run for ever or exhaust
/// memory; a recipe past them is a typo.
pub(super) mod max {
    /// Training epochs.
    pub const EPOCHS: u64 = 1_000_000;
    /// Batch sizes.
    pub const BATCH: u64 = 1 << 20;
    /// An input dimension (channels, height, width).
    pub const DIMENSION: u64 = 1 << 16;
    /// Classes.
    pub const CLASSES: u64 = 1 << 24;
    /// Padding and crop padding, in pixels.
    pub const PIXELS: u64 = 1 << 12;
    /// `round_to`.
    pub const ROUND_TO: u64 = 1 << 16;
    /// Rounds of an iterative schedule, batches of Taylor gradients.
    pub const ROUNDS: u64 = 1_000_000;
}

/// 9,007,199,254,740,991.
fn thousands(n: u64) -> String {
    crate::report::text::thousands(n)
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Number { text, .. } => format!("the number {text}"),
        Value::Percent { text, .. } => format!("the percentage {text}%"),
        Value::Str(s) | Value::Word(s) => format!("the text \"{s}\""),
        Value::Var(n) => format!("`${n}`"),
    }
}

impl Resolver<'_> {
    pub(super) fn mismatch(
        &mut self,
        v: &SValue,
        expected: &str,
        found: &Value,
        origin: Option<String>,
    ) {
        self.errors.push(CheckError::TypeMismatch {
            src: self.src(v.span),
            span: v.span.source_span(),
            expected: expected.to_owned(),
            found: describe(found),
            label: format!("expected {expected}"),
            help: origin,
        });
    }

    pub(super) fn number(&mut self, v: &SValue, expected: &str) -> Option<f64> {
        let (lit, origin) = self.lit(v)?;
        match lit {
            Value::Number { value, .. } | Value::Percent { value, .. } => Some(value),
            other => {
                self.mismatch(v, expected, &other, origin);
                None
            }
        }
    }

    pub(super) fn whole(&mut self, v: &SValue, what: &str) -> Option<u64> {
        self.whole_up_to(v, what, MAX_EXACT)
    }

    /// A whole number from 0 to `max`; the message states the range.
    pub(super) fn whole_up_to(&mut self, v: &SValue, what: &str, max: u64) -> Option<u64> {
        let (lit, origin) = self.lit(v)?;
        let expected = format!("a whole number for {what}");
        match lit {
            Value::Number { value, .. } if value >= 0.0 && value.fract() == 0.0 => {
                if value > max as f64 {
                    self.range(
                        v,
                        format!("{what} must be at most {}", thousands(max)),
                        "too large",
                        format!("{what} is a whole number from 0 to {}", thousands(max)),
                    );
                    return None;
                }
                Some(value as u64)
            }
            other => {
                self.mismatch(v, &expected, &other, origin);
                None
            }
        }
    }

    pub(super) fn positive_whole(&mut self, v: &SValue, what: &str) -> Option<u64> {
        self.positive_up_to(v, what, MAX_EXACT)
    }

    /// A whole number from 1 to `max`.
    pub(super) fn positive_up_to(&mut self, v: &SValue, what: &str, max: u64) -> Option<u64> {
        let n = self.whole_up_to(v, what, max)?;
        if n == 0 {
            self.range(
                v,
                format!("{what} must be at least 1"),
                "zero",
                format!("set {what} to 1 or more"),
            );
            return None;
        }
        Some(n)
    }

    pub(super) fn text(&mut self, v: &SValue, expected: &str) -> Option<String> {
        let (lit, origin) = self.lit(v)?;
        match lit {
            Value::Str(s) | Value::Word(s) => Some(s),
            other => {
                self.mismatch(v, expected, &other, origin);
                None
            }
        }
    }

    pub(super) fn path(&mut self, v: &SValue, expected: &str) -> Option<Spanned<PathBuf>> {
        let t = self.text(v, expected)?;
        Some(Spanned::new(self.relative_to_file(v.span, &t), v.span))
    }

    /// A path written in a file is relative to that file's folder.
    pub(super) fn relative_to_file(&self, span: Span, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        let file = self.sources.get(span.file);
        // A path given with `--set` is relative to where prunex runs.
        if file.path.is_none() && file.name.starts_with("--set ") {
            return crate::syntax::load::normalize(p);
        }
        let base = file.name.clone();
        crate::syntax::load::normalize(&Path::new(&base).parent().unwrap_or(Path::new("")).join(p))
    }

    pub(super) fn range(&mut self, v: &SValue, message: String, label: &str, help: String) {
        let help = match &self.origin {
            Some(origin) => format!("{help}; {origin}"),
            None => help,
        };
        self.errors.push(CheckError::OutOfRange {
            src: self.src(v.span),
            span: v.span.source_span(),
            message,
            label: label.to_owned(),
            help,
        });
    }

    /// A fraction of weights or channels removed: in [0, 1).
    pub(super) fn fraction(&mut self, v: &SValue, what: &str) -> Option<f64> {
        let x = self.number(v, &format!("a fraction for {what}"))?;
        if !(0.0..1.0).contains(&x) {
            let label = if x >= 1.0 {
                "this removes everything"
            } else {
                "negative"
            };
            self.range(
                v,
                format!("{what} must be at least 0 and below 1"),
                label,
                "a fraction is the share removed: 0.5 or 50% removes half, and at least one weight or channel must stay".to_owned(),
            );
            return None;
        }
        Some(x)
    }

    pub(super) fn non_negative(&mut self, v: &SValue, what: &str) -> Option<f64> {
        let x = self.number(v, &format!("a number for {what}"))?;
        if x < 0.0 {
            self.range(
                v,
                format!("{what} cannot be negative"),
                "negative",
                format!("use 0 or more for {what}"),
            );
            return None;
        }
        Some(x)
    }

    pub(super) fn positive(&mut self, v: &SValue, what: &str) -> Option<f64> {
        let x = self.number(v, &format!("a number for {what}"))?;
        if x <= 0.0 {
            self.range(
                v,
                format!("{what} must be above 0"),
                "not positive",
                "use a value above 0".to_owned(),
            );
            return None;
        }
        Some(x)
    }

    pub(super) fn unit_interval(&mut self, v: &SValue, what: &str) -> Option<f64> {
        let x = self.number(v, &format!("a number for {what}"))?;
        if !(0.0..=1.0).contains(&x) {
            self.range(
                v,
                format!("{what} must be between 0 and 1"),
                "outside [0, 1]",
                "use a value from 0 to 1".to_owned(),
            );
            return None;
        }
        Some(x)
    }
}
