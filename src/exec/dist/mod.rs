//! Data-parallel training on c10d, the engine PyTorch's
//! DistributedDataParallel runs on: the group a worker joins (TCPStore
//! rendezvous, Gloo on the CPU, NCCL on CUDA), collectives on tch tensors,
//! DDP's bucketed Reducer (gradients all-reduced while backward runs) and a
//! synchronised BatchNorm. The C++ side is `csrc/c10d_shim.cpp`; no C++
//! exception crosses into Rust, every failure is a [`DistError`].

mod ffi;

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use miette::Diagnostic;
use prunex::distributed::{Launcher, World};
use tch::{Device, Kind, Tensor};
use thiserror::Error;

use ffi::*;

/// What goes wrong between workers.
#[derive(Debug, Error, Diagnostic)]
pub enum DistError {
    /// Rank 0 could not listen on the rendezvous port.
    #[error("rank 0 cannot listen on port {port}: it is in use")]
    #[diagnostic(
        code(prunex::dist::port_in_use),
        help("another run (or program) holds port {port}; set MASTER_PORT to a free one, or let `prunex run --nproc` choose one")
    )]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// The workers did not all arrive.
    #[error("rank {rank} could not meet the other {others} worker(s) at {addr}:{port}: {reason}")]
    #[diagnostic(
        code(prunex::dist::rendezvous),
        help("every rank must be started with the same WORLD_SIZE, MASTER_ADDR and MASTER_PORT, and rank 0's machine must accept connections on that port")
    )]
    Rendezvous {
        /// This rank.
        rank: usize,
        /// How many others were expected.
        others: usize,
        /// The store's address.
        addr: String,
        /// Its port.
        port: u16,
        /// c10d's words.
        reason: String,
    },
    /// A collective failed: another worker died or stopped answering.
    #[error("rank {rank} lost the other workers during {during}: {reason}")]
    #[diagnostic(
        code(prunex::dist::peer_lost),
        help("another rank stopped (it crashed, was killed or hung for longer than the timeout); its own message says why, and the launcher names it. Nothing was written after the last completed epoch: `prunex run --resume` continues from it")
    )]
    PeerLost {
        /// This rank.
        rank: usize,
        /// What it was doing.
        during: String,
        /// c10d's words.
        reason: String,
    },
    /// The ranks disagree about something they must share.
    #[error("the ranks disagree: {what}")]
    #[diagnostic(
        code(prunex::dist::mismatch),
        help("every rank must run the same recipe, with the same files and the same world size")
    )]
    Mismatch {
        /// What differs.
        what: String,
    },
    /// NCCL was asked for but this build has none.
    #[error("{0}")]
    #[diagnostic(
        code(prunex::dist::backend),
        help("this prunex was built without NCCL: build it against a CUDA libtorch after scripts/setup (which installs the CUDA headers NCCL's needs; `cargo build --features nccl` insists on it); `device cpu` trains with Gloo")
    )]
    Backend(String),
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sum over ranks.
    Sum = 0,
    /// Largest value.
    Max = 2,
}

/// Turns the shim's error string (or null) into a result.
fn check(e: *mut c_char) -> Result<(), String> {
    if e.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string from strdup.
    let s = unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned();
    // SAFETY: allocated by the shim with malloc, freed once here.
    unsafe { pxd_free_error(e) };
    Err(s)
}

fn ptrs(ts: &[&Tensor]) -> Vec<*mut torch_sys::C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut _).collect()
}

/// The timeout of one collective or of the rendezvous:
/// `PRUNEX_DIST_TIMEOUT` seconds, default 600 (a hung worker is noticed
/// after it; a dead one at once).
pub fn timeout() -> Duration {
    let secs = std::env::var("PRUNEX_DIST_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(600.0);
    Duration::from_secs_f64(secs)
}

/// The group of all workers, joined once per process.
pub struct Group {
    ptr: *mut PxdGroup,
    /// Where this process stands.
    pub world: World,
}

impl Group {
    /// Joins the group: meets the other workers at the store, then sets up
    /// Gloo (CPU) or NCCL (CUDA) between them.
    pub fn join(world: &World, device: Device) -> Result<Group, DistError> {
        let t = timeout();
        let addr = CString::new(world.master_addr.clone()).map_err(|_| DistError::Mismatch {
            what: "MASTER_ADDR holds a NUL byte".into(),
        })?;
        // Gloo binds to an interface (GLOO_SOCKET_IFNAME, as PyTorch), the
        // loopback address for a local run, or this machine's name.
        let host = match std::env::var("GLOO_SOCKET_IFNAME") {
            Ok(i) if !i.trim().is_empty() => {
                format!("if:{}", i.split(',').next().unwrap_or("").trim())
            }
            _ if world.launcher == Launcher::Prunex || is_local(&world.master_addr) => {
                "127.0.0.1".into()
            }
            _ => hostname(),
        };
        let host = CString::new(host).unwrap_or_default();
        let (backend, index) = match device {
            Device::Cuda(i) => (1, i as i32),
            _ => (0, 0),
        };
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid C strings and an out pointer; the shim catches
        // every C++ exception.
        let r = check(unsafe {
            pxd_group_new(
                addr.as_ptr(),
                world.master_port,
                world.rank as i32,
                world.size as i32,
                world.agent_store as i32,
                backend,
                index,
                t.as_millis() as i64,
                host.as_ptr(),
                &mut ptr,
            )
        });
        if let Err(reason) = r {
            if reason.contains("without NCCL") || reason.contains("without gloo") {
                return Err(DistError::Backend(reason));
            }
            if reason.contains("Address already in use") || reason.contains("EADDRINUSE") {
                return Err(DistError::PortInUse {
                    port: world.master_port,
                });
            }
            return Err(DistError::Rendezvous {
                rank: world.rank,
                others: world.size - 1,
                addr: world.master_addr.clone(),
                port: world.master_port,
                reason: first_line(&reason),
            });
        }
        let g = Group {
            ptr,
            world: world.clone(),
        };
        // Every rank must agree on the world's size (a launcher given
        // different WORLD_SIZEs would otherwise fail later, obscurely).
        let n = world.size as f64;
        let m = g.max_each(&[n, -n], "checking the world size")?;
        if m[0] != -m[1] {
            return Err(DistError::Mismatch {
                what: format!(
                    "WORLD_SIZE is {} on some ranks and {} on others",
                    -m[1], m[0]
                ),
            });
        }
        Ok(g)
    }

    fn lost(&self, during: &str, reason: String) -> DistError {
        DistError::PeerLost {
            rank: self.world.rank,
            during: during.into(),
            reason: first_line(&reason),
        }
    }

    /// All-reduces tensors in place (each on its own; any device).
    pub fn all_reduce(&self, ts: &[&Tensor], op: Op, during: &str) -> Result<(), DistError> {
        if ts.is_empty() {
            return Ok(());
        }
        let p = ptrs(ts);
        // SAFETY: live tensors; the shim only reads the pointers.
        check(unsafe { pxd_allreduce(self.ptr, p.as_ptr(), p.len(), op as i32) })
            .map_err(|e| self.lost(during, e))
    }

    /// Every rank ends with `root`'s values, in place.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize, during: &str) -> Result<(), DistError> {
        if ts.is_empty() {
            return Ok(());
        }
        let p = ptrs(ts);
        // SAFETY: as for all_reduce.
        check(unsafe { pxd_broadcast(self.ptr, p.as_ptr(), p.len(), root as i32) })
            .map_err(|e| self.lost(during, e))
    }

    /// Sums numbers over ranks (in f64).
    pub fn sum(&self, v: &[f64], during: &str) -> Result<Vec<f64>, DistError> {
        self.reduce(v, Op::Sum, during)
    }

    /// The largest of each number over ranks.
    pub fn max_each(&self, v: &[f64], during: &str) -> Result<Vec<f64>, DistError> {
        self.reduce(v, Op::Max, during)
    }

    fn reduce(&self, v: &[f64], op: Op, during: &str) -> Result<Vec<f64>, DistError> {
        let t = Tensor::from_slice(v).to_kind(Kind::Double);
        self.all_reduce(&[&t], op, during)?;
        Ok(Vec::<f64>::try_from(&t).unwrap_or_default())
    }

    /// The largest of a number over ranks.
    pub fn max(&self, v: f64, during: &str) -> Result<f64, DistError> {
        Ok(self.reduce(&[v], Op::Max, during)?[0])
    }

    /// `root`'s bytes on every rank (through the store: small things).
    pub fn share_bytes(&self, key: &str, bytes: &[u8], root: usize) -> Result<Vec<u8>, DistError> {
        let k = CString::new(key).unwrap_or_default();
        if self.world.rank == root {
            // SAFETY: a live group, a valid key and buffer.
            check(unsafe { pxd_store_set(self.ptr, k.as_ptr(), bytes.as_ptr(), bytes.len()) })
                .map_err(|e| self.lost(key, e))?;
            return Ok(bytes.to_vec());
        }
        let (mut out, mut len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: out pointers; the buffer is malloc'd by the shim.
        check(unsafe { pxd_store_get(self.ptr, k.as_ptr(), &mut out, &mut len) })
            .map_err(|e| self.lost(key, e))?;
        // SAFETY: `len` bytes at `out`, freed once below.
        let v = unsafe { std::slice::from_raw_parts(out, len) }.to_vec();
        unsafe { pxd_free_bytes(out) };
        Ok(v)
    }

    /// The number under `key` in the store, if set (no waiting, no
    /// collective: a round trip to the store).
    pub fn peek(&self, key: &str) -> Result<Option<i64>, DistError> {
        let k = CString::new(key).unwrap_or_default();
        let (mut found, mut value) = (0, 0i64);
        // SAFETY: a live group, a valid key, out pointers.
        check(unsafe { pxd_store_peek(self.ptr, k.as_ptr(), &mut found, &mut value) })
            .map_err(|e| self.lost(key, e))?;
        Ok((found != 0).then_some(value))
    }

    /// Sets `key` to `desired` unless a rank set it first; what it holds.
    pub fn first(&self, key: &str, desired: i64) -> Result<i64, DistError> {
        let k = CString::new(key).unwrap_or_default();
        let mut value = 0i64;
        // SAFETY: as for peek.
        check(unsafe { pxd_store_first(self.ptr, k.as_ptr(), desired, &mut value) })
            .map_err(|e| self.lost(key, e))?;
        Ok(value)
    }

    /// DDP's Reducer over these parameters (in model order).
    pub fn reducer(&self, params: &[&Tensor]) -> Result<Reducer, DistError> {
        let p = ptrs(params);
        let mut out = std::ptr::null_mut();
        // DDP's defaults: 25 MiB buckets, the first 1 MiB.
        // SAFETY: live tensors, an out pointer.
        check(unsafe {
            pxd_reducer_new(self.ptr, p.as_ptr(), p.len(), 25 << 20, 1 << 20, &mut out)
        })
        .map_err(|e| self.lost("setting up the gradient reducer", e))?;
        Ok(Reducer {
            ptr: out,
            rank: self.world.rank,
        })
    }

    /// BatchNorm in training mode over every rank's batch.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_batch_norm(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor, DistError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: live tensors; `out` receives a new heap tensor that
        // `Tensor::from_ptr` owns.
        check(unsafe {
            pxd_sync_batch_norm(
                self.ptr,
                x.as_ptr() as *mut _,
                weight.as_ptr() as *mut _,
                bias.as_ptr() as *mut _,
                mean.as_ptr() as *mut _,
                var.as_ptr() as *mut _,
                momentum,
                eps,
                &mut out,
            )
        })
        .map_err(|e| self.lost("a synchronised BatchNorm", e))?;
        // SAFETY: the shim allocated it with `new at::Tensor`.
        Ok(unsafe { Tensor::from_ptr(out) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: created by pxd_group_new, freed once.
        unsafe { pxd_group_free(self.ptr) }
    }
}

/// Drops the variables' gradients (`zero_grad(set_to_none=True)`): the
/// next backward hands its buffers over instead of adding to zeros.
pub fn drop_grads(vars: &[Tensor]) {
    let refs: Vec<&Tensor> = vars.iter().collect();
    let p = ptrs(&refs);
    // SAFETY: live tensors; resetting a gradient cannot fail.
    let _ = check(unsafe { pxd_drop_grads(p.as_ptr(), p.len()) });
}

/// DDP's bucketed gradient reducer: after `backward`, every parameter's
/// `.grad` holds the mean over ranks.
pub struct Reducer {
    ptr: *mut PxdReducer,
    rank: usize,
}

impl Reducer {
    fn lost(&self, during: &str, e: String) -> DistError {
        DistError::PeerLost {
            rank: self.rank,
            during: during.into(),
            reason: first_line(&e),
        }
    }

    /// Before a training step's forward pass.
    pub fn before_forward(&self) -> Result<(), DistError> {
        // SAFETY: a live reducer.
        check(unsafe { pxd_reducer_pre_forward(self.ptr) })
            .map_err(|e| self.lost("rebuilding gradient buckets", e))
    }

    /// After the forward pass, before backward.
    pub fn before_backward(&self) -> Result<(), DistError> {
        // SAFETY: a live reducer.
        check(unsafe { pxd_reducer_pre_backward(self.ptr) })
            .map_err(|e| self.lost("preparing the backward pass", e))
    }

    /// Backward through the loss: gradients are all-reduced bucket by
    /// bucket while it runs.
    pub fn backward(&self, loss: &Tensor) -> Result<(), DistError> {
        loss.f_backward()
            .map_err(|e| self.lost("the gradient all-reduce", e.to_string()))
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: created by pxd_reducer_new, freed once.
        unsafe { pxd_reducer_free(self.ptr) }
    }
}

/// c10d's message without what only its developers need: tch's prefix and
/// the source location gloo puts first (`[…/pair.cc:537] Read error …`).
fn first_line(s: &str) -> String {
    let mut line = s.lines().next().unwrap_or("").trim();
    line = line.strip_prefix("Internal torch error: ").unwrap_or(line);
    if let Some(rest) = line.strip_prefix('[') {
        if let Some((place, after)) = rest.split_once("] ") {
            if place.contains(".cc:") || place.contains(".cpp:") {
                line = after;
            }
        }
    }
    line.trim().to_owned()
}

fn is_local(addr: &str) -> bool {
    matches!(addr, "localhost" | "127.0.0.1" | "::1")
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: a buffer of its stated length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut c_char, buf.len()) };
    if r != 0 {
        return "127.0.0.1".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
