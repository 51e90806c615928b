//! Facts about this process and machine: peak memory, host name, versions, the CPU and the GEMM
//! path chosen on it.

use membench_architectures::dense;

/// Peak resident set size of this process (VmHWM), in bytes; Linux only.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub const MEMBENCH_VERSION: &str = env!("CARGO_PKG_VERSION");
pub const TORCH_VERSION: &str = env!("MEMBENCH_TORCH_VERSION");
pub const GIT_COMMIT: &str = env!("MEMBENCH_GIT_COMMIT");
/// The tch crate version this binary was built with (pinned in the workspace).
pub const TCH_VERSION: &str = "0.24.0";

/// The widest x86-64 vector ISA this CPU offers, as the libraries dispatch on it: `avx512`
/// (F, BW, VL, DQ), `avx2` (with FMA), `avx`, `sse4.2`, `x86-64` (the baseline); on another
/// architecture, its name.
pub fn cpu_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
            "avx512"
        } else if has!("avx2") && has!("fma") {
            "avx2"
        } else if has!("avx") {
            "avx"
        } else if has!("sse4.2") {
            "sse4.2"
        } else {
            "x86-64"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

/// The CPU's model name (/proc/cpuinfo), stated beside every timing; `unknown` where not given.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// This CPU as `--version` and `membench bench` state it: `avx512 (<model>, 2 logical cores)`.
pub fn cpu_text() -> String {
    format!(
        "{} ({}, {} logical cores)",
        cpu_isa(),
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

/// The GEMM path of this process's CPU runs (see `membench_architectures::dense`), checked:
/// an error for a bad `MEMBENCH_GEMM`, or `onednn` where this CPU cannot run it (bad input: the
/// commands report it with exit 2).
pub fn gemm_choice() -> anyhow::Result<&'static dense::GemmChoice> {
    dense::gemm_choice().map_err(anyhow::Error::msg)
}

/// The `gemm_path` of a run on `device`: the CPU path of this process, `libtorch` on a GPU (where
/// every product is libtorch's).
pub fn gemm_path_for(device: &str) -> &'static str {
    if device == "cpu" {
        dense::gemm_path().as_str()
    } else {
        dense::GemmPath::Libtorch.as_str()
    }
}

/// `membench --version`: our version, tch, torch, the CPU and the GEMM path chosen on it, and
/// whether CUDA is usable here.
pub fn version_text() -> anyhow::Result<String> {
    let cuda = if tch::Cuda::is_available() {
        format!(
            "yes ({} device(s), cudnn {})",
            tch::Cuda::device_count(),
            tch::Cuda::cudnn_is_available()
        )
    } else {
        "no".to_string()
    };
    let gemm = gemm_choice()?;
    Ok(format!(
        "membench {MEMBENCH_VERSION} ({GIT_COMMIT})\ntch {TCH_VERSION}\ntorch {TORCH_VERSION}\ncpu {}\ngemm {gemm}\ncuda {cuda}",
        cpu_text()
    ))
}

/// Now, as an RFC 3339 UTC timestamp to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The python that scripts/bootstrap.sh chose (it holds torch 2.11), or `python3`.
pub fn cached_python() -> String {
    let cache = std::env::var("MEMBENCH_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/membench")
        });
    std::fs::read_to_string(cache.join("python"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "python3".into())
}

/// CPU time consumed so far, in seconds: by the calling thread when libtorch runs on one thread
/// (its ops then run on the caller), by the whole process otherwise. On a shared machine this
/// clock, unlike wall time, does not count the time other processes held the cores.
pub fn cpu_seconds(threads: i32) -> f64 {
    let clock = if threads == 1 {
        libc::CLOCK_THREAD_CPUTIME_ID
    } else {
        libc::CLOCK_PROCESS_CPUTIME_ID
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Sets flush-to-zero and denormals-are-zero (MXCSR bits 15 and 6) on the calling thread: SSE and
/// AVX float arithmetic then treats subnormal inputs as zero and flushes subnormal results to zero
/// (`train.flush_denormals`). Threads created afterwards inherit the setting (Linux copies the FPU
/// state on thread creation), so it must run before the intra-op pool starts.
#[cfg(target_arch = "x86_64")]
pub fn flush_denormals() -> anyhow::Result<()> {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr/ldmxcsr read and write the 4-byte MXCSR through a valid local; only the
    // FTZ and DAZ bits change.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        csr |= (1 << 15) | (1 << 6);
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
pub fn flush_denormals() -> anyhow::Result<()> {
    anyhow::bail!("train.flush_denormals: supported on x86-64 only (this CPU has no MXCSR)")
}

#[cfg(test)]
mod tests {
    /// After `flush_denormals`, a subnormal operand counts as zero and a subnormal result is
    /// flushed; before, both are kept. In a thread of its own: MXCSR is per thread.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn flushing_denormals_zeroes_subnormal_inputs_and_results() {
        use std::hint::black_box;
        std::thread::spawn(|| {
            let tiny = black_box(1e-39f32); // subnormal
            assert!(black_box(tiny) * black_box(2.0f32) > 0.0);
            assert!(black_box(1e-20f32) * black_box(1e-19f32) > 0.0); // 1e-39: subnormal result
            super::flush_denormals().unwrap();
            assert_eq!(black_box(tiny) * black_box(2.0f32), 0.0);
            assert_eq!(black_box(1e-20f32) * black_box(1e-19f32), 0.0);
            assert_eq!(black_box(1e-30f32) * black_box(2.0f32), 2e-30); // normals unchanged
        })
        .join()
        .unwrap();
    }
}
