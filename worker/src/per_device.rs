//! A count a worker takes per device (`--fuse`, `--slots`): `auto`, chosen
//! from the device, or a fixed number from 1 to a bound.

/// `auto` or a fixed count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerDevice {
    /// Chosen from the device ([`PerDevice::resolve`]).
    Auto,
    /// This many, at least 1.
    Fixed(u32),
}

impl PerDevice {
    /// `auto` (any case) or a number from 1 to `max`; the error names
    /// `what` is counted.
    pub fn parse(s: &str, max: u32, what: &str) -> Result<PerDevice, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(PerDevice::Auto);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(PerDevice::Fixed(n)),
            _ => Err(format!("{s:?}: expected `auto` or a number of {what} from 1 to {max}")),
        }
    }

    /// The count on `device` (`cpu`, `cuda`, `cuda:N`): `on_cuda` or
    /// `on_cpu` for `auto`.
    pub fn resolve(self, device: &str, on_cuda: u32, on_cpu: u32) -> u32 {
        match self {
            PerDevice::Fixed(n) => n,
            PerDevice::Auto if device.trim().to_ascii_lowercase().starts_with("cuda") => on_cuda,
            PerDevice::Auto => on_cpu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auto_and_bounded_counts() {
        assert_eq!(PerDevice::parse("auto", 8, "x"), Ok(PerDevice::Auto));
        assert_eq!(PerDevice::parse(" AUTO ", 8, "x"), Ok(PerDevice::Auto));
        assert_eq!(PerDevice::parse("8", 8, "x"), Ok(PerDevice::Fixed(8)));
        for bad in ["0", "9", "-1", "x", "", "4.5"] {
            let e = PerDevice::parse(bad, 8, "slots").unwrap_err();
            assert!(e.contains("auto") && e.contains("slots from 1 to 8"), "{bad}: {e}");
        }
        assert_eq!(PerDevice::Auto.resolve("cpu", 4, 1), 1);
        assert_eq!(PerDevice::Auto.resolve("cuda:1", 4, 1), 4);
        assert_eq!(PerDevice::Auto.resolve("CUDA", 4, 1), 4);
        assert_eq!(PerDevice::Fixed(3).resolve("cuda:0", 4, 1), 3);
    }
}
