//! Device selection and device memory statistics.
//!
//! `device: auto | cpu | cuda | cuda:N` (YAML or `--device`): `auto` is CUDA device 0 when LibTorch
//! can use CUDA here, else the CPU. Peak device memory comes from LibTorch's CUDA caching allocator
//! (a small C++ shim, `cuda_stats.cpp`), so it is the same number as
//! `torch.cuda.max_memory_allocated()` for the same model and step in PyTorch.

use anyhow::{bail, Result};
use tch::Device;

/// Parses a device spec into a usable device; fails when CUDA is named but not usable here.
pub fn resolve(spec: &str) -> Result<Device> {
    let cuda_ok = tch::Cuda::is_available();
    Ok(match spec {
        "auto" => {
            if cuda_ok {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }
        }
        "cpu" => Device::Cpu,
        "cuda" | "gpu" => {
            if !cuda_ok {
                bail!("device `{spec}`: CUDA is not usable here (membench --version says why)");
            }
            Device::Cuda(0)
        }
        s => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if cuda_ok && (n as i64) < tch::Cuda::device_count() => Device::Cuda(n),
            Some(_) if !cuda_ok => {
                bail!("device `{spec}`: CUDA is not usable here (membench --version says why)")
            }
            Some(n) => bail!(
                "device `{spec}`: no CUDA device {n} here ({} usable)",
                tch::Cuda::device_count()
            ),
            None => bail!("device `{spec}`: expected auto, cpu, cuda or cuda:N"),
        },
    })
}

/// The name written to runs.csv: `cpu` or `cuda:N`.
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

/// Waits for queued device work, so a clock read after it measures finished work.
pub fn synchronize(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

extern "C" {
    fn membench_cuda_memory(
        device: i32,
        peak_allocated: *mut i64,
        allocated: *mut i64,
        peak_reserved: *mut i64,
    ) -> i32;
    fn membench_cuda_reset_peak(device: i32) -> i32;
}

/// Peak bytes allocated on `device` since the last reset; None on the CPU.
pub fn peak_allocated_bytes(device: Device) -> Option<u64> {
    let Device::Cuda(n) = device else { return None };
    let (mut peak, mut cur, mut reserved) = (0i64, 0i64, 0i64);
    // SAFETY: plain out-pointers to locals; the shim catches every C++ exception.
    let rc = unsafe { membench_cuda_memory(n as i32, &mut peak, &mut cur, &mut reserved) };
    (rc == 0).then_some(peak as u64)
}

/// Starts a new peak window on `device` (no-op on the CPU).
pub fn reset_peak(device: Device) {
    if let Device::Cuda(n) = device {
        // SAFETY: no pointers; the shim catches every C++ exception.
        let _ = unsafe { membench_cuda_reset_peak(n as i32) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::config::canonical;

    #[test]
    fn specs_parse_and_cpu_has_no_device_memory() {
        assert_eq!(resolve("cpu").unwrap(), Device::Cpu);
        assert_eq!(canonical("cuda").unwrap(), "cuda:0");
        assert_eq!(canonical("cuda:3").unwrap(), "cuda:3");
        assert!(canonical("cuda:-1").is_err() && canonical("gpu0").is_err());
        if !tch::Cuda::is_available() {
            assert_eq!(canonical("auto").unwrap(), "cpu");
        }
        assert!(resolve("tpu")
            .unwrap_err()
            .to_string()
            .contains("expected auto, cpu, cuda or cuda:N"));
        assert!(resolve("cuda:x").is_err());
        if !tch::Cuda::is_available() {
            assert_eq!(resolve("auto").unwrap(), Device::Cpu);
            assert!(resolve("cuda").is_err());
            assert!(resolve("cuda:0").is_err());
        }
        assert_eq!(peak_allocated_bytes(Device::Cpu), None);
        assert_eq!(name(Device::Cuda(1)), "cuda:1");
        if !tch::Cuda::is_available() {
            // The shim is linked and answers (with an error) rather than crashing.
            assert_eq!(peak_allocated_bytes(Device::Cuda(0)), None);
            reset_peak(Device::Cuda(0));
        }
    }
}
