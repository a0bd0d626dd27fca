//! `prunex run`: the checked plan executed on libtorch — dense training when
//! no weights are given, evaluation, pruning at each scheduled step
//! (masks re-applied after every optimizer step; channels and blocks removed
//! physically, the optimizer rebuilt), fine-tuning, export.
//!
//! A run is a chain of units — each pretraining epoch, the dense
//! evaluation, the pruning before fine-tuning, each fine-tuning epoch, the
//! final measurement — and each unit's result is stored in the stage cache
//! ([`prunex::cache`]) under a hash of everything upstream of it. That one
//! mechanism gives the pretraining cache, a checkpoint every epoch,
//! `--resume`, Ctrl-C (the current batch finishes, the position inside the
//! epoch is saved) and watch mode's "re-run only what changed".
//!
//! Runs repeat: every unit reseeds its data order from its key and libtorch
//! from its key and step, so a resumed run computes exactly what an
//! uninterrupted one does.

mod distributed;
mod export;
mod prune;
pub mod sensitivity;
mod session;
mod train;
mod units;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use miette::{Diagnostic, Report};
use prunex::cache::{hash_bytes, Cache, Key, KeyBuilder};
use prunex::check::{check_path, parse_override, Mode};
use prunex::data::{load, DataSet, Rng, Transform};
use prunex::diagnostics::{is_error, render_human, render_many};
use prunex::distributed::World;
use prunex::graph::{analyze, Graph};
use prunex::models::weights;
use prunex::plan::{Plan, Stage, Teacher, Unit};
use prunex::report::{LayerReport, Lock, RunReport, Timings};
use prunex::syntax::FsLoader;
use tch::Device;
use thiserror::Error;

use super::model::TorchModel;
use session::Session;
use train::Phase;
use units::{describe, seed_of, Work};

/// Set by Ctrl-C (or by watch mode, which sends SIGINT): the run stops at
/// the next batch boundary, saves where it is, and exits.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

fn cancelled() -> bool {
    CANCEL.load(Ordering::SeqCst)
}

/// `PRUNEX_INTERRUPT_AT=finetune:2:5` acts as a Ctrl-C before step 5 of
/// fine-tuning epoch 2, so tests can interrupt a run at an exact place.
fn interrupt_at() -> Option<(String, u64, usize)> {
    let v = std::env::var("PRUNEX_INTERRUPT_AT").ok()?;
    let mut it = v.split(':');
    Some((
        it.next()?.to_owned(),
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// What can stop a run.
#[derive(Debug, Error, Diagnostic)]
pub enum RunError {
    /// The recipe does not check (its diagnostics were printed).
    #[error("the recipe has errors; nothing was run")]
    #[diagnostic(
        code(prunex::run::invalid_recipe),
        help("fix the problems above (`prunex check` shows them)")
    )]
    Invalid,
    /// libtorch failed.
    #[error("libtorch failed: {0}")]
    #[diagnostic(
        code(prunex::run::torch),
        help("this usually means the device ran out of memory or the device name is wrong")
    )]
    Torch(#[from] tch::TchError),
    /// The loss stopped being a number.
    #[error("the loss became {value} in {stage} epoch {epoch}, step {step}")]
    #[diagnostic(
        code(prunex::run::non_finite_loss),
        help("lower the learning rate, or add warm-up (`warmup 1 epochs`)")
    )]
    NonFinite {
        /// Stage.
        stage: String,
        /// Epoch (1-based).
        epoch: u64,
        /// Step within the epoch.
        step: usize,
        /// NaN or inf.
        value: f64,
    },
    /// An output could not be written.
    #[error("cannot write {path}: {reason}")]
    #[diagnostic(
        code(prunex::run::write_failed),
        help("check that the export folder is writable; earlier outputs are left as they were")
    )]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Ctrl-C (or watch mode) stopped the run; where it was is saved.
    #[error("interrupted in {at}; progress saved")]
    #[diagnostic(
        code(prunex::run::interrupted),
        help(
            "`prunex run --resume {recipe}` continues from here; the export folder was not touched"
        )
    )]
    Interrupted {
        /// Where.
        at: String,
        /// The recipe, for the help line.
        recipe: String,
    },
    /// Ctrl-C stopped `prunex sensitivity`; the probes measured are cached.
    #[error("interrupted after {done} of {total} probes")]
    #[diagnostic(
        code(prunex::sensitivity::interrupted),
        help("run the same `prunex sensitivity` command again: the {done} probes measured come from the cache; no results were written")
    )]
    ProbesInterrupted {
        /// Probes measured.
        done: usize,
        /// Probes in all.
        total: usize,
    },
    /// A schedule counted in steps prunes after the last fine-tuning epoch
    /// (only the data's size tells how many steps an epoch has).
    #[error(
        "the schedule prunes at step {at}, but fine-tuning ends after {total} steps ({epochs} epochs of {per_epoch})"
    )]
    #[diagnostic(
        code(prunex::run::schedule_after_finetune),
        help("end the schedule by step {last}, count it in epochs, or fine-tune longer")
    )]
    ScheduleAfterFinetune {
        /// The step.
        at: u64,
        /// Fine-tuning steps in all.
        total: u64,
        /// Fine-tuning epochs.
        epochs: u64,
        /// Steps per epoch.
        per_epoch: u64,
        /// The last step a schedule may prune at.
        last: u64,
    },
    /// The recipe asks for a CUDA device libtorch does not see.
    #[error("the recipe asks for cuda:{index}, but libtorch sees {count} CUDA device(s) here")]
    #[diagnostic(
        code(prunex::run::no_cuda),
        help(
            "use `device auto` (CUDA when there is one, else the CPU) or `device cpu`; `prunex version` shows what libtorch sees"
        )
    )]
    NoCuda {
        /// The device index asked for.
        index: usize,
        /// CUDA devices libtorch sees.
        count: i64,
    },
    /// Between the workers of a distributed run.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Dist(#[from] crate::exec::dist::DistError),
    /// The model's input does not fit the data.
    #[error("the model takes {model:?} inputs but the data's images are {data:?}")]
    #[diagnostic(
        code(prunex::run::input_mismatch),
        help("set the model's `input` to the data's shape, or add `pad` to the data block")
    )]
    InputMismatch {
        /// `[C, H, W]` of the model.
        model: [usize; 3],
        /// `[C, H, W]` of the data after the transform.
        data: [usize; 3],
    },
}

/// How a run uses the stage cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reuse {
    /// Reuse the dense model (pretraining and its evaluation); redo pruning
    /// and fine-tuning.
    #[default]
    Dense,
    /// Continue from the last unit saved, even inside an epoch.
    Resume,
    /// Reuse nothing (results are still saved).
    Fresh,
}

/// How a run is started.
#[derive(Clone, Debug)]
pub struct Options {
    /// What may come from the cache.
    pub reuse: Reuse,
    /// The stage cache.
    pub cache: Cache,
    /// Progress bars (shown only on a terminal).
    pub progress: bool,
}

/// Runs a recipe; prints diagnostics and progress, returns the report.
pub fn run(path: &Path, set: &[String], opts: &Options) -> Result<RunReport, RunError> {
    let overrides: Vec<_> = set.iter().filter_map(|s| parse_override(s).ok()).collect();
    // A worker of a distributed run (`prunex run --nproc`, torchrun, srun).
    let world = World::from_env(|k| std::env::var(k).ok()).map_err(show)?;
    let checked = check_path(path, &FsLoader, &overrides, Mode::Single);
    // Every rank checks the recipe; rank 0 says what it found.
    if world.as_ref().is_none_or(World::leader)
        || checked.reports.iter().any(|r| is_error(r.as_ref()))
    {
        eprint!("{}", render_many(&checked.reports, super::color(), ""));
    }
    if checked.reports.iter().any(|r| is_error(r.as_ref())) {
        return Err(RunError::Invalid);
    }
    let (Some(graph), Some(plan)) = (checked.graph, checked.plan) else {
        return Err(RunError::Invalid);
    };
    let recipe_hash = recipe_hash(&checked.sources);
    let mut p = prepare(
        &graph,
        checked.teacher.as_ref(),
        plan,
        recipe_hash,
        path,
        opts,
        world,
        Until::All,
    )?;
    run_units(&mut p)?;
    finish(p)
}

fn show(e: impl Diagnostic + Send + Sync + 'static) -> RunError {
    eprint!("{}", render_human(&Report::new(e), super::color()));
    RunError::Invalid
}

/// The plan's stages without the recipe lines behind targets, so that
/// moving a rule or adding a comment does not invalidate the cache.
fn stages_for_key(plan: &Plan) -> Vec<Stage> {
    let mut stages = plan.stages.clone();
    for st in &mut stages {
        for g in &mut st.groups {
            g.set_by.clear();
        }
        for l in &mut st.layers {
            l.set_by.clear();
        }
    }
    stages
}

fn hash_data(d: &DataSet) -> String {
    let mut h = blake3::Hasher::new();
    for split in [&d.train, &d.test] {
        for n in split.shape {
            h.update(&(n as u64).to_le_bytes());
        }
        h.update(&(split.len() as u64).to_le_bytes());
        h.update(&split.pixels);
        h.update(&split.labels);
    }
    h.finalize().to_hex().to_string()
}

/// How far a chain of units runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// The whole run.
    All,
    /// Through the dense model (pretraining and its evaluation): what
    /// `prunex sensitivity` starts from.
    Dense,
}

/// A run ready to go: its state and its chain of units with their keys,
/// where to start in it, and what the report needs at the end.
struct Prepared<'g> {
    s: Session,
    works: Vec<Work>,
    keys: Vec<Key>,
    start: usize,
    partial: Option<units::Partial>,
    events: BTreeMap<u64, Vec<(usize, usize)>>,
    plan: Plan,
    graph: &'g Graph,
    teacher_graph: Option<&'g Graph>,
    lock: Lock,
    before: prunex::graph::Analysis,
    leader: bool,
    cache: Cache,
    recipe_path: String,
}

/// Everything before the first unit: the device and the other ranks, the
/// data, the lock, the chain of units and their keys, and what the cache
/// gives (restored into the session).
#[allow(clippy::too_many_arguments)]
fn prepare<'g>(
    graph: &'g Graph,
    teacher_graph: Option<&'g Graph>,
    plan: Plan,
    recipe_hash: String,
    path: &Path,
    opts: &Options,
    world: Option<World>,
    until: Until,
) -> Result<Prepared<'g>, RunError> {
    let seed = plan.seed;
    tch::manual_seed(seed as i64);
    let device = session::device_of(plan.device, world.as_ref());
    // Before any data is read or tensor made: libtorch would panic on the
    // first tensor moved to a device that is not there.
    if let Device::Cuda(index) = device {
        let count = tch::Cuda::device_count();
        if index as i64 >= count {
            return Err(RunError::NoCuda { index, count });
        }
    }
    // Meet the other workers before reading anything: a missing one is
    // known in seconds, not after the data is loaded.
    let group = match &world {
        Some(w) => Some(std::rc::Rc::new(crate::exec::dist::Group::join(w, device)?)),
        None => None,
    };
    let leader = world.as_ref().is_none_or(World::leader);
    let d = &plan.data;
    let data = load(d.kind, &d.path, d.limit.map(|l| l as usize)).map_err(show)?;
    let (mean, std) = (&d.mean, &d.std);
    let transform = Transform {
        mean: mean.iter().map(|&x| x as f32).collect(),
        std: std.iter().map(|&x| x as f32).collect(),
        pad: d.pad as usize,
        crop: d.crop as usize,
        flip: d.flip,
    };
    let shape = transform.shape(data.train.shape);
    if shape != plan.input {
        return Err(RunError::InputMismatch {
            model: plan.input,
            data: shape,
        });
    }
    let before = analyze(graph, graph.input).map_err(|e| tch::TchError::Kind(e.to_string()))?;
    let dense_weights: u64 = graph
        .weight_layers()
        .iter()
        .flat_map(|(_, m)| m.iter())
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    // The weights' content: an ONNX model's initializers may live in
    // external data files, so its weights are hashed as read.
    let weights_file = match &plan.weights {
        Some(w) if prunex::models::onnx::is_onnx(w) => {
            let (sd, _) = weights::read(w).map_err(show)?;
            Some(weights::to_safetensors(&sd))
        }
        Some(w) => Some(std::fs::read(w).map_err(|e| RunError::Write {
            path: w.display().to_string(),
            reason: format!("cannot read the weights: {e}"),
        })?),
        None => None,
    };
    let model_yaml = prunex::models::yaml::to_yaml(graph);
    let lock = Lock {
        recipe: recipe_hash,
        plan: hash_bytes(plan.to_yaml().as_bytes()),
        model: hash_bytes(model_yaml.as_bytes()),
        weights: weights_file.as_deref().map(hash_bytes),
        data: hash_data(&data),
        seed,
        prunex: env!("CARGO_PKG_VERSION").into(),
        libtorch: env!("PRUNEX_LIBTORCH_VERSION").into(),
    };
    let mut s = Session {
        device,
        batch: d.batch as usize,
        eval_batch: d.eval_batch as usize,
        seed,
        rng: Rng::new(seed),
        unit_seed: seed,
        stochastic: graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, prunex::graph::Op::Dropout { .. })),
        model: TorchModel::new(graph, device),
        masks: BTreeMap::new(),
        dense_weights,
        epochs: Vec::new(),
        teacher: None,
        penalty: plan.stages.iter().find_map(|st| st.penalty),
        opt: None,
        pending_opt: None,
        dense_accuracy: None,
        dense: None,
        pruned_accuracy: None,
        final_accuracy: None,
        timings: Timings {
            threads: tch::get_num_threads(),
            ..Timings::default()
        },
        progress: opts.progress && leader,
        data,
        transform,
        dist: group.map(|group| distributed::Dist {
            group,
            reducer: None,
            sync_bn: plan.sync_bn,
        }),
    };

    // Prune steps by fine-tuning epoch: (stage, step). The checker stops
    // epoch-counted steps that no fine-tuning epoch follows; step-counted
    // ones are known only now.
    let ft_epochs = plan.finetune.as_ref().map_or(0, |t| t.epochs);
    // Steps count global batches (a distributed run's ranks step together).
    let steps_per_epoch = (s.data.train.len().div_ceil(s.batch * s.world_size()) as u64).max(1);
    let mut events: BTreeMap<u64, Vec<(usize, usize)>> = BTreeMap::new();
    for (i, st) in plan.stages.iter().enumerate() {
        for (k, step) in st.schedule.iter().enumerate() {
            let epoch = step.epoch(steps_per_epoch);
            if step.unit == Unit::Steps && epoch > 0 && epoch >= ft_epochs {
                return Err(RunError::ScheduleAfterFinetune {
                    at: step.at,
                    total: ft_epochs * steps_per_epoch,
                    epochs: ft_epochs,
                    per_epoch: steps_per_epoch,
                    last: ft_epochs.max(1) * steps_per_epoch - 1,
                });
            }
            events.entry(epoch).or_default().push((i, k));
        }
    }

    // The chain of units and their keys.
    let mut works = Vec::new();
    if let Some(pre) = &plan.pretrain {
        works.extend((1..=pre.epochs).map(Work::Pretrain));
    }
    works.push(Work::Dense);
    if until == Until::Dense {
        // Nothing after the dense model: its keys are those of a full run.
    } else if events.contains_key(&0) {
        works.push(Work::Prune);
    }
    if until == Until::All {
        works.extend((1..=ft_epochs).map(Work::Finetune));
        works.push(Work::Final);
    }
    let stages = stages_for_key(&plan);
    let teacher_weights = match plan.distill.as_ref().map(|d| &d.teacher) {
        Some(Teacher::Model {
            weights: Some(w), ..
        }) => std::fs::read(w).map(|b| hash_bytes(&b)).unwrap_or_default(),
        _ => String::new(),
    };
    // The keys (and so the seeds of data order and initialisation) of a
    // distributed run are those of one process with the global batch, so
    // that N ranks of batch B compute what one process of batch N·B does,
    // and either can resume the other. Only per-rank BatchNorm and dropout
    // (drawn per rank) make the world size count. Each rank's own GPU
    // index does not.
    let ranks = world.as_ref().map_or(1, |w| w.size);
    let keyed = {
        let mut p = plan.clone();
        p.data.batch *= ranks as u64;
        for t in [p.pretrain.as_mut(), p.finetune.as_mut()]
            .into_iter()
            .flatten()
        {
            t.batch *= ranks as u64;
        }
        p
    };
    let per_rank = ranks > 1
        && (s.stochastic
            || (!plan.sync_bn
                && graph
                    .nodes
                    .iter()
                    .any(|n| matches!(n.op, prunex::graph::Op::BatchNorm2d { .. }))));
    let device_key = match (device, &world) {
        (Device::Cuda(_), Some(_)) => "Cuda".to_owned(),
        _ => format!("{device:?}"),
    };
    let d = &keyed.data;
    let mut base = KeyBuilder::new("base");
    base.str(&lock.prunex)
        .str(&lock.libtorch)
        .str(&device_key)
        .u64(seed)
        .str(&model_yaml)
        .str(lock.weights.as_deref().unwrap_or(""))
        .str(&lock.data)
        .json(&(
            d.batch,
            d.eval_batch,
            &d.mean,
            &d.std,
            d.crop,
            d.flip,
            d.pad,
        ));
    if per_rank {
        base.str("ranks").u64(ranks as u64);
    }
    let mut prev = base.key();
    let mut keys = Vec::new();
    for &w in &works {
        let mut kb = KeyBuilder::after(w.name(), &prev);
        match w {
            Work::Pretrain(e) => kb.json(&keyed.pretrain).u64(e),
            Work::Dense | Work::Final => &mut kb,
            Work::Prune => kb.json(&stages).json(&plan.distill).str(&teacher_weights),
            Work::Finetune(e) => kb
                .json(&keyed.finetune)
                .json(&plan.distill)
                .str(&teacher_weights)
                .json(&stages)
                .u64(e),
        };
        prev = kb.key();
        keys.push(prev.clone());
    }

    // Where to start: after the last unit the cache has (and may give).
    let cache = &opts.cache;
    if opts.reuse == Reuse::Fresh && leader {
        // `--fresh` starts over: this chain's earlier entries go, so that a
        // `--resume` after an interrupted fresh run continues that run, not
        // the older one whose entries had the same keys.
        for k in &keys {
            cache.remove(k);
            cache.remove(&KeyBuilder::after("partial", k).key());
        }
    }
    let allowed = |w: Work| match opts.reuse {
        Reuse::Fresh => false,
        Reuse::Resume => true,
        Reuse::Dense => matches!(w, Work::Pretrain(_) | Work::Dense),
    };
    // Only rank 0 reads the cache (the others may be on machines without
    // it); it hands what it restored to them.
    let (mut start, mut partial, mut restored) = (0, None, None);
    if leader {
        for i in (0..works.len()).rev() {
            if allowed(works[i]) {
                if let Some(dir) = cache.get(&keys[i]) {
                    if s.restore(&dir).is_some() {
                        start = i + 1;
                        restored = Some(dir);
                        break;
                    }
                }
            }
        }
        if opts.reuse == Reuse::Resume && start < works.len() {
            let pk = KeyBuilder::after("partial", &keys[start]).key();
            if let Some(dir) = cache.get(&pk) {
                if let Some(meta) = s.restore(&dir) {
                    partial = meta.partial;
                    restored = Some(dir);
                }
            }
        }
    }
    if let Some(d) = &s.dist {
        let mine = units::pack_entry(start, restored.as_deref());
        let shared = d.group.share_bytes("start", &mine, 0)?;
        if !leader {
            let (at, files) = units::unpack_entry(&shared).ok_or_else(|| {
                crate::exec::dist::DistError::Mismatch {
                    what: "rank 0's saved state did not arrive whole".into(),
                }
            })?;
            start = at;
            if !files.is_empty() {
                let meta = s
                    .restore_from(&|name| files.get(name).cloned())
                    .ok_or_else(|| crate::exec::dist::DistError::Mismatch {
                        what: "rank 0's saved state does not restore here".into(),
                    })?;
                partial = meta.partial;
            }
        }
    }
    if start == 0 && partial.is_none() {
        if let Some(w) = &plan.weights {
            let (sd, notes) = weights::load_for(w, graph).map_err(show)?;
            for n in notes {
                s.say(format_args!("note: {n}"));
            }
            s.model.load(&sd)?;
        }
    }
    // Every rank starts from rank 0's variables (as DDP's constructor does).
    s.sync_from_leader("starting")?;
    // The run's first lines: the ranks, and what it takes from the cache.
    if let Some(w) = &world {
        s.say(format_args!(
            "distributed: {} ranks ({:?}), batch {} per rank, {} in all; BatchNorm {}",
            w.size,
            w.launcher,
            s.batch,
            s.batch * w.size,
            if plan.sync_bn {
                "synchronised (sync_bn)"
            } else {
                "per rank"
            }
        ));
    }
    match (start, opts.reuse) {
        (0, Reuse::Fresh) => s.say(format_args!(
            "from cache: nothing (--fresh: this recipe's earlier results were dropped)"
        )),
        (0, _) if partial.is_none() => s.say(format_args!(
            "from cache: nothing saved for these settings yet"
        )),
        (0, _) => s.say(format_args!(
            "from cache: nothing before the interrupted unit"
        )),
        _ => s.say(format_args!("from cache: {}", describe(&works[..start]))),
    }
    if let (Some(p), Some(w)) = (&partial, works.get(start)) {
        s.say(format_args!(
            "resuming {} at step {} (saved when the run was interrupted)",
            w.label(),
            p.step
        ));
    }
    if start < works.len() {
        s.say(format_args!("running: {}", describe(&works[start..])));
    }

    Ok(Prepared {
        s,
        works,
        keys,
        start,
        partial,
        events,
        plan,
        graph,
        teacher_graph,
        lock,
        before,
        leader,
        cache: opts.cache.clone(),
        recipe_path: path.display().to_string(),
    })
}

/// BLAKE3 of the recipe and its includes, names and texts: the lock's and
/// the report's recipe hash.
pub(super) fn recipe_hash(sources: &prunex::syntax::SourceMap) -> String {
    let mut h = blake3::Hasher::new();
    for f in sources.files() {
        h.update(f.name.as_bytes());
        h.update(&[0]);
        h.update(f.text.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex().to_string()
}

/// Runs the chain's units from where the cache left it.
fn run_units(p: &mut Prepared<'_>) -> Result<(), RunError> {
    let Prepared {
        s,
        works,
        keys,
        start,
        partial,
        events,
        plan,
        graph,
        teacher_graph,
        leader,
        cache,
        recipe_path,
        ..
    } = p;
    let (start, leader, graph, teacher_graph) = (*start, *leader, *graph, *teacher_graph);
    let cache = &*cache;
    let recipe_path = recipe_path.clone();
    for i in start..works.len() {
        if s.any_cancelled(cancelled())? {
            CANCEL.store(true, Ordering::SeqCst);
            return Err(RunError::Interrupted {
                at: works[i].label(),
                recipe: recipe_path,
            });
        }
        let w = works[i];
        let key = &keys[i];
        s.unit_seed = seed_of(key);
        s.rng = Rng::new(s.unit_seed ^ 0x7a71_0e55);
        tch::manual_seed(s.unit_seed as i64);
        let resumed = if i == start { partial.take() } else { None };
        // Both the pruning and fine-tuning learn from the teacher, taken
        // from the model as it is before pruning.
        if matches!(w, Work::Prune | Work::Finetune(_)) && s.teacher.is_none() {
            s.teacher = train::teacher(plan, teacher_graph, graph, s)?;
        }
        match w {
            Work::Pretrain(e) => {
                if e == 1 && resumed.is_none() {
                    s.opt = None;
                    s.pending_opt = None;
                }
            }
            Work::Dense => {
                s.opt = None;
                s.pending_opt = None;
                let a = s.evaluate()?;
                s.dense_accuracy = Some(a);
                s.dense = Some((s.model.graph.clone(), s.model.state_dict()?));
            }
            Work::Prune => {
                prune::apply_events(s, plan, events.get(&0).map(Vec::as_slice).unwrap_or(&[]))?;
                let a = s.evaluate()?;
                s.say(format_args!(
                    "after pruning: {:.2} % (sparsity {:.2} %)",
                    a * 100.0,
                    s.sparsity() * 100.0
                ));
                s.pruned_accuracy = Some(a);
            }
            Work::Finetune(e) => {
                if resumed.is_none() {
                    if e == 1 {
                        s.opt = None;
                        s.pending_opt = None;
                    } else if let Some(ev) = events.get(&(e - 1)) {
                        prune::apply_events(s, plan, ev)?;
                    }
                }
            }
            Work::Final => {
                s.final_accuracy = Some(s.evaluate()?);
                // Latency is one process's: rank 0 measures it alone.
                let dense = match s.dense.take().filter(|_| leader) {
                    Some(d) => Some(d),
                    None if !leader => None,
                    None => works
                        .iter()
                        .position(|w| *w == Work::Dense)
                        .and_then(|k| cache.get(&keys[k]))
                        .and_then(|dir| units::model_of(&dir)),
                };
                // Only when the cache lost the dense model (evicted) is its
                // latency left unmeasured.
                let mut dense = match dense {
                    Some((g, sd)) => {
                        let mut m = TorchModel::new(&g, s.device);
                        m.load(&sd)?;
                        Some(m)
                    }
                    None => None,
                };
                if leader {
                    let (p, d) = s.latencies(dense.as_mut())?;
                    s.timings.dense = d;
                    s.timings.pruned = Some(p);
                }
            }
        }
        let training = match w {
            Work::Pretrain(e) => Some((Phase::Pretrain, e, &plan.pretrain)),
            Work::Finetune(e) => Some((Phase::Finetune, e, &plan.finetune)),
            _ => None,
        };
        if let Some((phase, e, t)) = training {
            let t = t
                .as_ref()
                .expect("training units come from the plan's training");
            train::epoch(s, t, phase, e, resumed, cache, key, &recipe_path)?;
        }
        if w == Work::Dense {
            s.say(format_args!(
                "dense test accuracy: {:.2} %",
                s.dense_accuracy.unwrap_or(0.0) * 100.0
            ));
        }
        units::checkpoint(s, cache, key, &w.label(), None);
        if leader {
            cache.remove(&KeyBuilder::after("partial", key).key());
        }
    }
    if start == works.len() {
        s.say(format_args!(
            "dense test accuracy: {:.2} %",
            s.dense_accuracy.unwrap_or(0.0) * 100.0
        ));
    }
    Ok(())
}

/// The report, and (on rank 0) the outputs and the summary.
fn finish(p: Prepared<'_>) -> Result<RunReport, RunError> {
    let Prepared {
        s,
        plan,
        graph,
        lock,
        before,
        leader,
        ..
    } = p;
    let device = s.device;
    let after = analyze(&s.model.graph, s.model.graph.input)
        .map_err(|e| tch::TchError::Kind(e.to_string()))?;
    let final_sd = s.model.state_dict()?;
    let layers = graph
        .weight_layers()
        .into_iter()
        .map(|(id, matrices)| {
            let n = &graph.nodes[id];
            // The first matrix's shape (an attention's input projection);
            // the sparsity of all of them.
            let shape_before = matrices[0].1.clone();
            let numel: usize = matrices
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            let after_id = s.model.graph.nodes.iter().position(|m| m.name == n.name);
            let w = final_sd.get(&matrices[0].0);
            let nonzero: usize = matrices
                .iter()
                .filter_map(|(k, _)| final_sd.get(k).and_then(|t| t.as_f32()))
                .map(|v| v.iter().filter(|x| **x != 0.0).count())
                .sum();
            LayerReport {
                layer: n.name.clone(),
                shape_before,
                shape_after: w.map(|t| t.shape.clone()),
                sparsity: 1.0 - nonzero as f64 / numel.max(1) as f64,
                params: (before.params[id], after_id.map_or(0, |i| after.params[i])),
                macs: (before.macs[id], after_id.map_or(0, |i| after.macs[i])),
            }
        })
        .collect();
    let report = RunReport {
        layers,
        recipe: plan.recipe.clone(),
        device: match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            Device::Mps => "mps".into(),
            Device::Vulkan => "vulkan".into(),
            Device::Cpu => "cpu".into(),
        },
        lock,
        dense_accuracy: s.dense_accuracy.unwrap_or(0.0),
        pruned_accuracy: s.pruned_accuracy,
        final_accuracy: s.final_accuracy.unwrap_or(0.0),
        params: (before.total_params, after.total_params),
        macs: (before.total_macs, after.total_macs),
        sparsity: s.sparsity(),
        epochs: s.epochs.clone(),
        plan,
        timings: s.timings.clone(),
    };
    let out_dir = report.plan.export.clone();
    if !leader {
        // Rank 0 writes the outputs and prints the summary.
        return Ok(report);
    }
    // The report page's planned sparsity, predicted as `prunex plan` does.
    let steps_per_epoch = (s.data.train.len().div_ceil(s.batch * s.world_size()) as u64).max(1);
    let extras = prunex::report::html::Extras {
        planned_sparsity: prunex::report::schedule::planned_sparsity(
            &report.plan,
            graph,
            steps_per_epoch,
        )
        .unwrap_or_default(),
        // Watch mode rewrites the page after every re-run; it reloads.
        refresh: std::env::var_os("PRUNEX_WATCH").map(|_| 5),
    };
    let onnx_skipped = export::export(&out_dir, &s.model, &report, &extras)?;
    prunex::report::text::print_summary(&report, &out_dir, onnx_skipped.as_deref());
    Ok(report)
}
