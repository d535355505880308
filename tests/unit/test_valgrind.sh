#!/bin/bash
# The series' new unit tests under valgrind: no invalid accesses, no
# definite leaks.  (The tunnel pump runs in libvirtd's event loop for the
# whole migration; a leak or a use-after-free there is a daemon bug.)
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$TOP/scripts/common.sh"
fails=0
for t in qemumigrationtunneltest virnetclienttest qemumigrationopentunneltest fdstreamtest; do
    bin=$OBJ_DIR/tests/$t
    if [ ! -x "$bin" ]; then
        echo "not ok - $t is not built"; fails=$((fails + 1)); continue
    fi
    log=$BUILD_DIR/test-logs/valgrind-$t.log
    mkdir -p "$(dirname "$log")"
    if (cd "$OBJ_DIR/tests" && timeout 600 valgrind --leak-check=full --errors-for-leak-kinds=definite \
            --error-exitcode=9 -q "$bin") > "$log" 2>&1; then
        echo "ok - $t is valgrind-clean"
    else
        echo "not ok - $t under valgrind (see $log)"; fails=$((fails + 1))
    fi
done
exit $fails
