//! The pest parser and the driver that turns its output into a [`File`] plus
//! every syntax error in the file.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;
use pest_derive::Parser;

use super::ast::File;
use super::diag::SyntaxError;
use super::keywords::{self, BlockKind};
use super::lower::Lower;
use super::names::describe;
use super::span::{SourceFile, Span};

/// The generated parser for `grammar/prune.pest`.
#[derive(Parser)]
#[grammar = "../grammar/prune.pest"]
pub struct PruneParser;

/// The result of parsing one file: the tree (with bad parts left out) and
/// every error found.
#[derive(Debug)]
pub struct Parsed {
    /// The syntax tree of everything that parsed.
    pub file: File,
    /// All syntax errors, in source order.
    pub errors: Vec<SyntaxError>,
}

impl Parsed {
    /// Whether the file parsed without errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Parses one file. A pure function of the file's text: no I/O, no includes.
pub fn parse(src: &SourceFile) -> Parsed {
    let text: &str = &src.text;
    let mut lower = Lower::new(src);
    let mut items = Vec::new();
    let mut comments = Vec::new();
    match PruneParser::parse(Rule::file, text) {
        Ok(mut pairs) => {
            let file = pairs.next().expect("the file rule yields one pair");
            for pair in file.clone().into_inner().flatten() {
                if pair.as_rule() == Rule::COMMENT {
                    let sp = pair.as_span();
                    comments.push(super::span::Spanned::new(
                        pair.as_str().trim_end().to_owned(),
                        Span::new(
                            src.id,
                            sp.start(),
                            sp.start() + pair.as_str().trim_end().len(),
                        ),
                    ));
                }
            }
            let mut in_bad_run = false;
            for pair in file.into_inner() {
                match pair.as_rule() {
                    Rule::item => {
                        in_bad_run = false;
                        if let Some(item) = lower.item(pair) {
                            items.push(item);
                        }
                    }
                    Rule::bad_item => {
                        if !in_bad_run {
                            let e = diagnose_bad_item(src, pair.as_span().start());
                            lower.errors.push(e);
                        }
                        in_bad_run = true;
                    }
                    Rule::COMMENT | Rule::EOI => {}
                    other => {
                        lower.internal(&pair, format!("unexpected {other:?} at the top level"))
                    }
                }
            }
        }
        // The grammar accepts every input (bad lines become bad_item), so this
        // is only reached on a grammar bug.
        Err(e) => {
            let (at, _) = location(&e.location);
            lower.errors.push(SyntaxError::Internal {
                src: src.named(),
                span: (at, 0).into(),
                message: format!("the file rule failed: {}", e.variant.message()),
            });
        }
    }
    let mut errors = lower.errors;
    errors.sort_by_key(first_offset);
    Parsed {
        file: File {
            file: src.id,
            items,
            comments,
        },
        errors,
    }
}

fn first_offset(e: &SyntaxError) -> usize {
    use miette::Diagnostic;
    e.labels()
        .and_then(|mut l| l.next())
        .map_or(0, |l| l.offset())
}

fn location(loc: &InputLocation) -> (usize, usize) {
    match *loc {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((a, b)) => (a, b),
    }
}

/// The word at `pos`: an identifier, a string literal, or one character.
fn word_at(text: &str, pos: usize) -> &str {
    let rest = &text[pos..];
    if let Some(body) = rest.strip_prefix('"') {
        let line = body.split('\n').next().unwrap_or_default();
        let end = line.find('"').map_or(line.len(), |i| i + 1);
        return &rest[..1 + end];
    }
    let n = rest
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(rest.len(), |(i, _)| i);
    if n > 0 {
        &rest[..n]
    } else {
        rest.chars().next().map_or("", |c| &rest[..c.len_utf8()])
    }
}

fn is_identifier(word: &str) -> bool {
    word.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Diagnoses a line that is not a top-level item.
fn diagnose_bad_item(src: &SourceFile, pos: usize) -> SyntaxError {
    let text: &str = &src.text;
    let word = word_at(text, pos);
    if is_identifier(word) && !keywords::ITEMS.contains(&word) {
        let help =
            if let Some(alias) = keywords::alias(word).filter(|a| keywords::ITEMS.contains(a)) {
                Some(format!("prunex calls this `{alias}`"))
            } else if let Some(best) = keywords::closest(word, keywords::ITEMS) {
                Some(format!("did you mean `{best}`?"))
            } else if let Some(blocks) = keywords::blocks_with_setting(word) {
                Some(format!(
                    "`{word}` is a setting of {blocks}; put it inside such a block"
                ))
            } else {
                Some(format!(
                    "a recipe is made of these items: {}",
                    keywords::list(keywords::ITEMS)
                ))
            };
        return SyntaxError::UnknownItem {
            src: src.named(),
            span: (pos, word.len()).into(),
            word: word.to_owned(),
            help,
        };
    }
    if !is_identifier(word) {
        return SyntaxError::UnknownItem {
            src: src.named(),
            span: (pos, word.len()).into(),
            word: word.to_owned(),
            help: Some(format!(
                "a recipe is made of these items: {}",
                keywords::list(keywords::ITEMS)
            )),
        };
    }
    strict_error(src, pos, Rule::item_only, None)
}

/// Diagnoses a statement that is not a statement of its block.
pub(super) fn diagnose_bad_stmt(src: &SourceFile, pos: usize, block: BlockKind) -> SyntaxError {
    let text: &str = &src.text;
    let word = word_at(text, pos);
    let settings = block.settings();
    if !is_identifier(word) || !settings.contains(&word) {
        let help = if !is_identifier(word) {
            Some(format!(
                "a `{}` block takes: {}",
                block.name(),
                keywords::list(settings)
            ))
        } else if let Some(alias) = keywords::alias(word).filter(|a| settings.contains(a)) {
            Some(format!("prunex calls this `{alias}`"))
        } else if let Some(best) = keywords::closest(word, settings) {
            Some(format!("did you mean `{best}`?"))
        } else if keywords::ITEMS.contains(&word) {
            Some(format!(
                "`{word}` starts a top-level item; is the `}}` that closes the `{}` block above missing?",
                block.name()
            ))
        } else if let Some(blocks) = keywords::blocks_with_setting(word) {
            Some(format!("`{word}` is a setting of {blocks}"))
        } else {
            Some(format!(
                "a `{}` block takes: {}",
                block.name(),
                keywords::list(settings)
            ))
        };
        return SyntaxError::UnknownSetting {
            src: src.named(),
            span: (pos, word.len()).into(),
            word: word.to_owned(),
            block: block.name(),
            help,
        };
    }
    strict_error(src, pos, block.strict_rule(), Some(block))
}

/// Re-parses from `pos` with a strict rule and turns its failure into a
/// diagnostic that names what was expected in words.
fn strict_error(src: &SourceFile, pos: usize, rule: Rule, block: Option<BlockKind>) -> SyntaxError {
    let text: &str = &src.text;
    let err = match PruneParser::parse(rule, &text[pos..]) {
        Err(e) => e,
        Ok(_) => {
            return SyntaxError::Internal {
                src: src.named(),
                span: (pos, word_at(text, pos).len()).into(),
                message: format!("{rule:?} accepts text that its block rejected"),
            }
        }
    };
    let (at, _) = location(&err.location);
    let at = pos + at;
    let positives = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let mut expected: Vec<&'static str> = Vec::new();
    for r in &positives {
        if matches!(
            r,
            Rule::bad_item | Rule::bad_stmt | Rule::COMMENT | Rule::EOI
        ) {
            continue;
        }
        let name = describe(*r);
        if !expected.contains(&name) {
            expected.push(name);
        }
    }
    // A variable is always possible where a value is; name it last.
    let var = describe(Rule::var_ref);
    if let Some(i) = expected.iter().position(|e| *e == var) {
        let v = expected.remove(i);
        expected.push(v);
    }
    let rest = text[at..].trim_start();
    if rest.is_empty() && positives.contains(&Rule::rbrace) {
        let open = text[pos..].find('{').map_or(pos, |i| pos + i);
        let last = text.trim_end().len().saturating_sub(1);
        return SyntaxError::UnclosedBlock {
            src: src.named(),
            open: (open, 1).into(),
            end: (last, 1).into(),
        };
    }
    let mut found_at = at + (text[at..].len() - rest.len());
    let mut found = word_at(text, found_at);
    // When the statement stops short at the end of its line, point there,
    // not at the next line's first word.
    if text[pos..found_at].contains('\n') {
        found_at = pos + text[pos..found_at].trim_end().len();
        found = "";
    }
    let found_desc = if !found.is_empty() {
        format!("`{found}`")
    } else if found_at >= text.trim_end().len() {
        "the end of the file".to_owned()
    } else {
        "the end of the line".to_owned()
    };
    let list = keywords::or_list(&expected);
    // Every keyword named in the expected list is a "did you mean" candidate.
    let keyword_options: Vec<&str> = expected
        .iter()
        .flat_map(|d| d.split('`').skip(1).step_by(2))
        .filter(|k| is_identifier(k) && k.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .collect();
    let wants_string = positives.contains(&Rule::string);
    let help = if let Some(alias) = keywords::alias(found) {
        Some(format!("prunex calls this `{alias}`"))
    } else if wants_string && is_identifier(found) {
        Some(format!("names and paths go in quotes: `\"{found}\"`"))
    } else if is_identifier(found) {
        keywords::closest(found, &keyword_options).map(|k| format!("did you mean `{k}`?"))
    } else {
        None
    }
    .or_else(|| {
        block
            .and_then(|b| b.example(word_at(text, pos)))
            .map(|ex| format!("for example: `{ex}`"))
    });
    SyntaxError::Unexpected {
        src: src.named(),
        span: (found_at, found.len()).into(),
        message: format!("expected {list}, found {found_desc}"),
        label: format!("expected {list}"),
        help,
    }
}

/// The span of a pair in file `file`.
///
/// A rule that ends in an optional or repeated part can absorb the white
/// space and comments after its last token; the span ends at that token.
pub(super) fn span_of(file: usize, pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    let end = pair
        .clone()
        .into_inner()
        .flatten()
        .filter(|p| p.as_rule() != Rule::COMMENT)
        .filter(|p| p.as_rule() == Rule::string || p.clone().into_inner().next().is_none())
        .map(|p| p.as_span().end())
        .max()
        .unwrap_or(s.end());
    Span::new(file, s.start(), end)
}
