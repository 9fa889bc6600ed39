#!/usr/bin/env bash
# Set up everything (scripts/setup.sh), then run the checks CI runs: ruff, mypy and the whole test suite
# (unit tests and the integration tests on the local Docker engine). Arguments go to pytest.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$WAAP_ROOT"

bash scripts/setup.sh
# the tests of the tool wrappers on NVIDIA's real nsys and nvprof need this image (they skip, saying so, without it)
if [ "${WAAP_SKIP_IMAGES:-0}" != 1 ]; then
    bash scripts/build-images.sh nvidia
fi

say "ruff check ."
.venv/bin/ruff check . || die "ruff found problems"
say "mypy"
.venv/bin/mypy || die "mypy found problems"
say "pytest $*"
status=0
.venv/bin/python -m pytest "$@" || status=$?
case "$status" in
0) say "all checks passed" ;;
5) die "pytest collected no tests: the suite must not be empty" ;;
*) die "pytest failed (exit status $status)" ;;
esac
