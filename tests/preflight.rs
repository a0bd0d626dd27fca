//! The data pre-flight of `prunex check`: a data folder's headers and sizes
//! read without decoding it agree with what a run's loading finds (the same
//! shapes and counts, the same diagnostic for each damaged file), and the
//! checker reports them at the recipe's data line before any training.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use prunex::check::{check_path, Mode};
use prunex::data::{load, probe, DataError, Kind};
use prunex::diagnostics::render_human;
use prunex::syntax::FsLoader;

const SMALL: &str = "tests/fixtures/data/fashion-mnist-small";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()),
        &mut out,
    )
    .unwrap();
    out
}

/// A complete IDX data set of `n` training and `n` test images of 28×28.
fn idx_set(dir: &Path, n: u32, zipped: bool) {
    for (images, labels) in [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ] {
        let (i, l) = (
            common::idx_images(n, 28, 28, (n * 28 * 28) as usize),
            common::idx_labels(n),
        );
        if zipped {
            write(dir, &format!("{images}.gz"), &gz(&i));
            write(dir, &format!("{labels}.gz"), &gz(&l));
        } else {
            write(dir, images, &i);
            write(dir, labels, &l);
        }
    }
}

fn png(path: &Path, w: u32, h: u32, color: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if color {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 9]))
            .save(path)
            .unwrap();
    } else {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x + y) as u8]))
            .save(path)
            .unwrap();
    }
}

/// The diagnostic code of a data error.
fn code(e: &DataError) -> String {
    miette::Diagnostic::code(e).unwrap().to_string()
}

/// The probe agrees with loading on a good folder, and reports the same
/// diagnostic (code and file) as loading for a bad one.
fn agree(kind: Kind, dir: &Path) {
    match (probe(kind, dir, &FsLoader), load(kind, dir, None)) {
        (Ok(p), Ok(ds)) => {
            assert_eq!(p.shape, ds.train.shape, "{}", dir.display());
            assert_eq!(p.classes, ds.classes);
            if let Some((train, test)) = p.images {
                assert_eq!((train, test), (ds.train.len(), ds.test.len()));
            }
        }
        (Err(p), Err(l)) => {
            assert_eq!(code(&p), code(&l), "probe: {p}\nload: {l}");
            assert_eq!(p.to_string(), l.to_string());
        }
        (p, l) => panic!(
            "the probe and loading disagree on {}: {:?} / {:?}",
            dir.display(),
            p.map(|_| ()),
            l.map(|_| ())
        ),
    }
}

#[test]
fn the_probe_reads_what_loading_reads() {
    // The committed slice of Fashion-MNIST, gzipped as Debian ships it …
    agree(Kind::FashionMnist, Path::new(SMALL));
    let p = probe(Kind::FashionMnist, Path::new(SMALL), &FsLoader).unwrap();
    assert_eq!((p.shape, p.images), ([1, 28, 28], Some((600, 200))));
    // … and uncompressed.
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(SMALL).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_stem().unwrap().to_str().unwrap().to_owned();
        write(dir.path(), &name, &gunzip(&f));
    }
    agree(Kind::FashionMnist, dir.path());
    // CIFAR-10 batches.
    let cifar = tempfile::tempdir().unwrap();
    for name in (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_owned()])
    {
        write(cifar.path(), &name, &vec![3u8; 2 * 3073]);
    }
    agree(Kind::Cifar10, cifar.path());
    // An image folder with colour in one class.
    let folder = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        png(&folder.path().join(split).join("cat/1.png"), 6, 5, false);
        png(&folder.path().join(split).join("dog/1.png"), 6, 5, true);
    }
    agree(Kind::ImageFolder, folder.path());
}

#[test]
fn damaged_data_gets_the_diagnostic_loading_would_give() {
    // Each case: a good set, then one file damaged.
    type Damage = fn(&Path);
    let idx: [(&str, Damage, &str); 6] = [
        (
            "truncated images",
            |d| {
                write(
                    d,
                    "train-images-idx3-ubyte",
                    &common::idx_images(4, 28, 28, 100),
                );
            },
            "prunex::data::truncated",
        ),
        (
            "truncated gzip images",
            |d| {
                std::fs::remove_file(d.join("train-images-idx3-ubyte")).unwrap();
                write(
                    d,
                    "train-images-idx3-ubyte.gz",
                    &gz(&common::idx_images(4, 28, 28, 100)),
                );
            },
            "prunex::data::truncated",
        ),
        (
            "truncated labels",
            |d| {
                let mut l = common::idx_labels(4);
                l.truncate(10);
                write(d, "t10k-labels-idx1-ubyte", &l);
            },
            "prunex::data::truncated",
        ),
        (
            "labels in place of images",
            |d| {
                write(d, "train-images-idx3-ubyte", &common::idx_labels(40));
            },
            "prunex::data::bad_magic",
        ),
        (
            "more images than labels",
            |d| {
                write(
                    d,
                    "t10k-images-idx3-ubyte",
                    &common::idx_images(5, 28, 28, 5 * 784),
                );
            },
            "prunex::data::count_mismatch",
        ),
        (
            "a missing file",
            |d| std::fs::remove_file(d.join("t10k-labels-idx1-ubyte")).unwrap(),
            "prunex::data::missing",
        ),
    ];
    for (what, damage, expected) in idx {
        let dir = tempfile::tempdir().unwrap();
        idx_set(dir.path(), 4, false);
        damage(dir.path());
        let e = probe(Kind::Mnist, dir.path(), &FsLoader).unwrap_err();
        assert_eq!(code(&e), expected, "{what}: {e}");
        agree(Kind::Mnist, dir.path());
    }
    // A CIFAR batch cut inside a record.
    let cifar = tempfile::tempdir().unwrap();
    for i in 1..=5 {
        write(cifar.path(), &format!("data_batch_{i}.bin"), &[0u8; 3073]);
    }
    write(cifar.path(), "test_batch.bin", &[0u8; 3073 + 100]);
    let e = probe(Kind::Cifar10, cifar.path(), &FsLoader).unwrap_err();
    assert_eq!(code(&e), "prunex::data::truncated");
    agree(Kind::Cifar10, cifar.path());
    // Image folders: a first image of another size, one that is not an
    // image, classes that differ, no test split.
    let f = tempfile::tempdir().unwrap();
    let d = f.path();
    for split in ["train", "test"] {
        png(&d.join(split).join("a/1.png"), 4, 4, false);
        png(&d.join(split).join("b/1.png"), 4, 4, false);
    }
    agree(Kind::ImageFolder, d);
    png(&d.join("test/b/0.png"), 5, 4, false);
    let e = probe(Kind::ImageFolder, d, &FsLoader).unwrap_err();
    assert!(
        matches!(e, DataError::MixedSizes { ref file, .. } if file.ends_with("test/b/0.png")),
        "{e}"
    );
    agree(Kind::ImageFolder, d);
    std::fs::write(d.join("test/b/0.png"), b"not a png").unwrap();
    assert_eq!(
        code(&probe(Kind::ImageFolder, d, &FsLoader).unwrap_err()),
        "prunex::data::bad_image"
    );
    agree(Kind::ImageFolder, d);
    std::fs::remove_file(d.join("test/b/0.png")).unwrap();
    png(&d.join("test/c/1.png"), 4, 4, false);
    assert_eq!(
        code(&probe(Kind::ImageFolder, d, &FsLoader).unwrap_err()),
        "prunex::data::class_mismatch"
    );
    agree(Kind::ImageFolder, d);
    std::fs::remove_dir_all(d.join("test")).unwrap();
    assert_eq!(
        code(&probe(Kind::ImageFolder, d, &FsLoader).unwrap_err()),
        "prunex::data::missing"
    );
    agree(Kind::ImageFolder, d);
}

/// A recipe for `model` on `data` written to `dir` (paths in it are
/// relative to `dir`); its check's rendered diagnostics and whether any is
/// an error.
fn check(dir: &Path, model: &str, data: &str) -> (String, bool) {
    let recipe = write(
        dir,
        "r.prune",
        format!(
            "recipe \"pre\"\n{model}\n{data}\nprune channels by l1 {{\n    schedule oneshot\n    ignore \"fc*\"\n    group \"*\" ratio 0.25\n}}\nexport \"out\"\n"
        )
        .as_bytes(),
    );
    let checked = check_path(&recipe, &FsLoader, &[], Mode::Single);
    let text: String = checked
        .reports
        .iter()
        .map(|r| render_human(r, false))
        .collect();
    (text, checked.has_errors())
}

#[test]
fn check_reports_data_problems_at_the_data_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let simple = "model simplecnn { input [1, 28, 28] classes 10 }";
    // Good data: nothing to say.
    let small = Path::new(env!("CARGO_MANIFEST_DIR")).join(SMALL);
    let (text, errors) = check(
        d,
        simple,
        &format!("data fashion_mnist \"{}\"", small.display()),
    );
    assert!(!errors && !text.contains("data"), "{text}");
    // A folder that is not here: a warning, since the recipe may be meant
    // for another machine.
    let (text, errors) = check(d, simple, "data mnist \"no/such/folder\"");
    assert!(!errors, "{text}");
    assert!(text.contains("prunex::check::no_data"), "{text}");
    // A damaged file: an error naming the file, at the data line.
    let mnist = d.join("mnist");
    idx_set(&mnist, 4, true);
    write(
        &mnist,
        "t10k-labels-idx1-ubyte.gz",
        &gz(&common::idx_labels(3)),
    );
    let (text, errors) = check(d, simple, &format!("data mnist \"{}\"", mnist.display()));
    assert!(errors, "{text}");
    assert!(
        text.contains("prunex::data::count_mismatch") && text.contains("data mnist"),
        "{text}"
    );
    // Images the model does not take, known from the kind alone: the help
    // offers the padding that fits.
    let (text, errors) = check(
        d,
        "model simplecnn { input [1, 32, 32] classes 10 }",
        "data mnist \"no/such/folder\"",
    );
    assert!(errors, "{text}");
    assert!(
        text.contains("prunex::check::input_mismatch") && text.contains("`pad 2`"),
        "{text}"
    );
    // IDX files of another size: their header, not the kind's nominal
    // size, decides.
    let wide = d.join("wide");
    for (images, labels) in [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ] {
        write(&wide, images, &common::idx_images(4, 32, 32, 4 * 32 * 32));
        write(&wide, labels, &common::idx_labels(4));
    }
    let (text, errors) = check(
        d,
        "model simplecnn { input [1, 32, 32] classes 10 }",
        &format!("data mnist \"{}\"", wide.display()),
    );
    assert!(!errors, "{text}");
    let (text, errors) = check(d, simple, "data cifar10 \"no/such/folder\"");
    assert!(errors && text.contains("[3, 32, 32]"), "{text}");
    // An image folder in colour for a grey model, and more classes than
    // outputs.
    let folder = d.join("folder");
    for split in ["train", "test"] {
        for class in 0..12 {
            png(
                &folder.join(split).join(format!("c{class:02}/1.png")),
                28,
                28,
                class == 3,
            );
        }
    }
    let (text, errors) = check(
        d,
        simple,
        &format!("data image_folder \"{}\"", folder.display()),
    );
    assert!(errors, "{text}");
    assert!(
        text.contains("prunex::check::input_mismatch")
            && text.contains("prunex::check::too_few_outputs")
            && text.contains("12 classes"),
        "{text}"
    );
    // The same folder fits a colour model with 12 outputs.
    let (text, errors) = check(
        d,
        "model simplecnn { input [3, 28, 28] classes 12 }",
        &format!("data image_folder \"{}\"", folder.display()),
    );
    assert!(!errors, "{text}");
}

/// What users see, as rendered: paths are relative to the package root, so
/// the rendering does not depend on where the checkout is.
#[test]
fn data_preflight_diagnostics_render_as_snapshotted() {
    let d = Path::new("target/preflight-diagnostics");
    let _ = std::fs::remove_dir_all(d);
    std::fs::create_dir_all(d).unwrap();
    let mnist = d.join("mnist");
    idx_set(&mnist, 4, false);
    write(
        &mnist,
        "train-images-idx3-ubyte",
        &common::idx_images(4, 28, 28, 1000),
    );
    let simple = "model simplecnn { input [1, 28, 28] classes 10 }";
    let shown = [
        check(d, simple, "data fashion_mnist \"no/such/folder\"").0,
        check(d, simple, "data mnist \"mnist\"").0,
        check(
            d,
            "model simplecnn { input [1, 32, 32] classes 10 }",
            "data mnist \"no/such/folder\"",
        )
        .0,
        {
            // More classes than outputs.
            for split in ["train", "test"] {
                for class in 0..12 {
                    png(
                        &d.join(format!("folder/{split}/c{class:02}/1.png")),
                        28,
                        28,
                        false,
                    );
                }
            }
            check(d, simple, "data image_folder \"folder\"").0
        },
    ];
    std::fs::remove_dir_all(d).unwrap();
    insta::assert_snapshot!(shown.join("\n"));
}
