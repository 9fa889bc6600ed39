#!/usr/bin/env bash
# Prepare a Docker build context for the profiler image (docker/Dockerfile):
#   OUT_DIR/Dockerfile  and  OUT_DIR/wheels/ (the waap wheel and every dependency as a wheel).
# The image installs only from these wheels (no network inside `docker build`). Wheels are built for this
# machine; add --platform TAG (a pip platform tag such as manylinux2014_aarch64) to also fetch the binary
# dependency wheels for another architecture, for a multi-arch `docker buildx build`.
# Usage: scripts/profiler-context.sh OUT_DIR [--platform TAG]...
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=""
platforms=()
while [ $# -gt 0 ]; do
    case "$1" in
    --platform) [ $# -ge 2 ] || die "--platform needs a value"; platforms+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$out" ] || die "only one OUT_DIR"; out=$1; shift ;;
    esac
done
[ -n "$out" ] || die "usage: $0 OUT_DIR [--platform TAG]..."

pip=$WAAP_ROOT/.venv/bin/pip
[ -x "$pip" ] || die "$pip is missing: run scripts/setup.sh first"
mkdir -p "$out/wheels"
cp "$WAAP_ROOT/docker/Dockerfile" "$out/Dockerfile"

say "building the waap wheel and its dependency wheels into $out/wheels"
"$pip" wheel -q --wheel-dir "$out/wheels" "$WAAP_ROOT" || die "pip wheel of $WAAP_ROOT failed"
wheel=$(find "$out/wheels" -maxdepth 1 -name 'waap-*.whl' | head -n 1)
[ -n "$wheel" ] || die "pip wheel did not produce a waap wheel in $out/wheels"

# the image's Python (3.11 in waap-base:bookworm and python:3.11-slim-bookworm) decides the ABI tag
pyver=${WAAP_IMAGE_PYTHON:-3.11}
for platform in "${platforms[@]}"; do
    say "fetching $platform wheels for Python $pyver"
    # pure-Python wheels built above satisfy any platform; only binary ones get downloaded
    "$pip" download -q --dest "$out/wheels" --find-links "$out/wheels" --only-binary=:all: \
        --platform "$platform" --python-version "$pyver" --implementation cp --abi "cp${pyver/./}" \
        "$wheel" || die "could not fetch $platform wheels (needs access to a package index)"
done
say "profiler build context ready: $out ($(find "$out/wheels" -name '*.whl' | wc -l) wheels)"
