#!/usr/bin/env bash
# Set up everything (scripts/setup.sh), then profile the demo plugin on the local Docker engine:
#   waap run --profile examples/objcounter/profile.yaml --output results
# Extra arguments go to `waap run`; WAAP_DEMO_OUTPUT changes the results folder (default: results/).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$WAAP_ROOT"

bash scripts/setup.sh
output=${WAAP_DEMO_OUTPUT:-results}
say "profiling the demo plugin ($WAAP_DEMO_IMAGE): two targets, about 20 s"
.venv/bin/waap run --profile examples/objcounter/profile.yaml --output "$output" "$@" \
    || die "the demo profile failed (exit status $?); partial results, if any, are in $output/"
say "results are in $(cd "$output" && pwd)/"
if [ -f "$output/waap.db" ]; then
    say "the embedded results store, $output/waap.db (docs/store.md), now holds:"
    .venv/bin/waap runs --store "$output/waap.db" --limit 10 || die "cannot read the results store $output/waap.db"
fi
