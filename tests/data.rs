//! Data loading on a committed slice of the real Fashion-MNIST (600 training
//! and 200 test images, gzipped IDX as Debian ships them), and the
//! diagnostics for broken files.

mod common;

use std::path::Path;

use prunex::data::{
    batch_len, batches, batches_of_rank, load, read_idx, DataError, Kind, Rng, Transform,
};
use prunex::diagnostics::render_human;

const SMALL: &str = "tests/fixtures/data/fashion-mnist-small";

fn plain() -> Transform {
    Transform {
        mean: vec![0.0],
        std: vec![1.0],
        pad: 0,
        crop: 0,
        flip: false,
    }
}

#[test]
fn reads_gzipped_idx_files() {
    let ds = load(Kind::FashionMnist, Path::new(SMALL), None).unwrap();
    assert_eq!((ds.train.len(), ds.test.len(), ds.classes), (600, 200, 10));
    assert_eq!(ds.train.shape, [1, 28, 28]);
    // The first training image of Fashion-MNIST is an ankle boot (class 9).
    assert_eq!(ds.train.labels[0], 9);
    assert!(ds.train.labels.iter().all(|&l| l < 10));
    let limited = load(Kind::FashionMnist, Path::new(SMALL), Some(64)).unwrap();
    assert_eq!((limited.train.len(), limited.test.len()), (64, 64));
}

#[test]
fn batches_normalise_pad_and_cover_every_image_once() {
    let ds = load(Kind::FashionMnist, Path::new(SMALL), Some(100)).unwrap();
    let t = Transform {
        mean: vec![0.2860],
        std: vec![0.3530],
        pad: 2,
        crop: 0,
        flip: false,
    };
    let b = batches(&ds.test, &t, 32, None);
    assert_eq!(b.len(), 4);
    assert_eq!(b[0].shape, [32, 1, 32, 32]);
    assert_eq!(b[3].shape, [4, 1, 32, 32]);
    // The padding holds normalised zeros; the image's first pixel sits at (2, 2).
    let zero = (0.0 - 0.2860) / 0.3530;
    assert!((b[0].x[0] - zero).abs() < 1e-6);
    let px = ds.test.pixels[0] as f32 / 255.0;
    assert!((b[0].x[2 * 32 + 2] - (px - 0.2860) / 0.3530).abs() < 1e-6);
    // Shuffled training batches are a permutation, the same for the same seed.
    let shuffled = |seed| {
        batches(&ds.train, &plain(), 100, Some(&mut Rng::new(seed)))[0]
            .y
            .clone()
    };
    let mut a = shuffled(1);
    assert_eq!(a, shuffled(1));
    assert_ne!(a, shuffled(2));
    a.sort();
    let mut labels: Vec<i64> = ds.train.labels.iter().map(|&l| l as i64).collect();
    labels.sort();
    assert_eq!(a, labels);
}

#[test]
fn augmentation_keeps_shapes_and_changes_pixels() {
    let ds = load(Kind::FashionMnist, Path::new(SMALL), Some(16)).unwrap();
    let t = Transform {
        mean: vec![0.5],
        std: vec![0.5],
        pad: 0,
        crop: 4,
        flip: true,
    };
    let aug = batches(&ds.train, &t, 16, Some(&mut Rng::new(3)));
    let same = batches(
        &ds.train,
        &Transform {
            crop: 0,
            flip: false,
            ..t.clone()
        },
        16,
        Some(&mut Rng::new(3)),
    );
    assert_eq!(aug[0].shape, [16, 1, 28, 28]);
    assert_eq!(
        aug[0].y, same[0].y,
        "augmentation does not change the order"
    );
    assert_ne!(aug[0].x, same[0].x);
}

/// A distributed run's ranks together see each batch one process would
/// (same order, same augmentation of every sample), each a contiguous
/// slice; the last, short batch too, even when a rank's slice is empty.
#[test]
fn rank_slices_of_a_pass_make_up_the_one_process_pass() {
    let ds = load(Kind::FashionMnist, Path::new(SMALL), Some(70)).unwrap();
    let t = Transform {
        mean: vec![0.5],
        std: vec![0.5],
        pad: 2,
        crop: 2,
        flip: true,
    };
    for world in [1, 2, 3, 4] {
        let whole = batches(&ds.train, &t, 16, Some(&mut Rng::new(9)));
        let parts: Vec<_> = (0..world)
            .map(|r| batches_of_rank(&ds.train, &t, 16, Some(&mut Rng::new(9)), r, world))
            .collect();
        for (k, b) in whole.iter().enumerate() {
            assert_eq!(b.y.len(), batch_len(ds.train.len(), 16, k));
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for p in &parts {
                x.extend_from_slice(&p[k].x);
                y.extend_from_slice(&p[k].y);
            }
            assert_eq!((&x, &y), (&b.x, &b.y), "world {world}, batch {k}");
        }
    }
    // 70 images: the last batch holds 6, so of 4 ranks two take 2 and two 1.
    let last: Vec<usize> = (0..4)
        .map(|r| batches_of_rank(&ds.train, &t, 16, None, r, 4)[4].y.len())
        .collect();
    assert_eq!(last, [2, 2, 1, 1]);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn broken_files_get_diagnostics_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write(dir.path(), "labels", &common::idx_labels(3));
    let truncated = write(dir.path(), "truncated", &common::idx_images(3, 2, 2, 10));
    let e = read_idx(&truncated, &labels).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 12,
                found: 10,
                ..
            }
        ),
        "{e:?}"
    );
    let mut bad = common::idx_images(3, 2, 2, 12);
    bad[3] = 0x99;
    let bad = write(dir.path(), "bad", &bad);
    assert!(matches!(
        read_idx(&bad, &labels).unwrap_err(),
        DataError::BadMagic { .. }
    ));
    let four = write(dir.path(), "four", &common::idx_images(4, 2, 2, 16));
    let e = read_idx(&four, &labels).unwrap_err();
    assert!(matches!(
        e,
        DataError::CountMismatch {
            n_images: 4,
            n_labels: 3,
            ..
        }
    ));
    let text = render_human(&miette::Report::new(e), false);
    assert!(text.contains("prunex::data::count_mismatch"), "{text}");
    let missing = load(Kind::FashionMnist, dir.path(), None).unwrap_err();
    let text = render_human(&miette::Report::new(missing), false);
    assert!(
        text.contains("has no `train-images-idx3-ubyte[.gz]`")
            && text.contains("dataset-fashion-mnist"),
        "{text}"
    );
}

fn png(path: &Path, w: u32, h: u32, color: bool, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if color {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 37 + seed * 11) as u8,
                (y * 53 + seed) as u8,
                ((x + y) * 7 + seed * 3) as u8,
            ])
        });
        img.save(path).unwrap();
    } else {
        let img =
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 31 + y * 17 + seed) as u8]));
        img.save(path).unwrap();
    }
}

/// An image folder reads as torchvision's `ImageFolder` does: classes in
/// sorted order, files sorted within a class, the same pixels (CHW).
#[test]
fn image_folders_read_as_torchvision_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (split, n) in [("train", 3u32), ("test", 2)] {
        for (ci, class) in ["zebra", "ant", "mole"].iter().enumerate() {
            for i in 0..n {
                png(
                    &d.join(format!("{split}/{class}/{i:02}.png")),
                    6,
                    5,
                    true,
                    ci as u32 * 10 + i,
                );
            }
        }
    }
    let ds = load(Kind::ImageFolder, d, None).unwrap();
    assert_eq!(ds.classes, 3);
    assert_eq!(ds.train.shape, [3, 5, 6]);
    assert_eq!(ds.train.len(), 9);
    assert_eq!(ds.test.len(), 6);
    let train = d.join("train");
    let out = common::python("image_folder.py", &[train.as_os_str()]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["classes"], serde_json::json!(["ant", "mole", "zebra"]));
    let per = 3 * 5 * 6;
    for (i, item) in v["items"].as_array().unwrap().iter().enumerate() {
        assert_eq!(item["label"].as_u64().unwrap() as u8, ds.train.labels[i]);
        let px: Vec<u8> = item["pixels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(px, ds.train.pixels[i * per..(i + 1) * per], "image {i}");
    }
}

#[test]
fn image_folder_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Grey images stay one channel.
    png(&d.join("train/a/1.png"), 4, 4, false, 1);
    png(&d.join("train/b/1.png"), 4, 4, false, 2);
    png(&d.join("test/a/1.png"), 4, 4, false, 3);
    png(&d.join("test/b/1.png"), 4, 4, false, 4);
    let ds = load(Kind::ImageFolder, d, None).unwrap();
    assert_eq!(ds.train.shape, [1, 4, 4]);
    // A different size.
    png(&d.join("train/b/2.png"), 5, 4, false, 5);
    let e = load(Kind::ImageFolder, d, None).unwrap_err();
    assert!(
        matches!(e, DataError::MixedSizes { ref file, .. } if file.ends_with("train/b/2.png")),
        "{e}"
    );
    std::fs::remove_file(d.join("train/b/2.png")).unwrap();
    // A broken file.
    std::fs::write(d.join("train/a/2.png"), b"not a png").unwrap();
    let e = load(Kind::ImageFolder, d, None).unwrap_err();
    assert!(
        matches!(e, DataError::BadImage { ref file, .. } if file.ends_with("train/a/2.png")),
        "{e}"
    );
    std::fs::remove_file(d.join("train/a/2.png")).unwrap();
    // Classes that differ between splits.
    png(&d.join("test/c/1.png"), 4, 4, false, 6);
    let e = load(Kind::ImageFolder, d, None).unwrap_err();
    assert!(matches!(e, DataError::ClassMismatch { .. }), "{e}");
    let text = render_human(&miette::Report::new(e), false);
    assert!(text.contains("prunex::data::class_mismatch"), "{text}");
    // No test split.
    std::fs::remove_dir_all(d.join("test")).unwrap();
    let e = load(Kind::ImageFolder, d, None).unwrap_err();
    assert!(matches!(e, DataError::Missing { .. }), "{e}");
}

/// What users see for each kind of bad data, as rendered. The files live
/// under a fixed relative path (tests run in the package root), so the
/// rendering, line wrapping included, does not depend on where the
/// checkout is.
#[test]
fn data_diagnostics_render_as_snapshotted() {
    let d = Path::new("target/data-diagnostics");
    let _ = std::fs::remove_dir_all(d);
    std::fs::create_dir_all(d).unwrap();
    let labels = write(d, "labels", &common::idx_labels(3));
    let mut bad = common::idx_images(3, 2, 2, 12);
    bad[3] = 0x99;
    let mut errors = vec![
        read_idx(
            &write(d, "truncated", &common::idx_images(3, 2, 2, 10)),
            &labels,
        )
        .unwrap_err(),
        read_idx(&write(d, "bad", &bad), &labels).unwrap_err(),
        read_idx(&write(d, "four", &common::idx_images(4, 2, 2, 16)), &labels).unwrap_err(),
        load(Kind::FashionMnist, d, None).unwrap_err(),
    ];
    let f = d.join("folder");
    png(&f.join("train/a/1.png"), 4, 4, false, 1);
    png(&f.join("train/a/2.png"), 5, 4, false, 2);
    png(&f.join("test/a/1.png"), 4, 4, false, 3);
    errors.push(load(Kind::ImageFolder, &f, None).unwrap_err());
    std::fs::remove_file(f.join("train/a/2.png")).unwrap();
    std::fs::write(f.join("train/a/3.png"), b"not a png").unwrap();
    errors.push(load(Kind::ImageFolder, &f, None).unwrap_err());
    std::fs::remove_file(f.join("train/a/3.png")).unwrap();
    png(&f.join("test/b/1.png"), 4, 4, false, 4);
    errors.push(load(Kind::ImageFolder, &f, None).unwrap_err());
    let text: String = errors
        .into_iter()
        .map(|e| render_human(&miette::Report::new(e), false))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::remove_dir_all(d).unwrap();
    insta::assert_snapshot!(text);
}
