#!/usr/bin/env bash
# Static validation of the deployment files and every shell script (issue
# 12): there is no container daemon or Kubernetes cluster on the CI machine,
# so each file is checked against the schema of what would read it.
#
#   - shellcheck: every shell script and sbatch file in the repository;
#   - Kubernetes: `kubectl kustomize` renders each overlay (and the optional
#     manifests the kustomizations leave out), and every object validates
#     strictly (unknown fields are errors) against the Kubernetes OpenAPI
#     schemas of KUBE_VERSION (`kubernetes-validate` from PyPI, which ships
#     them);
#   - Compose: docker-compose.yml and the GPU override validate against the
#     Compose Specification's JSON schema (vendored in deploy/compose/schema);
#   - systemd: `systemd-analyze verify` of each unit (with the binaries the
#     units name taken from target/, since they are not installed here).
#
# Each validator is first shown a broken file and must refuse it, so a
# validator that accepts everything cannot pass this script.
# `scripts/test.sh` runs it; tools missing here are installed (apt-get for
# the linter, pip into the project's .venv for the Python validators).
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$ROOT"

KUBE_VERSION="${KUBE_VERSION:-1.32.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing $2 (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >"$work/apt.log" 2>&1 \
            || { apt-get update -q >>"$work/apt.log" 2>&1 \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >>"$work/apt.log" 2>&1; } \
            || { cat "$work/apt.log" >&2; echo "cannot install $2" >&2; exit 1; }
    else
        echo "$1 is missing: install the $2 package" >&2
        exit 1
    fi
}

# Must fail: a validator that accepts a broken file is no validator.
refuses() {
    local what="$1"
    shift
    if "$@" >"$work/refused.log" 2>&1; then
        echo "the $what check accepted a broken file; it validates nothing:" >&2
        cat "$work/refused.log" >&2
        exit 1
    fi
}

say "shellcheck: every shell script and sbatch file"
need shellcheck shellcheck
mapfile -t scripts < <(git ls-files '*.sh' '*.sbatch' .ci/run)
printf 'if true; then echo unclosed\n' >"$work/broken.sh"
refuses shellcheck shellcheck "$work/broken.sh"
shellcheck -x "${scripts[@]}"
echo "  ${#scripts[@]} files clean"

say "Kubernetes: kustomize renders and strict schema validation (Kubernetes $KUBE_VERSION)"
need kubectl kubectl
# Pinned, so a new release of a validator cannot change what CI accepts.
validators=(kubernetes-validate==1.37.0 jsonschema==4.26.0 pyyaml==6.0.4)
if ! "$VENV/bin/pip" show kubernetes-validate 2>/dev/null | grep -qx 'Version: 1.37.0' \
    || ! "$VENV/bin/python" -c 'import jsonschema, yaml' 2>/dev/null; then
    say "installing ${validators[*]} into $VENV (pip)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${validators[@]}"
fi
kube_validate() { "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$@"; }
sed 's/replicas: 1/replicas: "one"/; s/^spec:/spec:\n  replica: 1/' deploy/kubernetes/base/coordinator.yaml >"$work/broken-k8s.yaml"
refuses kubernetes-validate kube_validate "$work/broken-k8s.yaml"
for overlay in deploy/kubernetes/*/; do
    name="$(basename "$overlay")"
    kubectl kustomize "$overlay" >"$work/$name.yaml"
    kube_validate "$work/$name.yaml"
    echo "  $overlay: $(grep -c '^kind:' "$work/$name.yaml") objects valid"
done
# Manifests a kustomization lists only in a comment (optional workers).
for f in deploy/kubernetes/base/*.yaml; do
    base="$(basename "$f")"
    [ "$base" = kustomization.yaml ] && continue
    grep -qE "^  - $base\$" deploy/kubernetes/base/kustomization.yaml && continue
    kube_validate "$f"
    echo "  $f (not in the kustomization): valid"
done

say "Compose: the files against the Compose Specification schema"
cat >"$work/compose_check.py" <<'PY'
import json, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft7Validator(schema)
bad = 0
for path in sys.argv[2:]:
    doc = yaml.safe_load(open(path))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        print(f"{path}: {'/'.join(map(str, e.path)) or '(top)'}: {e.message}", file=sys.stderr)
    bad += bool(errors)
sys.exit(1 if bad else 0)
PY
compose_check() { "$VENV/bin/python" "$work/compose_check.py" deploy/compose/schema/compose-spec.json "$@"; }
printf 'services:\n  coordinator:\n    image: x\n    restart: sometimes\n    portz: ["50051"]\n' >"$work/broken-compose.yml"
refuses compose compose_check "$work/broken-compose.yml"
compose_check deploy/compose/docker-compose.yml deploy/compose/docker-compose.gpu.yml
echo "  deploy/compose/docker-compose.yml, docker-compose.gpu.yml valid"

say "systemd: systemd-analyze verify of each unit"
need systemd-analyze systemd
if [ ! -x target/debug/sweep ] || [ ! -x target/debug/sweep-worker ]; then
    ensure_cargo
    cargo build --bins --locked
fi
mkdir -p "$work/units"
for unit in deploy/systemd/*.service; do
    # The units name /usr/local/bin/sweep{,-worker}; here the built ones.
    sed "s|/usr/local/bin/|$ROOT/target/debug/|g" "$unit" >"$work/units/$(basename "$unit")"
done
printf '[Service]\nExecStart=relative/path\nRestart=sometimes\n' >"$work/units/broken.service"
refuses systemd-analyze systemd-analyze verify --man=no "$work/units/broken.service"
rm "$work/units/broken.service"
(cd "$work/units" && systemd-analyze verify --man=no sweep-coordinator.service sweep-worker@0.service 2>&1) | tee "$work/systemd.log"
if [ -s "$work/systemd.log" ]; then
    echo "systemd-analyze verify reported the above" >&2
    exit 1
fi
echo "  deploy/systemd units verify clean"
say "deployment files valid"
