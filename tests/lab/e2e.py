#!/usr/bin/python3
"""End-to-end migration tests on the two-host lab.

Every case boots a real guest on host A, migrates it to host B, and checks
the guest itself: it runs on B and keeps making progress, its in-guest
memory and disk verifiers report no errors, and its disks on B are
byte-identical to what it wrote.  Expected-failure cases assert today's
exact refusal and that nothing was lost (the guest still runs on A, nothing
is left on B).

    e2e.py [-k SUBSTRING] [--heavy | --all] [--list]

By default the runner leaves out the heavy cases (long variants of fault
cases it runs: `make check`); --heavy runs only those (`make
check-faults`), --all both.  -k picks from every case, including those
that only -k runs (the trixie host's: `make check-trixie`).

LAB_BREAK=disk flips a byte of the migrated disk before it is verified, and
LAB_BREAK=mem makes the guest flip a memory bit: either must make the cases
that check them fail (proof that the checks can fail).

Output ends with "N passed, N failed".
"""
import argparse
import os
import re
import shutil
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labpy import LAB, Failure, Host, SHARED, TOP, run  # noqa: E402
from e2e_common import CASES, build_helpers  # noqa: E402
# importing a module registers its cases, in the order they run
import cases_precopy, cases_postcopy, cases_storage, cases_rpc  # noqa: E402
import cases_faults, cases_peers, cases_nova, cases_packages  # noqa: E402
import cases_parallel, cases_load  # noqa: E402

CASE_MODULES = (cases_precopy, cases_postcopy, cases_storage, cases_rpc, cases_faults,
                cases_peers, cases_nova, cases_packages, cases_parallel, cases_load)


# ---------------------------------------------------------------- runner

# Host kinds that are Debian systems with the packages: bookworm's (this
# machine's root) and trixie's (a Debian 13 root).
PACKAGED = {"packaged": True, "packaged-trixie": "trixie"}


class Lab:
    """Keeps hosts A and B running while consecutive cases share a setup."""

    def __init__(self):
        self.key = None
        self.a = self.b = None

    def hosts(self, ka, kb, env=()):
        if self.key != (ka, kb, env):
            self.stop()
            self.a = Host("a", 1, stock=ka.startswith("stock"), split=ka.endswith("+split"),
                          packaged=PACKAGED.get(ka, False), env=dict(env))
            self.b = Host("b", 2, stock=kb.startswith("stock"), split=kb.endswith("+split"),
                          packaged=PACKAGED.get(kb, False), env=dict(env))
            self.a.start()
            self.b.start()
            self.key = (ka, kb, env)
        return self.a, self.b

    def cleanup(self):
        """Remove every guest and file a case left; then check nothing remains."""
        leftovers = []
        for h in (self.a, self.b):
            if h is None:
                continue
            p = h.virsh("list", "--all", "--name", check_rc=False)
            for dom in p.stdout.split():
                h.virsh("destroy", dom, check_rc=False)
                h.virsh("undefine", dom, "--nvram", check_rc=False)
            if h.qemu_pids():
                leftovers.append("QEMU still running on %s" % h.name)
            for f in os.listdir(h.private):
                os.unlink(os.path.join(h.private, f))
        for f in os.listdir(SHARED):
            os.unlink(os.path.join(SHARED, f))
        return leftovers

    def stop(self):
        for h in (self.a, self.b):
            if h:
                h.stop()
        self.key = None

    def save_logs(self, name):
        """Keep the daemons' and QEMU's logs of a failed case, before its
        hosts are stopped; returns where they are."""
        dest = os.path.join(FAILED, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80])
        for h in (self.a, self.b):
            src = os.path.join(h.dir, "var", "log") if h else None
            if src and os.path.isdir(src):
                shutil.copytree(src, os.path.join(dest, h.name), dirs_exist_ok=True)
        return dest


FAILED = os.path.join(LAB, "failed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="run cases whose name contains this")
    ap.add_argument("--skip", action="append", default=[], metavar="SUBSTR",
                    help="leave out cases whose name contains this (repeatable)")
    ap.add_argument("--list", action="store_true")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--heavy", action="store_true", help="only the heavy fault cases")
    which.add_argument("--all", action="store_true", help="every case")
    opts = ap.parse_args()
    if opts.k:
        cases = [c for c in CASES if opts.k in c["name"]]
    elif opts.all:
        cases = [c for c in CASES if not c["optin"]]
    else:
        cases = [c for c in CASES if c["heavy"] == opts.heavy and not c["optin"]]
    cases = [c for c in cases if not any(k in c["name"] for k in opts.skip)]
    if opts.list:
        for c in cases:
            print(c["name"] + ("  [expected failure]" if c["xfail"] else "") +
                  ("  [heavy]" if c["heavy"] else ""))
        return 0

    build_helpers()
    # A previous run killed hard may have left hosts behind.
    run([os.path.join(TOP, "lab", "lab.sh"), "stop-all"], check_rc=False)
    lab = Lab()
    shutil.rmtree(FAILED, ignore_errors=True)
    passed, failed, xfailed = [], [], []
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    try:
        for c in cases:
            tag = " [expected failure: today's refusal]" if c["xfail"] else ""
            print("--- %s%s" % (c["name"], tag), flush=True)
            t0 = time.monotonic()
            err = None
            try:
                a, b = lab.hosts(c["a"], c["b"], c["env"])
                c["fn"](a, b)
            except Failure as e:
                err = str(e)
            except Exception:
                err = traceback.format_exc()
            finally:
                try:
                    left = lab.cleanup()
                except Exception as e:
                    left = ["cleanup failed: %s" % e]
                    lab.stop()
            if not err and left:
                err = "; ".join(left)
            dt = time.monotonic() - t0
            if err:
                print("FAIL  %s (%.0fs): %s" % (c["name"], dt, err), flush=True)
                try:
                    where = lab.save_logs(c["name"])
                except OSError as e:
                    where = "not kept: %s" % e
                failed.append((c["name"], where))
                # A failed case may leave a host in a bad state: start afresh.
                lab.stop()
            elif c["xfail"]:
                print("XFAIL %s (%.0fs): refused as today" % (c["name"], dt), flush=True)
                xfailed.append(c["name"])
            else:
                print("PASS  %s (%.0fs)" % (c["name"], dt), flush=True)
                passed.append(c["name"])
    finally:
        lab.stop()

    print()
    print("lab: %d passed, %d expected failures (today's refusals asserted), %d failed"
          % (len(passed), len(xfailed), len(failed)))
    for n, where in failed:
        print("  failed: %s\n    logs: %s" % (n, where))
    print("%d passed, %d failed" % (len(passed) + len(xfailed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
