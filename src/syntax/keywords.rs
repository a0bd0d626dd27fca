//! Keyword lists per context, for "did you mean" help and setting lists.

use super::parser::Rule;

/// Keywords that start a top-level item.
pub const ITEMS: &[&str] = &[
    "recipe", "seed", "device", "sync_bn", "include", "let", "model", "data", "pretrain", "prune",
    "distill", "finetune", "export",
];

const MODEL: &[&str] = &["input", "classes", "weights"];
const DATA: &[&str] = &[
    "batch",
    "eval_batch",
    "normalize",
    "augment",
    "limit",
    "pad",
];
const TRAIN: &[&str] = &[
    "epochs",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "nesterov",
    "lr_schedule",
    "warmup",
    "lr_mult",
    "batch",
];
const PRUNE: &[&str] = &[
    "schedule",
    "scope",
    "round_to",
    "layer",
    "group",
    "ignore",
    "aggregate",
    "batches",
    "penalty",
    "ratio",
    "sparsity",
    "strict",
];
const DISTILL: &[&str] = &["teacher", "temperature", "alpha"];

/// The kinds of block, for statement diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// `model`
    Model,
    /// `data`
    Data,
    /// `pretrain`
    Pretrain,
    /// `finetune`
    Finetune,
    /// `prune`
    Prune,
    /// `distill`
    Distill,
}

impl BlockKind {
    const ALL: [BlockKind; 6] = [
        BlockKind::Model,
        BlockKind::Data,
        BlockKind::Pretrain,
        BlockKind::Finetune,
        BlockKind::Prune,
        BlockKind::Distill,
    ];

    /// The keyword of the block.
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::Model => "model",
            BlockKind::Data => "data",
            BlockKind::Pretrain => "pretrain",
            BlockKind::Finetune => "finetune",
            BlockKind::Prune => "prune",
            BlockKind::Distill => "distill",
        }
    }

    /// The keywords that start a statement of this block.
    pub fn settings(self) -> &'static [&'static str] {
        match self {
            BlockKind::Model => MODEL,
            BlockKind::Data => DATA,
            BlockKind::Pretrain | BlockKind::Finetune => TRAIN,
            BlockKind::Prune => PRUNE,
            BlockKind::Distill => DISTILL,
        }
    }

    /// The rule that parses exactly one statement of this block.
    pub(super) fn strict_rule(self) -> Rule {
        match self {
            BlockKind::Model => Rule::model_stmt_only,
            BlockKind::Data => Rule::data_stmt_only,
            BlockKind::Pretrain | BlockKind::Finetune => Rule::train_stmt_only,
            BlockKind::Prune => Rule::prune_stmt_only,
            BlockKind::Distill => Rule::distill_stmt_only,
        }
    }

    /// A correct example of the statement that starts with `keyword`.
    pub fn example(self, keyword: &str) -> Option<&'static str> {
        Some(match keyword {
            "input" => "input [3, 32, 32]",
            "classes" => "classes 10",
            "weights" => "weights \"checkpoints/model.safetensors\"",
            "batch" => "batch 128",
            "eval_batch" => "eval_batch 512",
            "normalize" => "normalize mean 0.2860 std 0.3530",
            "augment" => "augment crop 4 flip",
            "limit" => "limit 2000",
            "pad" => "pad 2",
            "epochs" => "epochs 5",
            "optimizer" => "optimizer sgd lr 0.01 momentum 0.9 weight_decay 5e-4",
            "lr" => "lr 0.001",
            "momentum" => "momentum 0.9",
            "weight_decay" => "weight_decay 1e-4",
            "lr_schedule" => "lr_schedule cosine",
            "warmup" => "warmup 2 epochs",
            "lr_mult" => "lr_mult \"layer4.*\" 0.1",
            "schedule" => "schedule gradual 0.0 -> 0.8 every 5 epochs curve cubic",
            "scope" => "scope global max 0.7",
            "round_to" => "round_to 8",
            "layer" => "layer \"layer*.*.conv1\" ratio 0.5",
            "group" => "group \"layer1.*.conv2\" ratio 0.2",
            "ignore" => "ignore \"fc\", \"*.downsample.*\"",
            "aggregate" => "aggregate mean",
            "batches" => "batches 100",
            "penalty" => "penalty 1e-4",
            "ratio" => "ratio 0.5",
            "sparsity" => "sparsity 0.8",
            "teacher" => "teacher dense",
            "temperature" => "temperature 4.0",
            "alpha" => "alpha 0.9",
            _ => return None,
        })
        .filter(|_| self.settings().contains(&keyword))
    }
}

/// The keyword closest to `word` when it is a plausible misspelling.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&word, c), *c))
        .filter(|&(d, c)| d > 0 && d <= (c.len().max(3) / 3).max(1) + usize::from(c.len() > 6))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
        .or_else(|| {
            candidates
                .iter()
                .find(|c| c.eq_ignore_ascii_case(&word) && **c != word)
                .copied()
        })
}

/// "a `distill` block" or "`pretrain` and `finetune` blocks".
pub fn blocks_with_setting(word: &str) -> Option<String> {
    let names: Vec<&str> = BlockKind::ALL
        .iter()
        .filter(|b| b.settings().contains(&word))
        .map(|b| b.name())
        .collect();
    match names.as_slice() {
        [] => None,
        [one] => Some(format!("a `{one}` block")),
        many => Some(format!(
            "{} blocks",
            and_list(&many.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>())
        )),
    }
}

/// "`a`, `b` and `c`".
pub fn list(words: &[&str]) -> String {
    and_list(&words.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>())
}

fn join_last(items: &[String], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., tail] => format!("{} {last} {tail}", init.join(", ")),
    }
}

fn and_list(items: &[String]) -> String {
    join_last(items, "and")
}

/// "a, b or c" for already-described items.
pub fn or_list(items: &[&str]) -> String {
    if items.is_empty() {
        return "something else".to_owned();
    }
    join_last(
        &items.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "or",
    )
}

/// Words users bring from other tools, and what prunex calls them.
pub fn alias(word: &str) -> Option<&'static str> {
    Some(match word {
        "gpu" => "cuda",
        "amount" | "prune_ratio" | "pruning_ratio" => "ratio",
        "filters" | "structured" => "channels",
        "unstructured" => "weights",
        "exclude" | "skip" => "ignore",
        "magnitude" => "l1",
        "slimming" | "network_slimming" => "bn_scale",
        "kd" | "distillation" => "distill",
        "fine_tune" | "finetuning" => "finetune",
        "learning_rate" => "lr",
        "scheduler" => "lr_schedule",
        _ => return None,
    })
}
