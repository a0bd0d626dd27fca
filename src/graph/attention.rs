//! Where an attention layer keeps its projections, and which of their rows
//! and columns belong to which heads: what shapes, counting, coupling,
//! importance, surgery, the executor and the ONNX writer share.
//!
//! Three layouts, by the `state_dict` keys PyTorch code uses:
//! `nn.MultiheadAttention`'s packed `in_proj_weight` and `out_proj`
//! (torchvision's ViTs), timm's packed `qkv` and `proj` linear layers, and
//! separate `q_proj`, `k_proj`, `v_proj`, `o_proj` linear layers (Hugging
//! Face), which alone may have fewer key/value heads than query heads
//! (grouped-query attention: query head h reads key/value head
//! `h / (heads / kv_heads)`).
//!
//! Heads are pruned by key/value group: removing group g removes its key
//! and value head and the `heads / kv_heads` query heads that read it
//! (one head, without grouped-query attention), so every remaining query
//! head keeps its key and value head.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Op;

/// The `state_dict` layout of an attention layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionStyle {
    /// `nn.MultiheadAttention`: `in_proj_weight` `[3·A, E]` (queries,
    /// keys, values), `in_proj_bias`, `out_proj.weight` `[E, A]`,
    /// `out_proj.bias`.
    #[default]
    Torch,
    /// timm's `Attention`: `qkv` `[3·A, E]` and `proj` `[E, A]` linear
    /// layers.
    Timm,
    /// `q_proj` `[A, E]`, `k_proj` and `v_proj` `[kv_heads·d, E]`,
    /// `o_proj` `[E, A]` linear layers.
    Separate,
}

impl AttentionStyle {
    /// Whether this is the default layout (left out of model descriptions).
    pub fn is_torch(&self) -> bool {
        *self == AttentionStyle::Torch
    }
}

/// What a projection's rows hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Queries, keys and values, stacked.
    Qkv,
    /// Queries.
    Q,
    /// Keys.
    K,
    /// Values.
    V,
    /// The output projection (its columns are the heads).
    Out,
}

/// One projection: its weight's and bias's `state_dict` suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Projection {
    /// The weight's suffix.
    pub weight: &'static str,
    /// The bias's suffix.
    pub bias: &'static str,
    /// What its rows hold.
    pub part: Part,
}

const fn proj(weight: &'static str, bias: &'static str, part: Part) -> Projection {
    Projection { weight, bias, part }
}

const TORCH: [Projection; 2] = [
    proj("in_proj_weight", "in_proj_bias", Part::Qkv),
    proj("out_proj.weight", "out_proj.bias", Part::Out),
];
const TIMM: [Projection; 2] = [
    proj("qkv.weight", "qkv.bias", Part::Qkv),
    proj("proj.weight", "proj.bias", Part::Out),
];
const SEPARATE: [Projection; 4] = [
    proj("q_proj.weight", "q_proj.bias", Part::Q),
    proj("k_proj.weight", "k_proj.bias", Part::K),
    proj("v_proj.weight", "v_proj.bias", Part::V),
    proj("o_proj.weight", "o_proj.bias", Part::Out),
];

/// An attention layer's sizes and layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Features of the tokens it reads and writes.
    pub embed: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` without grouped-query attention).
    pub kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Whether the projections have biases.
    pub bias: bool,
    /// Where the projections are.
    pub style: AttentionStyle,
}

impl Layout {
    /// The layout of an attention op, or `None` for any other op.
    pub fn of(op: &Op) -> Option<Layout> {
        match *op {
            Op::MultiheadAttention {
                embed,
                heads,
                head_dim,
                bias,
                kv_heads,
                style,
            } => Some(Layout {
                embed,
                heads,
                kv_heads: kv_heads.unwrap_or(heads),
                head_dim,
                bias,
                style,
            }),
            _ => None,
        }
    }

    /// The projections, in `state_dict` order.
    pub fn projections(&self) -> &'static [Projection] {
        match self.style {
            AttentionStyle::Torch => &TORCH,
            AttentionStyle::Timm => &TIMM,
            AttentionStyle::Separate => &SEPARATE,
        }
    }

    /// The output projection.
    pub fn out(&self) -> Projection {
        *self
            .projections()
            .last()
            .expect("every layout ends with its output projection")
    }

    /// The attention width: query heads × head_dim.
    pub fn width(&self) -> usize {
        self.heads.saturating_mul(self.head_dim)
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        (self.heads / self.kv_heads.max(1)).max(1)
    }

    /// A projection's weight shape `[rows, columns]`.
    pub fn shape(&self, p: &Projection) -> [usize; 2] {
        let (a, kv) = (self.width(), self.kv_heads.saturating_mul(self.head_dim));
        match p.part {
            Part::Qkv => [a.saturating_mul(3), self.embed],
            Part::Q => [a, self.embed],
            Part::K | Part::V => [kv, self.embed],
            Part::Out => [self.embed, a],
        }
    }

    /// The key/value group of row `r` of a projection that reads the
    /// tokens, or of column `r` of the output projection.
    pub fn group_of(&self, p: &Projection, r: usize) -> usize {
        let d = self.head_dim.max(1);
        match p.part {
            Part::Qkv => (r % self.width().max(1)) / d / self.group(),
            Part::Q | Part::Out => r / d / self.group(),
            Part::K | Part::V => r / d,
        }
    }

    /// The rows of a reading projection (or the columns of the output
    /// projection) that belong to the key/value groups `groups`.
    pub fn indices(&self, p: &Projection, groups: &BTreeSet<usize>) -> BTreeSet<usize> {
        let n = match p.part {
            Part::Out => self.shape(p)[1],
            _ => self.shape(p)[0],
        };
        (0..n)
            .filter(|&r| groups.contains(&self.group_of(p, r)))
            .collect()
    }

    /// Whether the sizes fit together (positive, whole groups, packed
    /// layouts without grouped-query attention); what is wrong otherwise.
    pub fn check(&self) -> Result<(), String> {
        if self.heads == 0 || self.head_dim == 0 || self.kv_heads == 0 {
            return Err(format!(
                "it has {} heads ({} key/value heads) of {} features; all must be positive",
                self.heads, self.kv_heads, self.head_dim
            ));
        }
        if self.heads % self.kv_heads != 0 {
            return Err(format!(
                "its {} key/value heads do not divide its {} query heads",
                self.kv_heads, self.heads
            ));
        }
        if self.kv_heads != self.heads && self.style != AttentionStyle::Separate {
            return Err(
                "grouped-query attention (kv_heads below heads) needs separate q/k/v projections (style: separate)".into(),
            );
        }
        Ok(())
    }

    /// Parameters.
    pub fn params(&self) -> u64 {
        self.projections()
            .iter()
            .map(|p| {
                let [r, c] = self.shape(p);
                let bias = if self.bias { r as u64 } else { 0 };
                (r as u64).saturating_mul(c as u64).saturating_add(bias)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// MACs for `t` tokens, as Torch-Pruning's counter counts
    /// `nn.MultiheadAttention`: the query scaling, the projections and
    /// their biases, per head the two products and the softmax, and the
    /// output projection with a bias at every token (counted even
    /// without one); with the attention width A and the key/value width
    /// apart from the embedding width E (all equal in PyTorch's class).
    pub fn macs(&self, t: usize) -> u64 {
        let (t64, e) = (t as u64, self.embed as u64);
        let a = self.width() as u64;
        let reads = a.saturating_add((2 * self.kv_heads * self.head_dim) as u64);
        let tt = t64.saturating_mul(t64);
        let b = u64::from(self.bias);
        [
            t64.saturating_mul(a),
            t64.saturating_mul(e).saturating_mul(reads),
            t64.saturating_mul(reads).saturating_mul(b),
            (self.heads as u64).saturating_mul(
                tt.saturating_mul(2 * self.head_dim as u64)
                    .saturating_add(tt),
            ),
            t64.saturating_mul(e).saturating_mul(a.saturating_add(1)),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }
}
