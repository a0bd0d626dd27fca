//! Where a process stands in a data-parallel run: its rank, the world's
//! size, the rendezvous address — read from the variables launchers set
//! (`prunex run --nproc N`, `torchrun`, SLURM's `srun`), with coded
//! diagnostics for what does not fit. Plain data: the executor
//! (`exec/dist`) joins the group with it, the front end starts workers
//! with it.

use miette::Diagnostic;
use thiserror::Error;

/// The port rank 0's store listens on when nothing says otherwise
/// (PyTorch's too).
pub const DEFAULT_PORT: u16 = 29500;

/// The exit code of a worker that stopped because another rank failed;
/// `prunex run --nproc` tells the rank that failed first from such victims
/// by it.
pub const PEER_LOST_EXIT: u8 = 3;

/// One process's place in a distributed run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    /// This process's rank, 0 ≤ rank < size.
    pub rank: usize,
    /// How many processes train together.
    pub size: usize,
    /// The rank on this machine (its CUDA device).
    pub local_rank: usize,
    /// Where rank 0's store listens (or torchrun's agent's).
    pub master_addr: String,
    /// Its port.
    pub master_port: u16,
    /// torchrun's agent hosts the store already: every rank is a client.
    pub agent_store: bool,
    /// Who started the processes, for messages.
    pub launcher: Launcher,
}

/// Who set the variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// `prunex run --nproc N`.
    Prunex,
    /// `torchrun` (or anything that sets `RANK` and `WORLD_SIZE`).
    Torchrun,
    /// SLURM's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`).
    Slurm,
}

/// What is wrong with the launcher's variables.
#[derive(Debug, Error, Diagnostic, PartialEq, Eq)]
pub enum WorldError {
    /// A variable is not a number, or out of range.
    #[error("{name}={value:?} is not {what}")]
    #[diagnostic(
        code(prunex::dist::bad_variable),
        help("the launcher sets {name}; start prunex with `prunex run --nproc N`, `torchrun` or `srun`, or unset it to run one process")
    )]
    BadVariable {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        what: &'static str,
    },
    /// The rank is not below the world's size.
    #[error("rank {rank} is not below the world size {size}")]
    #[diagnostic(
        code(prunex::dist::rank_out_of_range),
        help("every process needs a rank from 0 to WORLD_SIZE − 1; check the launcher's RANK and WORLD_SIZE")
    )]
    RankOutOfRange {
        /// The rank.
        rank: usize,
        /// The size.
        size: usize,
    },
    /// One of RANK / WORLD_SIZE without the other.
    #[error("{set} is set but {missing} is not")]
    #[diagnostic(
        code(prunex::dist::incomplete),
        help("a distributed run needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun sets them all); `prunex run --nproc N` starts N local workers")
    )]
    Incomplete {
        /// The variable that is set.
        set: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
}

fn number<T: std::str::FromStr>(
    name: &'static str,
    value: String,
    what: &'static str,
) -> Result<T, WorldError> {
    value
        .trim()
        .parse()
        .map_err(|_| WorldError::BadVariable { name, value, what })
}

/// The first host of a SLURM node list: `node[03-05,07]` → `node03`,
/// `a,b` → `a`.
pub fn first_slurm_host(list: &str) -> String {
    let mut host = String::new();
    let mut chars = list.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                // The first number (with its leading zeros) of the range.
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_digit() {
                        host.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                break;
            }
            c => host.push(c),
        }
    }
    host
}

impl World {
    /// The world the environment describes (`env` reads a variable), or
    /// `None` for a single process. torchrun's variables (`RANK`,
    /// `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) win over
    /// SLURM's; `PRUNEX_LAUNCHER=prunex` marks `prunex run --nproc`'s
    /// workers. A world of one is a single process.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<World>, WorldError> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let (rank, size, local, launcher) = match (get("RANK"), get("WORLD_SIZE")) {
            (Some(r), Some(w)) => {
                let launcher = if get("PRUNEX_LAUNCHER").as_deref() == Some("prunex") {
                    Launcher::Prunex
                } else {
                    Launcher::Torchrun
                };
                (
                    number::<usize>("RANK", r, "a rank (0, 1, …)")?,
                    number::<usize>("WORLD_SIZE", w, "a number of processes")?,
                    get("LOCAL_RANK")
                        .map(|v| number::<usize>("LOCAL_RANK", v, "a rank on this machine"))
                        .transpose()?,
                    launcher,
                )
            }
            (Some(_), None) => {
                return Err(WorldError::Incomplete {
                    set: "RANK",
                    missing: "WORLD_SIZE",
                })
            }
            (None, Some(_)) => {
                return Err(WorldError::Incomplete {
                    set: "WORLD_SIZE",
                    missing: "RANK",
                })
            }
            (None, None) => match (get("SLURM_PROCID"), get("SLURM_NTASKS")) {
                (Some(r), Some(n)) => (
                    number::<usize>("SLURM_PROCID", r, "a rank (0, 1, …)")?,
                    number::<usize>("SLURM_NTASKS", n, "a number of tasks")?,
                    get("SLURM_LOCALID")
                        .map(|v| number::<usize>("SLURM_LOCALID", v, "a rank on this machine"))
                        .transpose()?,
                    Launcher::Slurm,
                ),
                _ => return Ok(None),
            },
        };
        if size == 0 {
            return Err(WorldError::BadVariable {
                name: if launcher == Launcher::Slurm {
                    "SLURM_NTASKS"
                } else {
                    "WORLD_SIZE"
                },
                value: "0".into(),
                what: "a number of processes (1 or more)",
            });
        }
        if rank >= size {
            return Err(WorldError::RankOutOfRange { rank, size });
        }
        if size == 1 {
            return Ok(None);
        }
        let master_addr = match get("MASTER_ADDR") {
            Some(a) => a,
            None if launcher == Launcher::Slurm => get("SLURM_JOB_NODELIST")
                .or_else(|| get("SLURM_NODELIST"))
                .map(|l| first_slurm_host(&l))
                .unwrap_or_else(|| "127.0.0.1".into()),
            None => {
                return Err(WorldError::Incomplete {
                    set: "RANK",
                    missing: "MASTER_ADDR",
                })
            }
        };
        let master_port = match get("MASTER_PORT") {
            Some(p) => number::<u16>("MASTER_PORT", p, "a port (1–65535)")?,
            // One port per job, so two jobs on a node do not collide.
            None if launcher == Launcher::Slurm => match get("SLURM_JOB_ID") {
                Some(id) => {
                    DEFAULT_PORT + (number::<u64>("SLURM_JOB_ID", id, "a job id")? % 1000) as u16
                }
                None => DEFAULT_PORT,
            },
            None => {
                return Err(WorldError::Incomplete {
                    set: "RANK",
                    missing: "MASTER_PORT",
                })
            }
        };
        if master_port == 0 {
            return Err(WorldError::BadVariable {
                name: "MASTER_PORT",
                value: "0".into(),
                what: "a port (1–65535)",
            });
        }
        Ok(Some(World {
            rank,
            size,
            local_rank: local.unwrap_or(rank),
            master_addr,
            master_port,
            agent_store: get("TORCHELASTIC_USE_AGENT_STORE")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            launcher,
        }))
    }

    /// Whether this process writes (the cache, checkpoints, exports,
    /// reports) and prints progress.
    pub fn leader(&self) -> bool {
        self.rank == 0
    }
}

/// Which contiguous slice `[start, end)` of a global batch of `len`
/// samples rank `rank` of `size` trains on: as even as can be, the first
/// ranks one larger when it does not divide.
pub fn shard(len: usize, rank: usize, size: usize) -> (usize, usize) {
    let size = size.max(1);
    let (base, extra) = (len / size, len % size);
    let start = rank * base + rank.min(extra);
    (start, start + base + usize::from(rank < extra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn world(vars: &[(&str, &str)]) -> Result<Option<World>, WorldError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        World::from_env(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_variables_make_a_world() {
        let w = world(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "34873"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            w,
            World {
                rank: 3,
                size: 8,
                local_rank: 1,
                master_addr: "node0".into(),
                master_port: 34873,
                agent_store: true,
                launcher: Launcher::Torchrun,
            }
        );
        assert!(!w.leader());
    }

    #[test]
    fn nothing_or_one_process_is_not_distributed() {
        assert_eq!(world(&[]).unwrap(), None);
        assert_eq!(
            world(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("MASTER_ADDR", "x"),
                ("MASTER_PORT", "1")
            ])
            .unwrap(),
            None
        );
    }

    #[test]
    fn slurm_variables_make_a_world() {
        let w = world(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-08,11]"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                w.rank,
                w.size,
                w.local_rank,
                w.master_addr.as_str(),
                w.master_port
            ),
            (5, 16, 1, "gpu07", 29956)
        );
        assert_eq!(w.launcher, Launcher::Slurm);
        assert!(!w.agent_store);
    }

    #[test]
    fn bad_variables_are_coded_errors() {
        assert!(matches!(
            world(&[("RANK", "x"), ("WORLD_SIZE", "2")]),
            Err(WorldError::BadVariable { name: "RANK", .. })
        ));
        assert_eq!(
            world(&[
                ("RANK", "2"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "1")
            ]),
            Err(WorldError::RankOutOfRange { rank: 2, size: 2 })
        );
        assert_eq!(
            world(&[("RANK", "0")]),
            Err(WorldError::Incomplete {
                set: "RANK",
                missing: "WORLD_SIZE"
            })
        );
        assert_eq!(
            world(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a")]),
            Err(WorldError::Incomplete {
                set: "RANK",
                missing: "MASTER_PORT"
            })
        );
        assert!(matches!(
            world(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "70000")
            ]),
            Err(WorldError::BadVariable {
                name: "MASTER_PORT",
                ..
            })
        ));
    }

    proptest::proptest! {
        /// Whatever a launcher (or a user) puts in the variables, reading
        /// them gives a world whose rank is below its size, nothing, or a
        /// coded error — never a panic.
        #[test]
        fn any_variables_read_without_panicking(
            vals in proptest::collection::vec(proptest::option::of("[ -~]{0,8}|[0-9]{1,6}"), 9)
        ) {
            let names = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_JOB_ID"];
            let m: HashMap<&str, String> = names
                .iter()
                .zip(&vals)
                .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
                .collect();
            if let Ok(Some(w)) = World::from_env(|k| m.get(k).cloned()) {
                proptest::prop_assert!(w.rank < w.size && w.size > 1 && w.master_port > 0);
            }
        }
    }

    #[test]
    fn slurm_hosts() {
        assert_eq!(first_slurm_host("node[03-05,07]"), "node03");
        assert_eq!(first_slurm_host("a,b"), "a");
        assert_eq!(first_slurm_host("single"), "single");
    }

    #[test]
    fn shards_cover_a_batch_once() {
        for len in 0..20 {
            for size in 1..5 {
                let mut next = 0;
                for r in 0..size {
                    let (a, b) = shard(len, r, size);
                    assert_eq!(a, next);
                    assert!(b - a <= len.div_ceil(size));
                    next = b;
                }
                assert_eq!(next, len);
            }
        }
        assert_eq!(shard(256, 1, 2), (128, 256));
    }
}
