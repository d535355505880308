#!/usr/bin/python3
"""Prove a lab disk image holds exactly what the guest workload wrote.

The workload (lab/guest/workload.c) writes sequence number s to block
s % N of a ring of N blocks, each block's content being a pure function of
(disk name, s, N).  Given the image (raw, or anything qemu-img can convert)
and the last sequence count the guest reported, this recomputes every block:

  - Smax, the highest sequence found, must be >= the reported count - 1
    (nothing the guest saw complete is missing);
  - block i must hold exactly the latest s <= Smax with s % N == i, or be
    all zero if no such s exists;
  - with --base-pattern, the blocks after the ring must still hold the
    backing image's pattern (proves a backing chain was honoured).

Exit status 0 when the image is byte-identical to the expectation.
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile
import zlib

BLK = 4096
DISK_MAGIC = 0x4B53444C
M64 = (1 << 64) - 1


def mix(x):
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    x ^= x >> 33
    return x


def name_hash(name):
    h = 1469598103934665603
    for ch in name.encode():
        h = ((h ^ ch) * 1099511628211) & M64
    return h


HDR = struct.Struct("<IIQQ16s")  # magic, crc, seq, blk, name
WORDS = (BLK - HDR.size) // 8
GOLDEN = [(i * 0x9E3779B97F4A7C15) & M64 for i in range(HDR.size // 8, BLK // 8)]


def block(name, seq, nblocks):
    seed = mix(name_hash(name) ^ ((seq * 0x100000001B3) & M64))
    payload = struct.pack("<%dQ" % WORDS, *[seed ^ g for g in GOLDEN])
    hdr0 = HDR.pack(DISK_MAGIC, 0, seq, seq % nblocks, name.encode()[:15])
    crc = zlib.crc32(hdr0 + payload) & 0xFFFFFFFF
    return HDR.pack(DISK_MAGIC, crc, seq, seq % nblocks, name.encode()[:15]) + payload


def base_block(i):
    """Pattern the lab writes into backing images after the ring."""
    return (b"BASE%08d" % i).ljust(64, b".") * (BLK // 64)


def raw_view(path):
    fmt = subprocess.run(["qemu-img", "info", "-U", "--output=json", path],
                         check=True, capture_output=True, text=True).stdout
    if '"format": "raw"' in fmt:
        return path, None
    tmp = tempfile.NamedTemporaryFile(suffix=".raw", delete=False)
    tmp.close()
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", path, tmp.name], check=True)
    return tmp.name, tmp.name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--name", required=True, help="guest device name, e.g. vdb")
    ap.add_argument("--ring", type=int, required=True, help="ring size in blocks")
    ap.add_argument("--reported", type=int, required=True,
                    help="last sequence count the guest reported")
    ap.add_argument("--base-pattern", type=int, default=0,
                    help="number of backing-pattern blocks after the ring")
    a = ap.parse_args()

    raw, tmp = raw_view(a.image)
    errors = []
    try:
        with open(raw, "rb") as f:
            ring = [f.read(BLK) for _ in range(a.ring)]
            base = [f.read(BLK) for _ in range(a.base_pattern)]
    finally:
        if tmp:
            os.unlink(tmp)

    smax = -1
    for i, b in enumerate(ring):
        if len(b) == BLK and b[:4] == struct.pack("<I", DISK_MAGIC):
            seq = HDR.unpack_from(b)[2]
            if seq % a.ring == i:
                smax = max(smax, seq)
    if smax < a.reported - 1:
        errors.append("highest sequence on disk is %d but the guest reported %d blocks done"
                      % (smax, a.reported))
    for i, b in enumerate(ring):
        if i > smax:
            want = bytes(BLK)
        else:
            want = block(a.name, smax - ((smax - i) % a.ring), a.ring)
        if b != want:
            errors.append("block %d differs from what the guest wrote" % i)
    for j, b in enumerate(base):
        if b != base_block(a.ring + j):
            errors.append("backing block %d lost" % (a.ring + j))
    for e in errors[:10]:
        print("verify-disk: %s: %s" % (a.image, e))
    if errors:
        print("verify-disk: %s: FAIL (%d bad blocks)" % (a.image, len(errors)))
        return 1
    print("verify-disk: %s: OK (%d blocks, last seq %d, reported %d)"
          % (a.image, a.ring + a.base_pattern, smax, a.reported))
    return 0


if __name__ == "__main__":
    sys.exit(main())
