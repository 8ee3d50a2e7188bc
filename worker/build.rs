//! Link settings for libtorch, only when the `torch` feature is on.
//!
//! Why this exists: `torch-sys` tells cargo to link `torch_cpu`/`torch_cuda`,
//! but rustc links with `-Wl,--as-needed` by default, so on a CUDA build of
//! PyTorch `libtorch_cuda.so` is dropped from the binary's `DT_NEEDED` (no
//! symbol of it is referenced directly) and `Cuda::is_available()` is then
//! false on a GPU node. And nothing records where libtorch lives, so the
//! binary would only start with `LD_LIBRARY_PATH` set. We therefore pass
//! `-Wl,--no-as-needed` followed by the torch libraries (what tch's own
//! examples recommend) and an rpath to the libtorch folder.
//!
//! The libtorch folder is found the way `torch-sys` finds it, so both agree:
//! with `LIBTORCH_USE_PYTORCH` (or `SWEEP_PYTHON`) set, ask Python
//! (`SWEEP_PYTHON`, else `python` inside an active virtualenv, else `python3`
//! on `PATH`) where the installed `torch` package keeps its `lib`; otherwise
//! `$LIBTORCH_LIB/lib` or `$LIBTORCH/lib`; else Python as a last resort.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in
        ["CARGO_FEATURE_TORCH", "LIBTORCH", "LIBTORCH_LIB", "LIBTORCH_USE_PYTORCH", "SWEEP_PYTHON", "VIRTUAL_ENV"]
    {
        println!("cargo:rerun-if-env-changed={var}");
    }
    code_version();
    if env::var_os("CARGO_FEATURE_TORCH").is_none() {
        println!("cargo:rustc-env=SWEEP_LIBTORCH_VERSION=");
        return;
    }
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        // `--no-as-needed` and `-rpath` as written are GNU ld / lld flags;
        // other platforms keep torch-sys's own linking.
        return;
    }
    let lib_dir = match find_lib_dir() {
        Ok(dir) => dir,
        Err(why) => {
            println!(
                "cargo:warning=sweep-worker: cannot locate libtorch ({why}); \
                 the binary will need LD_LIBRARY_PATH to start"
            );
            return;
        }
    };
    println!("cargo:rustc-env=SWEEP_LIBTORCH_VERSION={}", libtorch_version(&lib_dir));
    let has = |name: &str| lib_dir.join(format!("lib{name}.so")).exists();

    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    // Order matters only for static archives; these are shared objects, and
    // `--no-as-needed` makes each one a DT_NEEDED entry of the output.
    for name in ["torch", "torch_cpu", "torch_cuda", "torch_hip", "c10", "c10_cuda"] {
        if has(name) {
            println!("cargo:rustc-link-arg=-l{name}");
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
}

/// `SWEEP_CODE_VERSION` for provenance: the package version and, in a git
/// checkout, `git describe --always --dirty` (else only the version).
fn code_version() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let git = manifest.join("../.git");
    for f in ["HEAD", "index"] {
        if git.join(f).exists() {
            println!("cargo:rerun-if-changed={}", git.join(f).display());
        }
    }
    let version = env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let describe = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=10"])
        .current_dir(&manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric() || "-._+".contains(c)));
    match describe {
        Some(d) => println!("cargo:rustc-env=SWEEP_CODE_VERSION={version} ({d})"),
        None => println!("cargo:rustc-env=SWEEP_CODE_VERSION={version}"),
    }
}

/// The version of the libtorch in `lib_dir`: PyTorch's `version.py` next
/// to it (a wheel), or libtorch's `build-version` file; empty if neither.
fn libtorch_version(lib_dir: &Path) -> String {
    let root = lib_dir.parent().unwrap_or(lib_dir);
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("__version__ = ")) {
            return v.trim().trim_matches(['\'', '"']).to_owned();
        }
    }
    std::fs::read_to_string(root.join("build-version")).map(|v| v.trim().to_owned()).unwrap_or_default()
}

/// The folder holding `libtorch_cpu.so`, chosen in the order torch-sys uses.
fn find_lib_dir() -> Result<PathBuf, String> {
    let use_python = env::var_os("LIBTORCH_USE_PYTORCH").is_some() || env::var_os("SWEEP_PYTHON").is_some();
    if !use_python {
        if let Some(lib) = env::var_os("LIBTORCH_LIB") {
            return check(PathBuf::from(lib).join("lib"));
        }
        if let Some(root) = env::var_os("LIBTORCH") {
            return check(PathBuf::from(root).join("lib"));
        }
    }
    let python = match env::var_os("SWEEP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None if env::var_os("VIRTUAL_ENV").is_some() => PathBuf::from("python"),
        None => PathBuf::from("python3"),
    };
    let out = Command::new(&python)
        .arg("-c")
        .arg("import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import torch: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    check(PathBuf::from(line))
}

fn check(dir: PathBuf) -> Result<PathBuf, String> {
    if Path::new(&dir).join("libtorch_cpu.so").exists() {
        Ok(dir)
    } else {
        Err(format!("no libtorch_cpu.so in {}", dir.display()))
    }
}
