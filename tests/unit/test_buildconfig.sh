#!/bin/bash
# libvirt's test suite must really contain the checks that vanish silently
# when a tool is missing (dwarves, augeas-tools, pytest, the en_US locale),
# and the build must have the drivers the mission needs.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$TOP/scripts/common.sh"
fails=0
list=$(LC_ALL=C meson test -C "$OBJ_DIR" --list 2>/dev/null)
for t in check-remote_protocol check-augeas-libvirtd check-augeas-libvirtd_qemu \
         rpcgen-pytest vshtabletest qemumigrationcookiexmltest; do
    if grep -q " / $t\$" <<<"$list"; then
        echo "ok - libvirt test suite includes $t"
    else
        echo "not ok - libvirt test suite lacks $t (missing build dependency? run make deps)"
        fails=$((fails + 1))
    fi
done
for d in libvirtd virtqemud virtproxyd virtlogd; do
    if [ -x "$PREFIX/sbin/$d" ]; then
        echo "ok - $d is built"
    else
        echo "not ok - $d is not built"
        fails=$((fails + 1))
    fi
done
if grep -q "runstatedir.*$PREFIX/var/run" "$OBJ_DIR/meson-info/intro-buildoptions.json" 2>/dev/null ||
   python3 -c "
import json,sys
o={x['name']:x['value'] for x in json.load(open('$OBJ_DIR/meson-info/intro-buildoptions.json'))}
sys.exit(0 if o['runstatedir'].startswith('$PREFIX') else 1)"; then
    echo "ok - runstatedir is under the prefix (the machine's /run/libvirt is untouched)"
else
    echo "not ok - runstatedir is outside $PREFIX"
    fails=$((fails + 1))
fi
exit $fails
