//! Loading recipes with includes: order of effect, merging, cycles, depth,
//! and paths relative to the file that names them.

use std::path::Path;

use prunex::check::{check_path, parse_override, resolve, Mode};
use prunex::syntax::{load, MemLoader, Problem};

fn code(r: &miette::Report) -> String {
    r.code().map(|c| c.to_string()).unwrap_or_default()
}

#[test]
fn includes_take_effect_where_they_stand_and_blocks_merge() {
    let loader = MemLoader::new()
        .with(
            "repo/recipes/main.prune",
            "recipe \"m\"\ninclude \"../common/train.prune\"\nmodel lenet5\ndata mnist \"data\"\nfinetune { epochs 9 }\nseed 3\n",
        )
        .with(
            "repo/common/train.prune",
            "finetune { epochs 2 optimizer sgd lr 0.1 momentum 0.9 }\nseed 1\nexport \"out\"\n",
        );
    let unresolved = load(Path::new("repo/recipes/main.prune"), &loader);
    assert!(unresolved.problems.is_empty());
    let (recipe, errors) = resolve(&unresolved, &[], &[]);
    assert!(errors.is_empty(), "{errors:?}");
    let ft = recipe.finetune.unwrap();
    assert_eq!(
        ft.epochs,
        Some(9),
        "the recipe's epochs override the fragment's"
    );
    assert_eq!(ft.lr, Some(0.1), "the fragment's optimizer settings stay");
    assert_eq!(
        ft.optimizer,
        Some(prunex::check::recipe::OptimizerKind::Sgd)
    );
    assert_eq!(recipe.seed, Some(3), "the later seed wins");
    // Paths are relative to the file that names them.
    assert_eq!(recipe.export.unwrap().node, Path::new("repo/common/out"));
    assert_eq!(
        recipe.data.unwrap().path.node,
        Path::new("repo/recipes/data")
    );
}

#[test]
fn a_cycle_is_reported_once_with_its_chain() {
    let loader = MemLoader::new()
        .with("a.prune", "include \"b.prune\"\n")
        .with("b.prune", "include \"c.prune\"\n")
        .with("c.prune", "include \"a.prune\"\n");
    let unresolved = load(Path::new("a.prune"), &loader);
    assert_eq!(unresolved.problems.len(), 1);
    let Problem::Load(e) = &unresolved.problems[0] else {
        panic!("expected a load error")
    };
    let text = format!("{e:?}");
    assert!(
        text.contains("`a.prune` → `b.prune` → `c.prune` → `a.prune`"),
        "{text}"
    );
}

#[test]
fn the_same_fragment_may_be_included_twice() {
    // Diamonds are not cycles.
    let loader = MemLoader::new()
        .with("r.prune", "include \"x.prune\"\ninclude \"y.prune\"\n")
        .with("x.prune", "include \"common.prune\"\n")
        .with("y.prune", "include \"common.prune\"\n")
        .with("common.prune", "seed 1\n");
    assert!(load(Path::new("r.prune"), &loader).problems.is_empty());
}

#[test]
fn include_depth_is_bounded() {
    let mut loader = MemLoader::new();
    for i in 0..40 {
        loader = loader.with(
            format!("f{i}.prune"),
            format!("include \"f{}.prune\"\n", i + 1),
        );
    }
    loader = loader.with("f40.prune", "seed 1\n");
    let unresolved = load(Path::new("f0.prune"), &loader);
    assert_eq!(unresolved.problems.len(), 1);
    assert!(format!("{:?}", unresolved.problems[0]).contains("IncludeDepth"));
}

#[test]
fn overrides_replace_variables_and_unknown_names_are_errors() {
    let loader = MemLoader::new().with(
        "r.prune",
        "recipe \"r\"\nlet t = 0.5\nmodel lenet5\ndata mnist \"d\"\nprune weights { sparsity $t }\n",
    );
    let set = [parse_override("t=70%").unwrap()];
    let checked = check_path(Path::new("r.prune"), &loader, &set, Mode::Single);
    assert!(checked.reports.is_empty());
    let recipe = checked.recipe.unwrap();
    assert_eq!(recipe.prune[0].target, Some(0.7));
    assert_eq!(recipe.variables["t"], "70%");

    let set = [parse_override("tt=1").unwrap()];
    let checked = check_path(Path::new("r.prune"), &loader, &set, Mode::Single);
    assert_eq!(checked.reports.len(), 1);
    assert_eq!(code(&checked.reports[0]), "prunex::check::unknown_override");
    // Over many files, a name may belong to another recipe.
    let checked = check_path(Path::new("r.prune"), &loader, &set, Mode::Many);
    assert!(checked.reports.is_empty());
}

#[test]
fn override_values_are_literals() {
    let n = parse_override("lr=1e-3").unwrap();
    assert!(matches!(n.value, prunex::syntax::ast::Value::Number { value, .. } if value == 1e-3));
    let s = parse_override("dir=\"/data x\"").unwrap();
    assert_eq!(s.value, prunex::syntax::ast::Value::Str("/data x".into()));
    assert!(parse_override("=1").is_err());
    assert!(parse_override("1x=1").is_err());
    assert!(parse_override("x=5e999").is_err());
}

#[test]
fn fragments_skip_variable_checks_but_not_value_checks() {
    let loader = MemLoader::new().with("frag.prune", "finetune { lr $rate epochs 2.5 }\n");
    let checked = check_path(Path::new("frag.prune"), &loader, &[], Mode::Single);
    assert_eq!(checked.reports.len(), 1, "{:?}", checked.reports);
    assert_eq!(code(&checked.reports[0]), "prunex::check::type_mismatch");
}

#[test]
fn model_descriptions_and_weights_are_read_through_the_loader() {
    let model = std::fs::read_to_string("examples/models/se-concat-net.yaml").unwrap();
    let recipe = "recipe \"m\"\nmodel \"net.yaml\"\ndata mnist \"data\"\n";
    // The description exists only in the loader: the check finds it there.
    let loader = MemLoader::new()
        .with("repo/m.prune", recipe)
        .with("repo/net.yaml", model.as_str());
    let checked = check_path(Path::new("repo/m.prune"), &loader, &[], Mode::Single);
    let codes: Vec<String> = checked.reports.iter().map(code).collect();
    assert!(checked.graph.is_some(), "{codes:?}");
    assert!(!codes.iter().any(|c| c.contains("model")), "{codes:?}");
    // A file on disk that the loader does not have is not read: the check
    // sees only what its loader shows (the fuzzer, `prunex diff REV:PATH`).
    let loader = MemLoader::new().with(
        "m.prune",
        "recipe \"m\"\nmodel \"examples/models/se-concat-net.yaml\"\ndata mnist \"data\"\n",
    );
    let checked = check_path(Path::new("m.prune"), &loader, &[], Mode::Single);
    let codes: Vec<String> = checked.reports.iter().map(code).collect();
    assert!(checked.graph.is_none());
    assert!(
        codes.iter().any(|c| c == "prunex::model::unreadable"),
        "{codes:?}"
    );
    // Weights too: a header the loader does not have is unreadable.
    let loader = MemLoader::new().with(
        "m.prune",
        "recipe \"m\"\nmodel lenet5 { weights \"w.safetensors\" }\ndata mnist \"data\"\n",
    );
    let checked = check_path(Path::new("m.prune"), &loader, &[], Mode::Single);
    let codes: Vec<String> = checked.reports.iter().map(code).collect();
    assert!(
        codes.iter().any(|c| c == "prunex::weights::unreadable"),
        "{codes:?}"
    );
}
