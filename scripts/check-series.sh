#!/bin/bash
# Every patch, applied in order, builds without warnings and passes the unit
# tests.  Uses a scratch worktree and one build directory (build/obj-series),
# so each step is incremental.  The developer's tree is not touched.
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
    LC_ALL=C meson test -C "$OBJ" --no-rebuild --no-suite syntax-check \
        --num-processes "$(nproc)" > "$OBJ.test.log" 2>&1 || {
        grep -E '(FAIL|TIMEOUT)' "$OBJ.test.log" | head -20; die "$1: unit tests fail (see $OBJ.test.log)"; }
    echo "ok - $1: builds, $(awk '/^Ok:/ {print $2}' "$OBJ.test.log") tests pass"
}

step "v11.3.0"
n=0 total=$(find "$PATCH_DIR" -name '*.patch' | wc -l)
for p in "$PATCH_DIR"/*.patch; do
    [ -e "$p" ] || continue
    n=$((n + 1))
    lv_am "$p"
    step "[$n/$total] $(basename "$p")"
done
echo "check-series: all $((n + 1)) steps build and pass"
