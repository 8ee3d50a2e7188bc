//! The coordinator's resident memory, read from `/proc/PID/status` (Linux).

use anyhow::{Context, Result};

/// `VmRSS` and `VmHWM` (the peak) of process `pid`, in MiB.
pub(crate) fn read(pid: u32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<f64> {
        let line = text.lines().find(|l| l.starts_with(name)).with_context(|| format!("{path}: no {name} line"))?;
        let kib: f64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("{path}: {line:?}"))?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_memory() {
        let (rss, peak) = super::read(std::process::id()).unwrap();
        assert!(rss > 0.0 && peak >= rss, "rss {rss} MiB, peak {peak} MiB");
    }
}
