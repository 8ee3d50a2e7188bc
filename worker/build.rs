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
    if env::var_os("CARGO_FEATURE_TORCH").is_none() {
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
