# Shared helpers for the scripts in this folder; source it, don't run it.
# shellcheck shell=bash

WAAP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export WAAP_ROOT

# the images the scripts build; tests and docs refer to these names
WAAP_BASE_IMAGE=${WAAP_BASE_IMAGE:-waap-base:bookworm}
WAAP_DEMO_IMAGE=${WAAP_DEMO_IMAGE:-waap-demo-objcounter:latest}
WAAP_PROFILER_IMAGE=${WAAP_PROFILER_IMAGE:-waap-profiler:latest}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# as_root CMD...: run CMD as root (directly, or through sudo when we are not root)
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@" || die "'$*' needs root; run this script as root or give this user passwordless sudo"
    else
        die "'$*' needs root and sudo is not installed; run this script as root"
    fi
}

# alive PID: true while the process runs (a zombie, which an init that does not reap leaves, counts as dead)
alive() {
    local state=""
    [ -r "/proc/$1/stat" ] || return 1
    read -r _ _ state _ <"/proc/$1/stat" 2>/dev/null || return 1
    [ "$state" != Z ]
}

# ensure_docker: make sure a Docker daemon answers, starting dockerd in the background if none does
ensure_docker() {
    command -v docker >/dev/null 2>&1 || die "the docker client is not installed (run scripts/setup.sh)"
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    # a daemon that runs but refuses us is a permission problem, not a missing daemon
    if [ -S /var/run/docker.sock ] && [ "$(id -u)" -ne 0 ] && [ ! -w /var/run/docker.sock ]; then
        die "cannot use /var/run/docker.sock: add this user to the 'docker' group or run as root"
    fi
    command -v dockerd >/dev/null 2>&1 || die "no Docker daemon answers and dockerd is not installed (run scripts/setup.sh)"
    local log=/var/log/waap-dockerd.log
    local timeout=${WAAP_DOCKERD_TIMEOUT:-90}
    local pid=""
    [ -r /var/run/docker.pid ] && pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -n "$pid" ] && alive "$pid"; then
        say "waiting for the dockerd that is starting (pid $pid)"
    else
        say "starting dockerd (log: $log)"
        # systemd does not manage dockerd on our CI machines: start it detached from this shell
        pid=$(as_root sh -c "setsid dockerd >'$log' 2>&1 </dev/null & echo \$!")
    fi
    local waited=0 problem=""
    until docker info >/dev/null 2>&1; do
        if ! alive "$pid"; then
            problem="dockerd exited during start-up"
        elif [ "$waited" -ge "$timeout" ]; then
            problem="dockerd did not answer within ${timeout}s (WAAP_DOCKERD_TIMEOUT changes the wait)"
        fi
        if [ -n "$problem" ]; then
            printf 'last lines of %s:\n' "$log" >&2
            tail -n 15 "$log" >&2 2>/dev/null || true
            die "$problem; see $log"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "dockerd is up (after ${waited}s)"
}

# image_exists NAME: true when the local engine has the image
image_exists() {
    docker image inspect "$1" >/dev/null 2>&1
}

# quietly STEP CMD...: run CMD with its output kept in a log; on failure show the log's end and stop
quietly() {
    local step=$1 log
    shift
    log=$(mktemp "${TMPDIR:-/tmp}/waap-step.XXXXXX")
    if ! "$@" >"$log" 2>&1 </dev/null; then
        printf -- '--- last lines of the output of: %s\n' "$*" >&2
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "$step failed"
    fi
    rm -f "$log"
}
