//! The body of the parser/checker fuzz target (`fuzz/`), shared with the
//! test that replays its corpus on stable Rust, so both run the same checks.

use std::path::Path;

use crate::check::{check_path, Mode};
use crate::diagnostics::{render_human, to_json};
use crate::syntax::fmt::format;
use crate::syntax::{parse, MemLoader, SourceMap};

/// Parses, checks and formats `text`, and renders every diagnostic; panics
/// on any broken invariant:
/// - nothing panics, and every diagnostic renders for people and as JSON;
/// - a text that parses formats idempotently, to text that parses to the
///   same tree with the same comments.
///
/// The text is also visible as `inc.prune` so that `include` paths resolve
/// (and cycles are exercised).
pub fn exercise(text: &str) {
    let loader = MemLoader::new()
        .with("main.prune", text)
        .with("inc.prune", text);
    let checked = check_path(Path::new("main.prune"), &loader, &[], Mode::Single);
    for r in &checked.reports {
        let _ = render_human(r, false);
        let _ = to_json(r);
    }

    let mut map = SourceMap::new();
    let id = map.add("main.prune", None, text);
    let parsed = parse(map.get(id));
    if !parsed.is_ok() {
        return;
    }
    let once = format(&parsed.file, map.get(id));
    let id2 = map.add("formatted", None, once.as_str());
    let again = parse(map.get(id2));
    assert!(again.is_ok(), "formatted text does not parse:\n{once}");
    assert_eq!(
        parsed.file.items, again.file.items,
        "formatting changed the meaning:\n{once}"
    );
    let texts = |f: &crate::syntax::ast::File| {
        f.comments
            .iter()
            .map(|c| c.node.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts(&parsed.file),
        texts(&again.file),
        "formatting lost comments:\n{once}"
    );
    let twice = format(&again.file, map.get(id2));
    assert_eq!(once, twice, "formatting is not idempotent");
}
