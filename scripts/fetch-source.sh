#!/bin/bash
# Fetch the pristine libvirt 11.3.0 tarball from Debian's bookworm-backports
# source packages, verify it, and cache it outside the clone.
#
# Uses a private apt state with a single deb-src entry, so the machine's own
# apt configuration is neither read for sources nor modified.
set -euo pipefail
. "$(dirname "$0")/common.sh"

out=$CACHE_DIR/$LV_TARBALL
check() { echo "$LV_SHA256  $1" | sha256sum -c --status; }

if [ -f "$out" ] && check "$out"; then
    echo "$out"
    exit 0
fi
[ -f "$out" ] && { echo "warning: cached $out has a bad checksum, fetching again" >&2; rm -f "$out"; }

mkdir -p "$CACHE_DIR" || die "cannot create cache directory $CACHE_DIR"
apt_dir=$CACHE_DIR/apt
mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,dl}
echo 'deb-src http://deb.debian.org/debian bookworm-backports main' > "$apt_dir/sources.list"
apt_opts=(
    -o Dir::Etc::SourceList="$apt_dir/sources.list"
    -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists="$apt_dir/lists"
    -o Dir::Cache="$apt_dir/cache"
    -o Dir::State::status=/dev/null
    -o APT::Sandbox::User=root
    -q
)

need_kb=$((40 * 1024))
free_kb=$(df -Pk "$CACHE_DIR" | awk 'NR==2 {print $4}')
if [ "${free_kb:-0}" -lt $need_kb ]; then
    die "disk full: only ${free_kb} KiB free in $CACHE_DIR, need 40 MiB. Free some space or set LVT_CACHE_DIR."
fi

if ! apt-get "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1 ||
   grep -qE '^(E|Err):' "$apt_dir/update.log"; then
    cat "$apt_dir/update.log" >&2
    die "cannot reach the Debian mirror (deb.debian.org bookworm-backports deb-src). Check the network/proxy, then retry."
fi

cd "$apt_dir/dl"
rm -f ./*.tar.xz
ver=$(apt-cache "${apt_opts[@]}" showsrc libvirt | awk '/^Version: 11\.3\.0-/ {print $2; exit}')
[ -n "$ver" ] || die "bookworm-backports no longer offers libvirt 11.3.0 source; put $LV_TARBALL (sha256 $LV_SHA256) into $CACHE_DIR by hand"
if ! apt-get "${apt_opts[@]}" source --download-only --tar-only "libvirt=$ver" >"$apt_dir/source.log" 2>&1; then
    cat "$apt_dir/source.log" >&2
    if grep -qi 'space' "$apt_dir/source.log"; then
        die "disk full while downloading into $apt_dir/dl"
    fi
    die "downloading libvirt $ver source from the Debian mirror failed (see above)"
fi
[ -f "$LV_TARBALL" ] || die "apt-get source did not produce $LV_TARBALL"
if ! check "$LV_TARBALL"; then
    actual=$(sha256sum "$LV_TARBALL" | cut -d' ' -f1)
    rm -f "$LV_TARBALL"
    die "checksum mismatch for $LV_TARBALL: got $actual, expected $LV_SHA256. The mirror served something else; do not use it."
fi
mv "$LV_TARBALL" "$out"
echo "$out"
