#!/bin/bash
# Configure (once), build and install a libvirt tree.
#   build.sh            the patched tree  build/libvirt -> build/obj -> build/install
#   build.sh --stock    pristine v11.3.0  build/libvirt-stock -> build/obj-stock -> build/install-stock
#   build.sh --no-install   build only (used by check-series)
set -euo pipefail
. "$(dirname "$0")/common.sh"

src=$SRC_DIR obj=$OBJ_DIR prefix=$PREFIX install=1
for a in "$@"; do
    case $a in
    --stock) src=$STOCK_SRC_DIR obj=$STOCK_OBJ_DIR prefix=$STOCK_PREFIX ;;
    --no-install) install=0 ;;
    *) die "unknown option $a" ;;
    esac
done

if [ "$src" = "$STOCK_SRC_DIR" ] && [ ! -d "$src/.git" ] && [ ! -f "$src/.git" ]; then
    [ -d "$SRC_DIR/.git" ] || "$TOP/scripts/tree.sh"
    lv_worktree "$src" v11.3.0
fi
[ -f "$src/meson.build" ] || die "no tree at $src; run 'make tree'"

lv_meson_opts "$prefix"
if [ ! -f "$obj/build.ninja" ]; then
    msg "configure $(basename "$obj")"
    meson setup "$obj" "$src" "${MESON_OPTS[@]}" > "$obj.configure.log" 2>&1 || {
        tail -30 "$obj.configure.log" >&2; die "meson setup failed (full log: $obj.configure.log)"; }
fi
msg "build $(basename "$obj")"
lv_ninja "$obj" "$(basename "$obj")"
if [ $install = 1 ]; then
    msg "install into $prefix"
    meson install -C "$obj" --quiet > "$obj.install.log" 2>&1 || {
        tail -20 "$obj.install.log" >&2; die "install failed"; }
fi
