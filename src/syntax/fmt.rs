//! The canonical formatter.
//!
//! Layout rules: four-space indentation; one statement per line, except that a
//! block written on one line stays on one line when it fits in 100 columns;
//! at most one blank line where the source had any; the targets of
//! consecutive `layer`/`group` rules line up; trailing comments of consecutive
//! lines line up two spaces after the longest line. Comments are kept: a
//! comment inside a statement moves to the line above it. Formatting is
//! idempotent and never changes what the recipe means (both are tested).

use super::ast::*;
use super::span::{SourceFile, Spanned};

const WIDTH: usize = 100;
const INDENT: &str = "    ";

/// Formats one parsed file. `src` must be the file the tree was parsed from
/// (comments and blank lines are read from it).
pub fn format(file: &File, src: &SourceFile) -> String {
    let mut p = Printer {
        text: &src.text,
        comments: &file.comments,
        next: 0,
        lines: Vec::new(),
        last_end: 0,
    };
    for item in &file.items {
        p.item(item);
    }
    p.flush_comments_before(usize::MAX, 0);
    p.finish()
}

/// A value as written in canonical form.
pub fn value(v: &Value) -> String {
    match v {
        Value::Number { text, .. } => text.clone(),
        Value::Percent { text, .. } => format!("{text}%"),
        Value::Str(s) => quote(s),
        Value::Word(w) => w.clone(),
        Value::Var(name) => format!("${name}"),
    }
}

/// A string literal with the escapes the grammar knows.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Debug)]
enum Line {
    Blank,
    Code {
        indent: usize,
        code: String,
        comment: Option<String>,
    },
    Comment {
        indent: usize,
        text: String,
    },
}

struct Printer<'a> {
    text: &'a str,
    comments: &'a [Spanned<String>],
    next: usize,
    lines: Vec<Line>,
    /// End of the last source construct printed, to find blank lines.
    last_end: usize,
}

impl Printer<'_> {
    fn blank_between(&self, a: usize, b: usize) -> bool {
        let (a, b) = (a.min(self.text.len()), b.min(self.text.len()));
        if a >= b {
            return false;
        }
        let parts: Vec<&str> = self.text[a..b].split('\n').collect();
        parts.len() > 2
            && parts[1..parts.len() - 1]
                .iter()
                .any(|l| l.trim().is_empty())
    }

    /// Emits a blank line when the source had one before `start`, except at
    /// the top of the file or of a block.
    fn maybe_blank(&mut self, start: usize) {
        let at_top = match self.lines.last() {
            None | Some(Line::Blank) => true,
            Some(Line::Code { code, .. }) => code.ends_with('{'),
            Some(Line::Comment { .. }) => false,
        };
        if !at_top && self.blank_between(self.last_end, start) {
            self.lines.push(Line::Blank);
        }
    }

    /// Emits, as their own lines, all comments that start before `pos`.
    fn flush_comments_before(&mut self, pos: usize, indent: usize) {
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= pos {
                break;
            }
            self.maybe_blank(c.span.start);
            self.lines.push(Line::Comment {
                indent,
                text: c.node.clone(),
            });
            self.last_end = self.last_end.max(c.span.end);
            self.next += 1;
        }
    }

    /// Takes the comment that follows `end` on the same source line, if any.
    fn trailing_comment(&mut self, end: usize) -> Option<String> {
        let c = self.comments.get(self.next)?;
        if c.span.start >= end
            && self.text[end..c.span.start].trim().is_empty()
            && !self.text[end..c.span.start].contains('\n')
        {
            self.next += 1;
            self.last_end = self.last_end.max(c.span.end);
            Some(c.node.clone())
        } else {
            None
        }
    }

    /// Emits one statement-like line: its leading and embedded comments, the
    /// code, and its trailing comment.
    fn line(&mut self, indent: usize, start: usize, end: usize, code: String) {
        self.flush_comments_before(end, indent);
        self.maybe_blank(start);
        self.last_end = self.last_end.max(end);
        let comment = self.trailing_comment(end);
        self.lines.push(Line::Code {
            indent,
            code,
            comment,
        });
    }

    fn item(&mut self, item: &Spanned<Item>) {
        let (start, end) = (item.span.start, item.span.end);
        let simple = |kw: &str, v: &SValue| format!("{kw} {}", value(&v.node));
        match &item.node {
            Item::Recipe(v) => self.line(0, start, end, simple("recipe", v)),
            Item::Seed(v) => self.line(0, start, end, simple("seed", v)),
            Item::Device(v) => self.line(0, start, end, simple("device", v)),
            Item::SyncBn(v) => self.line(0, start, end, simple("sync_bn", v)),
            Item::Export(v) => self.line(0, start, end, simple("export", v)),
            Item::Include(path) => {
                self.line(0, start, end, format!("include {}", quote(&path.node)))
            }
            Item::Let { name, value: v } => self.line(
                0,
                start,
                end,
                format!("let {} = {}", name.node, value(&v.node)),
            ),
            Item::Model(m) => {
                let head = format!("model {}", model_source(&m.source.node));
                match &m.body {
                    Some(b) => self.block(start, head, b, |s, _| model_stmt(s)),
                    None => self.line(0, start, end, head),
                }
            }
            Item::Data(d) => {
                let head = format!("data {} {}", d.kind.node, value(&d.path.node));
                match &d.body {
                    Some(b) => self.block(start, head, b, |s, _| data_stmt(s)),
                    None => self.line(0, start, end, head),
                }
            }
            Item::Pretrain(b) => self.block(start, "pretrain".into(), b, |s, _| train_stmt(s)),
            Item::Finetune(b) => self.block(start, "finetune".into(), b, |s, _| train_stmt(s)),
            Item::Distill(b) => self.block(start, "distill".into(), b, |s, _| distill_stmt(s)),
            Item::Prune(pb) => {
                let mut head = format!("prune {}", granularity(pb.granularity.node));
                if let Some(i) = &pb.importance {
                    head.push_str(" by ");
                    head.push_str(importance(i.node));
                }
                let widths = rule_widths(&pb.body, self.text, self.comments);
                self.block(start, head, &pb.body, |s, i| prune_stmt(s, widths[i]))
            }
        }
    }

    fn block<S>(
        &mut self,
        start: usize,
        head: String,
        block: &Block<S>,
        render: impl Fn(&S, usize) -> String,
    ) {
        let (open, close) = (block.open.span, block.close.span);
        let one_line = !self.text[open.start..close.start].contains('\n');
        if one_line {
            let inner: Vec<String> = block
                .stmts
                .iter()
                .enumerate()
                .map(|(i, s)| render(&s.node, i))
                .collect();
            let code = if inner.is_empty() {
                format!("{head} {{}}")
            } else {
                format!("{head} {{ {} }}", inner.join(" "))
            };
            if code.len() <= WIDTH {
                self.line(0, start, close.end, code);
                return;
            }
        }
        self.line(0, start, open.end, format!("{head} {{"));
        for (i, s) in block.stmts.iter().enumerate() {
            self.line(1, s.span.start, s.span.end, render(&s.node, i));
        }
        self.flush_comments_before(close.start, 1);
        self.last_end = self.last_end.max(close.start);
        self.last_end = close.end;
        let comment = self.trailing_comment(close.end);
        self.lines.push(Line::Code {
            indent: 0,
            code: "}".into(),
            comment,
        });
    }

    fn finish(mut self) -> String {
        while matches!(self.lines.last(), Some(Line::Blank)) {
            self.lines.pop();
        }
        // Trailing comments of consecutive code lines line up.
        let mut out = String::new();
        let mut i = 0;
        while i < self.lines.len() {
            let mut j = i;
            let mut width = 0;
            let run_indent = match self.lines.get(i) {
                Some(Line::Code { indent, .. }) => *indent,
                _ => usize::MAX,
            };
            while let Some(Line::Code {
                indent,
                code,
                comment: Some(_),
            }) = self.lines.get(j)
            {
                if *indent != run_indent || code.ends_with('{') && j > i {
                    break;
                }
                width = width.max(indent * INDENT.len() + code.len());
                j += 1;
                if code.ends_with('{') {
                    break;
                }
            }
            if j > i {
                for line in &self.lines[i..j] {
                    if let Line::Code {
                        indent,
                        code,
                        comment: Some(c),
                    } = line
                    {
                        let left = format!("{}{code}", INDENT.repeat(*indent));
                        out.push_str(&format!("{left:<width$}  {c}\n"));
                    }
                }
                i = j;
                continue;
            }
            match &self.lines[i] {
                Line::Blank => out.push('\n'),
                Line::Code {
                    indent,
                    code,
                    comment,
                } => {
                    out.push_str(&INDENT.repeat(*indent));
                    out.push_str(code);
                    if let Some(c) = comment {
                        out.push_str("  ");
                        out.push_str(c);
                    }
                    out.push('\n');
                }
                Line::Comment { indent, text } => {
                    out.push_str(&INDENT.repeat(*indent));
                    out.push_str(text);
                    out.push('\n');
                }
            }
            i += 1;
        }
        out
    }
}

fn model_source(s: &ModelSource) -> String {
    match s {
        ModelSource::Zoo(name) => name.clone(),
        ModelSource::File(path) => quote(path),
    }
}

fn list(values: &[SValue]) -> String {
    values
        .iter()
        .map(|v| value(&v.node))
        .collect::<Vec<_>>()
        .join(", ")
}

fn num_list(l: &NumList) -> String {
    if l.bracketed {
        format!("[{}]", list(&l.values))
    } else {
        list(&l.values)
    }
}

fn unit(u: Unit, plural: bool) -> &'static str {
    match (u, plural) {
        (Unit::Epochs, true) => "epochs",
        (Unit::Epochs, false) => "epoch",
        (Unit::Steps, true) => "steps",
        (Unit::Steps, false) => "step",
    }
}

fn model_stmt(s: &ModelStmt) -> String {
    match s {
        ModelStmt::Input(dims) => format!("input [{}]", list(dims)),
        ModelStmt::Classes(v) => format!("classes {}", value(&v.node)),
        ModelStmt::Weights(v) => format!("weights {}", value(&v.node)),
    }
}

fn data_stmt(s: &DataStmt) -> String {
    match s {
        DataStmt::Batch(v) => format!("batch {}", value(&v.node)),
        DataStmt::EvalBatch(v) => format!("eval_batch {}", value(&v.node)),
        DataStmt::Limit(v) => format!("limit {}", value(&v.node)),
        DataStmt::Pad(v) => format!("pad {}", value(&v.node)),
        DataStmt::Normalize { mean, std } => {
            format!("normalize mean {} std {}", num_list(mean), num_list(std))
        }
        DataStmt::Augment(augs) => {
            let parts: Vec<String> = augs
                .iter()
                .map(|a| match &a.node {
                    Augment::Crop(v) => format!("crop {}", value(&v.node)),
                    Augment::Flip => "flip".to_owned(),
                })
                .collect();
            format!("augment {}", parts.join(" "))
        }
    }
}

fn train_stmt(s: &TrainStmt) -> String {
    match s {
        TrainStmt::Epochs(v) => format!("epochs {}", value(&v.node)),
        TrainStmt::Lr(v) => format!("lr {}", value(&v.node)),
        TrainStmt::Momentum(v) => format!("momentum {}", value(&v.node)),
        TrainStmt::WeightDecay(v) => format!("weight_decay {}", value(&v.node)),
        TrainStmt::Nesterov => "nesterov".to_owned(),
        TrainStmt::Batch(v) => format!("batch {}", value(&v.node)),
        TrainStmt::Optimizer { kind, args } => {
            let mut out = format!(
                "optimizer {}",
                match kind.node {
                    OptimizerKind::Sgd => "sgd",
                    OptimizerKind::Adam => "adam",
                    OptimizerKind::AdamW => "adamw",
                }
            );
            for a in args {
                out.push(' ');
                out.push_str(&train_stmt(&a.node));
            }
            out
        }
        TrainStmt::LrSchedule(s) => match &s.node {
            LrSchedule::Constant => "lr_schedule constant".to_owned(),
            LrSchedule::Cosine { min: None } => "lr_schedule cosine".to_owned(),
            LrSchedule::Cosine { min: Some(m) } => {
                format!("lr_schedule cosine min {}", value(&m.node))
            }
            LrSchedule::Step {
                every,
                unit: u,
                gamma,
            } => format!(
                "lr_schedule step every {} {} gamma {}",
                value(&every.node),
                unit(*u, true),
                value(&gamma.node)
            ),
        },
        TrainStmt::Warmup { length, unit: u } => {
            format!("warmup {} {}", value(&length.node), unit(*u, true))
        }
        TrainStmt::LrMult { pattern, factor } => {
            format!("lr_mult {} {}", value(&pattern.node), value(&factor.node))
        }
    }
}

fn granularity(g: Granularity) -> String {
    match g {
        Granularity::Weights => "weights".into(),
        Granularity::Channels => "channels".into(),
        Granularity::Blocks => "blocks".into(),
        Granularity::Heads => "heads".into(),
        Granularity::NM { n, m } => format!("{n}:{m}"),
    }
}

fn importance(i: Importance) -> &'static str {
    match i {
        Importance::L1 => "l1",
        Importance::L2 => "l2",
        Importance::Random => "random",
        Importance::BnScale => "bn_scale",
        Importance::Taylor => "taylor",
        Importance::Wanda => "wanda",
    }
}

fn target_word(w: TargetWord) -> &'static str {
    match w {
        TargetWord::Ratio => "ratio",
        TargetWord::Sparsity => "sparsity",
    }
}

fn rule_head(kw: &str, r: &LayerRule) -> String {
    format!("{kw} {}", value(&r.pattern.node))
}

fn rule_tail(r: &LayerRule) -> String {
    let cmp = match r.target.cmp {
        Cmp::Eq => "",
        Cmp::Le => "<= ",
        Cmp::Ge => ">= ",
    };
    format!(
        "{} {cmp}{}",
        target_word(r.target.word),
        value(&r.target.value.node)
    )
}

/// For each statement of a prune block, the width its rule head is padded
/// to: the widest head among the consecutive rules around it. A run ends at
/// any other statement, a blank line, or a comment that will be printed on
/// its own line between two rules (the first rule's trailing comment does
/// not count; a comment inside a rule counts, since it moves above it).
fn rule_widths(block: &Block<PruneStmt>, text: &str, comments: &[Spanned<String>]) -> Vec<usize> {
    let head = |s: &PruneStmt| match s {
        PruneStmt::Layer(r) => Some(rule_head("layer", r)),
        PruneStmt::Group(r) => Some(rule_head("group", r)),
        _ => None,
    };
    let joined = |prev: &Spanned<PruneStmt>, next: &Spanned<PruneStmt>| {
        let own_line_comment = comments.iter().any(|c| {
            let between = &text[prev.span.end..c.span.start.max(prev.span.end)];
            let trailing_of_prev = between.trim().is_empty() && !between.contains('\n');
            c.span.start >= prev.span.end && c.span.start < next.span.end && !trailing_of_prev
        });
        let gap = &text[prev.span.end..next.span.start.max(prev.span.end)];
        let blank = gap.split('\n').skip(1).collect::<Vec<_>>();
        let blank_line =
            blank.len() > 1 && blank[..blank.len() - 1].iter().any(|l| l.trim().is_empty());
        !own_line_comment && !blank_line
    };
    let mut widths = vec![0; block.stmts.len()];
    let mut i = 0;
    while i < block.stmts.len() {
        if head(&block.stmts[i].node).is_none() {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < block.stmts.len()
            && head(&block.stmts[j].node).is_some()
            && joined(&block.stmts[j - 1], &block.stmts[j])
        {
            j += 1;
        }
        let w = (i..j)
            .filter_map(|k| head(&block.stmts[k].node))
            .map(|h| h.len())
            .max()
            .unwrap_or(0);
        widths[i..j].iter_mut().for_each(|x| *x = w);
        i = j;
    }
    widths
}

fn prune_stmt(s: &PruneStmt, width: usize) -> String {
    match s {
        PruneStmt::Layer(r) => format!("{:<width$} {}", rule_head("layer", r), rule_tail(r)),
        PruneStmt::Group(r) => format!("{:<width$} {}", rule_head("group", r), rule_tail(r)),
        PruneStmt::Schedule(s) => format!("schedule {}", schedule(&s.node)),
        PruneStmt::Scope { kind, max, min } => {
            let mut out = format!(
                "scope {}",
                match kind {
                    ScopeKind::Local => "local",
                    ScopeKind::Global => "global",
                }
            );
            if let Some(m) = max {
                out.push_str(&format!(" max {}", value(&m.node)));
            }
            if let Some(m) = min {
                out.push_str(&format!(" min {}", value(&m.node)));
            }
            out
        }
        PruneStmt::RoundTo(v) => format!("round_to {}", value(&v.node)),
        PruneStmt::Ignore(pats) => format!("ignore {}", list(pats)),
        PruneStmt::Aggregate(a) => format!(
            "aggregate {}",
            match a {
                Aggregate::Sum => "sum",
                Aggregate::Mean => "mean",
                Aggregate::Max => "max",
            }
        ),
        PruneStmt::Batches(v) => format!("batches {}", value(&v.node)),
        PruneStmt::Penalty(v) => format!("penalty {}", value(&v.node)),
        PruneStmt::Target { word, value: v } => {
            format!("{} {}", target_word(*word), value(&v.node))
        }
        PruneStmt::Strict => "strict".to_owned(),
    }
}

fn schedule(s: &Schedule) -> String {
    match s {
        Schedule::Oneshot { at: None } => "oneshot".to_owned(),
        Schedule::Oneshot { at: Some((u, v)) } => {
            format!("oneshot at {} {}", unit(*u, false), value(&v.node))
        }
        Schedule::Iterative { rounds, to } => {
            let mut out = format!("iterative {} steps", value(&rounds.node));
            if let Some(t) = to {
                out.push_str(&format!(" to {}", value(&t.node)));
            }
            out
        }
        Schedule::Gradual {
            start,
            end,
            every,
            unit: u,
            from,
            until,
            curve,
        } => {
            let mut out = format!(
                "gradual {} -> {} every {} {}",
                value(&start.node),
                value(&end.node),
                value(&every.node),
                unit(*u, true)
            );
            for (kw, clause) in [("from", from), ("until", until)] {
                if let Some((cu, v)) = clause {
                    out.push_str(&format!(" {kw} {} {}", unit(*cu, false), value(&v.node)));
                }
            }
            if let Some(c) = curve {
                out.push_str(match c.node {
                    Curve::Linear => " curve linear",
                    Curve::Cubic => " curve cubic",
                    Curve::Exp => " curve exp",
                });
            }
            out
        }
    }
}

fn distill_stmt(s: &DistillStmt) -> String {
    match s {
        DistillStmt::Teacher(Teacher::Dense) => "teacher dense".to_owned(),
        DistillStmt::Teacher(Teacher::Model { source, weights }) => {
            let mut out = format!("teacher {}", model_source(&source.node));
            if let Some(w) = weights {
                out.push_str(&format!(" weights {}", value(&w.node)));
            }
            out
        }
        DistillStmt::Temperature(v) => format!("temperature {}", value(&v.node)),
        DistillStmt::Alpha(v) => format!("alpha {}", value(&v.node)),
    }
}
