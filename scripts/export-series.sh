#!/bin/bash
# Write the commits of build/libvirt since v11.3.0 back to patches/.
# Names are stable (NNNN-subject.patch) and unchanged files are not touched.
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ -d "$SRC_DIR/.git" ] || die "no tree in build/libvirt; run 'make tree' first"
cd "$SRC_DIR"
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
    echo "warning: build/libvirt has uncommitted changes; they are not exported" >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lv_format_patch "$tmp"

mkdir -p "$PATCH_DIR"
changed=0
for f in "$PATCH_DIR"/*.patch; do
    [ -e "$f" ] || continue
    if [ ! -e "$tmp/$(basename "$f")" ]; then
        rm -f "$f"; changed=$((changed + 1)); echo "removed $(basename "$f")"
    fi
done
for f in "$tmp"/*.patch; do
    [ -e "$f" ] || continue
    dst=$PATCH_DIR/$(basename "$f")
    if ! cmp -s "$f" "$dst"; then
        cp "$f" "$dst"; changed=$((changed + 1)); echo "wrote $(basename "$f")"
    fi
done
n=$(find "$PATCH_DIR" -maxdepth 1 -name '*.patch' | wc -l)
echo "series: $n patches, $changed files changed"
# The tree now matches patches/.
[ -n "${LVT_PATCH_DIR:-}" ] || echo "$(lv_series_hash) $(git rev-parse HEAD)" > "$BUILD_DIR/.tree-stamp"
