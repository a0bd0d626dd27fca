//! `--set` on a setting (`finetune.epochs=1`, `data.batch=64`,
//! `prune.1.ratio=0.3`, `seed=3`): the override becomes a one-statement
//! recipe fragment, parsed like any file, so its value gets exactly the
//! checks and diagnostics the recipe's own text would; the resolver applies
//! it after every item of the recipe.

use std::collections::BTreeSet;

use super::vars::Override;
use crate::syntax::ast::Item;
use crate::syntax::Spanned;

/// What a patch applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A whole item: `seed`, `device`, `export`, or a `pretrain`, `finetune`
    /// or `distill` block (which merge setting by setting).
    Item,
    /// The statements of the recipe's `model` block.
    Model,
    /// The statements of the recipe's `data` block.
    Data,
    /// The statements of the N-th `prune` block (from 1).
    Prune(usize),
}

/// A parsed `--set` on a setting.
#[derive(Clone, Debug)]
pub struct Patch {
    /// What it applies to.
    pub target: Target,
    /// The fragment's item.
    pub item: Spanned<Item>,
    /// The `--set` argument, for messages.
    pub arg: String,
}

/// Settings `--set` reaches by a plain name (unless a variable has it).
const TOP: [&str; 4] = ["seed", "device", "sync_bn", "export"];

/// Whether an override names a setting rather than a `let` variable.
pub fn is_setting(o: &Override, declared: &BTreeSet<String>) -> bool {
    o.name.contains('.') || (TOP.contains(&o.name.as_str()) && !declared.contains(&o.name))
}

/// The fragment text of a setting override, and what it patches; or why
/// the name is not a setting.
pub fn fragment(o: &Override) -> Result<(Target, String), String> {
    let path: Vec<&str> = o.name.split('.').collect();
    // Paths take quoted text; a value typed without quotes gets them.
    let value = |key: &str| {
        if matches!(key, "export" | "weights") && !o.raw.starts_with('"') {
            format!("\"{}\"", o.raw.replace('"', "\\\""))
        } else {
            o.raw.clone()
        }
    };
    Ok(match path.as_slice() {
        [top] if TOP.contains(top) => (Target::Item, format!("{top} {}", value(top))),
        [block @ ("pretrain" | "finetune" | "distill"), key] => (
            Target::Item,
            format!("{block} {{ {key} {} }}", value(key)),
        ),
        ["data", key] => (
            Target::Data,
            format!("data fashion_mnist \"-\" {{ {key} {} }}", value(key)),
        ),
        ["model", key] => (Target::Model, format!("model lenet5 {{ {key} {} }}", value(key))),
        ["prune", n, key] => {
            let n = n
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or("prune stages are counted from 1: `prune.1.ratio`")?;
            (Target::Prune(n), format!("prune weights {{ {key} {} }}", o.raw))
        }
        _ => {
            return Err(format!(
                "`{}` is not a setting: write `seed`, `device`, `sync_bn`, `export`, `BLOCK.SETTING` for pretrain, finetune, distill, data or model (`finetune.epochs`), or `prune.N.SETTING` (`prune.1.ratio`)",
                o.name
            ))
        }
    })
}
