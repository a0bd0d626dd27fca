//! Pre-flight of a data folder: the files a data set needs are there and
//! their headers and sizes agree, read through the checker's [`Loader`]
//! without decoding the data. Bounded work: IDX and CIFAR files are read
//! for their headers (and a gzip trailer), an image folder for its class
//! folders and the header of each class's first image. A run's loading
//! ([`super::load`]) still reads and checks everything.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{
    cifar_train_files, is_image, missing, missing_split, no_classes, DataError, Kind, CIFAR_RECORD,
    CIFAR_SHAPE, CIFAR_TEST_FILE, IDX_FILES, MAX_CLASSES, TEST_SPLIT, TRAIN_SPLIT,
};
use crate::syntax::load::{Entry, ReadSeek};
use crate::syntax::Loader;

/// What a data folder holds, from headers and sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `[C, H, W]` of one image. For an image folder, from the first image
    /// of each class: C is 3 when one of them has colour.
    pub shape: [usize; 3],
    /// Whether C is certain: an image folder whose probed images are all
    /// grey still becomes RGB when some other image has colour.
    pub channels_certain: bool,
    /// Images in the training and test split, when headers tell (IDX,
    /// CIFAR); `None` for image folders, which are not counted.
    pub images: Option<(usize, usize)>,
    /// Classes (label values for IDX and CIFAR, folders for image folders).
    pub classes: usize,
}

/// Checks the data folder `dir` of `kind` through `loader`.
pub fn probe(kind: Kind, dir: &Path, loader: &dyn Loader) -> Result<Probe, DataError> {
    let entries = list(loader, dir)?;
    match kind {
        Kind::FashionMnist | Kind::Mnist => {
            let mut counts = [0; 2];
            let mut shape = [1, 0, 0];
            for (split, (images, labels)) in IDX_FILES.iter().enumerate() {
                let images = find(dir, &entries, images, kind)?;
                let labels = find(dir, &entries, labels, kind)?;
                let (n, h, w) = idx_images(loader, &images)?;
                let nl = idx_labels(loader, &labels)?;
                if n != nl {
                    return Err(DataError::CountMismatch {
                        images: shown(&images),
                        n_images: n,
                        labels: shown(&labels),
                        n_labels: nl,
                    });
                }
                counts[split] = n;
                shape = [1, h, w];
            }
            Ok(Probe {
                shape,
                channels_certain: true,
                images: Some((counts[0], counts[1])),
                classes: 10,
            })
        }
        Kind::Cifar10 => {
            let mut train = 0;
            for name in cifar_train_files() {
                train += cifar(loader, &find(dir, &entries, &name, kind)?)?;
            }
            let test = cifar(loader, &find(dir, &entries, CIFAR_TEST_FILE, kind)?)?;
            Ok(Probe {
                shape: CIFAR_SHAPE,
                channels_certain: true,
                images: Some((train, test)),
                classes: 10,
            })
        }
        Kind::ImageFolder => image_folder(dir, &entries, loader),
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

fn unreadable(p: &Path, e: &io::Error) -> DataError {
    DataError::Unreadable {
        file: shown(p),
        reason: e.to_string(),
    }
}

fn list(loader: &dyn Loader, dir: &Path) -> Result<Vec<Entry>, DataError> {
    loader.list(dir).map_err(|e| unreadable(dir, &e))
}

/// `name.gz` or `name` among `entries`, as [`super::find`] looks for them.
fn find(dir: &Path, entries: &[Entry], name: &str, kind: Kind) -> Result<PathBuf, DataError> {
    let gz = format!("{name}.gz");
    let found = [gz.as_str(), name]
        .into_iter()
        .find(|n| entries.iter().any(|e| !e.dir && e.name == *n))
        .map(|n| dir.join(n));
    found.ok_or_else(|| missing(dir, format!("{name}[.gz]"), kind))
}

/// A data file's header (the first `N` bytes of its content) and the size
/// of its content: the file's size, or for a gzip file the size its
/// trailer records (modulo 2³², as gzip stores it).
fn header<const N: usize>(
    loader: &dyn Loader,
    path: &Path,
) -> Result<([u8; N], u64, bool), DataError> {
    let fail = |e: io::Error| unreadable(path, &e);
    let mut f: Box<dyn ReadSeek> = loader.open(path).map_err(fail)?;
    let size = f.seek(SeekFrom::End(0)).map_err(fail)?;
    f.seek(SeekFrom::Start(0)).map_err(fail)?;
    let mut magic = [0u8; 2];
    let gz = size >= 2 && {
        f.read_exact(&mut magic).map_err(fail)?;
        f.seek(SeekFrom::Start(0)).map_err(fail)?;
        magic == [0x1f, 0x8b]
    };
    let mut head = [0u8; N];
    if gz {
        let got =
            read_up_to(&mut flate2::read::GzDecoder::new(&mut f), &mut head).map_err(|e| {
                DataError::Unreadable {
                    file: shown(path),
                    reason: format!("broken gzip data ({e})"),
                }
            })?;
        if got < N {
            return Err(DataError::Truncated {
                file: shown(path),
                expected: N,
                found: got,
            });
        }
        if size < 18 {
            return Err(DataError::Unreadable {
                file: shown(path),
                reason: "broken gzip data (no trailer)".into(),
            });
        }
        f.seek(SeekFrom::End(-4)).map_err(fail)?;
        let mut isize = [0u8; 4];
        f.read_exact(&mut isize).map_err(fail)?;
        Ok((head, u64::from(u32::from_le_bytes(isize)), true))
    } else {
        let got = read_up_to(&mut f, &mut head).map_err(fail)?;
        if got < N {
            return Err(DataError::Truncated {
                file: shown(path),
                expected: N,
                found: got,
            });
        }
        Ok((head, size, false))
    }
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether a content of `size` bytes (modulo 2³² for gzip) falls short of
/// `need` bytes. Gzip's recorded size is compared only when `need` fits its
/// 32 bits.
fn short(size: u64, need: u64, gz: bool) -> bool {
    if gz && need > u64::from(u32::MAX) {
        return false;
    }
    size < need
}

fn bad_magic(path: &Path, what: &'static str, found: u32, expected: u32) -> DataError {
    DataError::BadMagic {
        file: shown(path),
        what,
        found,
        expected,
    }
}

/// `(n, h, w)` of an IDX images file whose size holds them all.
fn idx_images(loader: &dyn Loader, path: &Path) -> Result<(usize, usize, usize), DataError> {
    let (head, size, gz) = header::<16>(loader, path)?;
    if be32(&head, 0) != 0x0803 {
        return Err(bad_magic(path, "images", be32(&head, 0), 0x0803));
    }
    let [n, h, w] = [4, 8, 12].map(|at| u64::from(be32(&head, at)));
    let need = n.saturating_mul(h).saturating_mul(w);
    if short(size, need.saturating_add(16), gz) {
        return Err(DataError::Truncated {
            file: shown(path),
            expected: usize::try_from(need).unwrap_or(usize::MAX),
            found: usize::try_from(size.saturating_sub(16)).unwrap_or(usize::MAX),
        });
    }
    Ok((n as usize, h as usize, w as usize))
}

/// The count of an IDX labels file whose size holds them all.
fn idx_labels(loader: &dyn Loader, path: &Path) -> Result<usize, DataError> {
    let (head, size, gz) = header::<8>(loader, path)?;
    if be32(&head, 0) != 0x0801 {
        return Err(bad_magic(path, "labels", be32(&head, 0), 0x0801));
    }
    let n = u64::from(be32(&head, 4));
    if short(size, n + 8, gz) {
        return Err(DataError::Truncated {
            file: shown(path),
            expected: n as usize,
            found: size.saturating_sub(8) as usize,
        });
    }
    Ok(n as usize)
}

/// The records of a CIFAR-10 batch file, whose content must be whole
/// records.
fn cifar(loader: &dyn Loader, path: &Path) -> Result<usize, DataError> {
    // A batch is 30 MB: a gzip trailer's size (modulo 2³²) is exact.
    let (_, size, _) = header::<0>(loader, path)?;
    let record = CIFAR_RECORD as u64;
    if size % record != 0 {
        return Err(DataError::Truncated {
            file: shown(path),
            expected: (size.div_ceil(record) * record) as usize,
            found: size as usize,
        });
    }
    Ok((size / record) as usize)
}

/// The first of `names` that is a folder among `entries`.
fn split(dir: &Path, entries: &[Entry], names: &[&str]) -> Result<PathBuf, DataError> {
    names
        .iter()
        .find(|n| entries.iter().any(|e| e.dir && e.name == **n))
        .map(|n| dir.join(n))
        .ok_or_else(|| missing_split(dir, names))
}

/// An image folder: both splits with the same class folders, and the
/// first image of every class of the same size.
fn image_folder(dir: &Path, entries: &[Entry], loader: &dyn Loader) -> Result<Probe, DataError> {
    let train = split(dir, entries, TRAIN_SPLIT)?;
    let test = split(dir, entries, TEST_SPLIT)?;
    let classes = |split: &Path| -> Result<Vec<String>, DataError> {
        let names: Vec<String> = list(loader, split)?
            .into_iter()
            .filter(|e| e.dir)
            .map(|e| e.name)
            .collect();
        if names.is_empty() || names.len() > MAX_CLASSES {
            return Err(no_classes(split));
        }
        Ok(names)
    };
    let train_classes = classes(&train)?;
    let test_classes = classes(&test)?;
    if train_classes != test_classes {
        return Err(DataError::ClassMismatch {
            train: shown(&train),
            train_classes: train_classes.join(", "),
            test: shown(&test),
            test_classes: test_classes.join(", "),
        });
    }
    // (file, [H, W], colour) of each class's first image.
    let mut firsts: Vec<(PathBuf, [usize; 2], bool)> = Vec::new();
    for split in [&train, &test] {
        for class in &train_classes {
            let folder = split.join(class);
            let first = list(loader, &folder)?
                .into_iter()
                .find(|e| !e.dir && is_image(&e.name));
            if let Some(e) = first {
                let file = folder.join(e.name);
                let (hw, colour) = image_header(loader, &file)?;
                firsts.push((file, hw, colour));
            }
        }
    }
    let colour = firsts.iter().any(|f| f.2);
    let c = if colour { 3 } else { 1 };
    let Some((_, [h, w], _)) = firsts.first().cloned() else {
        return Err(DataError::Missing {
            kind: Kind::ImageFolder.name().into(),
            dir: shown(dir),
            file: "images (*.png, *.jpg, *.jpeg) in the class folders".into(),
            help: "put each class's images in a folder named after the class".into(),
        });
    };
    if let Some((file, [fh, fw], _)) = firsts.iter().find(|f| f.1 != [h, w]) {
        return Err(DataError::MixedSizes {
            file: shown(file),
            found: [c, *fh, *fw],
            expected: [c, h, w],
        });
    }
    Ok(Probe {
        shape: [c, h, w],
        channels_certain: colour,
        images: None,
        classes: train_classes.len(),
    })
}

/// `[H, W]` and whether the image has colour, from its header.
fn image_header(loader: &dyn Loader, path: &Path) -> Result<([usize; 2], bool), DataError> {
    use image::ImageDecoder;
    let f = loader.open(path).map_err(|e| unreadable(path, &e))?;
    let bad = |e: image::ImageError| DataError::BadImage {
        file: shown(path),
        reason: e.to_string(),
    };
    // As `ImageReader::open` does for loading: the extension's format
    // unless the content says otherwise.
    let mut reader = image::ImageReader::new(io::BufReader::new(f));
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let decoder = reader
        .with_guessed_format()
        .map_err(|e| unreadable(path, &e))?
        .into_decoder()
        .map_err(bad)?;
    let (w, h) = decoder.dimensions();
    Ok(([h as usize, w as usize], decoder.color_type().has_color()))
}
