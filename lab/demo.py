#!/usr/bin/python3
"""make demo: the headline migration between two lab hosts, verified.

Starts hosts A and B, boots a guest with a local disk on A that keeps
writing memory and disk, runs

    virsh migrate --live --p2p --tunnelled --postcopy --copy-storage-all --verbose

and checks the guest on B the way the tests do.  Where the series does not
support the command yet, the demo shows the refusal and proves the guest is
unharmed on A: that is the mission's gap, stated honestly.  It then shows
what already works: a busy guest moved with tunnelled post-copy.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lab"))
import e2e  # noqa: E402
from labpy import Failure  # noqa: E402

FLAGS = ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"]


def main():
    e2e.build_helpers()
    lab = e2e.Lab()
    rc = 1
    try:
        print("== starting hosts A (127.0.0.2) and B (127.0.0.3)")
        a, b = lab.hosts("patched", "patched")
        g = e2e.guest_disks(("vda",))
        e2e.prepare_disks(g, a, b)
        print("== booting guest %r on A: 256 MiB RAM, workload dirtying 64 MiB, "
              "writing its 32 MiB disk" % e2e.GNAME)
        g.start(a)
        print("== migrating: virsh migrate --verbose %s" % " ".join("--" + f for f in FLAGS))
        t0 = time.monotonic()
        mrc, out = e2e.migrate(a, b, FLAGS, switch_postcopy=False)
        dt = time.monotonic() - t0
        print(out.rstrip())
        if mrc != 0:
            refusal = out.strip().splitlines()[-1]
            print("== the migration was refused:")
            print("   " + refusal)
            last = e2e.verify_refused(a, b, g, mrc, out, refusal)
            print("== nothing was lost: the guest still runs on A (workload t=%ds, %d memory "
                  "passes, 0 memory errors, disk seq %d, 0 disk errors), nothing was left on B."
                  % (last["t"], last["gen"], last["disks"]["vda"]["seq"]))
            lab.cleanup()
            # What the series already carries: post-copy through the tunnel.
            pc = ["live", "p2p", "tunnelled", "postcopy"]
            g = e2e.guest_busy()
            print("== booting a busy guest (dirtying 128 MiB at 200 MiB/s) that pre-copy at "
                  "8 MiB/s cannot converge")
            g.start(a)
            print("== migrating: virsh migrate --verbose %s --bandwidth 8, then "
                  "virsh migrate-postcopy" % " ".join("--" + f for f in pc))
            mrc, out = e2e.migrate(a, b, pc, switch_postcopy=True, extra=["--bandwidth", "8"])
            print(out.rstrip())
            if mrc != 0:
                raise Failure("tunnelled post-copy failed: %s" % out.strip())
            src, _ = e2e.verify_migrated(a, b, g, postcopy=True)
            print("== summary")
            print("   Storage cannot go through the tunnel yet (the refusal above, issue 5).")
            print("   Post-copy does: %s of memory moved, %s post-copy page requests served "
                  "through the tunnel; guest running on B with memory verified."
                  % (src.get("Memory processed"), src.get("Postcopy requests")))
            rc = 0
        else:
            src, _ = e2e.verify_migrated(a, b, g, postcopy=False, storage=True)
            print("== summary")
            print("   moved: %s of memory (%s total), %s of disk, in %.1f s (%s downtime)"
                  % (src.get("Memory processed"), src.get("Memory total"),
                     src.get("File processed") or src.get("Disk processed"), dt,
                     src.get("Total downtime")))
            print("   throughput: %s; post-copy page requests served: %s"
                  % (src.get("Memory bandwidth"), src.get("Postcopy requests")))
            print("   guest on B: running, memory verified, disk byte-identical to what it wrote")
            rc = 0
    except Failure as e:
        print("demo: FAILED: %s" % e)
    finally:
        lab.cleanup()
        lab.stop()
        print("== hosts torn down")
    return rc


if __name__ == "__main__":
    sys.exit(main())
