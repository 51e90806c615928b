//! Facts about this process and machine: peak memory, host name, versions.

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

/// `membench --version`: our version, tch, torch, and whether CUDA is usable here.
pub fn version_text() -> String {
    let cuda = if tch::Cuda::is_available() {
        format!(
            "yes ({} device(s), cudnn {})",
            tch::Cuda::device_count(),
            tch::Cuda::cudnn_is_available()
        )
    } else {
        "no".to_string()
    };
    format!("membench {MEMBENCH_VERSION} ({GIT_COMMIT})\ntch {TCH_VERSION}\ntorch {TORCH_VERSION}\ncuda {cuda}")
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
