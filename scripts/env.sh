# shellcheck shell=bash
# Sourced by the project's scripts: sets up the project-local Python
# virtualenv with PyTorch (whose libtorch the worker links) and the build
# environment. Idempotent: skips the install when the venv already has the
# right torch.
#
# Knobs: SWEEP_VENV (default: <repo>/.venv), SWEEP_TORCH_VERSION (must match
# tch =0.24.0: 2.11.0).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SWEEP_VENV:-$ROOT/.venv}"
TORCH_VERSION="${SWEEP_TORCH_VERSION:-2.11.0}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Where the CIFAR-10 binary folder is expected: $SWEEP_CIFAR_DIR, or
# ../shared/datasets/cifar-10-batches-bin next to the repo.
cifar_dir() { printf '%s\n' "${SWEEP_CIFAR_DIR:-$ROOT/../shared/datasets/cifar-10-batches-bin}"; }

ensure_torch() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    local have
    have="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
    if [ "$have" != "$TORCH_VERSION" ]; then
        say "installing torch==$TORCH_VERSION into $VENV (about 2.7 GB of wheels; once)"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
    fi
    export PATH="$VENV/bin:$PATH"
    export VIRTUAL_ENV="$VENV"
    export LIBTORCH_USE_PYTORCH=1
    export SWEEP_PYTHON="$VENV/bin/python"
    # PyTorch's own bundled CUDA libraries are found through the rpath the
    # worker's build.rs records; nothing else needs LD_LIBRARY_PATH.
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
        exit 1
    fi
}
