//! How much memory a training device has free: what the slot admission
//! ([`crate::admission`]) plans within. On a CUDA device the answer comes
//! from the driver's NVML (the library `nvidia-smi` reads), so it counts
//! every process on the device, MPS clients included; the CPU has no probe
//! (slots there are limited by count alone). Tests put a fake probe in.

use std::fmt::Debug;
use std::sync::Arc;

/// Reads a device's free memory.
pub trait MemoryProbe: Send + Sync + Debug {
    /// Free bytes on the device now.
    fn free_bytes(&self) -> Result<u64, String>;
    /// Used bytes on the device now, by every process (for metrics; a
    /// probe may not know).
    fn used_bytes(&self) -> Result<u64, String> {
        Err("unknown".into())
    }
}

/// The memory side of a device: its probe, and how much of what is free
/// when the worker is ready it leaves to others (the CUDA context, libraries,
/// other processes' growth).
#[derive(Debug, Clone)]
pub struct DeviceMemory {
    pub probe: Arc<dyn MemoryProbe>,
    pub keep_free: KeepFree,
}

/// What the admission leaves unplanned of the memory free when it plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepFree {
    /// 1 GiB or 5% of what is free, whichever is more.
    Default,
    /// Exactly this many bytes (tests).
    Bytes(u64),
}

impl KeepFree {
    pub fn of(self, free: u64) -> u64 {
        match self {
            KeepFree::Default => (1u64 << 30).max(free / 20),
            KeepFree::Bytes(b) => b,
        }
    }
}

impl DeviceMemory {
    /// The NVML probe of `device` (`cuda`, `cuda:N`); `None` for the CPU,
    /// and, with a warning, when NVML cannot be loaded or does not know the
    /// device (then slots are limited by count alone).
    pub fn for_device(device: &str) -> Option<DeviceMemory> {
        let d = device.trim().to_ascii_lowercase();
        let index = match d.strip_prefix("cuda") {
            None => return None,
            Some("") => 0,
            Some(rest) => rest.strip_prefix(':')?.parse::<u32>().ok()?,
        };
        match NvmlProbe::new(index) {
            Ok(p) => Some(DeviceMemory { probe: Arc::new(p), keep_free: KeepFree::Default }),
            Err(e) => {
                tracing::warn!(
                    device,
                    "cannot read the device's free memory ({e}); slots are limited by --slots alone"
                );
                None
            }
        }
    }
}

/// Free memory of one GPU through NVML.
///
/// `cuda:N` is CUDA's N-th visible device. With `CUDA_VISIBLE_DEVICES` set
/// (as Slurm and Kubernetes do), the N-th entry of it names the GPU, by
/// NVML index or by UUID (`GPU-...`); otherwise NVML's index N is taken,
/// which is CUDA's order when `CUDA_DEVICE_ORDER=PCI_BUS_ID` (set it on
/// nodes with mixed GPUs). MIG slices are not probed (use `--slots`).
pub struct NvmlProbe {
    nvml: nvml_wrapper::Nvml,
    which: Which,
}

#[derive(Debug, Clone)]
enum Which {
    Index(u32),
    Uuid(String),
}

impl Debug for NvmlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlProbe").field("device", &self.which).finish()
    }
}

impl NvmlProbe {
    pub fn new(cuda_index: u32) -> Result<NvmlProbe, String> {
        let which = match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(list) if !list.trim().is_empty() => {
                let entry = list
                    .split(',')
                    .nth(cuda_index as usize)
                    .map(str::trim)
                    .ok_or_else(|| format!("CUDA_VISIBLE_DEVICES={list:?} has no entry {cuda_index}"))?;
                match entry.parse::<u32>() {
                    Ok(i) => Which::Index(i),
                    Err(_) => Which::Uuid(entry.to_owned()),
                }
            }
            _ => Which::Index(cuda_index),
        };
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
        let probe = NvmlProbe { nvml, which };
        probe.free_bytes()?;
        Ok(probe)
    }
}

impl NvmlProbe {
    fn device(&self) -> Result<nvml_wrapper::Device<'_>, String> {
        match &self.which {
            Which::Index(i) => self.nvml.device_by_index(*i),
            Which::Uuid(u) => self.nvml.device_by_uuid(u.as_str()),
        }
        .map_err(|e| format!("NVML device {:?}: {e}", self.which))
    }

    /// The device's model name, e.g. `NVIDIA H200`.
    pub fn name(&self) -> Result<String, String> {
        self.device()?.name().map_err(|e| format!("NVML name of {:?}: {e}", self.which))
    }
}

impl MemoryProbe for NvmlProbe {
    fn free_bytes(&self) -> Result<u64, String> {
        self.device()?.memory_info().map(|m| m.free).map_err(|e| format!("NVML memory of {:?}: {e}", self.which))
    }

    fn used_bytes(&self) -> Result<u64, String> {
        self.device()?.memory_info().map(|m| m.used).map_err(|e| format!("NVML memory of {:?}: {e}", self.which))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_probe_and_keep_free_has_a_floor() {
        assert!(DeviceMemory::for_device("cpu").is_none());
        assert!(DeviceMemory::for_device("cuda:x").is_none());
        assert_eq!(KeepFree::Default.of(4 << 30), 1 << 30);
        assert_eq!(KeepFree::Default.of(100 << 30), 5 << 30);
        assert_eq!(KeepFree::Bytes(7).of(100), 7);
    }
}
