#!/bin/bash
# Self-tests of the lab's integrity checks, on the host: the workload's
# verifiers and lab/verify-disk.py must accept good data and catch bad data.
# Prints "ok - ..." / "not ok - ..." lines.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d "$TOP/build/.wltest.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; fails=$((fails + 1)); }

gcc -O2 -Wall -Wextra -Werror -pthread -o "$W/workload" "$TOP/lab/guest/workload.c" || { notok "workload builds"; exit 1; }
ok "workload builds"

# Memory: clean run has no errors; an injected bit flip is caught.
out=$(timeout 3 "$W/workload" -m 8 -r 64 | tail -1)
[[ $out =~ mem_gen=([0-9]+).*mem_err=0 ]] && [ "${BASH_REMATCH[1]}" -ge 2 ] &&
    ok "memory verifier: clean run ($out)" || notok "memory verifier: clean run ($out)"
out=$(timeout 3 "$W/workload" -X -m 8 -r 64 | tail -1)
[[ $out =~ mem_err=[1-9] ]] && ok "memory verifier catches a flipped bit" ||
    notok "memory verifier misses a flipped bit ($out)"

# Disk: the guest's own read-back is clean, and the host-side verifier
# proves the image byte-identical; a flipped byte makes it fail.
truncate -s 2M "$W/vdz"
out=$(timeout 3 "$W/workload" -m 0 -b 256 -w 400 "$W/vdz" | tail -1)
seq=$(sed -n 's/.*disk=vdz:\([0-9]*\):0:256.*/\1/p' <<<"$out")
[ -n "$seq" ] && [ "$seq" -gt 256 ] && ok "disk writer: clean run, wrapped the ring ($out)" ||
    notok "disk writer: clean run ($out)"
python3 "$TOP/lab/verify-disk.py" "$W/vdz" --name vdz --ring 256 --reported "${seq:-0}" >/dev/null &&
    ok "verify-disk accepts the image" || notok "verify-disk rejects a good image"
python3 "$TOP/lab/verify-disk.py" "$W/vdz" --name vdz --ring 256 --reported $(( ${seq:-0} + 1000 )) >/dev/null &&
    notok "verify-disk misses lost writes" || ok "verify-disk catches lost writes"
printf '\xff' | dd of="$W/vdz" bs=1 seek=$((4096 * 5 + 999)) conv=notrunc 2>/dev/null
python3 "$TOP/lab/verify-disk.py" "$W/vdz" --name vdz --ring 256 --reported "${seq:-0}" >/dev/null &&
    notok "verify-disk misses a flipped byte" || ok "verify-disk catches a flipped byte"

exit $fails
