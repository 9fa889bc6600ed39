#!/usr/bin/env bash
# Build the local images WaAP's demo and tests use, each only when it is missing or its inputs changed:
#   waap-base:bookworm           minimal Debian bookworm + python3 (mmdebstrap -> docker import)
#   waap-demo-objcounter:latest  the demo plugin (examples/objcounter)
#   waap-profiler:latest         the profiler itself, for running WaAP in a container (docker/Dockerfile)
#   waap-test-pywaggle:latest    an unmodified app on the real pywaggle from PyPI, for tests (tests/images/pywaggle)
#   waap-test-tools:latest       stand-in tau_exec/tau_python/nvprof/nsys writing recorded dumps (tests/images/tools)
#   waap-test-nvidia:latest      the demo plugin with the real nsys 2022.4 and nvprof 11.8 from Debian's non-free
#                                section (tests/images/nvidia); only when named: scripts/test.sh asks for it
# Each image carries a label with a hash of its inputs (files, build arguments, base image id); an image
# whose label does not match is rebuilt.
# Usage: scripts/build-images.sh [--force] [base|demo|profiler|pywaggle|tools|nvidia]...
#        (no names = the first five; nvidia downloads about 185 MB of NVIDIA packages, cached in $WAAP_CACHE/debs)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$WAAP_ROOT"

force=0
want=()
while [ $# -gt 0 ]; do
    case "$1" in
    --force) force=1 ;;
    base | demo | profiler | pywaggle | tools | nvidia) want+=("$1") ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[ "${#want[@]}" -gt 0 ] || want=(base demo profiler pywaggle tools)
wanted() { [[ " ${want[*]} " == *" $1 "* ]]; }

HASH_LABEL=org.waggle.waap.inputs
WAAP_PYWAGGLE_IMAGE=${WAAP_PYWAGGLE_IMAGE:-waap-test-pywaggle:latest}
WAAP_TOOLS_IMAGE=${WAAP_TOOLS_IMAGE:-waap-test-tools:latest}
WAAP_NVIDIA_IMAGE=${WAAP_NVIDIA_IMAGE:-waap-test-nvidia:latest}
WAAP_CACHE=${WAAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/waap}
# the Debian mirror the non-free NVIDIA packages come from (the base image uses the machine's own apt sources)
WAAP_DEBIAN_MIRROR=${WAAP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,procps,ca-certificates
# merged /usr through the hook, as debootstrap does it; without it apt picks the usrmerge package, which
# drags about 50 MB of Perl into the image
BASE_HOOK_DIR=/usr/share/mmdebstrap/hooks/merged-usr
# leave documentation, manual pages and translations out of the base image
BASE_DPKG_OPTS=(
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/info/*'
)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/waap-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

label_of() { docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{.Id}}' "$1"; }
# hash_inputs STRING FILE...: one hash over a string and the names and contents of files
hash_inputs() {
    local extra=$1
    shift
    { printf '%s\n' "$extra"; for f in "$@"; do printf '%s\n' "$f"; cat "$f"; done; } | sha256sum | cut -c1-16
}
# needs_build IMAGE HASH: true when the image is missing, stale or --force was given
needs_build() {
    [ "$force" = 1 ] && return 0
    image_exists "$1" || return 0
    if [ "$(label_of "$1")" != "$2" ]; then
        say "$1 is out of date with its sources"
        return 0
    fi
    say "$1 is up to date"
    return 1
}
elapsed() { echo "$((SECONDS - $1))s"; }
# build_from_base IMAGE HASH CONTEXT START: docker build IMAGE FROM the base image, labelled with its inputs' HASH
build_from_base() {
    quietly "docker build of $1" \
        docker build --build-arg "BASE_IMAGE=$WAAP_BASE_IMAGE" --label "$HASH_LABEL=$2" -t "$1" "$3"
    say "built $1 in $(elapsed "$4")"
    built+=("$1")
}

ensure_docker
built=()

# (a) base image ---------------------------------------------------------------------------------------------
base_hash=$(hash_inputs "$BASE_SUITE $BASE_PACKAGES $BASE_HOOK_DIR ${BASE_DPKG_OPTS[*]}")
if wanted base || ! image_exists "$WAAP_BASE_IMAGE"; then
    if needs_build "$WAAP_BASE_IMAGE" "$base_hash"; then
        command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is not installed (run scripts/setup.sh)"
        [ "$(id -u)" -eq 0 ] || die "building $WAAP_BASE_IMAGE runs mmdebstrap in root mode: run as root"
        say "building $WAAP_BASE_IMAGE with mmdebstrap ($BASE_SUITE: $BASE_PACKAGES)"
        start=$SECONDS
        [ -d "$BASE_HOOK_DIR" ] || die "$BASE_HOOK_DIR is missing: mmdebstrap >= 1.0 is needed"
        # no mirror argument: deb.debian.org with bookworm-updates and -security, through this machine's network
        quietly "mmdebstrap ($BASE_SUITE root file system)" \
            mmdebstrap --mode=root --variant=apt --hook-dir="$BASE_HOOK_DIR" --include="$BASE_PACKAGES" \
            "${BASE_DPKG_OPTS[@]}" "$BASE_SUITE" "$tmp/base.tar"
        quietly "docker import of the $BASE_SUITE root file system" docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change "LABEL $HASH_LABEL=$base_hash" \
            --change 'CMD ["/bin/bash"]' \
            --message "mmdebstrap --variant=apt --include=$BASE_PACKAGES $BASE_SUITE" \
            "$tmp/base.tar" "$WAAP_BASE_IMAGE"
        rm -f "$tmp/base.tar"
        docker run --rm "$WAAP_BASE_IMAGE" python3 -c 'import venv' \
            || die "$WAAP_BASE_IMAGE was built but its python3 does not run"
        say "built $WAAP_BASE_IMAGE in $(elapsed "$start")"
        built+=("$WAAP_BASE_IMAGE")
    fi
fi
base_id=$(image_id "$WAAP_BASE_IMAGE")

# (b) demo plugin ----------------------------------------------------------------------------------------------
if wanted demo; then
    demo_dir=examples/objcounter
    demo_hash=$(hash_inputs "$base_id" "$demo_dir/Dockerfile" "$demo_dir/app.py")
    if needs_build "$WAAP_DEMO_IMAGE" "$demo_hash"; then
        say "building $WAAP_DEMO_IMAGE from $demo_dir"
        start=$SECONDS
        build_from_base "$WAAP_DEMO_IMAGE" "$demo_hash" "$demo_dir" "$start"
    fi
fi

# (c) profiler image -------------------------------------------------------------------------------------------
if wanted profiler; then
    mapfile -t sources < <(
        find profiler -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort
        printf '%s\n' setup.cfg pyproject.toml docker/Dockerfile
        [ -f README.md ] && echo README.md  # the package's long_description
    )
    profiler_hash=$(hash_inputs "$base_id" "${sources[@]}")
    if needs_build "$WAAP_PROFILER_IMAGE" "$profiler_hash"; then
        start=$SECONDS
        say "building $WAAP_PROFILER_IMAGE from docker/Dockerfile (wheels built here, installed offline)"
        quietly "preparing the profiler build context (scripts/profiler-context.sh)" \
            bash scripts/profiler-context.sh "$tmp/profiler"
        build_from_base "$WAAP_PROFILER_IMAGE" "$profiler_hash" "$tmp/profiler" "$start"
    fi
fi

# (d) pywaggle test app ----------------------------------------------------------------------------------------
if wanted pywaggle; then
    pywaggle_dir=tests/images/pywaggle
    pywaggle_inputs=("$pywaggle_dir/Dockerfile" "$pywaggle_dir/app.py" "$pywaggle_dir/requirements.txt")
    pywaggle_hash=$(hash_inputs "$base_id" "${pywaggle_inputs[@]}")
    if needs_build "$WAAP_PYWAGGLE_IMAGE" "$pywaggle_hash"; then
        start=$SECONDS
        say "building $WAAP_PYWAGGLE_IMAGE from $pywaggle_dir (pywaggle wheels fetched here, installed offline)"
        [ -x .venv/bin/pip ] || die ".venv/bin/pip is missing: run scripts/setup.sh first"
        mkdir -p "$tmp/pywaggle/wheels"
        cp "${pywaggle_inputs[@]}" "$tmp/pywaggle/"
        quietly "downloading the wheels of $pywaggle_dir/requirements.txt (needs access to a package index)" \
            .venv/bin/pip download --only-binary=:all: --dest "$tmp/pywaggle/wheels" -r "$pywaggle_dir/requirements.txt"
        build_from_base "$WAAP_PYWAGGLE_IMAGE" "$pywaggle_hash" "$tmp/pywaggle" "$start"
    fi
fi

# (e) stand-in profiling tools test app ----------------------------------------------------------------------------
if wanted tools; then
    tools_dir=tests/images/tools
    mapfile -t tools_inputs < <(find "$tools_dir" -type f | LC_ALL=C sort)
    tools_hash=$(hash_inputs "$base_id" "${tools_inputs[@]}")
    if needs_build "$WAAP_TOOLS_IMAGE" "$tools_hash"; then
        start=$SECONDS
        say "building $WAAP_TOOLS_IMAGE from $tools_dir"
        build_from_base "$WAAP_TOOLS_IMAGE" "$tools_hash" "$tools_dir" "$start"
    fi
fi

# (f) real NVIDIA profilers on the demo plugin -------------------------------------------------------------------
# fetch_debs LIST DEST: download the packages LIST names (one a line, # comments) for this machine's architecture
# from bookworm's main, contrib and non-free sections, through an apt configuration of our own (the machine's
# sources are not touched). Files already in the cache are not fetched again.
fetch_debs() {
    local list=$1 dest=$2 apt_dir="$WAAP_CACHE/apt"
    local -a names opts
    mapfile -t names < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | grep -v '^$')
    mkdir -p "$dest" "$apt_dir/lists/partial"
    printf 'deb %s %s main contrib non-free\n' "$WAAP_DEBIAN_MIRROR" "$BASE_SUITE" >"$apt_dir/sources.list"
    opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1)
    quietly "apt-get update for $WAAP_DEBIAN_MIRROR $BASE_SUITE contrib non-free (needs the Debian mirror)" \
        apt-get "${opts[@]}" update
    local uris
    uris=$(apt-get "${opts[@]}" --print-uris download "${names[@]}" 2>&1) \
        || die "apt-get cannot find the packages of $list: $uris"
    local missing=()
    while read -r _ file _; do
        [ -s "$dest/$file" ] || missing+=("$file")
    done < <(grep "^'" <<<"$uris")
    if [ "${#missing[@]}" -gt 0 ]; then
        say "downloading ${#missing[@]} Debian package(s) into $dest" >&2
        (cd "$dest" && quietly "apt-get download of $list" apt-get "${opts[@]}" download "${names[@]}")
    fi
    # the files of this list, for the build context and the image's hash
    grep "^'" <<<"$uris" | awk '{print $2}'
}

if wanted nvidia; then
    nvidia_dir=tests/images/nvidia
    image_exists "$WAAP_DEMO_IMAGE" || die "$WAAP_DEMO_IMAGE is missing: build it first (scripts/build-images.sh demo)"
    deb_cache="$WAAP_CACHE/debs"
    mapfile -t nvidia_debs < <(fetch_debs "$nvidia_dir/packages.txt" "$deb_cache")
    nvidia_hash=$(hash_inputs "$(image_id "$WAAP_DEMO_IMAGE") ${nvidia_debs[*]}" "$nvidia_dir/Dockerfile")
    if needs_build "$WAAP_NVIDIA_IMAGE" "$nvidia_hash"; then
        start=$SECONDS
        say "building $WAAP_NVIDIA_IMAGE from $nvidia_dir on $WAAP_DEMO_IMAGE (nsys and nvprof from Debian non-free)"
        mkdir -p "$tmp/nvidia/debs"
        cp "$nvidia_dir/Dockerfile" "$tmp/nvidia/"
        for deb in "${nvidia_debs[@]}"; do ln "$deb_cache/$deb" "$tmp/nvidia/debs/" 2>/dev/null \
            || cp "$deb_cache/$deb" "$tmp/nvidia/debs/"; done
        quietly "docker build of $WAAP_NVIDIA_IMAGE" docker build --build-arg "BASE_IMAGE=$WAAP_DEMO_IMAGE" \
            --label "$HASH_LABEL=$nvidia_hash" -t "$WAAP_NVIDIA_IMAGE" "$tmp/nvidia"
        say "built $WAAP_NVIDIA_IMAGE in $(elapsed "$start")"
        built+=("$WAAP_NVIDIA_IMAGE")
    fi
    # NVIDIA's real NVML library (libnvidia-ml.so.1), unpacked into the cache, not installed: on a machine without
    # the NVIDIA driver it answers nvmlInit with "Driver Not Loaded", which tests/test_nvml_real_library.py checks
    nvml_dir="$WAAP_CACHE/nvml"
    mapfile -t nvml_debs < <(fetch_debs "$nvidia_dir/host-packages.txt" "$deb_cache")
    if [ ! -e "$nvml_dir/libnvidia-ml.so.1" ] || [ "$(cat "$nvml_dir/source" 2>/dev/null)" != "${nvml_debs[*]}" ]; then
        rm -rf "$nvml_dir" "$tmp/nvml"
        mkdir -p "$nvml_dir"
        for deb in "${nvml_debs[@]}"; do dpkg-deb -x "$deb_cache/$deb" "$tmp/nvml"; done
        lib=$(find "$tmp/nvml" -name 'libnvidia-ml.so.1' | head -n 1)
        [ -n "$lib" ] || die "no libnvidia-ml.so.1 in ${nvml_debs[*]}"
        cp -P "$(dirname "$lib")"/libnvidia-ml.so* "$nvml_dir/"
        printf '%s\n' "${nvml_debs[*]}" >"$nvml_dir/source"
        say "unpacked NVIDIA's NVML library into $nvml_dir (from ${nvml_debs[*]})"
    fi
fi

# the classic builder leaves the first stage behind as a dangling image: drop those of this build
if [ "${#built[@]}" -gt 0 ]; then
    docker image prune -f --filter "label=$HASH_LABEL" >/dev/null 2>&1 || true
fi
say "images:"
for image in "$WAAP_BASE_IMAGE" "$WAAP_DEMO_IMAGE" "$WAAP_PROFILER_IMAGE" "$WAAP_PYWAGGLE_IMAGE" "$WAAP_TOOLS_IMAGE" \
    "$WAAP_NVIDIA_IMAGE"; do
    if image_exists "$image"; then
        printf '    %-32s %s\n' "$image" "$(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=si --suffix=B)"
    fi
done
