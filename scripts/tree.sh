#!/bin/bash
# Create build/libvirt: a git repository holding pristine libvirt 11.3.0
# (tagged v11.3.0) with patches/*.patch applied by git am.
#
# Re-running is cheap: if the tree already carries exactly the series in
# patches/, nothing happens.  If patches/ changed and the tree holds no work
# of its own, the series is re-applied.  Unexported commits or uncommitted
# changes are never thrown away: export them first (make series), or set
# FORCE=1.
set -euo pipefail
. "$(dirname "$0")/common.sh"

lv_git_identity
PRISTINE_DATE="2025-05-01T00:00:00Z"
stamp=$BUILD_DIR/.tree-stamp     # "<series hash> <HEAD after apply>"

apply_series() {
    cd "$SRC_DIR"
    git am --abort >/dev/null 2>&1 || true
    git checkout -q -B main v11.3.0
    git clean -qfd      # not -x: keeps the ignored keycodemapdb submodule copy
    local n=0
    for p in "$PATCH_DIR"/*.patch; do
        [ -e "$p" ] || continue
        lv_am "$p"
        n=$((n + 1))
    done
    echo "$(lv_series_hash) $(git rev-parse HEAD)" > "$stamp"
    msg "tree: build/libvirt at v11.3.0 + $n patches"
}

if [ ! -d "$SRC_DIR/.git" ]; then
    tarball=$("$TOP/scripts/fetch-source.sh")
    msg "tree: extracting $(basename "$tarball")"
    rm -rf "$SRC_DIR" "$stamp"
    mkdir -p "$SRC_DIR"
    tar -xJf "$tarball" -C "$SRC_DIR" --strip-components=1
    cd "$SRC_DIR"
    git init -q -b main
    git config core.autocrlf false
    git config user.name "$GIT_AUTHOR_NAME"
    git config user.email "$GIT_AUTHOR_EMAIL"
    # Upstream keeps subprojects/keycodemapdb as a git submodule, so libvirt's
    # syntax-check (which lists files with git ls-tree) never sees it.  Keep
    # it out of the index the same way: present, ignored, untracked.
    echo "/$KEYCODEMAPDB/" >> .git/info/exclude
    git add -A -f -- . ":!$KEYCODEMAPDB"
    GIT_AUTHOR_DATE=$PRISTINE_DATE GIT_COMMITTER_DATE=$PRISTINE_DATE \
        git commit -q -m "libvirt $LV_VERSION (pristine, from $LV_TARBALL)"
    git tag v11.3.0
    apply_series
    exit 0
fi

cd "$SRC_DIR"
want=$(lv_series_hash)
read -r have_series have_head < "$stamp" 2>/dev/null || { have_series=; have_head=; }
head=$(git rev-parse HEAD)

if [ "$want" = "$have_series" ] && [ "$head" = "$have_head" ]; then
    msg "tree: build/libvirt is up to date with patches/"
    exit 0
fi
if [ "${FORCE:-0}" != 1 ]; then
    if [ -n "$(git status --porcelain)" ]; then
        die "build/libvirt has uncommitted changes; commit them, or set FORCE=1 to discard"
    fi
    if [ "$head" != "$have_head" ]; then
        # The developer committed in the tree. Fine if patches/ was exported from it.
        tmp=$(mktemp -d)
        lv_format_patch "$tmp"
        if [ "$(lv_series_hash "$tmp")" = "$want" ]; then
            rm -rf "$tmp"
            echo "$want $head" > "$stamp"
            msg "tree: build/libvirt matches patches/"
            exit 0
        fi
        rm -rf "$tmp"
        die "build/libvirt has commits not exported to patches/ (run 'make series'), or patches/ changed under it; set FORCE=1 to re-apply patches/ and lose them"
    fi
fi
apply_series
