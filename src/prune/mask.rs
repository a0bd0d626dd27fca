//! Masks for unstructured (`weights`) and semi-structured (`N:M`) pruning.
//! A mask keeps the shape: zeros are written into the weights and re-applied
//! after every optimizer step, so they stay zero through fine-tuning. Zeros
//! do not make dense kernels faster; channel pruning does.

use std::collections::BTreeMap;

use crate::tensor::{StateDict, TensorData};

/// Per weight key, which entries are kept.
pub type Masks = BTreeMap<String, Vec<bool>>;

/// Per weight key, the norm of each of its input features (a linear
/// layer's input features, a convolution's input channels, an attention
/// projection's inputs) over calibration data, as the executor measures it.
pub type Activations = BTreeMap<String, Vec<f64>>;

/// The weights of `keys` scaled by the norm of the input feature each
/// multiplies (Wanda's |W|·‖X‖): entry `[o, i, …]` by `norms[i]`. A layer
/// without measured activations keeps its magnitudes.
pub fn wanda_scores(sd: &StateDict, keys: &[String], acts: Option<&Activations>) -> StateDict {
    keys.iter()
        .filter_map(|k| Some((k, sd.get(k)?)))
        .map(|(k, t)| {
            let mut t = t.clone();
            let norms = acts.and_then(|a| a.get(k));
            if let (TensorData::F32(w), Some(norms)) = (&mut t.data, norms) {
                let cols = t.shape.get(1).copied().unwrap_or(1);
                let inner: usize = t.shape.iter().skip(2).product();
                if norms.len() == cols {
                    for (j, x) in w.iter_mut().enumerate() {
                        *x = x.abs() * norms[(j / inner.max(1)) % cols] as f32;
                    }
                }
            }
            (k.clone(), t)
        })
        .collect()
}

fn magnitudes(sd: &StateDict, key: &str) -> Vec<f32> {
    sd[key]
        .as_f32()
        .expect("weights are floating point")
        .iter()
        .map(|x| x.abs())
        .collect()
}

/// Keeps all but the `remove` smallest magnitudes (ties: lowest index first).
fn keep_top(mag: &[f32], remove: usize) -> Vec<bool> {
    let mut idx: Vec<usize> = (0..mag.len()).collect();
    idx.sort_by(|&a, &b| {
        mag[a]
            .partial_cmp(&mag[b])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    let mut keep = vec![true; mag.len()];
    for &i in idx.iter().take(remove) {
        keep[i] = false;
    }
    keep
}

/// Layer by layer: each weight key loses exactly `round(n · sparsity)` of
/// its smallest-magnitude entries.
pub fn local(sd: &StateDict, targets: &BTreeMap<String, f64>) -> Masks {
    targets
        .iter()
        .map(|(key, &s)| {
            let mag = magnitudes(sd, key);
            let remove = ((mag.len() as f64) * s).round() as usize;
            (key.clone(), keep_top(&mag, remove))
        })
        .collect()
}

/// Layer by layer, each output row against itself (Wanda's comparison
/// group): a weight key loses `round(n · sparsity)` entries in all, spread
/// over its rows as evenly as whole numbers allow (the first rows lose one
/// more), each row its smallest scores.
pub fn local_rows(sd: &StateDict, targets: &BTreeMap<String, f64>) -> Masks {
    targets
        .iter()
        .map(|(key, &s)| {
            let t = &sd[key];
            let mag = magnitudes(sd, key);
            let rows = t.shape.first().copied().unwrap_or(1).max(1);
            let per = mag.len() / rows;
            let remove = ((mag.len() as f64) * s).round() as usize;
            let keep: Vec<bool> = mag
                .chunks(per.max(1))
                .enumerate()
                .flat_map(|(r, row)| keep_top(row, remove / rows + usize::from(r < remove % rows)))
                .collect();
            (key.clone(), keep)
        })
        .collect()
}

/// One threshold across all listed weights (`torch.nn.utils.prune.global_unstructured`):
/// exactly `round(N · sparsity)` entries of the N in total are removed.
pub fn global(sd: &StateDict, keys: &[String], sparsity: f64) -> Masks {
    let mut all: Vec<(f32, usize, usize)> = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        all.extend(
            magnitudes(sd, key)
                .into_iter()
                .enumerate()
                .map(|(i, m)| (m, k, i)),
        );
    }
    let remove = ((all.len() as f64) * sparsity).round() as usize;
    all.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then((a.1, a.2).cmp(&(b.1, b.2)))
    });
    let mut masks: Masks = keys
        .iter()
        .map(|k| (k.clone(), vec![true; sd[k].data.len()]))
        .collect();
    for &(_, k, i) in all.iter().take(remove) {
        masks.get_mut(&keys[k]).expect("listed")[i] = false;
    }
    masks
}

/// N:M along input channels: in every run of `m` consecutive input
/// channels at each output channel and kernel position, the `n` largest
/// magnitudes stay (NVIDIA's 2:4 layout). Layers whose input channels are
/// not a multiple of `m` are returned in the second list, left dense.
pub fn n_m(sd: &StateDict, keys: &[String], n: usize, m: usize) -> (Masks, Vec<String>) {
    let mut masks = Masks::new();
    let mut skipped = Vec::new();
    for key in keys {
        let t = &sd[key];
        let (out, inp) = (t.shape[0], t.shape.get(1).copied().unwrap_or(1));
        let inner: usize = t.shape.iter().skip(2).product();
        if inp % m != 0 {
            skipped.push(key.clone());
            continue;
        }
        let mag = magnitudes(sd, key);
        let mut keep = vec![false; mag.len()];
        for o in 0..out {
            for k in 0..inner {
                for start in (0..inp).step_by(m) {
                    let mut run: Vec<usize> = (start..start + m)
                        .map(|i| (o * inp + i) * inner + k)
                        .collect();
                    run.sort_by(|&a, &b| {
                        mag[b]
                            .partial_cmp(&mag[a])
                            .unwrap_or(std::cmp::Ordering::Equal)
                            .then(a.cmp(&b))
                    });
                    for &i in run.iter().take(n) {
                        keep[i] = true;
                    }
                }
            }
        }
        masks.insert(key.clone(), keep);
    }
    (masks, skipped)
}

/// Writes zeros where masks say so.
pub fn apply(sd: &mut StateDict, masks: &Masks) {
    for (key, keep) in masks {
        if let Some(crate::tensor::TensorData::F32(v)) = sd.get_mut(key).map(|t| &mut t.data) {
            for (x, &k) in v.iter_mut().zip(keep) {
                if !k {
                    *x = 0.0;
                }
            }
        }
    }
}

/// Fraction of masked-out entries over all masks.
pub fn sparsity(masks: &Masks) -> f64 {
    let total: usize = masks.values().map(Vec::len).sum();
    let zero: usize = masks
        .values()
        .map(|m| m.iter().filter(|k| !**k).count())
        .sum();
    if total == 0 {
        0.0
    } else {
        zero as f64 / total as f64
    }
}
