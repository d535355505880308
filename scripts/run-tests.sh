#!/bin/bash
# Run the test suites and end with one line "N passed, N failed".
#   run-tests.sh               libvirt's meson suite + project unit tests + lab e2e
#   run-tests.sh --unit-only   skip the lab
#   run-tests.sh --lab-only    only the lab
#   run-tests.sh --lab-heavy   only the lab's heavy fault cases (make check-faults)
#   run-tests.sh --lab-trixie  only the trixie host's case (make check-trixie)
#   run-tests.sh --lab-asan    every lab case against build/install-asan, then
#                              the sanitizers' reports (make check-asan)
# Assumes the tree is built (make build stock guest).
set -uo pipefail
. "$(dirname "$0")/common.sh"

do_meson=1 do_unit=1 do_lab=1 do_asan=0 lab_args=()
case ${1:-} in
--unit-only) do_lab=0 ;;
--lab-only) do_meson=0 do_unit=0 ;;
--lab-heavy) do_meson=0 do_unit=0 lab_args=(--heavy) ;;
--lab-trixie) do_meson=0 do_unit=0 lab_args=(-k "trixie: ") ;;
--lab-asan)
    # nova's cases load the client library into Python, which the sanitizer
    # runtime cannot join late; the packaged hosts run make deb's binaries.
    do_meson=0 do_unit=0 do_asan=1 lab_args=(--all --skip nova --skip packages)
    ASAN_LOGS=$BUILD_DIR/test-logs/asan
    rm -rf "$ASAN_LOGS"; mkdir -p "$ASAN_LOGS"
    [ -x "$ASAN_PREFIX/sbin/libvirtd" ] || die "no sanitized build in $ASAN_PREFIX (build.sh --asan)"
    export LVT_PREFIX=$ASAN_PREFIX LVT_SANITIZE=1
    # Every process of ours inherits these: the daemons, virsh and the lab's
    # API clients (built sanitized too, LVT_SANITIZE).  Leaks are
    # valgrind's business (LAB_VALGRIND=1): the lab stops daemons with
    # SIGKILL, so LeakSanitizer would never report anyway.
    export ASAN_OPTIONS="log_path=$ASAN_LOGS/asan:detect_leaks=0:print_cmdline=1"
    export UBSAN_OPTIONS="log_path=$ASAN_LOGS/ubsan:print_stacktrace=1"
    ;;
"") ;;
*) die "unknown option $1" ;;
esac
LOGS=$BUILD_DIR/test-logs
mkdir -p "$LOGS"
total_pass=0 total_fail=0
summary=()

add() {  # add SUITE PASS FAIL [EXTRA]
    total_pass=$((total_pass + $2)); total_fail=$((total_fail + $3))
    summary+=("$(printf '%-24s %4d passed, %3d failed%s' "$1" "$2" "$3" "${4:+, $4}")")
}

if [ $do_meson = 1 ]; then
    msg "libvirt meson test suite (build/obj)"
    t0=$SECONDS
    LC_ALL=C meson test -C "$OBJ_DIR" --no-rebuild --print-errorlogs \
        --num-processes "$(nproc)" > "$LOGS/meson-test.log" 2>&1
    rc=$?
    ok=$(awk '/^Ok:/ {print $2}' "$LOGS/meson-test.log")
    xf=$(awk '/^Expected Fail:/ {print $3}' "$LOGS/meson-test.log")
    sk=$(awk '/^Skipped:/ {print $2}' "$LOGS/meson-test.log")
    bad=0
    for k in 'Fail:' 'Unexpected Pass:' 'Timeout:'; do
        n=$(awk -v k="$k" 'index($0, k) == 1 {print $NF}' "$LOGS/meson-test.log")
        bad=$((bad + ${n:-0}))
    done
    if [ -z "$ok" ]; then
        tail -30 "$LOGS/meson-test.log"; bad=$((bad + 1))
    elif [ $rc != 0 ] && [ $bad = 0 ]; then
        bad=1
    fi
    [ $bad != 0 ] && grep -E '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT)' "$LOGS/meson-test.log" | head -20
    add "libvirt meson tests" "$(( ${ok:-0} + ${xf:-0} ))" "$bad" "${sk:-0} skipped, $((SECONDS - t0))s"
fi

if [ $do_unit = 1 ]; then
    for t in "$TOP"/tests/unit/*.sh; do
        msg "project test $(basename "$t")"
        out=$(bash "$t" 2>&1); echo "$out"
        p=$(grep -c '^ok - ' <<<"$out"); f=$(grep -c '^not ok - ' <<<"$out")
        add "$(basename "$t" .sh)" "$p" "$f"
    done
fi

if [ $do_lab = 1 ]; then
    msg "lab end-to-end tests"
    t0=$SECONDS
    /usr/bin/python3 "$TOP/tests/lab/e2e.py" "${lab_args[@]}" 2>&1 | tee "$LOGS/e2e.log"
    line=$(tail -1 "$LOGS/e2e.log")
    xf=$(sed -n 's/^lab: .* \([0-9]*\) expected failures.*/\1/p' "$LOGS/e2e.log")
    if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        add "lab e2e" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${xf:-0} of them expected failures, $((SECONDS - t0))s"
    else
        add "lab e2e" 0 1 "did not finish"
    fi
fi

if [ $do_asan = 1 ]; then
    # One file per process that reported something; any report fails.
    reports=$(grep -lE 'ERROR: AddressSanitizer|runtime error:' "$ASAN_LOGS"/* 2>/dev/null | wc -l)
    for f in $(grep -lE 'ERROR: AddressSanitizer|runtime error:' "$ASAN_LOGS"/* 2>/dev/null | head -10); do
        echo "--- $f"; grep -m3 -E 'ERROR: AddressSanitizer|runtime error:|Command:' "$f"
    done
    add "sanitizer reports" "$(( reports == 0 ))" "$reports" "in $ASAN_LOGS"
fi

echo
echo "=== summary"
printf '  %s\n' "${summary[@]}"
if [ $do_lab = 1 ] && grep -q '^  failed: ' "$LOGS/e2e.log"; then
    echo "failed lab cases, with their daemons' and QEMU's logs:"
    sed -n 's/^  failed: /  /p; s/^    logs: /    /p' "$LOGS/e2e.log"
fi
echo "$total_pass passed, $total_fail failed"
[ $total_fail = 0 ]
