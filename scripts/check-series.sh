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

export GIT_AUTHOR_NAME="libvirt-tunnel workspace" GIT_AUTHOR_EMAIL="workspace@localhost"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"

step() {  # step LABEL
    if [ ! -f "$OBJ/build.ninja" ]; then
        lv_meson_opts "$BUILD_DIR/install-series"
        meson setup "$OBJ" "$WT" "${MESON_OPTS[@]}" \
            > "$OBJ.configure.log" 2>&1 || { tail -20 "$OBJ.configure.log"; die "$1: meson setup failed"; }
    fi
    ninja -C "$OBJ" > "$OBJ.build.log" 2>&1 || {
        grep -E 'error|FAILED' "$OBJ.build.log" | head -20; die "$1: build failed"; }
    if grep -qE ':[0-9]+: warning: ' "$OBJ.build.log"; then
        grep -E ':[0-9]+: warning: ' "$OBJ.build.log" | head; die "$1: compiler warnings"; fi
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
    git am -q --committer-date-is-author-date "$p" || { git am --abort; die "$(basename "$p") does not apply"; }
    step "[$n/$total] $(basename "$p")"
done
echo "check-series: all $((n + 1)) steps build and pass"
