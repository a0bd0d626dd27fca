//! The solver's answer as a recipe fragment: the recipe's own first prune
//! block (its schedule, criterion, rounding, ignore list: every statement
//! but its targets and rules, as written), with one `group` or `layer`
//! rule per subject, formatted canonically. A recipe uses it by replacing
//! its prune block with `include "…"`.

use super::RuleWord;
use crate::syntax::ast::{Item, PruneStmt};
use crate::syntax::{fmt, parse, SourceMap};

/// Why the fragment could not be written.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FragmentError {
    /// The prune block's text did not parse alone.
    #[error("the recipe's prune block could not be read back: {0}")]
    #[diagnostic(
        code(prunex::sensitivity::fragment),
        help("this is a bug in prunex; the measured curves were written")
    )]
    Block(String),
}

/// The fragment: `header` lines as comments, then the block.
pub fn write(
    block: &str,
    rule: RuleWord,
    ratios: &[(String, f64)],
    header: &[String],
) -> Result<String, FragmentError> {
    let mut map = SourceMap::new();
    let id = map.add("prune block", None, block);
    let parsed = parse(map.get(id));
    if !parsed.is_ok() {
        return Err(FragmentError::Block(format!(
            "{} syntax error(s)",
            parsed.errors.len()
        )));
    }
    let Some(pb) = parsed.file.items.iter().find_map(|i| match &i.node {
        Item::Prune(pb) => Some(pb),
        _ => None,
    }) else {
        return Err(FragmentError::Block("no prune block".into()));
    };
    let mut text = String::new();
    for h in header {
        for line in h.lines() {
            text.push_str("# ");
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&block[..pb.body.open.span.end]);
    text.push('\n');
    for s in &pb.body.stmts {
        if matches!(
            s.node,
            PruneStmt::Layer(_)
                | PruneStmt::Group(_)
                | PruneStmt::Target { .. }
                | PruneStmt::Scope { .. }
        ) {
            continue;
        }
        text.push_str(&block[s.span.start..s.span.end]);
        text.push('\n');
    }
    let (word, target) = match rule {
        RuleWord::Group => ("group", "ratio"),
        RuleWord::Layer => ("layer", "sparsity"),
    };
    for (name, r) in ratios {
        text.push_str(&format!("{word} {} {target} {r}\n", fmt::quote(name)));
    }
    text.push_str("}\n");
    let mut map = SourceMap::new();
    let id = map.add("fragment", None, text.as_str());
    let parsed = parse(map.get(id));
    if !parsed.is_ok() {
        return Err(FragmentError::Block(format!(
            "the fragment does not parse ({} error(s))",
            parsed.errors.len()
        )));
    }
    Ok(fmt::format(&parsed.file, map.get(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_settings_and_replaces_rules() {
        let block = "prune channels by l2 {\n    schedule oneshot at epoch 0 # now\n    round_to 8\n    scope global max 0.7\n    ratio 0.3\n    layer \"a*\" ratio 0.5\n    ignore \"fc\"\n}";
        let out = write(
            block,
            RuleWord::Group,
            &[("conv1".into(), 0.2), ("layer1.0.conv1".into(), 0.0)],
            &["chosen for MACs ≤ 0.5".into()],
        )
        .unwrap();
        assert!(
            out.starts_with("# chosen for MACs ≤ 0.5\nprune channels by l2 {"),
            "{out}"
        );
        assert!(
            out.contains("round_to 8") && out.contains("ignore \"fc\""),
            "{out}"
        );
        assert!(!out.contains("ratio 0.3") && !out.contains("a*"), "{out}");
        // The ratios are per group: a global ranking would not apply them.
        assert!(!out.contains("scope"), "{out}");
        assert!(out.contains("group \"conv1\""), "{out}");
        assert!(out.contains("\"layer1.0.conv1\" ratio 0\n"), "{out}");
    }
}
