#!/bin/bash
# The series round-trips: exporting the tree built from patches/ gives back
# patches/ byte for byte (stable names, no churn), and the tree's history is
# v11.3.0 plus exactly one commit per patch.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$TOP/scripts/common.sh"
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -d "$SRC_DIR/.git" ]; then
    echo "not ok - no tree in build/libvirt (run make tree)"; exit 1
fi
LVT_PATCH_DIR=$tmp "$TOP/scripts/export-series.sh" >/dev/null
# patches/nova/ is the nova series, not part of the libvirt tree
if diff -r -x nova "$PATCH_DIR" "$tmp" >/dev/null 2>&1 || { [ -z "$(ls "$PATCH_DIR" 2>/dev/null)" ] && [ -z "$(ls "$tmp")" ]; }; then
    echo "ok - export of build/libvirt reproduces patches/ exactly"
else
    echo "not ok - export differs from patches/ (unexported work, or churn):"
    diff -r -x nova "$PATCH_DIR" "$tmp" | head -20
    fails=$((fails + 1))
fi
n_patches=$(find "$PATCH_DIR" -maxdepth 1 -name '*.patch' 2>/dev/null | wc -l)
n_commits=$(git -C "$SRC_DIR" rev-list --count v11.3.0..HEAD)
if [ "$n_patches" = "$n_commits" ]; then
    echo "ok - tree is v11.3.0 + $n_commits commits, one per patch"
else
    echo "not ok - $n_commits commits in the tree but $n_patches patches"
    fails=$((fails + 1))
fi
tag_tree=$(git -C "$SRC_DIR" rev-parse 'v11.3.0^{tree}')
tar_tree=$(cd "$tmp" && mkdir x && tar -xJf "$CACHE_DIR/$LV_TARBALL" -C x --strip-components=1 &&
           cd x && git init -q && git add -A -f -- . ":!$KEYCODEMAPDB" && git write-tree)
if [ "$tag_tree" = "$tar_tree" ] &&
   diff -r "$tmp/x/$KEYCODEMAPDB" "$SRC_DIR/$KEYCODEMAPDB" >/dev/null; then
    echo "ok - v11.3.0 is exactly the verified upstream tarball"
else
    echo "not ok - v11.3.0 differs from $LV_TARBALL"
    fails=$((fails + 1))
fi
# libvirt commit style: "subsystem: Summary" (NEWS commits: "NEWS: Summary"), a body saying why, Signed-off-by.
for p in "$PATCH_DIR"/*.patch; do
    [ -e "$p" ] || continue
    name=$(basename "$p")
    subject=$(sed -n 's/^Subject: \[PATCH\] //p' "$p")
    body=$(awk '/^Subject:/ {s=1; next} s && /^---$/ {exit} s' "$p" | grep -cv '^\s*$')
    if [[ ! $subject =~ ^([a-z0-9_/,.-]+|NEWS)(:\ [a-z0-9_]+)*:\ [A-Za-z] ]]; then
        echo "not ok - $name: subject '$subject' lacks a 'subsystem: ' prefix"; fails=$((fails + 1))
    elif ! grep -q '^Signed-off-by: ' "$p"; then
        echo "not ok - $name: no Signed-off-by"; fails=$((fails + 1))
    elif [ "$body" -lt 4 ]; then
        echo "not ok - $name: the commit message has no real body"; fails=$((fails + 1))
    else
        echo "ok - $name: libvirt commit style"
    fi
done
exit $fails
