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
        format!("yes ({} device(s), cudnn {})", tch::Cuda::device_count(), tch::Cuda::cudnn_is_available())
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
    let cache = std::env::var("MEMBENCH_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/membench")
    });
    std::fs::read_to_string(cache.join("python")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "python3".into())
}
