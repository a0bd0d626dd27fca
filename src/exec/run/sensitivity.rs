//! `prunex sensitivity`: the recipe's dense model (its weights, the cached
//! dense unit, or pretraining as a run would do it), then each subject of
//! the first prune stage pruned alone at each ratio, by the stage's own
//! criterion ([`decide::step`], as a run prunes), evaluated on the first
//! `--batches` test batches. Each probe's result is a cache entry chained
//! after the dense model's, so an interrupted analysis continues where it
//! stopped and a second one with more ratios measures only the new ones.
//! With a budget, the solver's ratios are written as a recipe fragment.

use std::path::{Path, PathBuf};

use prunex::cache::{Key, KeyBuilder};
use prunex::check::{check_path, parse_override, Mode};
use prunex::data::{batches, Batch};
use prunex::diagnostics::{is_error, render_many};
use prunex::graph::Graph;
use prunex::output::write_atomically;
use prunex::prune::decide;
use prunex::sensitivity::solve::{self, Budget, Goal, Objective, Quantity, Solution, Solved};
use prunex::sensitivity::{fragment, Analysis, Curve, Point, Report, Score};
use prunex::syntax::FsLoader;
use prunex::tensor::StateDict;
use tch::{Kind, Tensor};

use super::session::{correct, to_tensor, Session};
use super::{cancelled, show, stages_for_key, RunError};
use crate::exec::model::TorchModel;

/// How `prunex sensitivity` was asked to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Ratios probed.
    pub ratios: Vec<f64>,
    /// Evaluation batches per probe.
    pub batches: u64,
    /// A budget to solve for.
    pub budget: Option<Budget>,
    /// What the solver minimises.
    pub objective: Objective,
    /// Where results go (default: the export folder's `sensitivity/`).
    pub out: Option<PathBuf>,
}

/// A model's accuracy and mean loss on the evaluation batches; stops at a
/// batch boundary on Ctrl-C.
fn score(
    m: &mut TorchModel,
    data: &[Batch],
    device: tch::Device,
) -> Result<Option<Score>, RunError> {
    let (mut right, mut total, mut loss) = (0i64, 0i64, 0.0);
    for b in data {
        if cancelled() {
            return Ok(None);
        }
        let (x, y) = to_tensor(b, device);
        let out = tch::no_grad(|| m.forward(&x, false))?;
        right += correct(&out, &y);
        total += b.y.len() as i64;
        loss += out
            .f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100, 0.0)?
            .f_to_kind(Kind::Double)?
            .double_value(&[]);
    }
    let n = total.max(1) as f64;
    Ok(Some(Score {
        accuracy: right as f64 / n,
        loss: loss / n,
    }))
}

/// The model `stage` leaves of the dense one.
fn pruned(
    stage: &prunex::plan::Stage,
    graph: &Graph,
    sd: &StateDict,
    inputs: decide::Inputs<'_>,
    device: tch::Device,
) -> Result<TorchModel, RunError> {
    let at = &stage.schedule[0];
    let inputs = decide::Inputs {
        weights: Some(sd),
        ..inputs
    };
    match decide::step(stage, at, graph, inputs).map_err(|e| tch::TchError::Kind(e.to_string()))? {
        decide::Outcome::Masks { masks, .. } => {
            let mut m = TorchModel::new(graph, device);
            m.load(sd)?;
            let vars = m.vs.variables();
            tch::no_grad(|| -> Result<(), RunError> {
                for (k, keep) in masks.unwrap_or_default() {
                    if let Some(v) = vars.get(&k) {
                        let f: Vec<f32> = keep.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
                        let mask = Tensor::from_slice(&f).reshape(v.size()).to_device(device);
                        let mut v = v.shallow_clone();
                        let _ = v.f_mul_(&mask)?;
                    }
                }
                Ok(())
            })?;
            Ok(m)
        }
        decide::Outcome::Rebuilt { graph, weights } => {
            let mut m = TorchModel::new(&graph, device);
            m.load(&weights.expect("weights were given"))?;
            Ok(m)
        }
    }
}

fn graph_err(e: prunex::graph::GraphError) -> RunError {
    tch::TchError::Kind(e.to_string()).into()
}

fn interrupted(done: usize, total: usize) -> RunError {
    RunError::ProbesInterrupted { done, total }
}

/// Runs the analysis; prints the table and writes the results.
pub fn sensitivity(
    path: &Path,
    set: &[String],
    run_opts: &super::Options,
    opts: &Options,
) -> Result<Report, RunError> {
    let overrides: Vec<_> = set.iter().filter_map(|s| parse_override(s).ok()).collect();
    let checked = check_path(path, &FsLoader, &overrides, Mode::Single);
    if checked.reports.iter().any(|r| is_error(r.as_ref())) {
        eprint!(
            "{}",
            render_many(&checked.reports, super::super::color(), "")
        );
        return Err(RunError::Invalid);
    }
    let (Some(graph), Some(plan), Some(recipe)) = (checked.graph, checked.plan, checked.recipe)
    else {
        return Err(RunError::Invalid);
    };
    let analysis = Analysis::new(&plan, &opts.ratios).map_err(show)?;
    // The block as written, for the fragment.
    let block = recipe.prune.first().map(|p| {
        let f = checked.sources.get(p.span.file);
        f.text[p.span.start..p.span.end].to_owned()
    });
    let recipe_hash = super::recipe_hash(&checked.sources);

    // The dense model, as a run gets it: weights, the cache, or pretraining.
    let mut p = super::prepare(
        &graph,
        None,
        plan.clone(),
        recipe_hash,
        path,
        run_opts,
        None,
        super::Until::Dense,
    )?;
    super::run_units(&mut p)?;
    let dense_key: Key = p.keys[p.works.len() - 1].clone();
    let s: &mut Session = &mut p.s;
    let device = s.device;
    let dense_graph = s.model.graph.clone();
    let stage = &analysis.stage;
    // What the probes share (not the block's own ratio, caps or scope);
    // each probe's key adds its group and ratio.
    let mut key = KeyBuilder::after("sensitivity", &dense_key);
    key.json(&stages_for_key(&prunex::plan::Plan {
        stages: vec![analysis.shared()],
        ..plan.clone()
    }))
    .u64(opts.batches);
    let key = key.key();
    s.unit_seed = super::units::seed_of(&key);
    s.rng = prunex::data::Rng::new(s.unit_seed ^ 0x7a71_0e55);
    tch::manual_seed(s.unit_seed as i64);
    let grads = match (stage.importance, stage.batches) {
        (prunex::plan::Criterion::Taylor, Some(n)) => Some(s.gather_gradients(n)?),
        _ => None,
    };
    let activations = match (stage.importance, stage.batches) {
        (prunex::plan::Criterion::Wanda, Some(n)) => Some(s.gather_activations(n)?),
        _ => None,
    };
    // After gathering, as a run prunes: Taylor's forward passes in training
    // mode move BatchNorm's running statistics, and the dense score and
    // every probe must start from the same model.
    let sd = s.model.state_dict()?;
    let inputs = decide::Inputs {
        weights: None,
        grads: grads.as_ref(),
        seed: s.seed,
        activations: activations.as_ref(),
    };
    let data: Vec<Batch> = batches(&s.data.test, &s.transform, s.eval_batch, None)
        .into_iter()
        .take(opts.batches as usize)
        .collect();
    let images: u64 = data.iter().map(|b| b.y.len() as u64).sum();
    let total = analysis.subjects.len() * analysis.ratios.len();
    let Some(dense) = score(&mut s.model, &data, device)? else {
        return Err(interrupted(0, total));
    };
    let dense_cost = analysis
        .cost(
            &analysis.stage_with(&vec![0.0; analysis.subjects.len()]),
            &dense_graph,
        )
        .map_err(graph_err)?;
    s.say(format_args!(
        "sensitivity: {} {} × {} ratios of `prune {} by {}`, each on {} test images ({} batches); dense {:.2} %",
        analysis.subjects.len(),
        if analysis.rule == prunex::sensitivity::RuleWord::Group { "groups" } else { "layers" },
        analysis.ratios.len(),
        stage.granularity,
        stage.importance,
        images,
        data.len(),
        dense.accuracy * 100.0
    ));
    let bar = super::train::bar(total, "probes".into(), s.progress);
    let cache = &run_opts.cache;
    let mut curves = Vec::new();
    let mut done = 0usize;
    let mut from_cache = 0usize;
    for (i, subject) in analysis.subjects.iter().enumerate() {
        let mut points = Vec::new();
        for &ratio in &analysis.ratios {
            // `PRUNEX_INTERRUPT_AT=probe:0:K` acts as a Ctrl-C before probe K.
            if super::interrupt_at().is_some_and(|(what, _, k)| what == "probe" && k == done) {
                super::CANCEL.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if cancelled() {
                bar.abandon();
                return Err(interrupted(done, total));
            }
            let probe = analysis.probe(i, ratio);
            let mut k = KeyBuilder::after("probe", &key);
            k.str(&subject.name).json(&ratio);
            let k = k.key();
            let cached: Option<Point> = cache
                .get(&k)
                .and_then(|dir| std::fs::read(dir.join("point.json")).ok())
                .and_then(|b| serde_json::from_slice(&b).ok());
            let point = match cached {
                Some(pt) => {
                    from_cache += 1;
                    pt
                }
                None => {
                    bar.set_message(format!("{} at {ratio}", subject.name));
                    let mut m = pruned(&probe, &dense_graph, &sd, inputs, device)?;
                    let Some(sc) = score(&mut m, &data, device)? else {
                        bar.abandon();
                        return Err(interrupted(done, total));
                    };
                    let pt = Point {
                        ratio,
                        kept: analysis.kept(i, ratio),
                        score: sc,
                        cost: analysis.cost(&probe, &dense_graph).map_err(graph_err)?,
                    };
                    let json = serde_json::to_vec(&pt).expect("points serialize");
                    let _ = cache.put(
                        &k,
                        b"{\"unit\":\"sensitivity probe\"}",
                        &[("point.json", json)],
                    );
                    pt
                }
            };
            points.push(point);
            done += 1;
            bar.inc(1);
        }
        curves.push(Curve {
            subject: subject.clone(),
            points,
        });
    }
    bar.finish_and_clear();
    if from_cache > 0 {
        s.say(format_args!("from cache: {from_cache} of {total} probes"));
    }
    let mut report = Report {
        recipe: plan.recipe.clone(),
        model: plan.model.clone(),
        granularity: stage.granularity.to_string(),
        importance: stage.importance.to_string(),
        rule: analysis.rule,
        batches: data.len() as u64,
        images,
        dense,
        dense_cost,
        ratios: analysis.ratios.clone(),
        curves,
        solution: None,
    };
    if let Some(b) = opts.budget {
        let sol = match b {
            Budget::Macs(x) | Budget::Params(x) => {
                let q = if matches!(b, Budget::Macs(_)) {
                    Quantity::Macs
                } else {
                    Quantity::Params
                };
                let goal = Goal {
                    quantity: q,
                    target: x,
                    objective: opts.objective,
                };
                let solved = solve::solve(
                    &analysis,
                    &dense_graph,
                    &dense,
                    &dense_cost,
                    &report.curves,
                    goal,
                )
                .map_err(show)?;
                solution(&analysis, b, opts.objective, solved, None)
            }
            Budget::Latency(x) => latency_budget(
                s,
                &analysis,
                &dense_graph,
                &sd,
                inputs,
                &report,
                (x, opts.objective),
            )?,
        };
        report.solution = Some(sol);
    }
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| plan.export.join("sensitivity"));
    write(&out, &report, block.as_deref(), &analysis, path)?;
    println!("{}", report.table());
    Ok(report)
}

fn solution(
    a: &Analysis,
    budget: Budget,
    objective: Objective,
    solved: Solved,
    latency_ms: Option<(f64, f64)>,
) -> Solution {
    Solution {
        budget,
        objective,
        ratios: a
            .subjects
            .iter()
            .map(|s| s.name.clone())
            .zip(solved.ratios)
            .collect(),
        cost: solved.cost,
        summed_drop: solved.summed_drop,
        summed_loss: solved.summed_loss,
        latency_ms,
        evaluations: solved.evaluations,
    }
}

/// A latency budget: the least pruning (the largest MAC budget, found by
/// bisection over the solver's MAC solutions) whose model, measured in
/// alternation with the dense one at batch 64, takes at most `x` of the
/// dense model's time, minimising `objective` within each MAC budget.
fn latency_budget(
    s: &mut Session,
    a: &Analysis,
    graph: &Graph,
    sd: &StateDict,
    inputs: decide::Inputs<'_>,
    report: &Report,
    (x, objective): (f64, Objective),
) -> Result<Solution, RunError> {
    let probes = a.subjects.len() * a.ratios.len();
    let measure = |s: &mut Session, ratios: &[f64]| -> Result<(f64, f64), RunError> {
        // Every probe is cached by now; the search itself starts again.
        if cancelled() {
            return Err(interrupted(probes, probes));
        }
        let mut m = pruned(&a.stage_with(ratios), graph, sd, inputs, s.device)?;
        std::mem::swap(&mut s.model, &mut m);
        // `m` is now the dense model.
        let r = s.latencies(Some(&mut m));
        std::mem::swap(&mut s.model, &mut m);
        let (p, d) = r?;
        Ok((d.map_or(0.0, |d| d.batch64_ms), p.batch64_ms))
    };
    let solve_macs = |m: f64| {
        solve::solve(
            a,
            graph,
            &report.dense,
            &report.dense_cost,
            &report.curves,
            Goal {
                quantity: Quantity::Macs,
                target: m,
                objective,
            },
        )
    };
    // The least MACs the measured ratios reach.
    let floor = match solve_macs(0.0) {
        Err(prunex::sensitivity::SensitivityError::Infeasible { reachable, .. }) => reachable,
        _ => 0.0,
    };
    let (mut lo, mut hi) = (floor, 1.0);
    // The most pruning first: if it does not fit, nothing does.
    let first = solve_macs(floor).map_err(show)?;
    let t = measure(s, &first.ratios)?;
    if t.1 > x * t.0 {
        return Err(show(prunex::sensitivity::SensitivityError::Infeasible {
            what: "latency",
            target: x,
            reachable: t.1 / t.0.max(1e-9),
        }));
    }
    let mut best = (first, t);
    for _ in 0..6 {
        let mid = (lo + hi) / 2.0;
        let solved = solve_macs(mid).map_err(show)?;
        let t = measure(s, &solved.ratios)?;
        s.say(format_args!(
            "latency budget: MACs ≤ {mid:.3} of dense → {:.2} of the dense model's latency",
            t.1 / t.0.max(1e-9)
        ));
        if t.1 <= x * t.0 {
            lo = mid;
            best = (solved, t);
        } else {
            hi = mid;
        }
    }
    let (solved, t) = best;
    Ok(solution(a, Budget::Latency(x), objective, solved, Some(t)))
}

fn write(
    out: &Path,
    report: &Report,
    block: Option<&str>,
    a: &Analysis,
    recipe: &Path,
) -> Result<(), RunError> {
    let fail = |p: &Path, e: std::io::Error| RunError::Write {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(|e| fail(out, e))?;
    let y = out.join("sensitivity.yaml");
    write_atomically(&y, prunex::yaml::to_string(report)).map_err(|e| fail(&y, e))?;
    let j = out.join("sensitivity.json");
    write_atomically(
        &j,
        serde_json::to_string_pretty(report).expect("reports serialize"),
    )
    .map_err(|e| fail(&j, e))?;
    let svg = out.join("sensitivity.svg");
    let mut wrote = format!("{} and {}", y.display(), j.display());
    match report.chart() {
        Ok(c) => {
            write_atomically(&svg, c).map_err(|e| fail(&svg, e))?;
            wrote = format!("{}, {wrote}", svg.display());
        }
        Err(e) => {
            // A chart from an earlier analysis must not sit beside these
            // results as if it were theirs.
            let _ = std::fs::remove_file(&svg);
            eprintln!("warning: {e}; sensitivity.svg was not written");
        }
    }
    eprintln!("wrote {wrote}");
    if let (Some(sol), Some(block)) = (&report.solution, block) {
        let b = sol.budget;
        let (dense, reached) = match (b, sol.latency_ms) {
            (Budget::Params(_), _) => (report.dense_cost.params as f64, sol.cost.params as f64),
            (Budget::Latency(_), Some((d, p))) => (d, p),
            _ => (report.dense_cost.macs as f64, sol.cost.macs as f64),
        };
        let mut header = vec![
            format!(
                "Per-{} ratios chosen by `prunex sensitivity {}` for {} ≤ {} of the dense model's.",
                match a.rule {
                    prunex::sensitivity::RuleWord::Group => "group",
                    prunex::sensitivity::RuleWord::Layer => "layer",
                },
                recipe.display(),
                b.what(),
                b.fraction()
            ),
            format!(
                "Predicted: MACs {} → {} ({:.3} of dense), parameters {} → {} ({:.3}).",
                report.dense_cost.macs,
                sol.cost.macs,
                sol.cost.macs as f64 / report.dense_cost.macs.max(1) as f64,
                report.dense_cost.params,
                sol.cost.params,
                sol.cost.params as f64 / report.dense_cost.params.max(1) as f64,
            ),
            match sol.objective {
                Objective::Loss => format!(
                    "Least summed loss increase on the measured curves: {:.4} (accuracy lost, summed: {:.2} pt; {} test images per probe).",
                    sol.summed_loss, sol.summed_drop, report.images
                ),
                Objective::Accuracy => format!(
                    "Least summed accuracy loss on the measured curves: {:.2} pt (loss increase, summed: {:.4}; {} test images per probe).",
                    sol.summed_drop, sol.summed_loss, report.images
                ),
            },
        ];
        if let Some((d, p)) = sol.latency_ms {
            header.push(format!(
                "Measured latency at batch 64: {d:.2} → {p:.2} ms ({:.3} of dense).",
                p / d.max(1e-9)
            ));
        }
        header.push("Use it in place of the recipe's prune block: include \"<this file>\"; `prunex plan` shows the counts.".into());
        let text = fragment::write(block, a.rule, &sol.ratios, &header).map_err(show)?;
        let f = out.join(format!("{}.prune", b.slug()));
        write_atomically(&f, text).map_err(|e| fail(&f, e))?;
        eprintln!(
            "budget {} ≤ {}: {} ({:.3} of dense), summed {} {}; rules in {}",
            b.what(),
            b.fraction(),
            match b {
                Budget::Latency(_) => format!("{reached:.2} ms"),
                _ => format!("{reached:.0}"),
            },
            reached / dense.max(1e-9),
            sol.objective.what(),
            match sol.objective {
                Objective::Loss => format!("{:.4}", sol.summed_loss),
                Objective::Accuracy => format!("{:.2} pt", sol.summed_drop),
            },
            f.display()
        );
    }
    Ok(())
}
