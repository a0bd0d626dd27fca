//! The stage cache: results of run stages (pretraining, dense evaluation,
//! each pruning step, each fine-tuning epoch) stored under a content hash of
//! everything upstream of them. A second run, `--resume` and watch mode
//! start from the last stage whose key is already here.
//!
//! An entry is a folder named by its key holding a few files; it is written
//! under a temporary name and renamed, so an interrupted write leaves no
//! entry rather than half of one. The cache has a size cap (least recently
//! used entries go first) and `prunex cache clean` empties it.
//!
//! This module does no tensor work and never touches libtorch.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

/// Default size cap: 4 GiB.
pub const DEFAULT_CAP: u64 = 4 << 30;

/// A cache key: a BLAKE3 hash, in hex.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key(pub String);

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Key {
    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

/// Builds a key from labelled parts; the same parts in the same order give
/// the same key.
pub struct KeyBuilder(blake3::Hasher);

impl KeyBuilder {
    /// Starts a key for `what` (a stage name).
    pub fn new(what: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"prunex-cache-v1\0");
        let mut k = KeyBuilder(h);
        k.str(what);
        k
    }

    /// Chains from an upstream key.
    pub fn after(what: &str, upstream: &Key) -> Self {
        let mut k = Self::new(what);
        k.str(&upstream.0);
        k
    }

    /// Adds a string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// Adds bytes (length-prefixed, so parts never run together).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.update(&(b.len() as u64).to_le_bytes());
        self.0.update(b);
        self
    }

    /// Adds a value as JSON.
    pub fn json<T: Serialize + ?Sized>(&mut self, v: &T) -> &mut Self {
        let s = serde_json::to_string(v).expect("cache key parts serialize");
        self.str(&s)
    }

    /// Adds a number.
    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.bytes(&n.to_le_bytes())
    }

    /// The key.
    pub fn key(&self) -> Key {
        Key(self.0.finalize().to_hex().to_string())
    }
}

/// The hash of some bytes, in hex (for the run report's lock).
pub fn hash_bytes(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// A stage cache in a folder.
#[derive(Clone, Debug)]
pub struct Cache {
    /// The folder.
    pub dir: PathBuf,
    /// Size cap in bytes.
    pub cap: u64,
}

/// Parses a size: `500M`, `4G`, `1024` (bytes), `0` (no cache kept).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        (i, 't' | 'T') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0 && n.is_finite()).then_some((n * mult as f64) as u64)
}

impl Cache {
    /// The cache prunex uses: `$PRUNEX_CACHE`, else `$XDG_CACHE_HOME/prunex`,
    /// else `~/.cache/prunex`; capped at `$PRUNEX_CACHE_SIZE` (default 4G).
    pub fn from_env() -> Self {
        let dir = std::env::var_os("PRUNEX_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("prunex")))
            .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/prunex")))
            .unwrap_or_else(|| std::env::temp_dir().join("prunex-cache"));
        let cap = std::env::var("PRUNEX_CACHE_SIZE")
            .ok()
            .and_then(|s| parse_size(&s))
            .unwrap_or(DEFAULT_CAP);
        Cache { dir, cap }
    }

    fn entry(&self, key: &Key) -> PathBuf {
        self.dir.join(&key.0)
    }

    /// The folder of an entry, if it is there; marks it used.
    pub fn get(&self, key: &Key) -> Option<PathBuf> {
        let dir = self.entry(key);
        let done = dir.join("meta.json");
        if !done.is_file() {
            return None;
        }
        if let Ok(f) = std::fs::File::options().append(true).open(&done) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(dir)
    }

    /// Stores an entry: `files` (name, bytes) plus `meta.json`, written to a
    /// temporary folder and renamed into place. Then evicts old entries over
    /// the cap (never this one).
    pub fn put(&self, key: &Key, meta: &[u8], files: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", key.short(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let write = || -> std::io::Result<()> {
            for (name, bytes) in files {
                std::fs::write(tmp.join(name), bytes)?;
            }
            std::fs::write(tmp.join("meta.json"), meta)?;
            let dst = self.entry(key);
            let _ = std::fs::remove_dir_all(&dst);
            std::fs::rename(&tmp, &dst)
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })?;
        self.evict(Some(key));
        Ok(())
    }

    /// Removes one entry.
    pub fn remove(&self, key: &Key) {
        let _ = std::fs::remove_dir_all(self.entry(key));
    }

    /// Entries: (key, bytes, last used), oldest first.
    pub fn entries(&self) -> Vec<(Key, u64, SystemTime)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(Key, u64, SystemTime)> = rd
            .filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
            })
            .filter_map(|e| {
                let meta = std::fs::metadata(e.path().join("meta.json")).ok()?;
                Some((
                    Key(e.file_name().to_string_lossy().into_owned()),
                    dir_size(&e.path()),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ))
            })
            .collect();
        out.sort_by_key(|(k, _, t)| (*t, k.clone()));
        out
    }

    /// Bytes used.
    pub fn size(&self) -> u64 {
        self.entries().iter().map(|e| e.1).sum()
    }

    /// Evicts least recently used entries until the cache fits its cap.
    pub fn evict(&self, keep: Option<&Key>) {
        let entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        for (k, bytes, _) in entries {
            if total <= self.cap {
                break;
            }
            if Some(&k) == keep {
                continue;
            }
            self.remove(&k);
            total = total.saturating_sub(bytes);
        }
    }

    /// Removes every entry (and leftovers of interrupted writes); returns
    /// (entries removed, bytes freed).
    pub fn clean(&self) -> std::io::Result<(usize, u64)> {
        let entries = self.entries();
        let bytes = entries.iter().map(|e| e.1).sum();
        for (k, _, _) in &entries {
            std::fs::remove_dir_all(self.entry(k))?;
        }
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.filter_map(Result::ok) {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok((entries.len(), bytes))
    }
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_part_and_its_boundaries() {
        let a = KeyBuilder::new("x").str("ab").str("c").key();
        let b = KeyBuilder::new("x").str("a").str("bc").key();
        let c = KeyBuilder::new("x").str("ab").str("c").key();
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_ne!(
            KeyBuilder::after("y", &a).key(),
            KeyBuilder::after("y", &b).key()
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("500m"), Some(500 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1G"), None);
    }

    #[test]
    fn put_get_evict_and_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache {
            dir: dir.path().join("cache"),
            cap: 1 << 20,
        };
        let k1 = KeyBuilder::new("a").key();
        let k2 = KeyBuilder::new("b").key();
        assert!(c.get(&k1).is_none());
        c.put(&k1, b"{}", &[("w", vec![0u8; 600 << 10])]).unwrap();
        assert_eq!(
            std::fs::read(c.get(&k1).unwrap().join("w")).unwrap().len(),
            600 << 10
        );
        // Older k1 goes when k2 pushes the cache over its cap.
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.put(&k2, b"{}", &[("w", vec![0u8; 600 << 10])]).unwrap();
        assert!(c.get(&k1).is_none());
        assert!(c.get(&k2).is_some());
        // The newest entry stays even when it alone is over the cap.
        c.cap = 10;
        c.evict(Some(&k2));
        assert!(c.get(&k2).is_some());
        let (n, bytes) = c.clean().unwrap();
        assert_eq!(n, 1);
        assert!(bytes >= 600 << 10);
        assert!(c.entries().is_empty());
    }
}
