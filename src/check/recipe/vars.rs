//! Variables: `let` definitions, `--set` overrides, and literals looked up
//! through them.

use super::resolve::Resolver;
use crate::check::diag::CheckError;
use crate::syntax::ast::{Item, SValue, Value};
use crate::syntax::keywords;
use crate::syntax::{Span, UnresolvedRecipe};

/// A `--set name=value` override: of a `let` variable, or of a setting
/// (`seed`, `device`, `export`, `finetune.epochs`, `data.batch`,
/// `prune.1.ratio`, …).
#[derive(Clone, Debug)]
pub struct Override {
    /// Variable name, or the setting's dotted path.
    pub name: String,
    /// Literal value.
    pub value: Value,
    /// The value as written.
    pub raw: String,
    /// The whole argument, as the plan and the run report show it.
    pub arg: String,
}

/// Parses `name=value`.
pub fn parse_override(text: &str) -> Result<Override, Box<CheckError>> {
    let bad = |reason: &str| {
        Box::new(CheckError::BadOverride {
            text: text.to_owned(),
            reason: reason.to_owned(),
        })
    };
    let (name, raw) = text.split_once('=').ok_or_else(|| bad("there is no `=`"))?;
    let name = name.trim().trim_start_matches('$');
    let ident = |w: &str| {
        w.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    // `prune.2.ratio`: words, and the stage's number.
    let ident_ok = name.split('.').enumerate().all(|(i, w)| {
        ident(w) || (i > 0 && !w.is_empty() && w.chars().all(|c| c.is_ascii_digit()))
    });
    if !ident_ok {
        return Err(bad(
            "the name must be a variable (letters, digits and `_`, starting with a letter) or a setting such as `finetune.epochs`",
        ));
    }
    let raw = raw.trim();
    let value = if let Some(p) = raw.strip_suffix('%') {
        match p.parse::<f64>() {
            Ok(v) if v.is_finite() => Value::Percent {
                value: v / 100.0,
                text: p.to_owned(),
            },
            _ => return Err(bad("a value ending in `%` must be a number before it")),
        }
    } else if let Ok(v) = raw.parse::<f64>() {
        if !v.is_finite() {
            return Err(bad("the number is not finite"));
        }
        Value::Number {
            value: v,
            text: raw.to_owned(),
        }
    } else {
        let unquoted = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        Value::Str(unquoted.to_owned())
    };
    Ok(Override {
        name: name.to_owned(),
        value,
        raw: raw.to_owned(),
        arg: text.trim().to_owned(),
    })
}

pub(super) struct Var {
    pub(super) value: Value,
    pub(super) span: Option<Span>,
    pub(super) used: bool,
    pub(super) from_set: bool,
}

impl Resolver<'_> {
    pub(super) fn collect_variables(&mut self, u: &UnresolvedRecipe, overrides: &[Override]) {
        for item in &u.items {
            if let Item::Let { name, value } = &item.node {
                if let Some(prev) = self.vars.get(&name.node) {
                    let first = prev.span.map(|s| self.place(s)).unwrap_or_default();
                    self.errors.push(CheckError::DuplicateVariable {
                        src: self.src(name.span),
                        span: name.span.source_span(),
                        name: name.node.clone(),
                        first,
                    });
                    continue;
                }
                self.vars.insert(
                    name.node.clone(),
                    Var {
                        value: value.node.clone(),
                        span: Some(name.span),
                        used: false,
                        from_set: false,
                    },
                );
            }
        }
        for o in overrides {
            match self.vars.get_mut(&o.name) {
                Some(var) => {
                    var.value = o.value.clone();
                    var.from_set = true;
                }
                None => {
                    let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                    let help = match keywords::closest(&o.name, &names) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None if names.is_empty() => {
                            "the recipe defines no variables; add `let NAME = VALUE` to it"
                                .to_owned()
                        }
                        None => format!("the recipe defines {}", keywords::list(&names)),
                    };
                    self.errors.push(CheckError::UnknownOverride {
                        name: o.name.clone(),
                        help,
                    });
                }
            }
        }
    }

    /// The literal behind a value, with a note on where a variable got it.
    pub(super) fn lit(&mut self, v: &SValue) -> Option<(Value, Option<String>)> {
        let found = self.lit_inner(v);
        self.origin = found.as_ref().and_then(|(_, o)| o.clone());
        found
    }

    pub(super) fn lit_inner(&mut self, v: &SValue) -> Option<(Value, Option<String>)> {
        match &v.node {
            Value::Var(name) => {
                if let Some(var) = self.vars.get_mut(name) {
                    var.used = true;
                    let (value, from_set, span) = (var.value.clone(), var.from_set, var.span);
                    let origin = if from_set {
                        format!(
                            "`${name}` is {} from `--set`",
                            crate::syntax::fmt::value(&value)
                        )
                    } else {
                        let at = span.map(|s| self.place(s)).unwrap_or_default();
                        format!(
                            "`${name}` is {} (defined at {at})",
                            crate::syntax::fmt::value(&value)
                        )
                    };
                    return Some((value, Some(origin)));
                }
                let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                let help = match keywords::closest(name, &names) {
                    Some(best) => format!("did you mean `${best}`?"),
                    None => format!("define it with `let {name} = VALUE` before using it, or pass `--set {name}=VALUE`"),
                };
                self.errors.push(CheckError::UndefinedVariable {
                    src: self.src(v.span),
                    span: v.span.source_span(),
                    name: name.clone(),
                    help,
                });
                None
            }
            other => Some((other.clone(), None)),
        }
    }
}
