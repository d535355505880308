#!/bin/bash
# Every patch, applied in order, builds without warnings and passes the unit
# tests.  Uses a scratch worktree and one build directory (build/obj-series),
# so each step is incremental.  The developer's tree is not touched.
#   FROM=N  check only patch N onwards (after one step with patches before N
#           applied): a quick check of the patches a change added or touched
set -euo pipefail
. "$(dirname "$0")/common.sh"

WT=$BUILD_DIR/libvirt-series
OBJ=$BUILD_DIR/obj-series
[ -e "$WT/.git" ] || lv_worktree "$WT" v11.3.0
cd "$WT"
git am --abort >/dev/null 2>&1 || true
git checkout -q --detach v11.3.0
git clean -qfd

lv_git_identity

step() {  # step LABEL
    if [ ! -f "$OBJ/build.ninja" ]; then
        lv_meson_opts "$BUILD_DIR/install-series"
        meson setup "$OBJ" "$WT" "${MESON_OPTS[@]}" \
            > "$OBJ.configure.log" 2>&1 || { tail -20 "$OBJ.configure.log"; die "$1: meson setup failed"; }
    fi
    lv_ninja "$OBJ" "$1"
    # the API documentation's parser, which the lab's build (docs off)
    # skips and a packaged build (docs on) runs
    mkdir -p "$OBJ/apibuild"
    python3 "$WT/scripts/apibuild.py" "$WT/docs" "$OBJ/apibuild" \
        > "$OBJ.apibuild.log" 2>&1 || {
        tail -5 "$OBJ.apibuild.log"; die "$1: the API documentation does not build"; }
    LC_ALL=C meson test -C "$OBJ" --no-rebuild --no-suite syntax-check \
        --num-processes "$(nproc)" > "$OBJ.test.log" 2>&1 || {
        grep -E '(FAIL|TIMEOUT)' "$OBJ.test.log" | head -20; die "$1: unit tests fail (see $OBJ.test.log)"; }
    echo "ok - $1: builds, API docs parse, $(awk '/^Ok:/ {print $2}' "$OBJ.test.log") tests pass"
}

from=${FROM:-1}
[[ $from =~ ^[1-9][0-9]*$ ]] || die "FROM must be a patch number, not '$from'"
[ "$from" = 1 ] && step "v11.3.0"
n=0 steps=0 total=$(find "$PATCH_DIR" -maxdepth 1 -name '*.patch' | wc -l)
for p in "$PATCH_DIR"/*.patch; do
    [ -e "$p" ] || continue
    n=$((n + 1))
    lv_am "$p"
    if [ "$n" -ge "$from" ] || [ "$n" = "$total" ]; then
        step "[$n/$total] $(basename "$p")"; steps=$((steps + 1))
    elif [ "$n" = $((from - 1)) ]; then
        step "[1-$n/$total] the patches before $from"; steps=$((steps + 1))
    fi
done
[ "$from" = 1 ] && steps=$((steps + 1))
if [ "$from" = 1 ]; then
    echo "check-series: all $steps steps build and pass"
else
    echo "check-series: patches $from-$total build and pass, each on its own ($steps steps)"
fi
