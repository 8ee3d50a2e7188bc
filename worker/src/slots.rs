//! How many trainings a worker runs at once on its device (`--slots
//! auto|N`): each slot leases and trains on its own thread with its own
//! trainer, within the device's memory ([`crate::admission`]).

use std::str::FromStr;

use crate::per_device::PerDevice;

/// The largest `--slots`.
pub const MAX_SLOTS: u32 = 32;

/// `--slots auto` on a CUDA device. Not yet measured on a GPU (see
/// BENCHMARKS.md, "GPU"): at batch 4 one training leaves most of a GPU
/// idle between its small kernels, so a few trainings side by side fill
/// those gaps; memory admission keeps larger configurations from crowding.
pub const AUTO_CUDA: u32 = 4;

/// `--slots auto` on the CPU: 1, since one training already uses every
/// core (libtorch's intra-op threads); several only share them.
pub const AUTO_CPU: u32 = 1;

/// A `--slots` value: `auto` or 1 to [`MAX_SLOTS`] trainings at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots(pub PerDevice);

impl FromStr for Slots {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        PerDevice::parse(s, MAX_SLOTS, "slots").map(Slots)
    }
}

impl Slots {
    /// The number of slots on `device` (`cpu`, `cuda`, `cuda:N`).
    pub fn resolve(self, device: &str) -> u32 {
        self.0.resolve(device, AUTO_CUDA, AUTO_CPU)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_device_and_32_is_the_bound() {
        assert_eq!("auto".parse::<Slots>().unwrap().resolve("cpu"), AUTO_CPU);
        assert_eq!("auto".parse::<Slots>().unwrap().resolve("cuda:0"), AUTO_CUDA);
        assert_eq!("2".parse::<Slots>().unwrap().resolve("cuda:0"), 2);
        assert!("33".parse::<Slots>().unwrap_err().contains("slots from 1 to 32"));
    }
}
