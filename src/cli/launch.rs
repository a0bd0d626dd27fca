//! `prunex run --nproc N`: N local workers of one data-parallel run, as
//! `torchrun --nproc_per_node N` starts them — each a `prunex-exec run` with
//! `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` set,
//! in its own process group.
//!
//! The launcher watches them: Ctrl-C is passed to every worker (they agree
//! on the batch to stop at, rank 0 saves, all exit 130); a worker that dies
//! is named, and the others — which notice within milliseconds and exit
//! with [`PEER_LOST_EXIT`] — are given a grace period, then killed. No run
//! hangs on a dead worker.

use std::net::TcpListener;
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::run::{on_ctrl_c, precheck, reuse_of, spawn_exec_with};
use super::TROUBLE;
use crate::distributed::PEER_LOST_EXIT;
use crate::invocation::RunArgs;

/// The running workers' pids, for the Ctrl-C handler.
static WORKERS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Sends `signal` to every running worker.
pub(crate) fn signal_workers(signal: i32) {
    if let Ok(pids) = WORKERS.lock() {
        for &pid in pids.iter() {
            // SAFETY: kill(2) with pids this process started.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// A free TCP port on the loopback interface for rank 0's store.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How long the other workers have to stop by themselves once one failed,
/// before they are killed. A worker notices a dead peer within
/// milliseconds and says so; one still waiting at the rendezvous, or hung,
/// would wait for `PRUNEX_DIST_TIMEOUT`. Only rank 0 writes, and only by
/// renaming finished files into place, so killing never leaves half an
/// output.
const GRACE: Duration = Duration::from_secs(5);

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}{}", signal_name(s)),
        _ => "stopped".into(),
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => " (SIGKILL: killed, often by the kernel for lack of memory)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        _ => "",
    }
}

/// Runs the recipe on `n` local workers; the exit code.
pub(crate) fn launch(a: &RunArgs, n: usize) -> u8 {
    if let Err(code) = precheck(&a.recipe, &a.set) {
        return code;
    }
    let port = match std::env::var("MASTER_PORT") {
        Ok(p) => match p.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                eprintln!("error[prunex::dist::bad_variable]: MASTER_PORT={p:?} is not a port (1–65535)\n  help: unset it and `prunex run --nproc` chooses a free one");
                return TROUBLE;
            }
        },
        Err(_) => match free_port() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error[prunex::dist::no_port]: no free port on 127.0.0.1 for the workers to meet at: {e}\n  help: set MASTER_PORT to a free port");
                return TROUBLE;
            }
        },
    };
    // The cores are shared: each worker gets its part unless told.
    let threads = a.threads.or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        Some((cores / n).max(1) as i32)
    });
    let reuse = reuse_of(a.resume, a.fresh);
    on_ctrl_c(|| {});
    let mut workers: Vec<Option<Child>> = Vec::with_capacity(n);
    for rank in 0..n {
        let env = [
            ("RANK", rank.to_string()),
            ("WORLD_SIZE", n.to_string()),
            ("LOCAL_RANK", rank.to_string()),
            ("LOCAL_WORLD_SIZE", n.to_string()),
            ("MASTER_ADDR", "127.0.0.1".to_string()),
            ("MASTER_PORT", port.to_string()),
            ("PRUNEX_LAUNCHER", "prunex".to_string()),
            // Not torchrun's agent: rank 0 hosts the store (c10d reads
            // this one itself, and refuses an empty value: it is removed).
            ("TORCHELASTIC_USE_AGENT_STORE", String::new()),
        ];
        match spawn_exec_with(&a.recipe, &a.set, threads, reuse, &env) {
            Ok(c) => {
                if let Ok(mut w) = WORKERS.lock() {
                    w.push(c.id() as i32);
                }
                workers.push(Some(c));
            }
            Err(code) => {
                signal_workers(libc::SIGKILL);
                return code;
            }
        }
    }
    supervise(workers)
}

/// Waits for the workers; names the first that failed, and kills the rest
/// when they do not stop by themselves within the grace period.
fn supervise(mut workers: Vec<Option<Child>>) -> u8 {
    let n = workers.len();
    let mut codes: Vec<Option<ExitStatus>> = vec![None; n];
    let mut cause: Option<(usize, ExitStatus)> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        let mut failed_now = Vec::new();
        for (rank, slot) in workers.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                codes[rank] = Some(status);
                *slot = None;
                if !status.success() {
                    failed_now.push((rank, status));
                }
            }
        }
        if cause.is_none() && !failed_now.is_empty() {
            // A worker that lost its peers (exit 3) is a victim; the cause
            // is the one that died otherwise.
            let first = failed_now
                .iter()
                .find(|(_, s)| s.code() != Some(PEER_LOST_EXIT as i32) && s.code() != Some(130))
                .or_else(|| failed_now.iter().find(|(_, s)| s.code() != Some(130)))
                .copied();
            if let Some((rank, status)) = first {
                cause = Some((rank, status));
                if status.code() == Some(PEER_LOST_EXIT as i32) {
                    eprintln!(
                        "error[prunex::dist::worker_failed]: rank {rank} lost contact with the other workers; stopping the rest"
                    );
                } else if status.code().is_some() {
                    eprintln!(
                        "error[prunex::dist::worker_failed]: rank {rank} {}; stopping the other ranks\n  help: rank {rank}'s message above says why; `prunex run --resume` continues from the last completed epoch",
                        describe(status)
                    );
                } else {
                    eprintln!(
                        "error[prunex::dist::worker_failed]: rank {rank} {}; stopping the other ranks\n  help: a signal ended rank {rank} before it could say anything (`dmesg` shows the kernel's out-of-memory kills); `prunex run --resume` continues from the last completed epoch",
                        describe(status)
                    );
                }
                deadline = Some(Instant::now() + GRACE);
            }
        }
        if workers.iter().all(Option::is_none) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            for (rank, slot) in workers.iter_mut().enumerate() {
                if let Some(child) = slot {
                    eprintln!("note: rank {rank} did not stop by itself; killing it");
                    let _ = child.kill();
                    codes[rank] = child.wait().ok();
                    *slot = None;
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Ok(mut w) = WORKERS.lock() {
        w.clear();
    }
    match cause {
        Some((_, s)) => match s.code() {
            Some(c @ 1..=2) => c as u8,
            _ => TROUBLE,
        },
        // Every worker stopped cleanly or was interrupted.
        None if codes.iter().flatten().any(|s| s.code() == Some(130)) => 130,
        None => 0,
    }
}
