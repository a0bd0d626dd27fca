//! User model descriptions in YAML, and every zoo model written out as one.
//!
//! ```yaml
//! name: my-cnn
//! input: [3, 32, 32]
//! layers:
//!   - {name: conv1, op: conv2d, in_channels: 3, out_channels: 16, kernel: 3, padding: 1, bias: false}
//!   - {name: bn1, op: batchnorm2d, features: 16}
//!   - {name: relu, op: relu}
//!   - {name: add, op: add, inputs: [relu, bn1], functional: true}
//! ```
//!
//! A layer reads the layer before it unless it names `inputs` (by name, by
//! `ref` for a module used twice, or `input` for the model input). The last
//! layer is the output unless `output` names another.

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, Node, Op};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: String,
    input: [usize; 3],
    layers: Vec<Layer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Layer {
    name: String,
    /// A unique handle when the same module is used more than once.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(flatten)]
    op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inputs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    functional: bool,
}

/// A model description that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum DescriptionError {
    /// Not valid YAML, or not the shape of a model description.
    #[error("{file}{at}: {message}")]
    #[diagnostic(code(prunex::model::bad_description), help("see the model description format in docs/models.md, or start from `prunex inspect resnet18 --yaml`"))]
    Yaml {
        /// The file.
        file: String,
        /// ":line:column", when known.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// A layer has a field its operation does not take (a misspelling would
    /// otherwise be ignored and the model silently wrong).
    #[error("{file}: layer `{layer}` ({op}) has no field `{field}`")]
    #[diagnostic(code(prunex::model::unknown_field), help("{help}"))]
    UnknownField {
        /// The file.
        file: String,
        /// The layer.
        layer: String,
        /// Its operation.
        op: String,
        /// The field as written.
        field: String,
        /// The closest field, or the fields it takes.
        help: String,
    },
    /// A size no model has (it would overflow the counts or exhaust memory
    /// while coupling channels).
    #[error("{file}: layer `{layer}` has {field} {value}, above the largest prunex takes ({})", crate::report::text::thousands(*max))]
    #[diagnostic(code(prunex::model::size_out_of_range), help("is it a typo? channels and features go up to 1,048,576, kernels, strides, padding and dilation up to 4,096"))]
    SizeOutOfRange {
        /// The file.
        file: String,
        /// The layer (or `input`).
        layer: String,
        /// The field.
        field: String,
        /// The value.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A layer reads a layer that does not exist (or comes later).
    #[error("{file}: layer `{layer}` reads `{input}`, which is not a layer before it")]
    #[diagnostic(code(prunex::model::unknown_input), help("{help}"))]
    UnknownInput {
        /// The file.
        file: String,
        /// The layer.
        layer: String,
        /// The missing reference.
        input: String,
        /// Closest names.
        help: String,
    },
}

/// Writes a graph as a model description.
pub fn to_yaml(g: &Graph) -> String {
    let refs = references(g);
    let layers = g
        .nodes
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, n)| Layer {
            name: n.name.clone(),
            reference: (refs[i] != n.name).then(|| refs[i].clone()),
            op: n.op.clone(),
            inputs: (n.inputs != [i - 1])
                .then(|| n.inputs.iter().map(|&j| refs[j].clone()).collect()),
            functional: n.functional,
        })
        .collect();
    let output = (g.output != g.nodes.len() - 1).then(|| refs[g.output].clone());
    crate::yaml::to_string(&ModelFile {
        name: g.name.clone(),
        input: g.input,
        layers,
        output,
    })
}

/// Unique handles: the name, or `name#k` for the k-th use of a repeated name.
fn references(g: &Graph) -> Vec<String> {
    let mut count = std::collections::HashMap::new();
    let totals = g
        .nodes
        .iter()
        .fold(std::collections::HashMap::new(), |mut m, n| {
            *m.entry(n.name.as_str()).or_insert(0) += 1;
            m
        });
    g.nodes
        .iter()
        .map(|n| {
            if totals[n.name.as_str()] == 1 {
                n.name.clone()
            } else {
                let k = count.entry(n.name.as_str()).or_insert(0);
                *k += 1;
                format!("{}#{k}", n.name)
            }
        })
        .collect()
}

/// Reads a model description. `file` names it in errors.
pub fn from_yaml(text: &str, file: &str) -> Result<Graph, DescriptionError> {
    let m: ModelFile = crate::yaml::from_str(text).map_err(|e| DescriptionError::Yaml {
        file: file.to_owned(),
        at: e
            .location
            .map(|(l, c)| format!(":{l}:{c}"))
            .unwrap_or_default(),
        // serde_yaml repeats the location at the end of its message.
        message: match e.message.rfind(" at line ") {
            Some(i) => e.message[..i].to_owned(),
            None => e.message,
        },
    })?;
    unknown_fields(text, &m, file)?;
    sizes_in_range(&m, file)?;
    let mut nodes = vec![Node {
        name: "input".into(),
        op: Op::Input,
        inputs: vec![],
        functional: true,
    }];
    let mut handles: Vec<(String, usize)> = vec![("input".into(), 0)];
    for (i, layer) in m.layers.into_iter().enumerate() {
        let id = i + 1;
        let inputs = match &layer.inputs {
            None => vec![id - 1],
            Some(names) => {
                let mut v = Vec::new();
                for name in names {
                    // The latest layer with that handle, as in Python code
                    // that rebinds a name.
                    match handles.iter().rev().find(|(h, _)| h == name) {
                        Some(&(_, j)) => v.push(j),
                        None => {
                            let known: Vec<&str> =
                                handles.iter().map(|(h, _)| h.as_str()).collect();
                            let help = match crate::syntax::keywords::closest(name, &known) {
                                Some(best) => format!("did you mean `{best}`?"),
                                None => {
                                    "inputs name earlier layers by `name` (or `ref`), or `input`"
                                        .to_owned()
                                }
                            };
                            return Err(DescriptionError::UnknownInput {
                                file: file.to_owned(),
                                layer: layer.name.clone(),
                                input: name.clone(),
                                help,
                            });
                        }
                    }
                }
                v
            }
        };
        handles.push((
            layer
                .reference
                .clone()
                .unwrap_or_else(|| layer.name.clone()),
            id,
        ));
        if layer.reference.is_some() {
            handles.push((layer.name.clone(), id));
        }
        nodes.push(Node {
            name: layer.name,
            op: layer.op,
            inputs,
            functional: layer.functional,
        });
    }
    let output = match &m.output {
        None => nodes.len() - 1,
        Some(o) => match handles.iter().rev().find(|(h, _)| h == o) {
            Some(&(_, j)) => j,
            None => {
                return Err(DescriptionError::UnknownInput {
                    file: file.to_owned(),
                    layer: "output".into(),
                    input: o.clone(),
                    help: "`output` names the layer whose result is the model's output".into(),
                })
            }
        },
    };
    Ok(Graph {
        name: m.name,
        input: m.input,
        nodes,
        output,
    })
}

/// Refuses layer fields the layer's operation does not take. Serde cannot
/// (an operation's fields are flattened into the layer), so the fields a
/// layer may have are read back from the layer as parsed: its own and every
/// field of its operation.
fn unknown_fields(text: &str, m: &ModelFile, file: &str) -> Result<(), DescriptionError> {
    let raw: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
    let Some(written) = raw.get("layers").and_then(|l| l.as_sequence()) else {
        return Ok(());
    };
    for (layer, written) in m.layers.iter().zip(written) {
        let Some(written) = written.as_mapping() else {
            continue;
        };
        let mut known: Vec<String> = ["name", "ref", "op", "inputs", "functional"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Ok(serde_yaml::Value::Mapping(fields)) = serde_yaml::to_value(&layer.op) {
            known.extend(fields.keys().filter_map(|k| k.as_str().map(str::to_owned)));
        }
        for key in written.keys() {
            let field = match key.as_str() {
                Some(k) => k.to_owned(),
                None => format!("{key:?}"),
            };
            if known.contains(&field) {
                continue;
            }
            let names: Vec<&str> = known.iter().map(String::as_str).collect();
            let help = match crate::syntax::keywords::closest(&field, &names) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!(
                    "a `{}` layer takes {}",
                    layer.op.kind(),
                    crate::syntax::keywords::list(&names)
                ),
            };
            return Err(DescriptionError::UnknownField {
                file: file.to_owned(),
                layer: layer.name.clone(),
                op: layer.op.kind().to_owned(),
                field,
                help,
            });
        }
    }
    Ok(())
}

/// Channels and features, and window sizes, past which a description is
/// refused: shape inference saturates its counts, but coupling holds one
/// entry per channel.
const MAX_CHANNELS: u64 = 1 << 20;
const MAX_WINDOW: u64 = 1 << 12;

fn sizes_in_range(m: &ModelFile, file: &str) -> Result<(), DescriptionError> {
    let check = |layer: &str, field: &str, value: u64| {
        let max = match field {
            "kernel" | "stride" | "padding" | "dilation" => MAX_WINDOW,
            _ => MAX_CHANNELS,
        };
        if value > max {
            return Err(DescriptionError::SizeOutOfRange {
                file: file.to_owned(),
                layer: layer.to_owned(),
                field: field.to_owned(),
                value,
                max,
            });
        }
        Ok(())
    };
    for (i, &d) in m.input.iter().enumerate() {
        check("input", ["channels", "height", "width"][i], d as u64)?;
    }
    for layer in &m.layers {
        let Ok(serde_yaml::Value::Mapping(fields)) = serde_yaml::to_value(&layer.op) else {
            continue;
        };
        for (k, v) in fields {
            let field = k.as_str().unwrap_or_default();
            let values: Vec<u64> = match &v {
                serde_yaml::Value::Number(n) => n.as_u64().into_iter().collect(),
                serde_yaml::Value::Sequence(s) => s.iter().filter_map(|x| x.as_u64()).collect(),
                _ => Vec::new(),
            };
            for value in values {
                check(&layer.name, field, value)?;
            }
        }
    }
    Ok(())
}
