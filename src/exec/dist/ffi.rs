//! The C API of `csrc/c10d_shim.cpp` (built by build.rs). Every function
//! that can fail returns a null pointer on success or a malloc'd message
//! that `pxd_free_error` frees; tensors are tch's `C_tensor` pointers.

use std::ffi::c_char;
use std::os::raw::c_int;

use torch_sys::C_tensor;

/// A process group (store, backend, and c10d's ProcessGroup wrapper).
#[repr(C)]
pub struct PxdGroup {
    _private: [u8; 0],
}

/// DDP's c10d::Reducer.
#[repr(C)]
pub struct PxdReducer {
    _private: [u8; 0],
}

extern "C" {
    pub fn pxd_free_error(e: *mut c_char);
    #[allow(clippy::too_many_arguments)]
    pub fn pxd_group_new(
        addr: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        agent_store: c_int,
        backend: c_int,
        device: c_int,
        timeout_ms: i64,
        gloo_host: *const c_char,
        out: *mut *mut PxdGroup,
    ) -> *mut c_char;
    pub fn pxd_group_free(g: *mut PxdGroup);
    pub fn pxd_allreduce(
        g: *mut PxdGroup,
        ts: *const *mut C_tensor,
        n: usize,
        op: c_int,
    ) -> *mut c_char;
    pub fn pxd_broadcast(
        g: *mut PxdGroup,
        ts: *const *mut C_tensor,
        n: usize,
        root: c_int,
    ) -> *mut c_char;
    pub fn pxd_store_set(
        g: *mut PxdGroup,
        key: *const c_char,
        data: *const u8,
        len: usize,
    ) -> *mut c_char;
    pub fn pxd_store_get(
        g: *mut PxdGroup,
        key: *const c_char,
        out: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;
    pub fn pxd_free_bytes(p: *mut u8);
    pub fn pxd_store_peek(
        g: *mut PxdGroup,
        key: *const c_char,
        found: *mut c_int,
        value: *mut i64,
    ) -> *mut c_char;
    pub fn pxd_store_first(
        g: *mut PxdGroup,
        key: *const c_char,
        desired: i64,
        value: *mut i64,
    ) -> *mut c_char;
    pub fn pxd_reducer_new(
        g: *mut PxdGroup,
        ps: *const *mut C_tensor,
        n: usize,
        bucket_cap: i64,
        first_bucket_cap: i64,
        out: *mut *mut PxdReducer,
    ) -> *mut c_char;
    pub fn pxd_reducer_pre_forward(r: *mut PxdReducer) -> *mut c_char;
    pub fn pxd_drop_grads(ts: *const *mut C_tensor, n: usize) -> *mut c_char;
    pub fn pxd_reducer_pre_backward(r: *mut PxdReducer) -> *mut c_char;
    pub fn pxd_reducer_free(r: *mut PxdReducer);
    #[allow(clippy::too_many_arguments)]
    pub fn pxd_sync_batch_norm(
        g: *mut PxdGroup,
        x: *mut C_tensor,
        weight: *mut C_tensor,
        bias: *mut C_tensor,
        running_mean: *mut C_tensor,
        running_var: *mut C_tensor,
        momentum: f64,
        eps: f64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}
