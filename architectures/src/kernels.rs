//! Safe wrappers of this crate's C++ kernels (LibTorch autograd functions with hand-derived
//! backward passes; each `.cpp` file's header says why it exists and gives the equations):
//! - `fused_rnn.cpp`: the CPU GRU recurrence;
//! - `onednn_linear.cpp`: float32 `x·Wᵀ` and batched `a·b` through oneDNN's GEMM on the CPU;
//! - `dnc_links.cpp`: the DNC's temporal links (update and reads) in one pass each way on the CPU;
//! - `batch_shards.cpp`: a core run as batch shards, one per intra-op thread;
//! - `selective_scan.cpp`: Mamba's selective scan in one pass each way on the CPU;
//! - `gla_scan.cpp`: gated linear attention's recurrence in one pass each way on the CPU.

use crate::Core;
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use tch::Tensor;

type CoreForward = extern "C" fn(call: *const c_void, x: *const c_void, train: i32) -> *mut c_void;

extern "C" {
    fn membench_kernel_error() -> *const c_char;
    fn membench_gru_recurrence(
        gi: *const c_void,
        h0: *const c_void,
        w_hh: *const c_void,
        b_hh: *const c_void,
    ) -> *mut c_void;
    fn membench_onednn_matmul_t(x: *const c_void, w: *const c_void) -> *mut c_void;
    fn membench_onednn_bmm(a: *const c_void, b: *const c_void) -> *mut c_void;
    fn membench_dnc_link_step(
        link: *const c_void,
        precedence: *const c_void,
        write_w: *const c_void,
        read_w: *const c_void,
        out: *mut *mut c_void,
    ) -> i32;
    fn membench_selective_scan(
        dt: *const c_void,
        x: *const c_void,
        a: *const c_void,
        bm: *const c_void,
        cm: *const c_void,
        floor: f64,
    ) -> *mut c_void;
    fn membench_gla_scan(
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        log_alpha: *const c_void,
    ) -> *mut c_void;
    fn membench_batch_shards(
        x: *const c_void,
        params: *const *const c_void,
        n_params: usize,
        shards: i64,
        forward: CoreForward,
        core: *const c_void,
        train: i32,
    ) -> *mut c_void;
}

fn raw(t: &Tensor) -> *const c_void {
    t.as_ptr() as *const c_void
}

/// The message of the kernel call that just failed on this thread (its first line: a c10 error
/// continues with a C++ backtrace).
fn last_error() -> String {
    // SAFETY: the shim keeps the message in a thread-local string until its next failure.
    let msg = unsafe { CStr::from_ptr(membench_kernel_error()) };
    let msg = msg.to_string_lossy();
    msg.lines().next().unwrap_or_default().trim().to_string()
}

/// Panics with the message of the kernel call that just failed.
fn failed() -> ! {
    panic!("membench kernel: {}", last_error());
}

/// Takes ownership of a tensor a kernel allocated, or the kernel's error message for a null one.
fn checked(ptr: *mut c_void) -> Result<Tensor, String> {
    if ptr.is_null() {
        return Err(last_error());
    }
    // SAFETY: the shim returns `new at::Tensor(...)`, which is what tch's C_tensor points to and
    // what tch's Drop frees.
    Ok(unsafe { Tensor::from_ptr(ptr as *mut torch_sys::C_tensor) })
}

/// As [`checked`], with a failure turned into a panic with the C++ message, as tch's own ops do.
fn owned(ptr: *mut c_void) -> Tensor {
    checked(ptr).unwrap_or_else(|msg| panic!("membench kernel: {msg}"))
}

/// GRU over all steps. gi: [B, T, 3H] = x·W_ihᵀ + b_ih, h0: [B, H], w_hh: [3H, H], b_hh: [3H]
/// → h_1 … h_T as [B, T, H]. CPU, float or double.
pub fn gru(gi: &Tensor, h0: &Tensor, w_hh: &Tensor, b_hh: &Tensor) -> Tensor {
    // SAFETY: the four pointers are live tensors borrowed for the duration of the call.
    owned(unsafe { membench_gru_recurrence(raw(gi), raw(h0), raw(w_hh), raw(b_hh)) })
}

/// x·wᵀ through oneDNN. x: [M, K], w: [N, K] → [M, N], a fresh tensor. CPU, float32.
/// Only for a process whose GEMM path is oneDNN (`dense::gemm_path`): elsewhere it may fail.
pub fn onednn_matmul_t(x: &Tensor, w: &Tensor) -> Tensor {
    // SAFETY: as in `gru`.
    owned(unsafe { membench_onednn_matmul_t(raw(x), raw(w)) })
}

/// a·b through oneDNN. a: [B, M, K], b: [B, K, N] → [B, M, N], a fresh tensor. CPU, float32.
/// Only for a process whose GEMM path is oneDNN, as [`onednn_matmul_t`].
pub fn onednn_bmm(a: &Tensor, b: &Tensor) -> Tensor {
    // SAFETY: as in `gru`.
    owned(unsafe { membench_onednn_bmm(raw(a), raw(b)) })
}

/// Both oneDNN products on small float32 operands, with their errors returned instead of
/// raised: what `dense` tries once per process before it routes any product to oneDNN.
/// ATen's `mkldnn_matmul` refuses float32 on CPUs without AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT.
pub fn try_onednn(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
) -> Result<(Tensor, Tensor), String> {
    // SAFETY: as in `gru`.
    let xw = checked(unsafe { membench_onednn_matmul_t(raw(x), raw(w)) })?;
    // SAFETY: as in `gru`.
    let ab = checked(unsafe { membench_onednn_bmm(raw(a), raw(b)) })?;
    Ok((xw, ab))
}

/// The DNC's link update and the read weightings through it (see `dnc_links.cpp`).
/// link: [B, N, N], precedence and write_w: [B, N], read_w: [B, R, N]
/// → (link' [B, N, N], forward L'·v [B, R, N], backward L'ᵀ·v [B, R, N]). CPU, float or double.
pub fn dnc_link_step(
    link: &Tensor,
    precedence: &Tensor,
    write_w: &Tensor,
    read_w: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let mut out = [std::ptr::null_mut(); 3];
    // SAFETY: as in `gru`; on success the shim has written three owned tensors into `out`.
    let status = unsafe {
        membench_dnc_link_step(
            raw(link),
            raw(precedence),
            raw(write_w),
            raw(read_w),
            out.as_mut_ptr(),
        )
    };
    if status != 0 {
        failed();
    }
    let [l, f, b] = out.map(owned);
    (l, f, b)
}

/// Mamba's selective scan (see `selective_scan.cpp`): dt (Δ after the softplus) and x [B, T, E],
/// a (A, ≤ 0) [E, N], bm and cm (B and C) [B, T, N], with the per-step log-decay Δ·A floored at
/// −`floor` → y [B, T, E] (y_t = h_t·C_t, without the D skip). CPU, float or double.
pub fn selective_scan(
    dt: &Tensor,
    x: &Tensor,
    a: &Tensor,
    bm: &Tensor,
    cm: &Tensor,
    floor: f64,
) -> Tensor {
    // SAFETY: as in `gru`.
    owned(unsafe { membench_selective_scan(raw(dt), raw(x), raw(a), raw(bm), raw(cm), floor) })
}

/// Gated linear attention's recurrence (see `gla_scan.cpp`): q (scaled), k and log α [B, H, T,
/// K], v [B, H, T, V] → o [B, H, T, V] with S_t = diag(α_t)·S_{t−1} + k_t v_tᵀ and o_t = S_tᵀ q_t.
/// CPU, float or double.
pub fn gla_scan(q: &Tensor, k: &Tensor, v: &Tensor, log_alpha: &Tensor) -> Tensor {
    // SAFETY: as in `gru`.
    owned(unsafe { membench_gla_scan(raw(q), raw(k), raw(v), raw(log_alpha)) })
}

/// What `batch_shards` hands its C++ side as the callback's context: the core, and the message of
/// a forward that panicked on a shard (on an intra-op thread, where the panic must not unwind into
/// C++), which `batch_shards` re-raises on the calling thread. One per call, so that concurrent
/// calls never see each other's message.
struct ShardCall<'a> {
    core: &'a dyn Core,
    panic: Mutex<Option<String>>,
}

/// `CoreForward` for `batch_shards`: `call` points at its `ShardCall`.
extern "C" fn core_forward(call: *const c_void, x: *const c_void, train: i32) -> *mut c_void {
    // SAFETY: `batch_shards` passes a pointer to its `ShardCall`, live for the whole call.
    let call = unsafe { &*(call as *const ShardCall) };
    let run = || {
        // SAFETY: a borrowed live tensor, which `clone_from_ptr` shallow-copies (the C++ side
        // keeps its own).
        let x = unsafe { Tensor::clone_from_ptr(x as *mut torch_sys::C_tensor) };
        let mut y = call.core.forward_t(&x, train != 0);
        let ptr = y.as_mut_ptr();
        // The C++ side takes ownership of the at::Tensor that `ptr` points to.
        std::mem::forget(y);
        ptr as *mut c_void
    };
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        *call.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
        std::ptr::null_mut()
    })
}

/// `core` on xs [B, ...] as `shards` batch shards run side by side on the intra-op threads, with
/// one autograd function around them (see `batch_shards.cpp`). `params`: the core's trainable
/// parameters. The core's `forward_t` runs concurrently on several threads: it may only read its
/// own state (parameters; caches behind a lock).
pub fn batch_shards(
    core: &dyn Core,
    params: &[Tensor],
    xs: &Tensor,
    train: bool,
    shards: i64,
) -> Tensor {
    let ptrs: Vec<*const c_void> = params.iter().map(raw).collect();
    let call = ShardCall {
        core,
        panic: Mutex::new(None),
    };
    // SAFETY: the tensors are borrowed for the call; `call` outlives it and is only read (its
    // message slot behind a lock).
    let out = unsafe {
        membench_batch_shards(
            raw(xs),
            ptrs.as_ptr(),
            ptrs.len(),
            shards,
            core_forward,
            &call as *const ShardCall as *const c_void,
            i32::from(train),
        )
    };
    if out.is_null() {
        if let Some(msg) = call.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            panic!("{msg}");
        }
    }
    owned(out)
}
