//! `prunex inspect`: a model's layers, output shapes, parameters and MACs.

use std::path::{Path, PathBuf};

use miette::Report;
use tabled::settings::{object::Columns, Alignment, Style};
use tabled::{Table, Tabled};

use super::{color, FAILED, OK};
use crate::diagnostics::render_human;
use crate::graph::{analyze, Analysis, Graph};
use crate::models;

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "layer")]
    name: String,
    #[tabled(rename = "op")]
    op: String,
    #[tabled(rename = "output")]
    output: String,
    #[tabled(rename = "params")]
    params: String,
    #[tabled(rename = "MACs")]
    macs: String,
}

pub use crate::report::text::{si, thousands};

/// The layer table of a graph (modules and the functional operations that
/// shape the data flow; the input node is left out).
pub fn table(g: &Graph, a: &Analysis) -> String {
    let mut rows: Vec<Row> = g
        .nodes
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, n)| Row {
            name: if n.functional {
                format!("({})", n.name)
            } else {
                n.name.clone()
            },
            op: n.op.kind().to_owned(),
            output: a.shapes[i].to_string(),
            params: if a.params[i] > 0 {
                thousands(a.params[i])
            } else {
                String::new()
            },
            macs: if a.macs[i] > 0 {
                thousands(a.macs[i])
            } else {
                String::new()
            },
        })
        .collect();
    rows.push(Row {
        name: "total".into(),
        op: String::new(),
        output: a.shapes[g.output].to_string(),
        params: format!("{} ({})", thousands(a.total_params), si(a.total_params)),
        macs: format!("{} ({})", thousands(a.total_macs), si(a.total_macs)),
    });
    let mut t = Table::new(rows);
    t.with(Style::sharp())
        .modify(Columns::new(3..5), Alignment::right());
    t.to_string()
}

#[derive(Tabled)]
struct GroupRow {
    #[tabled(rename = "group")]
    id: usize,
    #[tabled(rename = "channels")]
    channels: String,
    #[tabled(rename = "layers that lose output channels")]
    producers: String,
    #[tabled(rename = "coupled by")]
    couplers: String,
    #[tabled(rename = "prunable")]
    frozen: String,
}

/// Lists names, shortening long runs: `a, b, c … (12 layers)`.
fn names(g: &Graph, ids: &[usize], max: usize) -> String {
    let all: Vec<&str> = ids.iter().map(|&i| g.nodes[i].name.as_str()).collect();
    if all.len() <= max {
        all.join(", ")
    } else {
        format!(
            "{} … {} ({} layers)",
            all[..max - 1].join(", "),
            all[all.len() - 1],
            all.len()
        )
    }
}

/// The coupled groups of a graph as a table.
pub fn groups_table(g: &Graph, c: &crate::graph::Coupling) -> String {
    let rows: Vec<GroupRow> = c
        .groups
        .iter()
        .map(|grp| GroupRow {
            id: grp.id,
            channels: match grp.kind {
                crate::graph::GroupKind::Channels => {
                    super::plan::channel_count(grp.channels.len(), grp.unit())
                }
                crate::graph::GroupKind::Heads => {
                    match crate::graph::AttentionLayout::of(&g.nodes[grp.producers[0]].op) {
                        Some(l) if l.kv_heads != l.heads => {
                            format!("{} key/value heads ({} heads)", grp.channels.len(), l.heads)
                        }
                        _ => format!("{} heads", grp.channels.len()),
                    }
                }
            },
            producers: names(g, &grp.producers, 4),
            couplers: names(g, &grp.couplers, 3),
            frozen: match &grp.frozen {
                None => "yes".into(),
                Some(why) => format!("no: {why}"),
            },
        })
        .collect();
    let mut t = Table::new(rows);
    t.with(Style::sharp());
    t.to_string()
}

/// Parses `C,H,W`.
pub fn parse_input(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let nums: Result<Vec<usize>, _> = parts.iter().map(|p| p.parse::<usize>()).collect();
    match nums {
        Ok(v) if v.len() == 3 && v.iter().all(|&d| d > 0) => Ok([v[0], v[1], v[2]]),
        _ => Err(format!(
            "`{s}` is not an input shape; write C,H,W with positive numbers, e.g. 3,224,224"
        )),
    }
}

/// Runs the subcommand.
pub fn run(
    model: &str,
    input: Option<[usize; 3]>,
    classes: Option<usize>,
    weights: Option<PathBuf>,
    yaml: bool,
    groups: bool,
) -> u8 {
    let color = color();
    // An ONNX file also says what its import recovered or could not.
    let loaded = if models::onnx::is_onnx(model) {
        models::onnx::import(Path::new(model), &crate::syntax::FsLoader)
            .map_err(models::ModelError::from)
            .map(|i| {
                let mut g = i.graph;
                if let Some(input) = input {
                    g.input = input;
                }
                (g, Some((i.notes, i.sources.len())))
            })
    } else {
        models::load(model, input, classes).map(|g| (g, None))
    };
    let (g, imported) = match loaded {
        Ok(g) => g,
        Err(e) => {
            eprint!("{}", render_human(&Report::new(e), color));
            return FAILED;
        }
    };
    if yaml {
        print!("{}", models::yaml::to_yaml(&g));
        return OK;
    }
    let a = match analyze(&g, g.input) {
        Ok(a) => a,
        Err(e) => {
            eprint!("{}", render_human(&Report::new(e), color));
            return FAILED;
        }
    };
    let head = format!(
        "{} · input [{}, {}, {}]",
        g.name, g.input[0], g.input[1], g.input[2]
    );
    if groups {
        return match crate::graph::coupling(&g) {
            Ok(c) => {
                println!("{head} · {} coupled groups", c.groups.len());
                println!("{}", groups_table(&g, &c));
                println!("Each group loses the same channels in every layer listed, in the BatchNorms, LayerNorms and layer scales that follow, and in the input channels of the layers that read them.");
                if c.groups
                    .iter()
                    .any(|grp| grp.kind == crate::graph::GroupKind::Heads)
                {
                    println!("A group of heads loses whole heads of its attention layer (`prune heads`): their query, key and value rows and their columns of the output projection; with grouped-query attention, a key/value head with the query heads it serves.");
                }
                OK
            }
            Err(e) => {
                eprint!("{}", render_human(&Report::new(e), color));
                FAILED
            }
        };
    }
    println!("{head}");
    println!("{}", table(&g, &a));
    println!("MACs per sample, counted as Torch-Pruning's counter does (see docs/models.md); names in parentheses are functional operations, not modules.");
    if let Some((notes, params)) = imported {
        for n in &notes {
            println!("note: {n}");
        }
        println!("weights: {params} state_dict tensors from the file's initializers");
    }
    if let Some(path) = weights {
        match models::weights::load_for(&path, &g) {
            Ok((sd, notes)) => {
                for n in notes {
                    println!("note: {n}");
                }
                println!(
                    "weights {}: {} tensors, all keys and shapes fit",
                    path.display(),
                    sd.len()
                );
            }
            Err(e) => {
                eprint!("{}", render_human(&Report::new(e), color));
                return FAILED;
            }
        }
    }
    OK
}
