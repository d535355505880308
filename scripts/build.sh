#!/bin/bash
# Configure (once), build and install a libvirt tree.
#   build.sh            the patched tree  build/libvirt -> build/obj -> build/install
#   build.sh --stock    pristine v11.3.0  build/libvirt-stock -> build/obj-stock -> build/install-stock
#   build.sh --asan     the patched tree with AddressSanitizer and UBSan
#                       build/libvirt -> build/obj-asan -> build/install-asan
#   build.sh --no-install   build only (used by check-series)
set -euo pipefail
. "$(dirname "$0")/common.sh"

src=$SRC_DIR obj=$OBJ_DIR prefix=$PREFIX install=1 asan=0
for a in "$@"; do
    case $a in
    --stock) src=$STOCK_SRC_DIR obj=$STOCK_OBJ_DIR prefix=$STOCK_PREFIX ;;
    --asan) obj=$ASAN_OBJ_DIR prefix=$ASAN_PREFIX asan=1 ;;
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
if [ "$src" = "$STOCK_SRC_DIR" ]; then
    # The lab's stock peer needs only the daemons and clients: nothing runs
    # pristine libvirt's own tests (a third of what a cold build compiles)
    # or debugs it.
    MESON_OPTS=("${MESON_OPTS[@]/-Dtests=enabled/-Dtests=disabled}")
    MESON_OPTS=("${MESON_OPTS[@]/-Dexpensive_tests=enabled/-Dexpensive_tests=disabled}")
    MESON_OPTS=("${MESON_OPTS[@]/-Dbuildtype=debugoptimized/-Doptimization=2}")
    MESON_OPTS+=(-Ddebug=false)
fi
if [ $asan = 1 ]; then
    # The daemons, their driver modules and the client library, instrumented;
    # libvirt's own tests are not needed there.  -Db_lundef=false: the
    # modules resolve the sanitizer runtime through the daemon.
    MESON_OPTS=("${MESON_OPTS[@]/-Dtests=enabled/-Dtests=disabled}")
    MESON_OPTS=("${MESON_OPTS[@]/-Dexpensive_tests=enabled/-Dexpensive_tests=disabled}")
    MESON_OPTS+=(-Db_sanitize=address,undefined -Db_lundef=false)
fi
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
