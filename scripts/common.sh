# Shared settings for the workspace scripts.  Source, don't run.
# shellcheck shell=bash

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LV_VERSION=11.3.0
LV_TARBALL=libvirt_${LV_VERSION}.orig.tar.xz
LV_SHA256=6bcb0c42c4580436fea262ced56f68a6afe20f7390b1bea2116718cc034a0283

# Outside the clone, so clean clones reuse the download and the compiler cache.
CACHE_DIR=${LVT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/libvirt-tunnel}

BUILD_DIR=$TOP/build
SRC_DIR=$BUILD_DIR/libvirt          # patched git tree
OBJ_DIR=$BUILD_DIR/obj              # its meson build directory
PREFIX=${LVT_PREFIX:-$BUILD_DIR/install}

STOCK_SRC_DIR=$BUILD_DIR/libvirt-stock   # pristine v11.3.0 worktree
STOCK_OBJ_DIR=$BUILD_DIR/obj-stock
STOCK_PREFIX=$BUILD_DIR/install-stock

ASAN_OBJ_DIR=$BUILD_DIR/obj-asan         # the patched tree, sanitized
ASAN_PREFIX=$BUILD_DIR/install-asan

# A git submodule upstream; untracked in our trees (see tree.sh).
KEYCODEMAPDB=subprojects/keycodemapdb

# Add a detached worktree of build/libvirt at REV, with the submodule copy.
lv_worktree() {  # lv_worktree DIR REV
    git -C "$SRC_DIR" worktree prune
    git -C "$SRC_DIR" worktree add -q --detach "$1" "$2"
    rm -rf "${1:?}/$KEYCODEMAPDB"
    mkdir -p "$(dirname "$1/$KEYCODEMAPDB")"
    cp -a "$SRC_DIR/$KEYCODEMAPDB" "$1/$KEYCODEMAPDB"
}

# Export build/libvirt's commits since v11.3.0 into DIR, byte-stable:
# no commit ids, no numbering (adding a patch must not rewrite the others).
lv_format_patch() {  # lv_format_patch DIR
    git -C "$SRC_DIR" format-patch -q -N --zero-commit --no-signature --abbrev=12 \
        -o "$1" v11.3.0..HEAD
}

PATCH_DIR=${LVT_PATCH_DIR:-$TOP/patches}

# Fixed identity (and --committer-date-is-author-date) make the pristine
# commit and every applied patch reproducible: re-applying gives the same ids.
lv_git_identity() {
    export GIT_AUTHOR_NAME="libvirt-tunnel workspace" GIT_AUTHOR_EMAIL="workspace@localhost"
    export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
}

# Apply one patch in the current tree, or abort and stop naming it.
lv_am() {  # lv_am PATCH
    if ! git am -q --committer-date-is-author-date "$1"; then
        git am --abort >/dev/null 2>&1 || true
        die "patch $(basename "$1") does not apply; fix it in build/libvirt and re-export"
    fi
}

# Identity of a series: the hash of its patch files, in order.
lv_series_hash() {  # lv_series_hash [DIR]
    cat "${1:-$PATCH_DIR}"/*.patch 2>/dev/null | sha256sum | cut -d' ' -f1
}

# Build a configured tree; any error or compiler warning stops with LABEL.
# LV_RUN names a command that runs ninja elsewhere (deb.sh: a build root).
lv_ninja() {  # lv_ninja OBJ LABEL
    ${LV_RUN:-command} ninja -C "$1" > "$1.build.log" 2>&1 || {
        grep -E 'error|FAILED' "$1.build.log" | head -40 >&2
        die "$2: build failed (full log: $1.build.log)"; }
    if grep -qE ':[0-9]+: warning: ' "$1.build.log"; then
        grep -E ':[0-9]+: warning: ' "$1.build.log" | head -20 >&2
        die "$2: compiler warnings (see $1.build.log)"
    fi
}

export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
export CCACHE_BASEDIR=$TOP
export CCACHE_NOHASHDIR=1
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-time_macros,include_file_mtime,include_file_ctime}

msg() { echo "==> $*"; }
die() { echo "error: $*" >&2; exit 1; }

# meson options for every libvirt build: what the mission needs, nothing more.
# Sets the array MESON_OPTS for install prefix $1.
lv_meson_opts() {
    local prefix=$1
    MESON_OPTS=(
        --prefix="$prefix"
        --native-file="$TOP/scripts/meson-native.ini"
        -Dbuildtype=debugoptimized
        -Dauto_features=disabled
        -Dsystem=false
        -Drunstatedir="$prefix/var/run"   # not the machine's /run/libvirt
        -Dinit_script=none
        -Dtests=enabled -Dexpensive_tests=enabled
        -Ddocs=disabled
        -Dgit_werror=disabled             # warnings are caught by build.sh instead
        -Ddriver_qemu=enabled -Dqemu_user=root -Dqemu_group=root
        -Ddriver_remote=enabled -Ddriver_libvirtd=enabled
        -Ddriver_test=enabled -Ddriver_secrets=enabled
        -Dstorage_dir=enabled -Dstorage_fs=enabled
        -Djson_c=enabled -Dreadline=enabled -Dcapng=enabled
        -Dlibnl=enabled                   # 11.3.0 does not compile on Linux without it
    )
}
