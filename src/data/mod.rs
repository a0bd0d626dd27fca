//! Data sets and batches, in plain Rust: IDX files (MNIST, Fashion-MNIST;
//! gzipped or not), CIFAR-10 binary batches and folders of PNG/JPEG images
//! per class, normalisation, padding,
//! random crop and flip, seeded shuffling. The executor moves batches onto
//! the device.

use std::io::Read;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use serde::Serialize;
use thiserror::Error;

mod probe;
pub use probe::{probe, Probe};

/// The data set kinds prunex reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Fashion-MNIST's IDX files.
    FashionMnist,
    /// MNIST's IDX files.
    Mnist,
    /// CIFAR-10's binary batches.
    Cifar10,
    /// `train/` and `test/` (or `val/`) folders of PNG/JPEG images per class.
    ImageFolder,
}

impl Kind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Kind; 4] = [
        Kind::FashionMnist,
        Kind::Mnist,
        Kind::Cifar10,
        Kind::ImageFolder,
    ];

    /// The name recipes use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::FashionMnist => "fashion_mnist",
            Kind::Mnist => "mnist",
            Kind::Cifar10 => "cifar10",
            Kind::ImageFolder => "image_folder",
        }
    }

    /// The kind a recipe names.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// `[C, H, W]` of the published data set's images, when the kind has
    /// one (an IDX file's header may still say otherwise; [`probe`] reads
    /// it).
    pub fn nominal_shape(self) -> Option<[usize; 3]> {
        match self {
            Kind::FashionMnist | Kind::Mnist => Some([1, 28, 28]),
            Kind::Cifar10 => Some(CIFAR_SHAPE),
            Kind::ImageFolder => None,
        }
    }
}

/// A data file that cannot be used, and why.
#[derive(Debug, Error, Diagnostic)]
pub enum DataError {
    /// A file the data set needs is not there.
    #[error("the {kind} data set in `{dir}` has no `{file}`")]
    #[diagnostic(code(prunex::data::missing), help("{help}"))]
    Missing {
        /// Data set kind.
        kind: String,
        /// Its folder.
        dir: String,
        /// The file looked for.
        file: String,
        /// How to get it.
        help: String,
    },
    /// A file that cannot be read.
    #[error("cannot read `{file}`: {reason}")]
    #[diagnostic(
        code(prunex::data::unreadable),
        help("check the file's permissions, or download it again")
    )]
    Unreadable {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// Not the file it should be.
    #[error("`{file}` is not an IDX {what} file (magic number {found:#010x}, expected {expected:#010x})")]
    #[diagnostic(code(prunex::data::bad_magic), help("the folder should hold the original MNIST-format files (train-images-idx3-ubyte[.gz], ...)"))]
    BadMagic {
        /// The file.
        file: String,
        /// images or labels.
        what: &'static str,
        /// What it has.
        found: u32,
        /// What it should have.
        expected: u32,
    },
    /// A file shorter than its header says.
    #[error(
        "`{file}` is truncated: its header promises {expected} bytes of data, it holds {found}"
    )]
    #[diagnostic(
        code(prunex::data::truncated),
        help("the download or copy was cut short; get the file again")
    )]
    Truncated {
        /// The file.
        file: String,
        /// Bytes promised.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// Images and labels that do not pair up.
    #[error("`{images}` has {n_images} images but `{labels}` has {n_labels} labels")]
    #[diagnostic(
        code(prunex::data::count_mismatch),
        help("images and labels must come from the same split of the same data set")
    )]
    CountMismatch {
        /// The images file.
        images: String,
        /// Its count.
        n_images: usize,
        /// The labels file.
        labels: String,
        /// Its count.
        n_labels: usize,
    },
    /// Images of different sizes in one image folder.
    #[error("`{file}` is {found:?} (C, H, W) but the first image of the folder is {expected:?}")]
    #[diagnostic(
        code(prunex::data::mixed_sizes),
        help("resize the images to one size beforehand; prunex does not resize, so preprocessing stays explicit")
    )]
    MixedSizes {
        /// The odd image.
        file: String,
        /// Its shape.
        found: [usize; 3],
        /// The first image's.
        expected: [usize; 3],
    },
    /// An image file that does not decode.
    #[error("`{file}` is not an image prunex can read: {reason}")]
    #[diagnostic(
        code(prunex::data::bad_image),
        help("image folders hold PNG or JPEG files; remove or replace this one")
    )]
    BadImage {
        /// The file.
        file: String,
        /// The decoder's reason.
        reason: String,
    },
    /// Train and test folders with different classes.
    #[error("the classes of `{train}` ({train_classes}) and `{test}` ({test_classes}) differ")]
    #[diagnostic(
        code(prunex::data::class_mismatch),
        help("both splits need the same class folders, so labels mean the same thing")
    )]
    ClassMismatch {
        /// The train folder.
        train: String,
        /// Its classes.
        train_classes: String,
        /// The test folder.
        test: String,
        /// Its classes.
        test_classes: String,
    },
}

/// Images as bytes (0–255), row-major `[N, C, H, W]`, with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// Pixels.
    pub pixels: Vec<u8>,
    /// Labels.
    pub labels: Vec<u8>,
    /// `[C, H, W]` of one image.
    pub shape: [usize; 3],
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn truncate(&mut self, n: usize) {
        let per: usize = self.shape.iter().product();
        self.labels.truncate(n);
        self.pixels.truncate(n * per);
    }
}

/// A data set's training and test splits.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSet {
    /// Training images.
    pub train: Images,
    /// Test images.
    pub test: Images,
    /// Number of classes.
    pub classes: usize,
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let shown = path.display().to_string();
    let raw = std::fs::read(path).map_err(|e| DataError::Unreadable {
        file: shown.clone(),
        reason: e.to_string(),
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Unreadable {
                file: shown,
                reason: format!("broken gzip data ({e})"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The IDX files of (Fashion-)MNIST: (images, labels) of the training and
/// the test split, each possibly gzipped (`NAME.gz`).
const IDX_FILES: [(&str, &str); 2] = [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
];

/// CIFAR-10's training batches.
fn cifar_train_files() -> impl Iterator<Item = String> {
    (1..=5).map(|i| format!("data_batch_{i}.bin"))
}

/// CIFAR-10's test batch.
const CIFAR_TEST_FILE: &str = "test_batch.bin";

/// A CIFAR-10 image.
const CIFAR_SHAPE: [usize; 3] = [3, 32, 32];

/// One CIFAR-10 record: a label byte and an image.
const CIFAR_RECORD: usize = 1 + CIFAR_SHAPE[0] * CIFAR_SHAPE[1] * CIFAR_SHAPE[2];

/// An image folder's training split, and the names its test split may have.
const TRAIN_SPLIT: &[&str] = &["train"];
const TEST_SPLIT: &[&str] = &["test", "val"];

/// At most this many classes (labels are bytes).
const MAX_CLASSES: usize = 256;

/// Whether a file of a class folder is an image prunex reads.
fn is_image(name: &str) -> bool {
    Path::new(name).extension().is_some_and(|x| {
        let x = x.to_string_lossy().to_ascii_lowercase();
        x == "png" || x == "jpg" || x == "jpeg"
    })
}

/// The file a data set lacks.
fn missing(dir: &Path, file: String, kind: Kind) -> DataError {
    DataError::Missing {
        kind: kind.name().to_owned(),
        dir: dir.display().to_string(),
        file,
        help: how_to_get(kind).to_owned(),
    }
}

/// How to get a data set of `kind` (the help of a missing file).
pub fn how_to_get(kind: Kind) -> &'static str {
    match kind {
        Kind::FashionMnist => "Debian's dataset-fashion-mnist installs it in /usr/share/datasets/fashion-mnist (`scripts/setup --data`)",
        Kind::Mnist => "put the original IDX files (gzipped or not) in that folder",
        Kind::Cifar10 => "put CIFAR-10's binary version (cifar-10-batches-bin: data_batch_1.bin … test_batch.bin) in that folder",
        Kind::ImageFolder => "an image folder holds train/<class>/*.png and test/<class>/*.png (or val/), one folder per class, as torchvision's ImageFolder reads",
    }
}

/// A split folder that is not there.
fn missing_split(dir: &Path, names: &[&str]) -> DataError {
    missing(dir, format!("{}/", names.join("/ or ")), Kind::ImageFolder)
}

/// A split without class folders (or with too many).
fn no_classes(dir: &Path) -> DataError {
    DataError::Missing {
        kind: "image_folder".into(),
        dir: dir.display().to_string(),
        file: format!("<class>/ folders (1 to {MAX_CLASSES} of them)"),
        help: "put each class's images in a folder named after the class".into(),
    }
}

/// Finds `name` or `name.gz` in `dir`.
fn find(dir: &Path, name: &str, kind: Kind) -> Result<PathBuf, DataError> {
    for candidate in [dir.join(format!("{name}.gz")), dir.join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(missing(dir, format!("{name}[.gz]"), kind))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads one IDX images file and its labels file.
pub fn read_idx(images: &Path, labels: &Path) -> Result<Images, DataError> {
    let (ishow, lshow) = (images.display().to_string(), labels.display().to_string());
    let ib = read_file(images)?;
    let lb = read_file(labels)?;
    let short = |file: &str, need: usize, have: usize| DataError::Truncated {
        file: file.to_owned(),
        expected: need,
        found: have,
    };
    if ib.len() < 16 {
        return Err(short(&ishow, 16, ib.len()));
    }
    if lb.len() < 8 {
        return Err(short(&lshow, 8, lb.len()));
    }
    if be32(&ib, 0) != 0x0803 {
        return Err(DataError::BadMagic {
            file: ishow,
            what: "images",
            found: be32(&ib, 0),
            expected: 0x0803,
        });
    }
    if be32(&lb, 0) != 0x0801 {
        return Err(DataError::BadMagic {
            file: lshow,
            what: "labels",
            found: be32(&lb, 0),
            expected: 0x0801,
        });
    }
    let (n, h, w) = (
        be32(&ib, 4) as usize,
        be32(&ib, 8) as usize,
        be32(&ib, 12) as usize,
    );
    let nl = be32(&lb, 4) as usize;
    if ib.len() - 16 < n * h * w {
        return Err(short(&ishow, n * h * w, ib.len() - 16));
    }
    if lb.len() - 8 < nl {
        return Err(short(&lshow, nl, lb.len() - 8));
    }
    if n != nl {
        return Err(DataError::CountMismatch {
            images: ishow,
            n_images: n,
            labels: lshow,
            n_labels: nl,
        });
    }
    Ok(Images {
        pixels: ib[16..16 + n * h * w].to_vec(),
        labels: lb[8..8 + n].to_vec(),
        shape: [1, h, w],
    })
}

fn read_cifar(files: &[PathBuf]) -> Result<Images, DataError> {
    let mut out = Images {
        pixels: Vec::new(),
        labels: Vec::new(),
        shape: CIFAR_SHAPE,
    };
    for f in files {
        let b = read_file(f)?;
        if b.len() % CIFAR_RECORD != 0 {
            return Err(DataError::Truncated {
                file: f.display().to_string(),
                expected: b.len().div_ceil(CIFAR_RECORD) * CIFAR_RECORD,
                found: b.len(),
            });
        }
        for rec in b.chunks_exact(CIFAR_RECORD) {
            out.labels.push(rec[0]);
            out.pixels.extend_from_slice(&rec[1..]);
        }
    }
    Ok(out)
}

/// The first of `names` under `dir` that is a folder.
fn split_dir(dir: &Path, names: &[&str]) -> Result<PathBuf, DataError> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_dir())
        .ok_or_else(|| missing_split(dir, names))
}

/// Reads `dir/<class>/*.{png,jpg,jpeg}`: classes sorted by name, labels
/// their indices. Grey images stay one channel unless some image has color
/// (then all become RGB). Every image must have the same size.
pub fn read_folder(dir: &Path) -> Result<(Images, Vec<String>), DataError> {
    let unreadable = |p: &Path, e: std::io::Error| DataError::Unreadable {
        file: p.display().to_string(),
        reason: e.to_string(),
    };
    let mut classes: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    classes.sort();
    if classes.is_empty() || classes.len() > MAX_CLASSES {
        return Err(no_classes(dir));
    }
    let mut decoded = Vec::new();
    for (label, (_, cdir)) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(cdir)
            .map_err(|e| unreadable(cdir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| is_image(&n.to_string_lossy()))
            })
            .collect();
        files.sort();
        for f in files {
            let img = image::ImageReader::open(&f)
                .map_err(|e| unreadable(&f, e))?
                .with_guessed_format()
                .map_err(|e| unreadable(&f, e))?
                .decode()
                .map_err(|e| DataError::BadImage {
                    file: f.display().to_string(),
                    reason: e.to_string(),
                })?;
            decoded.push((f, label as u8, img));
        }
    }
    let color = decoded.iter().any(|(_, _, i)| i.color().has_color());
    let c = if color { 3 } else { 1 };
    let mut out = Images {
        pixels: Vec::new(),
        labels: Vec::new(),
        shape: [0; 3],
    };
    for (i, (f, label, img)) in decoded.iter().enumerate() {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let shape = [c, h, w];
        if i == 0 {
            out.shape = shape;
        } else if shape != out.shape {
            return Err(DataError::MixedSizes {
                file: f.display().to_string(),
                found: shape,
                expected: out.shape,
            });
        }
        // HWC → CHW.
        let hwc = if color {
            img.to_rgb8().into_raw()
        } else {
            img.to_luma8().into_raw()
        };
        for ch in 0..c {
            out.pixels.extend(hwc.iter().skip(ch).step_by(c));
        }
        out.labels.push(*label);
    }
    Ok((out, classes.into_iter().map(|(n, _)| n).collect()))
}

/// Loads a data set of `kind` from `dir`, at most `limit` images per split.
pub fn load(kind: Kind, dir: &Path, limit: Option<usize>) -> Result<DataSet, DataError> {
    let mut ds = match kind {
        Kind::FashionMnist | Kind::Mnist => DataSet {
            train: read_idx(
                &find(dir, IDX_FILES[0].0, kind)?,
                &find(dir, IDX_FILES[0].1, kind)?,
            )?,
            test: read_idx(
                &find(dir, IDX_FILES[1].0, kind)?,
                &find(dir, IDX_FILES[1].1, kind)?,
            )?,
            classes: 10,
        },
        Kind::Cifar10 => {
            let train: Result<Vec<PathBuf>, DataError> =
                cifar_train_files().map(|f| find(dir, &f, kind)).collect();
            DataSet {
                train: read_cifar(&train?)?,
                test: read_cifar(&[find(dir, CIFAR_TEST_FILE, kind)?])?,
                classes: 10,
            }
        }
        Kind::ImageFolder => {
            let (train, classes) = read_folder(&split_dir(dir, TRAIN_SPLIT)?)?;
            let test_dir = split_dir(dir, TEST_SPLIT)?;
            let (test, test_classes) = read_folder(&test_dir)?;
            if test_classes != classes {
                return Err(DataError::ClassMismatch {
                    train: dir.join("train").display().to_string(),
                    train_classes: classes.join(", "),
                    test: test_dir.display().to_string(),
                    test_classes: test_classes.join(", "),
                });
            }
            if test.shape != train.shape {
                return Err(DataError::MixedSizes {
                    file: test_dir.display().to_string(),
                    found: test.shape,
                    expected: train.shape,
                });
            }
            DataSet {
                train,
                test,
                classes: classes.len(),
            }
        }
    };
    if let Some(n) = limit {
        ds.train.truncate(n);
        ds.test.truncate(n);
    }
    Ok(ds)
}

/// How images become tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// Per-channel mean (one value: all channels).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
    /// Zero padding per side (applied to every image).
    pub pad: usize,
    /// Random crop after padding by this much (training only).
    pub crop: usize,
    /// Random horizontal flip (training only).
    pub flip: bool,
}

impl Transform {
    /// The output shape for an input shape.
    pub fn shape(&self, s: [usize; 3]) -> [usize; 3] {
        [s[0], s[1] + 2 * self.pad, s[2] + 2 * self.pad]
    }
}

/// A deterministic generator (xorshift64*), so runs repeat with a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeds a generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Shuffles in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// One batch: `x` is `[n, C, H, W]` row-major, `y` the labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Inputs.
    pub x: Vec<f32>,
    /// Labels.
    pub y: Vec<i64>,
    /// `[n, C, H, W]`.
    pub shape: [usize; 4],
}

/// Makes the batches of one pass over `images`: shuffled and augmented when
/// `rng` is given (training), in order and unaugmented otherwise.
pub fn batches(images: &Images, t: &Transform, batch: usize, rng: Option<&mut Rng>) -> Vec<Batch> {
    batches_of_rank(images, t, batch, rng, 0, 1)
}

/// How many samples the `k`-th of the batches of `batch` over `n` samples
/// holds (the last may be short).
pub fn batch_len(n: usize, batch: usize, k: usize) -> usize {
    n.saturating_sub(k * batch.max(1)).min(batch.max(1))
}

/// Rank `rank`'s share of each batch of one pass (of `world` ranks): the
/// pass is drawn as [`batches`] draws it for batches of `batch` samples —
/// the same order and the same augmentation of every sample — and each
/// batch is cut into `world` contiguous slices
/// ([`crate::distributed::shard`]), so the ranks together see exactly what
/// one process would. A slice may be empty.
pub fn batches_of_rank(
    images: &Images,
    t: &Transform,
    batch: usize,
    mut rng: Option<&mut Rng>,
    rank: usize,
    world: usize,
) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..images.len()).collect();
    if let Some(r) = rng.as_deref_mut() {
        r.shuffle(&mut order);
    }
    let [c, h, w] = images.shape;
    let [_, oh, ow] = t.shape(images.shape);
    let per = c * h * w;
    let mut out = Vec::new();
    for whole in order.chunks(batch.max(1)) {
        let (from, to) = crate::distributed::shard(whole.len(), rank, world);
        let chunk = &whole[from..to];
        let mut x = vec![0f32; chunk.len() * c * oh * ow];
        let mut y = Vec::with_capacity(chunk.len());
        for (j, &i) in whole.iter().enumerate() {
            // Random crop: shift the padded image by up to `crop` pixels.
            let (dy, dx, flip) = match rng.as_deref_mut() {
                Some(r) if t.crop > 0 || t.flip => {
                    let dy = if t.crop > 0 {
                        r.below(2 * t.crop + 1) as isize - t.crop as isize
                    } else {
                        0
                    };
                    let dx = if t.crop > 0 {
                        r.below(2 * t.crop + 1) as isize - t.crop as isize
                    } else {
                        0
                    };
                    (dy, dx, t.flip && r.below(2) == 1)
                }
                _ => (0, 0, false),
            };
            // Other ranks' samples still draw their augmentation, so that
            // this rank's draws are the ones one process would make.
            if j < from || j >= to {
                continue;
            }
            let bi = j - from;
            y.push(images.labels[i] as i64);
            let img = &images.pixels[i * per..(i + 1) * per];
            for ch in 0..c {
                let mean = t.mean.get(ch).or(t.mean.first()).copied().unwrap_or(0.0);
                let std = t.std.get(ch).or(t.std.first()).copied().unwrap_or(1.0);
                let zero = (0.0 - mean) / std;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let sx = if flip { ow - 1 - ox } else { ox };
                        let iy = oy as isize - t.pad as isize + dy;
                        let ix = sx as isize - t.pad as isize + dx;
                        let v = if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            (img[(ch * h + iy as usize) * w + ix as usize] as f32 / 255.0 - mean)
                                / std
                        } else {
                            zero
                        };
                        x[((bi * c + ch) * oh + oy) * ow + ox] = v;
                    }
                }
            }
        }
        out.push(Batch {
            x,
            y,
            shape: [chunk.len(), c, oh, ow],
        });
    }
    out
}
