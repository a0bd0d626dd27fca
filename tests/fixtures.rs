//! Fixture tests: every `tests/fixtures/ok` recipe checks clean and its
//! resolved recipe is snapshotted; every `tests/fixtures/err` recipe renders
//! its diagnostics, snapshotted exactly as a user sees them.

use std::path::{Path, PathBuf};

use prunex::check::{check_path, Mode};
use prunex::diagnostics::render_human;
use prunex::syntax::{Entry, FsLoader, Loader};

/// The file system, except that data folders are not looked at: snapshots
/// do not depend on which data sets this machine has (the data pre-flight
/// has its own tests, in tests/data.rs).
struct Repo;

impl Loader for Repo {
    fn read(&self, path: &Path) -> std::io::Result<(PathBuf, String)> {
        FsLoader.read(path)
    }
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn prunex::syntax::load::ReadSeek>> {
        FsLoader.open(path)
    }
    fn writable(&self, dir: &Path) -> std::io::Result<()> {
        FsLoader.writable(dir)
    }
    fn cuda_devices(&self) -> Option<usize> {
        FsLoader.cuda_devices()
    }
    fn list(&self, _: &Path) -> std::io::Result<Vec<Entry>> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Fixture paths relative to the package root (tests run there), so that
/// rendered file names do not depend on where the checkout is.
fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .to_path_buf()
}

/// Snapshots do not depend on the machine's GPUs: none are visible.
fn no_gpus() {
    std::env::set_var("CUDA_VISIBLE_DEVICES", "");
}

#[test]
fn ok_fixtures_check_clean() {
    no_gpus();
    insta::glob!("fixtures/ok/**/*.prune", |path| {
        let rel = relative(path);
        let checked = check_path(&rel, &Repo, &[], Mode::Single);
        let rendered: String = checked
            .reports
            .iter()
            .map(|r| render_human(r, false))
            .collect();
        assert!(
            !checked.has_errors(),
            "{} has errors:\n{rendered}",
            rel.display()
        );
        let recipe = checked.recipe.expect("a clean recipe resolves");
        insta::assert_yaml_snapshot!(recipe);
    });
}

/// The plan of every ok fixture with a model (the golden dump reviewers and
/// watch mode read), with the warnings a user would see.
#[test]
fn ok_fixtures_plan() {
    no_gpus();
    insta::glob!("fixtures/ok/*.prune", |path| {
        let rel = relative(path);
        let checked = check_path(&rel, &Repo, &[], Mode::Single);
        let warnings: String = checked
            .reports
            .iter()
            .map(|r| render_human(r, false))
            .collect();
        let plan = checked
            .plan
            .map(|p| p.to_yaml())
            .unwrap_or_else(|| "no plan".into());
        insta::assert_snapshot!(format!(
            "{plan}{}{warnings}",
            if warnings.is_empty() {
                ""
            } else {
                "\n# warnings\n"
            }
        ));
    });
}

#[test]
fn err_fixtures_render_their_diagnostics() {
    no_gpus();
    insta::glob!("fixtures/err/*.prune", |path| {
        let rel = relative(path);
        let checked = check_path(&rel, &Repo, &[], Mode::Single);
        assert!(
            checked.has_errors(),
            "{} should fail to check",
            rel.display()
        );
        let rendered: Vec<String> = checked
            .reports
            .iter()
            .map(|r| render_human(r, false))
            .collect();
        insta::assert_snapshot!(rendered.join("\n"));
    });
}

/// `prunex plan --yaml` of every recipe in the repository: the whole
/// contract the executor reads — stages, the teacher, and every training,
/// data and distillation setting with its default filled in.
#[test]
fn recipes_plan() {
    no_gpus();
    insta::glob!(env!("CARGO_MANIFEST_DIR"), "recipes/*.prune", |path| {
        let rel = relative(path);
        let checked = check_path(&rel, &Repo, &[], Mode::Single);
        assert!(!checked.has_errors(), "{} has errors", rel.display());
        let plan = checked.plan.expect("a recipe has a plan");
        insta::assert_snapshot!(plan.to_yaml());
    });
}
