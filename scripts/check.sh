#!/bin/bash
# make check: everything CI runs, from a fresh machine.
set -euo pipefail
. "$(dirname "$0")/common.sh"
t0=$SECONDS
"$TOP/scripts/deps.sh"
"$TOP/scripts/tree.sh"
"$TOP/scripts/build.sh"
"$TOP/scripts/build.sh" --stock
"$TOP/scripts/deb.sh"
"$TOP/lab/guest/build-guest.sh"
msg "prepared in $((SECONDS - t0))s"
"$TOP/scripts/run-tests.sh"
