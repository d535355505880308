#!/bin/bash
# Build the lab guest: the Debian cloud kernel taken out of its .deb (nothing
# is installed on the machine) and a busybox-static initramfs running the
# workload.  Output: build/guest/{vmlinuz,initrd.img}.  Idempotent.
set -euo pipefail
. "$(dirname "$0")/../../scripts/common.sh"

G=$TOP/lab/guest
OUT=$BUILD_DIR/guest
mkdir -p "$OUT" "$CACHE_DIR/kernel"

stamp_in=$(cat "$G/workload.c" "$G/init" "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$stamp_in" ]; then
    exit 0
fi

# Kernel: resolve the current cloud kernel package and cache its .deb.
deb=$(ls "$CACHE_DIR"/kernel/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    [ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 (run 'apt-get update')"
    (cd "$CACHE_DIR/kernel" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
        die "downloading $pkg failed (Debian mirror unreachable?)"
    deb=$(ls "$CACHE_DIR"/kernel/linux-image-*-cloud-amd64_*.deb | head -1)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/drivers/block/virtio_blk.ko'
cp "$tmp"/boot/vmlinuz-* "$OUT/vmlinuz"

# initramfs
root=$tmp/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,lib/modules,tmp}
cp /bin/busybox "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"
done
find "$tmp/lib/modules" -name '*.ko' -exec cp {} "$root/lib/modules/" \;
gcc -O2 -Wall -Wextra -Werror -static -pthread -o "$root/bin/workload" "$G/workload.c"
install -m 0755 "$G/init" "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initrd.img"
echo "$stamp_in" > "$OUT/.stamp"
echo "guest: $OUT/vmlinuz $OUT/initrd.img ($(basename "$deb"))"
