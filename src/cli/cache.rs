//! `prunex cache info|clean`.

use super::{CacheAction, OK, TROUBLE};
use crate::cache::Cache;
use crate::cli::inspect::si;

/// Runs the subcommand.
pub fn run(action: CacheAction) -> u8 {
    let cache = Cache::from_env();
    match action {
        CacheAction::Info => {
            let entries = cache.entries();
            let bytes: u64 = entries.iter().map(|e| e.1).sum();
            println!("cache: {}", cache.dir.display());
            println!(
                "{} entries, {}B of {}B (set PRUNEX_CACHE_SIZE to change the cap)",
                entries.len(),
                si(bytes),
                si(cache.cap)
            );
            OK
        }
        CacheAction::Clean => match cache.clean() {
            Ok((n, bytes)) => {
                println!(
                    "removed {n} entries ({}B) from {}",
                    si(bytes),
                    cache.dir.display()
                );
                OK
            }
            Err(e) => {
                eprintln!(
                    "error[prunex::cli::cache_clean]: cannot clean {}: {e}\n  help: check the folder's permissions, or remove it by hand",
                    cache.dir.display()
                );
                TROUBLE
            }
        },
    }
}
