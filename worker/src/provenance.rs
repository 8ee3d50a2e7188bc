//! What a worker's results are produced with, sent with each result
//! (`CompleteRequest.provenance`) and shown by `sweep report`: the worker's
//! code version (`git describe` at build time), the libtorch it was built
//! against, the device's model, and the dataset's SHA-256 (computed by the
//! trainer when it loads the data; see `torch::cifar::checksum`).

use std::sync::OnceLock;

use sweep_proto::v1 as pb;

/// The worker's version and `git describe` when it was built.
pub const CODE_VERSION: &str = env!("SWEEP_CODE_VERSION");

/// The libtorch the worker was built against (empty without the `torch`
/// feature, or when its version file was not found at build time).
pub const LIBTORCH_VERSION: &str = match option_env!("SWEEP_LIBTORCH_VERSION") {
    Some(v) => v,
    None => "",
};

/// The model of `device` (`cpu`, `cuda:N`): NVML's name for a GPU, the
/// first `model name` of /proc/cpuinfo for the CPU; empty when unknown.
/// Looked up once per process.
pub fn device_name(device: &str) -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let d = device.trim().to_ascii_lowercase();
        let gpu = d.strip_prefix("cuda").map(|rest| rest.strip_prefix(':').unwrap_or(rest).parse::<u32>().unwrap_or(0));
        match gpu {
            Some(index) => crate::memory::NvmlProbe::new(index).and_then(|p| p.name()).unwrap_or_else(|e| {
                tracing::warn!(device, "cannot read the GPU's name for provenance ({e})");
                String::new()
            }),
            None => cpu_model().unwrap_or_default(),
        }
    })
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
}

/// The provenance sent with a result of this worker on `device`.
pub fn of_result(device: &str, dataset_sha256: Option<&str>) -> pb::Provenance {
    pb::Provenance {
        code_version: CODE_VERSION.to_owned(),
        libtorch: LIBTORCH_VERSION.to_owned(),
        device_name: device_name(device).to_owned(),
        dataset_sha256: dataset_sha256.unwrap_or_default().to_owned(),
    }
}
