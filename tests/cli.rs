//! End-to-end tests of the real `prunex` binary: exit codes, what it prints,
//! and what it writes.

use assert_cmd::Command;
use predicates::prelude::*;
use std::fs;

fn prunex() -> Command {
    let mut c = Command::cargo_bin("prunex").unwrap();
    // What users see does not depend on this machine's GPUs: none are visible.
    c.env("NO_COLOR", "1").env("CUDA_VISIBLE_DEVICES", "");
    c
}

/// What `prunex ARGS` prints on stdout; it must succeed.
fn stdout_of(args: &[&str]) -> String {
    stdout_in(std::path::Path::new("."), args)
}

/// What `prunex ARGS` run in `dir` prints on stdout; it must succeed.
fn stdout_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = prunex()
        .current_dir(dir)
        .args(args)
        .assert()
        .success()
        .get_output()
        .clone();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn check_passes_on_good_recipes_and_counts_fragments() {
    prunex()
        .args(["check", "tests/fixtures/ok"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "checked 26 recipes and 1 fragment: 0 errors",
        ));
}

#[test]
fn check_fails_with_every_error_of_a_file() {
    prunex()
        .args(["check", "tests/fixtures/err/unknown-setting.prune"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("prunex::syntax::unknown_setting"))
        .stderr(predicate::str::contains("4 errors"));
}

#[test]
fn check_json_emits_one_object_per_diagnostic() {
    let out = prunex()
        .args([
            "check",
            "--format",
            "json",
            "tests/fixtures/err/variables.prune",
            "tests/fixtures/err/unexpected-values.prune",
        ])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).expect("each line is one JSON object");
        assert!(v["code"].as_str().unwrap().starts_with("prunex::"));
    }
    insta::assert_snapshot!(text);
}

#[test]
fn check_reports_a_missing_recipe_file() {
    prunex()
        .args(["check", "no/such/recipe.prune"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("prunex::syntax::unreadable"))
        .stderr(predicate::str::contains(
            "cannot read recipe `no/such/recipe.prune`",
        ));
}

#[test]
fn check_refuses_a_folder_without_recipes() {
    let dir = tempfile::tempdir().unwrap();
    prunex()
        .arg("check")
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("prunex::cli::no_recipes"));
}

#[test]
fn set_overrides_a_variable_and_is_checked() {
    let recipe = "tests/fixtures/ok/sketch-resnet18-channels-gradual.prune";
    prunex()
        .args(["check", recipe, "--set", "target=0.6"])
        .assert()
        .success();
    prunex()
        .args(["check", recipe, "--set", "target=1.5"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("prunex::check::out_of_range"))
        .stderr(predicate::str::contains("`$target` is 1.5 from `--set`"));
    prunex()
        .args(["check", recipe, "--set", "targte=0.6"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("prunex::check::unknown_override"))
        .stderr(predicate::str::contains("did you mean `target`?"));
    prunex()
        .args(["check", recipe, "--set", "target"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("prunex::check::bad_override"));
}

/// A copy of the committed Fashion-MNIST slice in `dir/fm`, so that the
/// data pre-flight has nothing to say.
fn small_data(dir: &std::path::Path) -> std::path::PathBuf {
    let to = dir.join("fm");
    fs::create_dir_all(&to).unwrap();
    for f in fs::read_dir("tests/fixtures/data/fashion-mnist-small").unwrap() {
        let f = f.unwrap().path();
        fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
    to
}

#[test]
fn warnings_fail_only_when_denied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.prune");
    fs::write(
        &path,
        format!(
            "recipe \"w\"\nlet unused = 1\nmodel lenet5\ndata mnist \"{}\"\n",
            small_data(dir.path()).display()
        ),
    )
    .unwrap();
    prunex()
        .arg("check")
        .arg(&path)
        .assert()
        .success()
        .stderr(predicate::str::contains("1 warning"));
    prunex()
        .arg("check")
        .arg("--deny-warnings")
        .arg(&path)
        .assert()
        .code(1);
}

#[test]
fn fmt_check_accepts_formatted_and_diffs_unformatted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.prune");
    let messy =
        "recipe   \"r\"\nmodel lenet5 {\ninput [1,28,28]   # shape\n}\n\n\n\ndata mnist \"d\"\n";
    fs::write(&path, messy).unwrap();
    prunex()
        .args(["fmt", "--check"])
        .arg(&path)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("is not formatted"))
        .stdout(predicate::str::contains("+    input [1, 28, 28]  # shape"));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        messy,
        "--check must not write"
    );
    prunex().arg("fmt").arg(&path).assert().success();
    let formatted = fs::read_to_string(&path).unwrap();
    assert_eq!(
        formatted,
        "recipe \"r\"\nmodel lenet5 {\n    input [1, 28, 28]  # shape\n}\n\ndata mnist \"d\"\n"
    );
    prunex()
        .args(["fmt", "--check"])
        .arg(&path)
        .assert()
        .success();
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn fmt_leaves_a_file_with_syntax_errors_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.prune");
    let text = "recipe \"bad\"\nmodle lenet5\n";
    fs::write(&path, text).unwrap();
    prunex()
        .arg("fmt")
        .arg(&path)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("prunex::syntax::unknown_item"));
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[cfg(feature = "torch")]
#[test]
fn version_reports_libtorch_and_cuda() {
    prunex()
        .arg("version")
        .assert()
        .success()
        .stdout(predicate::str::contains(concat!(
            "prunex ",
            env!("CARGO_PKG_VERSION")
        )))
        .stdout(predicate::str::contains("libtorch 2.13.0"))
        .stdout(predicate::str::contains("cuda: "))
        .stdout(predicate::str::contains("cudnn: "));
}

#[cfg(feature = "torch")]
#[test]
fn the_front_end_does_not_link_libtorch() {
    // `prunex check` must start in milliseconds: only prunex-exec loads
    // libtorch. A NEEDED entry for libtorch in `prunex` would undo that.
    let bin = assert_cmd::cargo::cargo_bin("prunex");
    let bytes = fs::read(bin).unwrap();
    let needle = b"libtorch_cpu.so";
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the prunex binary references libtorch_cpu.so"
    );
    let exec = fs::read(assert_cmd::cargo::cargo_bin("prunex-exec")).unwrap();
    for lib in [&b"libtorch_cpu.so"[..], b"libtorch_cuda.so"] {
        assert!(
            exec.windows(lib.len()).any(|w| w == lib),
            "prunex-exec must link {}",
            String::from_utf8_lossy(lib)
        );
    }
}

#[test]
fn inspect_groups_shows_the_coupling() {
    insta::assert_snapshot!(stdout_of(&[
        "inspect", "resnet18", "--groups", "--input", "3,32,32"
    ]));
}

/// Grouped convolutions prune in steps of their groups; `inspect` and
/// `plan` say so beside the channel count.
#[test]
fn grouped_convolutions_show_their_steps() {
    insta::assert_snapshot!(stdout_of(&[
        "inspect",
        "tests/fixtures/ok/models/grouped-cnn.yaml",
        "--groups"
    ]));
    assert_eq!(
        plan_row("tests/fixtures/ok/grouped-convolutions.prune", "grouped"),
        ["32 (steps of 4)", "0.3 (stage)", "20"]
    );
}

/// The channels, target and keep cells of the `prunex plan` row whose
/// layers start with `layer`.
fn plan_row(recipe: &str, layer: &str) -> Vec<String> {
    let plan = stdout_of(&["plan", recipe]);
    let row = plan
        .lines()
        .find(|l| l.contains(&format!("│ {layer} ")))
        .unwrap_or_else(|| panic!("{plan}"));
    let cells: Vec<String> = row.split('│').map(|c| c.trim().to_owned()).collect();
    cells[3..6].to_vec()
}

/// A ViT's groups: the residual stream, one group of heads per attention
/// layer, one MLP width per block; `prunex plan` counts heads kept.
#[test]
fn attention_heads_are_groups_and_plans_count_them() {
    insta::assert_snapshot!(stdout_of(&["inspect", "vit_mini", "--groups"]));
    let plan = stdout_of(&["plan", "tests/fixtures/ok/vit-heads-and-widths.prune"]);
    insta::assert_snapshot!("vit_plan", plan);
    // Grouped-query attention: units are key/value heads with their query
    // heads; the plan counts query heads.
    assert_eq!(
        plan_row("tests/fixtures/ok/gqa-heads.prune", "attn"),
        ["4 heads (2 key/value)", "0.5 (stage)", "2 heads"]
    );
}

#[test]
fn plan_shows_every_target_and_where_it_came_from() {
    let out = prunex()
        .args([
            "plan",
            "tests/fixtures/ok/sketch-resnet18-channels-gradual.prune",
            "--set",
            "target=0.4",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("prunex::check::ignored_coupled"));
    insta::assert_snapshot!(stdout);
    let yaml = stdout_of(&["plan", "--yaml", "recipes/lenet5-fashion.prune"]);
    assert!(
        yaml.contains("granularity: weights") && yaml.contains("layer: fc3"),
        "{yaml}"
    );
    prunex()
        .args(["plan", "tests/fixtures/err/coupled-ratio.prune"])
        .assert()
        .code(1);
}

/// `--nproc N`: the batch is per rank, with the global batch beside it,
/// and how BatchNorm runs.
#[test]
fn plan_for_several_ranks_says_the_batch_is_per_rank() {
    let out = stdout_of(&["plan", "tests/fixtures/ok/sync-bn.prune", "--nproc", "8"]);
    let tail: Vec<&str> = out.lines().rev().take(2).collect();
    insta::assert_snapshot!(tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    let one = stdout_of(&["plan", "tests/fixtures/ok/sync-bn.prune"]);
    assert!(
        one.contains("finetune: 2 epochs · sgd (momentum 0.9) · lr 0.01 · batch 64\n"),
        "{one}"
    );
}

/// Rounds of `iterative` over per-layer rules say how far toward each
/// layer's own target they go (there is no stage-wide fraction to print).
#[test]
fn plan_of_iterative_rounds_over_layer_rules() {
    insta::assert_snapshot!(stdout_of(&[
        "plan",
        "tests/fixtures/ok/iterative-per-layer.prune"
    ]));
}

/// `prunex plan … | head` ends quietly, as Unix filters do, instead of
/// panicking on the closed pipe.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_prunex"))
        .args(["plan", "tests/fixtures/ok/iterative-per-layer.prune"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn diff_shows_what_a_recipe_change_does() {
    insta::assert_snapshot!(stdout_of(&[
        "diff",
        "tests/fixtures/diff/old.prune",
        "tests/fixtures/diff/new.prune",
    ]));
}

/// A schedule over per-layer rules reads as how far toward each layer's
/// own target it goes, not as a stage-wide fraction of 0.
#[test]
fn diff_of_schedules_over_per_layer_rules() {
    insta::assert_snapshot!(stdout_of(&[
        "diff",
        "tests/fixtures/diff/layers-oneshot.prune",
        "tests/fixtures/diff/layers-iterative.prune",
    ]));
}

/// Runs git in `dir` (as a throwaway identity); fails the test on error.
fn git_in(dir: &std::path::Path, args: &[&str]) {
    let s = std::process::Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
}

/// `prunex diff OLD NEW` in `dir`; its stdout, after a successful exit.
fn diff_in(dir: &std::path::Path, old: &str, new: &str) -> String {
    stdout_in(dir, &["diff", old, new])
}

#[test]
fn diff_reads_a_git_revision() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let git = |args: &[&str]| git_in(d, args);
    git(&["init", "-q"]);
    std::fs::create_dir(d.join("common")).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        d.join("common/train.prune"),
        "finetune { epochs 10 optimizer sgd lr 0.01 momentum 0.9 }\n",
    )
    .unwrap();
    let main = std::fs::read_to_string(format!("{root}/tests/fixtures/diff/old.prune"))
        .unwrap()
        .replace(
            "finetune { epochs 10 optimizer sgd lr 0.01 momentum 0.9 }",
            "include \"common/train.prune\"",
        );
    std::fs::write(d.join("r.prune"), &main).unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "one"]);
    // Change only the included file in the work tree.
    std::fs::write(
        d.join("common/train.prune"),
        "finetune { epochs 12 optimizer sgd lr 0.01 momentum 0.9 }\n",
    )
    .unwrap();
    let text = diff_in(d, "HEAD:r.prune", "r.prune");
    assert!(text.contains("epochs"), "{text}");
    assert!(text.contains("1 difference"), "{text}");
}

#[test]
fn diff_reads_model_descriptions_at_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let git = |args: &[&str]| git_in(d, args);
    git(&["init", "-q"]);
    let root = env!("CARGO_MANIFEST_DIR");
    let model =
        std::fs::read_to_string(format!("{root}/examples/models/se-concat-net.yaml")).unwrap();
    std::fs::write(d.join("net.yaml"), &model).unwrap();
    std::fs::write(
        d.join("r.prune"),
        "recipe \"r\"\nmodel \"net.yaml\"\ndata cifar10 \"data\"\n\
         prune channels by l2 {\n    schedule oneshot\n    ratio 0.25\n    ignore \"fc\"\n}\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "one"]);
    // Only the model description changes in the work tree: a wider classifier.
    std::fs::write(
        d.join("net.yaml"),
        model.replace(
            "in_features: 32, out_features: 10",
            "in_features: 32, out_features: 100",
        ),
    )
    .unwrap();
    let diff = |old: &str| diff_in(d, old, "r.prune");
    // The revision's recipe is checked against the revision's model: the
    // parameter count differs (before, the work tree's model was read for
    // both sides and no difference showed).
    let text = diff("HEAD:r.prune");
    assert!(text.contains("params"), "{text}");
    git(&["add", "."]);
    git(&["commit", "-qm", "two"]);
    let text = diff("HEAD:r.prune");
    assert!(text.contains("resolve to the same plan"), "{text}");
}

#[test]
fn cache_info_and_clean_report_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // One entry, as the executor writes them (a folder named by its key).
    let entry = cache.join("a".repeat(64));
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("meta.json"), "{}").unwrap();
    std::fs::write(entry.join("model.safetensors"), vec![0u8; 2000]).unwrap();
    let info = prunex()
        .env("PRUNEX_CACHE", &cache)
        .args(["cache", "info"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success());
    assert!(text.contains("1 entries, 2.0 KB"), "{text}");
    let clean = prunex()
        .env("PRUNEX_CACHE", &cache)
        .args(["cache", "clean"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success());
    assert!(text.starts_with("removed 1 entries (2.0 KB)"), "{text}");
    assert!(!entry.exists());
}

/// Settings compare as the plan resolved them: writing out a default is no
/// difference, changing one is.
#[test]
fn diff_compares_settings_with_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = |finetune: &str| {
        format!(
            "recipe \"d\"\nmodel lenet5 {{ input [1, 28, 28] classes 10 }}\n\
             data fashion_mnist \"/data\"\nprune weights {{ ratio 0.5 }}\n{finetune}\n"
        )
    };
    for (name, finetune) in [
        ("a.prune", "finetune { epochs 2 }"),
        ("b.prune", "finetune { epochs 2 lr 0.01 optimizer sgd }"),
        ("c.prune", "finetune { epochs 2 lr 0.02 }"),
    ] {
        std::fs::write(dir.path().join(name), recipe(finetune)).unwrap();
    }
    let same = stdout_in(dir.path(), &["diff", "a.prune", "b.prune"]);
    assert!(same.contains("resolve to the same plan"), "{same}");
    let changed = stdout_in(dir.path(), &["diff", "a.prune", "c.prune"]);
    assert!(
        changed.contains("│ finetune │ lr") && changed.contains("1 difference"),
        "{changed}"
    );
}

/// A FIFO named as weights is refused at once with a coded diagnostic; it
/// was opened and waited on for a writer forever.
#[test]
fn a_fifo_as_weights_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = std::ffi::CString::new(dir.path().join("w.safetensors").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::write(
        dir.path().join("r.prune"),
        "recipe \"fifo\"\nmodel lenet5 { input [1, 28, 28] classes 10 weights \"w.safetensors\" }\n\
         data fashion_mnist \"/data\"\n",
    )
    .unwrap();
    let out = prunex()
        .current_dir(dir.path())
        .args(["check", "r.prune"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("prunex::weights::unreadable") && err.contains("FIFO"),
        "{err}"
    );
}

/// An error past the columns miette can draw (Rust caps a format width at
/// 65,535; a label there panicked) is rendered as plain lines with its
/// place; check, plan and fmt --check exit 1, never 101.
#[test]
fn an_error_past_column_65535_is_rendered_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("recipe \"long\"\nlet x = 1{} oops\n", " ".repeat(70_000));
    let deep = format!("recipe \"deep\"\nmodel lenet5 {}\n", "{".repeat(100_000));
    std::fs::write(dir.path().join("long.prune"), long).unwrap();
    std::fs::write(dir.path().join("deep.prune"), deep).unwrap();
    for file in ["long.prune", "deep.prune"] {
        for cmd in [&["check"][..], &["plan"], &["fmt", "--check"]] {
            let out = prunex()
                .current_dir(dir.path())
                .args(cmd)
                .arg(file)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd:?} {file}: {err}");
            assert!(err.contains("prunex::syntax::"), "{cmd:?} {file}: {err}");
        }
    }
    let out = prunex()
        .current_dir(dir.path())
        .args(["check", "long.prune"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("  at long.prune:2:70011: "), "{err}");
    insta::assert_snapshot!(err);
}

/// Thousands of diagnostics: the first ones are drawn, the rest counted by
/// code (drawing each read the file up to it: quadratic in their number);
/// `--format json` still lists every one.
#[test]
fn many_diagnostics_are_drawn_up_to_a_cap_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "recipe \"dups\"\nmodel lenet5 {{ input [1, 28, 28] classes 10 }}\n\
         data fashion_mnist \"/data\"\n{}",
        "seed 1\n".repeat(2_001)
    );
    std::fs::write(dir.path().join("r.prune"), text).unwrap();
    let out = prunex()
        .current_dir(dir.path())
        .args(["check", "r.prune"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.matches("× `seed` is given twice").count(), 50, "{err}");
    assert!(
        err.contains("… and 1950 more not shown (prunex::check::duplicate_item ×1950)")
            && err.contains("2000 errors"),
        "{err}"
    );
    let out = prunex()
        .current_dir(dir.path())
        .args(["check", "r.prune", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2000);
}

/// `--set` reaches any setting, with the checks and diagnostics of the
/// recipe's own text, and the plan lists what was set.
#[test]
fn set_reaches_settings_and_the_plan_shows_it() {
    let plan = stdout_of(&[
        "plan",
        "--yaml",
        "tests/fixtures/ok/short-training.prune",
        "--set",
        "finetune.epochs=1",
        "--set",
        "data.batch=64",
        "--set",
        "prune.1.ratio=30%",
        "--set",
        "seed=3",
    ]);
    for want in [
        "overrides:\n- finetune.epochs=1\n- data.batch=64\n- prune.1.ratio=30%\n- seed=3\n",
        "\nseed: 3\n",
        "  batch: 64\n",
        "    fraction: 0.3\n",
        "finetune:\n  epochs: 1\n",
    ] {
        assert!(plan.contains(want), "{want:?} in\n{plan}");
    }
    let mut errors = String::new();
    for set in [
        "finetune.epoch=1",
        "prune.3.ratio=0.2",
        "finetunes.epochs=1",
    ] {
        let out = prunex()
            .args([
                "plan",
                "tests/fixtures/ok/short-training.prune",
                "--set",
                set,
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{set}");
        let err = String::from_utf8_lossy(&out.stderr);
        errors += &err[..err
            .find("prunex::check::longer_than_training")
            .unwrap_or(err.len())];
    }
    insta::assert_snapshot!(errors);
}

/// An export folder that cannot be created (a file on its path, a NUL in
/// it) is a check error before anything trains; the run trained to the end
/// and then failed to write. (An unwritable folder is refused the same way,
/// through access(2); as root, as tests run in CI, every folder is
/// writable, so that case is not exercised here.)
#[test]
fn an_export_folder_that_cannot_be_written_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "a file").unwrap();
    small_data(dir.path());
    let recipe = |export: &str| {
        format!(
            "recipe \"e\"\nmodel lenet5 {{ input [1, 28, 28] classes 10 }}\n\
             data fashion_mnist \"fm\"\nexport \"{export}\"\n"
        )
    };
    std::fs::write(dir.path().join("file.prune"), recipe("blocker/out")).unwrap();
    std::fs::write(dir.path().join("nul.prune"), recipe("a\0b")).unwrap();
    let mut shown = String::new();
    for file in ["file.prune", "nul.prune"] {
        let out = prunex()
            .current_dir(dir.path())
            .args(["check", file])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{file}");
        shown += &String::from_utf8_lossy(&out.stderr);
    }
    insta::assert_snapshot!(shown.replace('\0', "␀"));
}

/// The adversarial corpus (long lines, deep nesting, thousands of
/// diagnostics, numbers past every range; the fuzzer seeds from it too):
/// check, plan and fmt --check exit 0 or 1, never 101.
#[test]
fn adversarial_inputs_exit_with_documented_codes() {
    for entry in std::fs::read_dir("tests/fixtures/adversarial").unwrap() {
        let path = entry.unwrap().path();
        for cmd in [&["check"][..], &["plan"], &["fmt", "--check"]] {
            let out = prunex()
                .args(cmd)
                .arg(&path)
                .timeout(std::time::Duration::from_secs(60))
                .output()
                .unwrap();
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "{cmd:?} {}: {:?}\n{}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `prunex inspect` on an ONNX file: its layers by module path, and what
/// the import says of its weights.
#[test]
fn inspect_reads_onnx_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("net.onnx"), prunex::fuzz::tiny_onnx()).unwrap();
    insta::assert_snapshot!(stdout_in(dir.path(), &["inspect", "net.onnx"]));
    insta::assert_snapshot!(
        "inspect_onnx_groups",
        stdout_in(dir.path(), &["inspect", "net.onnx", "--groups"])
    );
}
