#!/bin/bash
# The nova side (issue 14): apply patches/nova/ to Debian 12's python3-nova
# and run the unit tests of what the series touches.
#
#   1. apt-get download python3-nova (into build/nova-deb, kept);
#   2. extract its nova/ package into build/nova-test (fresh each run), as
#      a git tree, and git am patches/nova/*.patch on it;
#   3. run, with stestr and a timeout, the test modules the series touches:
#      nova.tests.unit.virt.libvirt.test_{driver,host,config,guest,migration}
#      and nova.tests.unit.objects.test_{objects,migrate_data}.
#
# Prints "ok - ..." / "not ok - ..." lines; exits with the number of "not
# ok" lines.  Needs NOVA_PKGS from deps.sh (make deps).
#   NOVA_DEB_VERSION   python3-nova version to test (default: the one the
#                      series was written against, else the archive's)
#   NOVA_TEST_TIMEOUT  seconds for each stestr run (default 900)
set -euo pipefail
. "$(dirname "$0")/common.sh"

NOVA_DEB_VERSION=${NOVA_DEB_VERSION:-2:26.2.2-1~deb12u5}
NOVA_TEST_TIMEOUT=${NOVA_TEST_TIMEOUT:-900}
NOVA_PATCH_DIR=$PATCH_DIR/nova
DEB_DIR=$BUILD_DIR/nova-deb
TEST_DIR=$BUILD_DIR/nova-test
LOG_DIR=$BUILD_DIR/test-logs
# Debian's interpreter: nova's dependencies are Debian packages (a python3
# earlier in PATH, e.g. pyenv's, does not see them).
PY=/usr/bin/python3

fails=0
ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; fails=$((fails + 1)); }

mkdir -p "$DEB_DIR" "$LOG_DIR"

# --- the test dependencies ----------------------------------------------------
missing=()
for m in stestr oslotest fixtures testscenarios ddt requests_mock \
         oslo_versionedobjects os_traits os_resource_classes; do
    timeout 60 "$PY" -c "import $m" 2>/dev/null || missing+=("$m")
done
if [ ${#missing[@]} -gt 0 ]; then
    notok "nova's test dependencies are installed (missing python modules: ${missing[*]}; run make deps)"
    exit $fails
fi
ok "nova's test dependencies are installed"

# --- python3-nova's .deb --------------------------------------------------------
deb=$(ls "$DEB_DIR"/python3-nova_*.deb 2>/dev/null | head -1 || true)
want_file=python3-nova_${NOVA_DEB_VERSION//:/%3a}_all.deb
if [ ! -f "$DEB_DIR/$want_file" ]; then
    if (cd "$DEB_DIR" && timeout 300 apt-get download -q "python3-nova=$NOVA_DEB_VERSION") \
            > "$LOG_DIR/nova-download.log" 2>&1; then
        deb=$DEB_DIR/$want_file
    elif [ -z "$deb" ]; then
        # The archive keeps only its newest security update: take that one.
        echo "# python3-nova $NOVA_DEB_VERSION is gone from the archive; trying its current version"
        (cd "$DEB_DIR" && timeout 300 apt-get download -q python3-nova) \
            >> "$LOG_DIR/nova-download.log" 2>&1 || true
        deb=$(ls "$DEB_DIR"/python3-nova_*.deb 2>/dev/null | head -1 || true)
    fi
else
    deb=$DEB_DIR/$want_file
fi
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    notok "python3-nova's .deb downloaded (see $LOG_DIR/nova-download.log)"
    exit $fails
fi
version=$(dpkg-deb -f "$deb" Version)
ok "python3-nova $version downloaded ($(basename "$deb"))"

# --- build/nova-test = the package's nova/ + patches/nova ----------------------
rm -rf "$TEST_DIR" "$TEST_DIR.x"
dpkg-deb -x "$deb" "$TEST_DIR.x"
mkdir -p "$TEST_DIR"
mv "$TEST_DIR.x/usr/lib/python3/dist-packages/nova" "$TEST_DIR/nova"
rm -rf "$TEST_DIR.x"
lv_git_identity
(
    cd "$TEST_DIR"
    git init -q -b master .
    printf '.stestr/\n__pycache__/\n' > .git/info/exclude
    git add -A
    git commit -q -m "python3-nova $version"
)
patches=("$NOVA_PATCH_DIR"/*.patch)
applied=1
for p in "${patches[@]}"; do
    if (cd "$TEST_DIR" && git am -q --committer-date-is-author-date "$p") \
            > "$LOG_DIR/nova-am.log" 2>&1; then
        ok "nova patch $(basename "$p") applies"
    else
        (cd "$TEST_DIR" && git am --abort) >/dev/null 2>&1 || true
        notok "nova patch $(basename "$p") applies (see $LOG_DIR/nova-am.log)"
        applied=0
        break
    fi
done
[ $applied = 1 ] || exit $fails

where=$(cd "$TEST_DIR" && timeout 120 "$PY" -c \
    'import nova.virt.libvirt.host as h; print(h.__file__)' 2>&1 | tail -1)
if [[ $where == "$TEST_DIR/"* ]] &&
   grep -q tunnelled_migration_features "$where"; then
    ok "the tests import the patched nova (build/nova-test), not /usr/lib/python3"
else
    notok "the tests import the patched nova (they import $where)"
    exit $fails
fi

# --- the unit tests ------------------------------------------------------------
# run_suite LABEL TEST_PATH FILTER: one stestr run, one line per test module.
# Results come from stestr's subunit stream (its console output interleaves
# the tests' warnings with the result lines).
run_suite() {
    local label=$1 path=$2 filter=$3 log=$LOG_DIR/nova-$1.log
    local csv=$LOG_DIR/nova-$1.csv rc=0
    rm -f "$csv"
    (cd "$TEST_DIR" && rm -rf .stestr &&
     timeout "$NOVA_TEST_TIMEOUT" "$PY" -m stestr --test-path "$path" \
         --top-dir ./ run "$filter") > "$log" 2>&1 || rc=$?
    if [ $rc = 124 ]; then
        notok "nova $label tests finish within ${NOVA_TEST_TIMEOUT}s (see $log)"
        return
    fi
    (cd "$TEST_DIR" && timeout 120 "$PY" -m stestr last --subunit) 2>/dev/null |
        timeout 120 subunit2csv > "$csv" 2>/dev/null || true
    # test,status,...  ->  "MODULE m passed failed skipped xfail", "FAILED id"
    local summary
    summary=$(awk -F, '
        NR > 1 && $1 ~ /^nova\.tests\./ {
            n = split($1, a, "."); mod = a[1]
            for (i = 2; i <= n - 2; i++) mod = mod "." a[i]
            seen[mod] = 1
            if ($2 == "success") pass[mod]++
            else if ($2 == "skip") skip[mod]++
            else if ($2 == "xfail") xfail[mod]++
            else { fail[mod]++; print "FAILED " $1 }
        }
        END { for (m in seen)
                  printf "MODULE %s %d %d %d %d\n", m, pass[m], fail[m],
                         skip[m], xfail[m] }
    ' "$csv" | sort)
    if ! grep -q '^MODULE ' <<<"$summary"; then
        notok "nova $label tests run (stestr exit $rc, see $log)"
        tail -20 "$log" | sed 's/^/# /'
        return
    fi
    local m p f s x
    while read -r _ m p f s x; do
        if [ "$f" = 0 ]; then
            ok "$m: $p passed$([ "$s" = 0 ] || echo ", $s skipped")$([ "$x" = 0 ] || echo ", $x expected failure(s)")"
        else
            notok "$m: $f failed, $p passed (see $log)"
        fi
    done < <(grep '^MODULE ' <<<"$summary")
    grep '^FAILED ' <<<"$summary" | sed 's/^FAILED /# failed: /' | head -30 || true
    if [ $rc != 0 ] && ! grep -q '^FAILED ' <<<"$summary"; then
        notok "nova $label tests: stestr exited $rc without a failed test (see $log)"
    fi
}

t0=$SECONDS
run_suite libvirt ./nova/tests/unit/virt/libvirt \
    'nova\.tests\.unit\.virt\.libvirt\.test_(driver|host|config|guest|migration)\.'
run_suite objects ./nova/tests/unit/objects \
    'nova\.tests\.unit\.objects\.test_(objects|migrate_data)\.'

# The tests the series adds must have run and passed, not been filtered out.
new_tests=$(cat "${patches[@]}" | sed -n 's/^+    def \(test_[A-Za-z0-9_]*\)(.*/\1/p' | sort -u)
passed=$(cat "$LOG_DIR"/nova-libvirt.csv "$LOG_DIR"/nova-objects.csv 2>/dev/null |
         awk -F, '$2 == "success" { n = split($1, a, "."); print a[n] }' | sort -u)
n=0 missing=()
for t in $new_tests; do
    if grep -qx "$t" <<<"$passed"; then
        n=$((n + 1))
    else
        missing+=("$t")
    fi
done
if [ ${#missing[@]} = 0 ] && [ $n -gt 0 ]; then
    ok "the $n tests the nova series adds ran and passed"
else
    notok "the tests the nova series adds ran and passed (not: ${missing[*]:-none found})"
fi
echo "# nova unit tests took $((SECONDS - t0))s"
exit $fails
