#!/usr/bin/env bash
# Set up everything WaAP needs on this machine, idempotently:
#   Debian packages (docker.io, mmdebstrap, docker-registry; groovy for the pipeline tests) -> a running Docker daemon
#   -> .venv with WaAP installed in editable mode (with the test tools) -> the local images (scripts/build-images.sh).
# Needs root (or passwordless sudo) for apt-get and dockerd. Safe to run again: it only does what is missing.
# Environment: WAAP_SKIP_IMAGES=1 skips the image build; WAAP_PYTHON picks the interpreter for the venv.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$WAAP_ROOT"

# 1. Debian packages -----------------------------------------------------------------------------------------
# package -> a command it provides (checked first, because it is cheaper and also covers non-Debian installs)
declare -A commands=([docker.io]=dockerd [mmdebstrap]=mmdebstrap [docker-registry]=docker-registry [groovy]=groovy)
missing=()
for pkg in docker.io mmdebstrap docker-registry groovy; do
    if ! command -v "${commands[$pkg]}" >/dev/null 2>&1 && ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and this is not a Debian-like system (no apt-get)"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l
    quietly "apt-get update" as_root apt-get update
    quietly "apt-get install ${missing[*]}" as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l \
        apt-get install -y -o Dpkg::Use-Pty=0 "${missing[@]}"
else
    say "Debian packages present (docker.io, mmdebstrap, docker-registry, groovy)"
fi

# 2. Docker daemon -------------------------------------------------------------------------------------------
ensure_docker
say "Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?') answers"

# 3. Python virtual environment ------------------------------------------------------------------------------
python=${WAAP_PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || die "$python not found (set WAAP_PYTHON to a Python >= 3.8)"
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$python" --version 2>&1)"
    "$python" -m venv .venv || die "'$python -m venv .venv' failed (on Debian: apt-get install python3-venv)"
fi
# pip install is slow even when nothing changes: reinstall only when the package metadata changed
stamp=.venv/.waap-installed
want=$(cat setup.cfg pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -m pip show -q waap >/dev/null 2>&1; then
    say "installing WaAP and its test tools into .venv (pip install -e '.[test]')"
    quietly "upgrading pip in .venv" .venv/bin/python -m pip install --upgrade pip
    quietly "pip install -e '.[test]'" .venv/bin/python -m pip install -e '.[test]'
    printf '%s\n' "$want" >"$stamp"
else
    say ".venv is up to date"
fi

# 4. Images ---------------------------------------------------------------------------------------------------
if [ "${WAAP_SKIP_IMAGES:-0}" = 1 ]; then
    say "skipping the image build (WAAP_SKIP_IMAGES=1)"
else
    bash scripts/build-images.sh
fi
say "setup done"
