//! The units a run is a chain of (pretraining epochs, the dense
//! evaluation, the pruning before fine-tuning, fine-tuning epochs, the final
//! measurement), and how each is saved to and restored from the stage cache.

use std::collections::BTreeMap;
use std::path::Path;

use prunex::cache::{Cache, Key};
use prunex::graph::Graph;
use prunex::models::weights;
use prunex::report::{EpochReport, Timings};
use prunex::tensor::StateDict;
use serde::{Deserialize, Serialize};

use super::session::Session;
use super::RunError;
use crate::exec::convert::{from_plain, to_plain};
use crate::exec::model::TorchModel;

/// Where a unit stopped inside an epoch (Ctrl-C), to continue from there.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Partial {
    /// Steps done.
    pub(super) step: usize,
    pub(super) loss_sum: f64,
    pub(super) right: i64,
    pub(super) seen: i64,
    pub(super) seconds: f64,
}

/// What a snapshot keeps besides tensors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) label: String,
    pub(super) epochs: Vec<EpochReport>,
    pub(super) dense_accuracy: Option<f64>,
    pub(super) pruned_accuracy: Option<f64>,
    pub(super) final_accuracy: Option<f64>,
    pub(super) timings: Timings,
    pub(super) teacher: Option<(f64, f64)>,
    pub(super) partial: Option<Partial>,
}

/// The model a cache entry holds: its graph and weights.
pub(super) fn model_of(dir: &Path) -> Option<(Graph, StateDict)> {
    let text = std::fs::read_to_string(dir.join("model.yaml")).ok()?;
    let g = prunex::models::yaml::from_yaml(&text, "model.yaml").ok()?;
    let sd = weights::read_safetensors(&std::fs::read(dir.join("model.safetensors")).ok()?).ok()?;
    Some((g, sd))
}

/// A 64-bit seed from a key.
pub(super) fn seed_of(key: &Key) -> u64 {
    u64::from_str_radix(&key.0[..16], 16).unwrap_or(0)
}

impl Session {
    /// Saves everything the run needs to continue from here.
    pub(super) fn save(
        &self,
        cache: &Cache,
        key: &Key,
        label: &str,
        partial: Option<Partial>,
    ) -> Result<(), RunError> {
        let mut files = vec![
            (
                "model.yaml",
                prunex::models::yaml::to_yaml(&self.model.graph).into_bytes(),
            ),
            (
                "model.safetensors",
                weights::to_safetensors(&self.model.state_dict()?),
            ),
        ];
        if !self.masks.is_empty() {
            let mut sd = StateDict::new();
            for (k, m) in &self.masks {
                sd.insert(k.clone(), to_plain(m)?);
            }
            files.push(("masks.safetensors", weights::to_safetensors(&sd)));
        }
        if let Some(opt) = &self.opt {
            files.push((
                "optim.safetensors",
                weights::to_safetensors(&opt.state_dict()?),
            ));
        } else if let Some(sd) = &self.pending_opt {
            files.push(("optim.safetensors", weights::to_safetensors(sd)));
        }
        if let Some((t, _, _)) = &self.teacher {
            files.push((
                "teacher.yaml",
                prunex::models::yaml::to_yaml(&t.graph).into_bytes(),
            ));
            files.push((
                "teacher.safetensors",
                weights::to_safetensors(&t.state_dict()?),
            ));
        }
        let meta = Meta {
            label: label.into(),
            epochs: self.epochs.clone(),
            dense_accuracy: self.dense_accuracy,
            pruned_accuracy: self.pruned_accuracy,
            final_accuracy: self.final_accuracy,
            timings: self.timings.clone(),
            teacher: self.teacher.as_ref().map(|(_, t, a)| (*t, *a)),
            partial,
        };
        let meta = serde_json::to_vec_pretty(&meta).expect("meta serializes");
        cache.put(key, &meta, &files).map_err(|e| RunError::Write {
            path: cache.dir.join(&key.0).display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Restores a snapshot; `None` when it cannot be read (then the unit runs).
    pub(super) fn restore(&mut self, dir: &Path) -> Option<Meta> {
        self.restore_from(&|name| std::fs::read(dir.join(name)).ok())
    }

    /// Restores a snapshot whose files `read` gives by name.
    pub(super) fn restore_from(&mut self, read: &dyn Fn(&str) -> Option<Vec<u8>>) -> Option<Meta> {
        let graph = |name: &str| {
            let text = String::from_utf8(read(name)?).ok()?;
            prunex::models::yaml::from_yaml(&text, name).ok()
        };
        let sd = |name: &str| weights::read_safetensors(&read(name)?).ok();
        let meta: Meta = serde_json::from_slice(&read("meta.json")?).ok()?;
        let (g, weights) = (graph("model.yaml")?, sd("model.safetensors")?);
        let mut model = TorchModel::new(&g, self.device);
        model.load(&weights).ok()?;
        let mut masks = BTreeMap::new();
        if let Some(bytes) = read("masks.safetensors") {
            for (k, t) in weights::read_safetensors(&bytes).ok()? {
                masks.insert(k, from_plain(&t, self.device).ok()??);
            }
        }
        let teacher = match meta.teacher {
            Some((temp, alpha)) => {
                let mut t = TorchModel::new(&graph("teacher.yaml")?, self.device);
                t.load(&sd("teacher.safetensors")?).ok()?;
                Some((t, temp, alpha))
            }
            None => None,
        };
        self.pending_opt = sd("optim.safetensors");
        self.model = model;
        self.masks = masks;
        self.teacher = teacher;
        self.opt = None;
        self.epochs = meta.epochs.clone();
        self.dense_accuracy = meta.dense_accuracy;
        self.pruned_accuracy = meta.pruned_accuracy;
        self.final_accuracy = meta.final_accuracy;
        let threads = self.timings.threads;
        self.timings = meta.timings.clone();
        self.timings.threads = threads;
        Some(meta)
    }
}

/// One unit of a run, cached on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Work {
    Pretrain(u64),
    Dense,
    Prune,
    Finetune(u64),
    Final,
}

impl Work {
    pub(super) fn name(self) -> &'static str {
        match self {
            Work::Pretrain(_) => "pretrain",
            Work::Dense => "dense evaluation",
            Work::Prune => "pruning",
            Work::Finetune(_) => "finetune",
            Work::Final => "final measurement",
        }
    }

    pub(super) fn label(self) -> String {
        match self {
            Work::Pretrain(e) | Work::Finetune(e) => format!("{} epoch {e}", self.name()),
            _ => self.name().into(),
        }
    }
}

/// `pretrain epochs 1–5, dense evaluation` for a list of units.
pub(super) fn describe(works: &[Work]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < works.len() {
        match works[i] {
            Work::Pretrain(a) | Work::Finetune(a) => {
                let mut j = i;
                while j + 1 < works.len()
                    && works[j + 1].name() == works[i].name()
                    && matches!(works[j + 1], Work::Pretrain(_) | Work::Finetune(_))
                {
                    j += 1;
                }
                let b = match works[j] {
                    Work::Pretrain(b) | Work::Finetune(b) => b,
                    _ => a,
                };
                parts.push(if a == b {
                    format!("{} epoch {a}", works[i].name())
                } else {
                    format!("{} epochs {a}–{b}", works[i].name())
                });
                i = j + 1;
            }
            w => {
                parts.push(w.name().into());
                i += 1;
            }
        }
    }
    parts.join(", ")
}

/// Saves a unit to the cache (rank 0 of a distributed run: the others
/// hold the same). A cache that cannot be written (a full disk, no
/// permission) costs the checkpoint, not the run: a warning says so.
pub(super) fn checkpoint(
    s: &Session,
    cache: &Cache,
    key: &Key,
    label: &str,
    partial: Option<Partial>,
) {
    if !s.leader() {
        return;
    }
    if let Err(e) = s.save(cache, key, label, partial) {
        eprintln!(
            "warning[prunex::run::checkpoint_failed]: {label} was not saved to the stage cache ({e}); the run goes on, but `--resume` and later runs cannot start from it\n  help: free space in {} or point PRUNEX_CACHE elsewhere",
            cache.dir.display()
        );
    }
}

/// Rank 0's starting point for the other ranks: the unit to start at and
/// the files of the cache entry it restored (none: it starts from the
/// recipe). Length-prefixed: `u64` start, then per file a `u32` name length,
/// the name, a `u64` length and the bytes.
pub(super) fn pack_entry(start: usize, dir: Option<&Path>) -> Vec<u8> {
    let mut out = (start as u64).to_le_bytes().to_vec();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(dir) = dir {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                if let (Some(name), Ok(bytes)) = (e.file_name().to_str(), std::fs::read(e.path())) {
                    files.push((name.to_owned(), bytes));
                }
            }
        }
    }
    files.sort();
    for (name, bytes) in files {
        out.extend((name.len() as u32).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend((bytes.len() as u64).to_le_bytes());
        out.extend(bytes);
    }
    out
}

/// The other side of [`pack_entry`]; `None` when the bytes are cut short.
pub(super) fn unpack_entry(b: &[u8]) -> Option<(usize, BTreeMap<String, Vec<u8>>)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    let mut b = b;
    let start = u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?) as usize;
    let mut files = BTreeMap::new();
    while !b.is_empty() {
        let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        let name = String::from_utf8(take(&mut b, n)?.to_vec()).ok()?;
        let len = u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?) as usize;
        files.insert(name, take(&mut b, len)?.to_vec());
    }
    Some((start, files))
}
