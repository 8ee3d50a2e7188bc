//! How many seeds of one grid cell a worker trains as one fused model
//! (`--fuse auto|K`): the most trials it asks for in one lease.

use std::str::FromStr;

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

/// A `--fuse` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fuse {
    /// Chosen from the device ([`Fuse::resolve`]).
    Auto,
    /// At most this many trials per lease, 1 to [`MAX_FUSE`].
    Fixed(u32),
}

impl FromStr for Fuse {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Fuse::Auto);
        }
        match s.parse::<u32>() {
            Ok(k) if (1..=MAX_FUSE).contains(&k) => Ok(Fuse::Fixed(k)),
            _ => Err(format!("{s:?}: expected `auto` or a number of trials from 1 to {MAX_FUSE}")),
        }
    }
}

impl Fuse {
    /// The number of trials per lease on `device` (`cpu`, `cuda`, `cuda:N`).
    pub fn resolve(self, device: &str) -> u32 {
        match self {
            Fuse::Fixed(k) => k,
            Fuse::Auto if device.trim().to_ascii_lowercase().starts_with("cuda") => AUTO_CUDA,
            Fuse::Auto => AUTO_CPU,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auto_and_bounded_counts() {
        assert_eq!("auto".parse::<Fuse>(), Ok(Fuse::Auto));
        assert_eq!(" AUTO ".parse::<Fuse>(), Ok(Fuse::Auto));
        assert_eq!("8".parse::<Fuse>(), Ok(Fuse::Fixed(8)));
        for bad in ["0", "65", "-1", "x", "", "4.5"] {
            let e = bad.parse::<Fuse>().unwrap_err();
            assert!(e.contains("auto") && e.contains("64"), "{bad}: {e}");
        }
        assert_eq!(Fuse::Auto.resolve("cpu"), AUTO_CPU);
        assert_eq!(Fuse::Auto.resolve("cuda:1"), AUTO_CUDA);
        assert_eq!(Fuse::Fixed(3).resolve("cpu"), 3);
    }
}
