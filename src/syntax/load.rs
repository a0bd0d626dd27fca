//! Loading a recipe and the files it includes.
//!
//! Reading goes through a [`Loader`] so that parsing stays pure and tests and
//! the fuzzer can load from memory. An `include` path is relative to the
//! folder of the file that contains it. The result is an
//! [`UnresolvedRecipe`]: every file's tree, and the items of all of them in
//! the order they take effect (an include's items stand where the include is).

use std::collections::HashMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::ast::{File, Item};
use super::diag::{LoadError, SyntaxError};
use super::parser::parse;
use super::span::{SourceMap, Spanned};

/// Includes nested deeper than this are refused (a guard against runaway
/// chains that are not cycles, such as generated paths).
pub const MAX_INCLUDE_DEPTH: usize = 32;

/// A readable, seekable file.
pub trait ReadSeek: io::Read + io::Seek {}
impl<T: io::Read + io::Seek> ReadSeek for T {}

/// Reads the files a recipe names: recipes and includes, and the model
/// descriptions and weights headers the checker looks at, so that a check
/// reads nothing but through its loader (the file system, memory for tests
/// and the fuzzer, a git revision for `prunex diff`).
pub trait Loader {
    /// Returns a canonical identity for `path` (used for cycle detection)
    /// and the file's text.
    fn read(&self, path: &Path) -> io::Result<(PathBuf, String)>;

    /// Opens a (possibly large, binary) file for reading parts of it.
    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadSeek>>;

    /// Whether a folder could be created (if missing) and written, without
    /// writing anything. Loaders that are not the file system (memory, a git
    /// revision) have nothing to say.
    fn writable(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    /// How many CUDA devices this machine has, when the loader can tell.
    fn cuda_devices(&self) -> Option<usize> {
        None
    }

    /// The entries of a folder (data sets are folders). Loaders that are
    /// not the file system answer `Unsupported`: they have nothing to say
    /// about data, which lives outside recipes.
    fn list(&self, _dir: &Path) -> io::Result<Vec<Entry>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this loader does not list folders",
        ))
    }
}

/// One entry of a folder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Its name (lossy UTF-8).
    pub name: String,
    /// A folder (symbolic links followed).
    pub dir: bool,
}

/// Reads from the file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsLoader;

/// Only regular files are read: opening a FIFO blocks until a writer comes,
/// and a device may never end.
fn regular(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file (a FIFO, socket or device)"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {what}"),
    ))
}

impl Loader for FsLoader {
    fn read(&self, path: &Path) -> io::Result<(PathBuf, String)> {
        let canonical = std::fs::canonicalize(path)?;
        regular(&canonical)?;
        let bytes = std::fs::read(&canonical)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text")
        })?;
        Ok((canonical, text))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadSeek>> {
        regular(path)?;
        Ok(Box::new(io::BufReader::new(std::fs::File::open(path)?)))
    }

    /// NVIDIA's device nodes (`/dev/nvidia0`, …), as many as
    /// `CUDA_VISIBLE_DEVICES` leaves visible: what libtorch will see,
    /// without loading it.
    fn cuda_devices(&self) -> Option<usize> {
        let nodes = std::fs::read_dir("/dev")
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("nvidia"))
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            })
            .count();
        // As CUDA reads the list: entries up to the first invalid one
        // (`-1` hides every device).
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok().map(|v| {
            v.split(',')
                .map(str::trim)
                .take_while(|x| match x.parse::<i64>() {
                    Ok(i) => (0..nodes as i64).contains(&i),
                    Err(_) => x.starts_with("GPU-") || x.starts_with("MIG-"),
                })
                .count()
        });
        Some(visible.map_or(nodes, |v| v.min(nodes)))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            out.push(Entry {
                name: e.file_name().to_string_lossy().into_owned(),
                dir: std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir()),
            });
        }
        out.sort();
        Ok(out)
    }

    fn writable(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = dir.as_os_str().as_bytes();
        if bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path holds a NUL byte",
            ));
        }
        // The nearest folder that exists must be writable (the rest is
        // created); a file on the way cannot become a folder.
        let mut at = dir;
        loop {
            let here = if at.as_os_str().is_empty() {
                Path::new(".")
            } else {
                at
            };
            match std::fs::metadata(here) {
                Ok(m) if m.is_dir() => {
                    let c = std::ffi::CString::new(here.as_os_str().as_bytes())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    // SAFETY: a valid NUL-terminated path.
                    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("`{}` is not writable", here.display()),
                        ));
                    }
                    return Ok(());
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("`{}` is a file, not a folder", here.display()),
                    ))
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    match at.parent() {
                        Some(p) => at = p,
                        None => return Ok(()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads from a map of paths to texts (tests, the fuzzer).
#[derive(Clone, Debug, Default)]
pub struct MemLoader {
    files: HashMap<PathBuf, String>,
}

impl MemLoader {
    /// An empty file set.
    pub fn new() -> Self {
        MemLoader::default()
    }

    /// Adds a file.
    pub fn with(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        self.files.insert(normalize(&path.into()), text.into());
        self
    }
}

impl Loader for MemLoader {
    fn read(&self, path: &Path) -> io::Result<(PathBuf, String)> {
        let key = normalize(path);
        match self.files.get(&key) {
            Some(text) => Ok((key, text.clone())),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "No such file or directory",
            )),
        }
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn ReadSeek>> {
        let (_, text) = self.read(path)?;
        Ok(Box::new(io::Cursor::new(text.into_bytes())))
    }
}

/// Removes `.` and `a/..` from a path without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Any error met while loading.
#[derive(Debug)]
pub enum Problem {
    /// A syntax error in one of the files.
    Syntax(SyntaxError),
    /// A file could not be loaded.
    Load(LoadError),
}

/// A recipe with its includes loaded and parsed, before variables and
/// settings are resolved.
#[derive(Debug, Default)]
pub struct UnresolvedRecipe {
    /// Every file read, the recipe first.
    pub sources: SourceMap,
    /// The parsed tree of each file, indexed by file id.
    pub files: Vec<File>,
    /// All items in the order they take effect, includes expanded.
    pub items: Vec<Spanned<Item>>,
    /// Every problem found, file by file (the recipe first), each file's in
    /// reading order.
    pub problems: Vec<Problem>,
    /// The file of each problem, to put them in that order.
    keys: Vec<usize>,
}

impl UnresolvedRecipe {
    /// Whether any file failed to load or parse.
    pub fn has_errors(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// Loads the recipe at `path` and, recursively, its includes.
pub fn load(path: &Path, loader: &dyn Loader) -> UnresolvedRecipe {
    let mut out = UnresolvedRecipe::default();
    match loader.read(path) {
        Ok((canonical, text)) => {
            let mut stack = Vec::new();
            load_file(
                &mut out,
                loader,
                path.display().to_string(),
                canonical,
                text,
                &mut stack,
            );
            finish(&mut out);
        }
        Err(e) => out.problems.push(Problem::Load(LoadError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })),
    }
    out
}

/// Parses `text` as a recipe with no file behind it (for `--stdin`-style
/// uses and tests); includes are resolved against `loader` from the current
/// folder.
pub fn load_text(name: &str, text: &str, loader: &dyn Loader) -> UnresolvedRecipe {
    let mut out = UnresolvedRecipe::default();
    let mut stack = Vec::new();
    load_file(
        &mut out,
        loader,
        name.to_owned(),
        PathBuf::from(name),
        text.to_owned(),
        &mut stack,
    );
    finish(&mut out);
    out
}

fn load_file(
    out: &mut UnresolvedRecipe,
    loader: &dyn Loader,
    name: String,
    canonical: PathBuf,
    text: String,
    stack: &mut Vec<PathBuf>,
) {
    let text: Arc<str> = text.into();
    let id = out.sources.add(name, Some(&canonical), text);
    let parsed = parse(out.sources.get(id));
    out.keys
        .extend(std::iter::repeat_n(id, parsed.errors.len()));
    out.problems
        .extend(parsed.errors.into_iter().map(Problem::Syntax));
    stack.push(canonical.clone());
    let dir = canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    out.files.push(parsed.file.clone());
    for item in parsed.file.items {
        let Item::Include(target) = &item.node else {
            out.items.push(item);
            continue;
        };
        let src = out.sources.get(id).named();
        let span = target.span.source_span();
        if stack.len() >= MAX_INCLUDE_DEPTH {
            out.keys.push(id);
            out.problems.push(Problem::Load(LoadError::IncludeDepth {
                src,
                span,
                limit: MAX_INCLUDE_DEPTH,
            }));
            continue;
        }
        let wanted = dir.join(&target.node);
        match loader.read(&wanted) {
            Ok((child, child_text)) => {
                if let Some(at) = stack.iter().position(|p| *p == child) {
                    let chain = stack[at..]
                        .iter()
                        .chain(std::iter::once(&child))
                        .map(|p| {
                            format!("`{}`", p.file_name().unwrap_or_default().to_string_lossy())
                        })
                        .collect::<Vec<_>>()
                        .join(" → ");
                    out.keys.push(id);
                    out.problems.push(Problem::Load(LoadError::IncludeCycle {
                        src,
                        span,
                        path: target.node.clone(),
                        chain,
                    }));
                    continue;
                }
                let child_name = display_path(&out.sources.get(id).name, &target.node);
                load_file(out, loader, child_name, child, child_text, stack);
            }
            Err(e) => {
                out.keys.push(id);
                out.problems.push(Problem::Load(LoadError::IncludeNotFound {
                src,
                span,
                path: target.node.clone(),
                reason: e.to_string(),
                    help: format!(
                        "include paths are relative to the including file's folder; this one was looked for at {}",
                        display_path(&out.sources.get(id).name, &target.node)
                    ),
                }));
            }
        }
    }
    stack.pop();
}

/// Puts problems in reading order: file by file, then by position.
fn finish(out: &mut UnresolvedRecipe) {
    use miette::Diagnostic;
    let offset = |p: &Problem| {
        let labels = match p {
            Problem::Syntax(e) => e.labels(),
            Problem::Load(e) => e.labels(),
        };
        labels.and_then(|mut l| l.next()).map_or(0, |l| l.offset())
    };
    let mut keyed: Vec<((usize, usize), Problem)> = std::mem::take(&mut out.problems)
        .into_iter()
        .zip(out.keys.drain(..).chain(std::iter::repeat(0)))
        .map(|(p, file)| ((file, offset(&p)), p))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    out.problems = keyed.into_iter().map(|(_, p)| p).collect();
}

/// The name an included file is shown under: its path relative to where
/// the user started, as far as it can be told from the includer's name.
fn display_path(includer: &str, target: &str) -> String {
    let base = Path::new(includer).parent().unwrap_or(Path::new(""));
    normalize(&base.join(target)).display().to_string()
}
