//! How many seeds of one grid cell a worker trains as one fused model
//! (`--fuse auto|K`): the most trials it asks for in one lease.

use std::str::FromStr;

use crate::per_device::PerDevice;

/// The largest `--fuse` (the coordinator's own limit per lease is higher).
pub const MAX_FUSE: u32 = 64;

/// `--fuse auto` on a CUDA device. Not yet measured on a GPU (see
/// BENCHMARKS.md, "GPU"): HFTA's published gains for models of this size
/// level off between 8 and 16 fused copies, and 8 copies of BMEnet-32 at
/// batch 64 need well under 2 GiB.
pub const AUTO_CUDA: u32 = 8;

/// `--fuse auto` on the CPU: 1, since on this project's CPUs a fused group
/// trains no faster per image than separate trials (BENCHMARKS.md, "Fused
/// seeds on CPU"): grouped convolutions do not use the cores better than
/// plain ones.
pub const AUTO_CPU: u32 = 1;

/// A `--fuse` value: `auto` or 1 to [`MAX_FUSE`] trials per lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fuse(pub PerDevice);

impl FromStr for Fuse {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        PerDevice::parse(s, MAX_FUSE, "trials").map(Fuse)
    }
}

impl Fuse {
    /// The number of trials per lease on `device` (`cpu`, `cuda`, `cuda:N`).
    pub fn resolve(self, device: &str) -> u32 {
        self.0.resolve(device, AUTO_CUDA, AUTO_CPU)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_device_and_64_is_the_bound() {
        assert_eq!("auto".parse::<Fuse>().unwrap().resolve("cpu"), AUTO_CPU);
        assert_eq!("auto".parse::<Fuse>().unwrap().resolve("cuda:1"), AUTO_CUDA);
        assert_eq!("64".parse::<Fuse>().unwrap().resolve("cpu"), 64);
        assert!("65".parse::<Fuse>().unwrap_err().contains("trials from 1 to 64"));
    }
}
