#!/usr/bin/python3
"""End-to-end migration tests on the two-host lab.

Every case boots a real guest on host A, migrates it to host B, and checks
the guest itself: it runs on B and keeps making progress, its in-guest
memory and disk verifiers report no errors, and its disks on B are
byte-identical to what it wrote.  Expected-failure cases assert today's
exact refusal and that nothing was lost (the guest still runs on A, nothing
is left on B).

    e2e.py [-k SUBSTRING] [--list]

LAB_BREAK=disk flips a byte of the migrated disk before it is verified, and
LAB_BREAK=mem makes the guest flip a memory bit: either must make the cases
that check them fail (proof that the checks can fail).

Output ends with "N passed, N failed".
"""
import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labpy import (Failure, Guest, Host, LAB, PREFIX, PRIVATE, SHARED, TOP, VIRSH, check,  # noqa: E402
                   LinkProxy, SlowNbdDisk, jobinfo, log, make_disk, parse_console, run, verify_disk, wait_for)

MIGRATE_API = os.path.join(LAB, "migrate-api")
OPEN_TUNNEL = os.path.join(LAB, "open-tunnel")
GNAME = "lab-guest"

# Today's refusals (libvirt 11.3.0).  Later issues flip these cases to passing.
REFUSE_POSTCOPY = "post-copy is not supported with tunnelled migration"
REFUSE_POSTCOPY_DEST = "destination libvirt does not support post-copy with tunnelled migration"
REFUSE_STORAGE = ("migration of non-shared storage is not supported with tunnelled "
                  "migration and this QEMU")
# Refusals added by the series.
REFUSE_STORAGE_DEST = "destination libvirt does not support tunnelled storage migration"
REFUSE_TUNNEL_TLS = ("TLS migration is not supported with tunnelled migration, the tunnel "
                     "is protected by the libvirt connection (use a qemu+tls:// destination URI)")

CASES = []


def case(name, a="patched", b="patched", xfail=None):
    """Register a test.  a/b: 'patched', 'stock', optionally '+split'."""
    def deco(fn):
        CASES.append({"name": name, "fn": fn, "a": a, "b": b, "xfail": xfail})
        return fn
    return deco


def build_helpers():
    os.makedirs(LAB, exist_ok=True)
    header = os.path.join(TOP, "tests", "lab", "lab-client.h")
    for exe in (MIGRATE_API, OPEN_TUNNEL):
        src = os.path.join(TOP, "tests", "lab", os.path.basename(exe) + ".c")
        if not os.path.exists(exe) or max(os.path.getmtime(src), os.path.getmtime(header)) \
                > os.path.getmtime(exe):
            libdir = os.path.join(PREFIX, "lib", "x86_64-linux-gnu")
            run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-I" + os.path.join(PREFIX, "include"),
                 "-o", exe, src, "-L" + libdir, "-Wl,-rpath," + libdir, "-lvirt"])


# ---------------------------------------------------------------- migration

def migrate(a, b, flags, transport="tcp", api=False, switch_postcopy=False,
            extra=(), timeout=300, dest=None, during=None, during_mirror=False):
    """Migrate GNAME from a to b.  Returns (rc, output).  during(proc) runs
    once precopy is moving (after the post-copy switch if one was asked),
    or with during_mirror as soon as the job runs (storage is copied first)."""
    dest = dest or b.uri(transport)
    if api:
        args = [MIGRATE_API, a.client_uri(), GNAME, dest]
        for f in flags:
            args += ["--flag", f]
        args += list(extra)
    else:
        args = [VIRSH, "-c", a.client_uri(), "migrate", "--verbose"]
        args += ["--" + f for f in flags] + list(extra) + [GNAME, dest]
    log("$ " + " ".join(os.path.basename(x) if x in (VIRSH, MIGRATE_API) else x for x in args))
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if switch_postcopy or during:
        # Wait until precopy is moving, then switch, as an operator would.
        def running():
            if proc.poll() is not None:
                return True
            info = jobinfo(a, GNAME, completed=False)
            return (info.get("Job type") == "Unbounded" and
                    (during_mirror or float(info.get("Memory processed", "0 B").split()[0]) > 0))
        wait_for("precopy to start", running, 120)
        if switch_postcopy and proc.poll() is None:
            p = a.virsh("migrate-postcopy", GNAME, check_rc=False)
            log("$ virsh migrate-postcopy %s -> rc %d %s" % (GNAME, p.returncode, p.stderr.strip()))
        if during and proc.poll() is None:
            during(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise Failure("migration did not finish within %ds" % timeout)
    log("migration rc=%d in %.1fs: %s" % (proc.returncode, time.monotonic() - t0,
                                        out.strip().splitlines()[-1] if out.strip() else ""))
    return proc.returncode, out


def verify_migrated(a, b, g, postcopy=False, storage=None):
    """The full set of checks after a successful migration."""
    # Domain state and reason on both hosts.
    sa, sb = a.domstate(GNAME), b.domstate(GNAME)
    log("state: A=%s B=%s" % (sa, sb))
    check(sa == "shut off (migrated)", "source state is %r, expected 'shut off (migrated)'" % sa)
    check(sb in ("running (migrated)", "running (post-copy)"),
          "destination state is %r" % sb)
    check(not a.qemu_pids(), "a QEMU is still running on the source")
    # The guest keeps making progress on B, with no verifier errors.
    stats = g.wait_progress(b, "guest progress on B", timeout=90)
    last = g.check_clean(b)
    log("guest on B: t=%d mem_gen=%d mem_err=%d disks=%s" % (
        last["t"], last["gen"], last["mem_err"],
        {k: (v["seq"], v["err"]) for k, v in last["disks"].items()}))
    check(stats[-1]["gen"] >= 1, "memory workload made no pass on B")
    # Job statistics, from both ends.
    src = jobinfo(a, GNAME)
    dst = jobinfo(b, GNAME)
    check(src.get("Job type") == "Completed", "source job stats: %r" % src.get("Job type"))
    check(src.get("Operation") == "Outgoing migration", "source job operation %r" % src.get("Operation"))
    # The destination keeps incoming stats only for precopy completions.
    check(dst.get("Operation") in (None, "Incoming migration"),
          "destination job operation %r" % dst.get("Operation"))
    mem_total = float(src.get("Memory total", "0 MiB").split()[0])
    mem_done = float(src.get("Memory processed", "0 MiB").split()[0])
    check(mem_total > 200, "source reports memory total %s" % src.get("Memory total"))
    check(mem_done > 10, "source reports memory processed %s" % src.get("Memory processed"))
    check(src.get("Memory remaining", "").startswith("0.000"), "memory remaining %s" % src.get("Memory remaining"))
    log("job: %s processed in %s, downtime %s, postcopy requests %s" % (
        src.get("Data processed"), src.get("Time elapsed"), src.get("Total downtime"),
        src.get("Postcopy requests")))
    if postcopy:
        reqs = int(src.get("Postcopy requests", "0").split()[0])
        check(reqs > 0, "no post-copy page requests were served (did post-copy run?)")
    if storage:
        disk_done = src.get("File processed") or src.get("Disk processed")
        log("storage: %s" % disk_done)
    # Disks on B are byte-identical to what the guest wrote.
    if g.disks:
        b.virsh("suspend", GNAME)
        stats, _ = parse_console(g.console(b))
        last = stats[-1]
        b.virsh("destroy", GNAME)
        if os.environ.get("LAB_BREAK") == "disk":
            # Deliberately break the check: flip one byte of B's first disk.
            img = os.path.join(b.private, os.path.basename(g.disks[0]["path"]))
            with open(img, "r+b") as f:
                f.seek(4096 * 3 + 123)
                c = f.read(1)
                f.seek(4096 * 3 + 123)
                f.write(bytes([c[0] ^ 0xFF]))
            log("LAB_BREAK=disk: flipped one byte of %s" % img)
        for d in g.disks:
            verify_disk(b, d["path"], d["dev"], g.ring, last["disks"][d["dev"]]["seq"],
                        d.get("base_blocks", 0))
    return src, dst


def daemons_now(*hosts):
    """Each host's daemon PIDs, to prove later that none died (check_daemons)."""
    return [(h, h.daemon_pids()) for h in hosts]


def check_daemons(daemons):
    for h, before in daemons:
        check(h.daemon_pids() == before, "a libvirt daemon on %s died or restarted: %s -> %s"
              % (h.name, before, h.daemon_pids()))


def verify_refused(a, b, g, rc, out, message, daemons=None):
    """An expected refusal: exact message, guest untouched on A, nothing on B,
    and (given daemons_now() from before) no daemon died."""
    check(rc != 0, "migration unexpectedly succeeded")
    if daemons:
        check_daemons(daemons)
    check(message in out, "expected refusal %r, got: %s" % (message, out.strip()))
    log("refused as expected: %s" % message)
    check(a.domstate(GNAME) == "running (booted)", "source state %r" % a.domstate(GNAME))
    check(b.domstate(GNAME) is None, "a domain was left on the destination")
    check(not b.qemu_pids(), "a QEMU was left on the destination")
    g.wait_progress(a, "guest progress on A after the refusal", timeout=30)
    return g.check_clean(a)


# ---------------------------------------------------------------- guests

def guest_nodisk():
    return Guest(GNAME)


def guest_busy():
    """Dirties 128 MiB at 200 MiB/s: pre-copy at 8 MiB/s never converges."""
    return Guest(GNAME, wl_mem=128, wl_rate=200)


def guest_disks(devs=("vdb",), fmt="raw", backing=False, shared=(), busy=False):
    """Disks in each host's private directory, except those named in
    @shared, which live on the storage both hosts see."""
    disks = []
    for dev in devs:
        path = os.path.join(SHARED if dev in shared else PRIVATE,
                            "%s-%s.%s" % (GNAME, dev, fmt))
        disks.append({"dev": dev, "path": path, "fmt": fmt, "shared": dev in shared,
                      "backing": backing, "base_blocks": 64 if backing else 0})
    # vda is used by nothing; keep device names stable: first disk is vda.
    for i, d in enumerate(disks):
        d["dev"] = "vd" + chr(ord("a") + i)
    if busy:
        # memory as guest_busy(), so that only post-copy converges
        return Guest(GNAME, disks=disks, ring=1024, wrate=100, wl_mem=128, wl_rate=200)
    return Guest(GNAME, disks=disks, ring=1024, wrate=100)


def prepare_disks(g, a, b, precreate=True, size_mib=None):
    """Create the guest's disks on A (with backing chain if asked) and the
    copy-storage targets on B, as an operator would.  size_mib: {dev: MiB}
    for raw disks bigger than the 32 MiB default."""
    for d in g.disks:
        size = (size_mib or {}).get(d["dev"], 32)
        name = os.path.basename(d["path"])
        src = os.path.join(a.private, name)
        if d["shared"]:
            make_disk(d["path"], d["fmt"], 32)
            continue
        if d["backing"]:
            base = os.path.join(PRIVATE, GNAME + "-%s-base.qcow2" % d["dev"])
            a_base = os.path.join(a.private, os.path.basename(base))
            make_disk(a_base, "qcow2", 32, base_blocks=d["base_blocks"], ring=g.ring)
            shutil.copy(a_base, os.path.join(b.private, os.path.basename(base)))
            make_disk(src, "qcow2", 32, backing=base)
            if precreate:
                make_disk(os.path.join(b.private, name), "qcow2", 32, backing=base)
        else:
            make_disk(src, d["fmt"], size)
            if precreate:
                make_disk(os.path.join(b.private, name), d["fmt"], size)


# ---------------------------------------------------------------- cases

@case("native precopy")
def t_native_precopy(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("native postcopy (migrate-postcopy)")
def t_native_postcopy(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "postcopy"], switch_postcopy=True,
                      extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)


@case("native postcopy (--postcopy-after-precopy)")
def t_native_postcopy_after(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "postcopy", "postcopy-after-precopy"],
                      extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)


@case("native --copy-storage-all (raw)")
def t_native_storage_all(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "copy-storage-all"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("native --copy-storage-inc (qcow2 backing chain)")
def t_native_storage_inc(a, b):
    g = guest_disks(("vda",), fmt="qcow2", backing=True); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "copy-storage-inc"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("native --tls")
def t_native_tls(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tls"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy over qemu+tcp")
def t_tunnel_tcp(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy over qemu+tls")
def t_tunnel_tls(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], transport="tls")
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy via virDomainMigrateToURI3", b="patched+split")
def t_tunnel_api_split(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], api=True)
    check(rc == 0 and "migrate-api: OK" in out, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy patched -> stock", b="stock")
def t_tunnel_to_stock(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy stock -> patched", a="stock")
def t_tunnel_from_stock(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled --tls is refused (was: source daemon crash)")
def t_tunnel_tls_flag(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "tls"])
    verify_refused(a, b, g, rc, out, REFUSE_TUNNEL_TLS, daemons)


@case("tunnelled --tls from a stock source is refused by the destination", a="stock")
def t_tunnel_tls_flag_stock_src(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "tls"])
    verify_refused(a, b, g, rc, out, REFUSE_TUNNEL_TLS, daemons)


@case("tunnelled Prepare failure returns at once (split destination)", b="patched+split")
def t_tunnel_prepare_fail_split(a, b):
    g = guest_nodisk(); g.start(a)
    # A different domain already holds the name we migrate to.
    other = Guest("lab-other")
    xmlpath = os.path.join(LAB, "lab-other.xml")
    with open(xmlpath, "w") as f:
        f.write(other.xml())
    b.virsh("define", xmlpath)
    daemons = daemons_now(a, b)
    # 11.3.0 hangs here forever; the deadline turns a hang into a failure.
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], extra=["--dname", "lab-other"],
                      timeout=60)
    verify_refused(a, b, g, rc, out, "already exists", daemons)
    check(b.domstate("lab-other") == "shut off (unknown)", "B's own domain was disturbed: %r"
          % b.domstate("lab-other"))


def tunnel_postcopy(a, b, switch, transport="tcp", api=False):
    """A busy guest that cannot converge at 8 MiB/s: post-copy must finish it,
    with the destination's page requests served through the tunnel."""
    g = guest_busy(); g.start(a)
    flags = ["live", "p2p", "tunnelled", "postcopy"]
    if switch == "after":
        flags.append("postcopy-after-precopy")
    samples = []

    def watch(proc):
        # domjobinfo stays truthful while the tunnel runs: an outgoing
        # migration job whose processed memory only grows, until it ends.
        for _ in range(600):
            if proc.poll() is not None:
                break
            info = jobinfo(a, GNAME, completed=False)
            if info.get("Job type") == "Unbounded":
                samples.append(mib_of(info))
            time.sleep(0.1)
    rc, out = migrate(a, b, flags, transport=transport, api=api,
                      switch_postcopy=(switch == "command"), extra=["--bandwidth", "8"],
                      during=watch)
    check(rc == 0, "migration failed: %s" % out)
    check(samples and samples == sorted(samples),
          "domjobinfo during the migration went backwards or was empty: %s" % samples)
    log("domjobinfo: %d samples while migrating, %.1f MiB processed at the last"
        % (len(samples), samples[-1]))
    verify_migrated(a, b, g, postcopy=True)


@case("tunnelled postcopy (migrate-postcopy) over qemu+tcp")
def t_tunnel_postcopy(a, b):
    tunnel_postcopy(a, b, "command")


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tcp")
def t_tunnel_postcopy_after(a, b):
    tunnel_postcopy(a, b, "after")


@case("tunnelled postcopy (migrate-postcopy) over qemu+tls")
def t_tunnel_postcopy_tls(a, b):
    tunnel_postcopy(a, b, "command", transport="tls")


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tls")
def t_tunnel_postcopy_after_tls(a, b):
    tunnel_postcopy(a, b, "after", transport="tls")


@case("tunnelled postcopy via virDomainMigrateToURI3, split destination", b="patched+split")
def t_tunnel_postcopy_api_split(a, b):
    tunnel_postcopy(a, b, "command", api=True)


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tls, split destination",
      b="patched+split")
def t_tunnel_postcopy_split(a, b):
    tunnel_postcopy(a, b, "after", transport="tls")


@case("tunnelled --postcopy patched -> stock is refused before anything starts", b="stock")
def t_tunnel_postcopy_to_stock(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy"], extra=["--bandwidth", "8"])
    verify_refused(a, b, g, rc, out, REFUSE_POSTCOPY_DEST)


@case("tunnelled --postcopy stock -> patched is refused by the stock source", a="stock")
def t_tunnel_postcopy_from_stock(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy"], extra=["--bandwidth", "8"])
    verify_refused(a, b, g, rc, out, REFUSE_POSTCOPY)


def mib_of(info, key="Memory processed"):
    """A domjobinfo size such as "12.5 MiB", in MiB."""
    v = info.get(key, "0 B").split()
    return float(v[0]) * {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}.get(v[1], 0)


def mib_processed(a):
    return mib_of(jobinfo(a, GNAME, completed=False))


@case("tunnelled precopy: link cut keeps the guest running on the source")
def t_tunnel_cut_precopy(a, b):
    g = guest_busy(); g.start(a)
    proxy = LinkProxy(b.addr)

    def cut(proc):
        wait_for("16 MiB through the tunnel", lambda: proc.poll() is not None
                 or mib_processed(a) > 16, 60)
        log("cutting the link after %d bytes" % proxy.bytes)
        proxy.cut()
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], dest=proxy.uri(), during=cut,
                      extra=["--bandwidth", "8"], timeout=120)
    check(rc != 0, "migration succeeded although the link was cut")
    log("error: %s" % out.strip().splitlines()[-1])
    sa = a.domstate(GNAME)
    check(sa.startswith("running"), "source state %r, expected running" % sa)
    wait_for("the destination to clean up", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 60)
    g.wait_progress(a, "guest progress on A after the cut", timeout=30)
    g.check_clean(a)


def wait_postcopy_switch(a, proc):
    wait_for("post-copy", lambda: proc.poll() is not None
             or a.domstate(GNAME) == "paused (post-copy)", 60)


def wait_guest_on(b, g, proc, lines=2):
    """Wait until the guest printed `lines` status lines on b after a
    post-copy switch, before breaking the migration.

    Under TCG, QEMU delivers an interrupt with the BQL held and reads the
    IDT and the kernel stack through the guest's page tables.  If one of
    those pages has not arrived when post-copy fails, the vCPU waits for it
    forever with the BQL held, the destination's monitor stops answering, and
    no recovery can start (KVM does not read guest memory there).  Once the
    guest has run on b for a few timer ticks, those pages are present."""
    def ran():
        if proc.poll() is not None:
            return True
        stats, _ = parse_console(g.console(b))
        return len(stats) >= lines
    wait_for("the guest to run on %s" % b.name, ran, 60)


def wait_postcopy_failed(a, b):
    """Both sides wait for recovery, as after any failed post-copy: A paused,
    B's vCPUs waiting for pages."""
    try:
        wait_for("both sides to wait for recovery",
                 lambda: a.domstate(GNAME) == "paused (post-copy failed)"
                 and b.domstate(GNAME) in ("paused (post-copy failed)",
                                           "running (post-copy failed)"), 60)
    finally:
        log("state: A=%s B=%s" % (a.domstate(GNAME), b.domstate(GNAME)))


def resume_natively(a, b, g, daemons=None):
    """Recover a failed post-copy with a native resume; nothing may be lost."""
    rc, out = migrate(a, b, ["live", "p2p", "postcopy", "postcopy-resume"],
                      extra=["--postcopy-bandwidth", "1000"])
    if daemons:
        check_daemons(daemons)
    check(rc == 0, "native post-copy recovery failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)


@case("tunnelled postcopy: link cut stops the guest on both hosts; native resume recovers it")
def t_tunnel_cut_postcopy(a, b):
    g = guest_busy(); g.start(a)
    proxy = LinkProxy(b.addr)

    def cut(proc):
        wait_postcopy_switch(a, proc)
        wait_for("pages after the switch", lambda: proc.poll() is not None
                 or mib_processed(a) > 24, 60)
        wait_guest_on(b, g, proc)
        log("cutting the link after %d bytes" % proxy.bytes)
        proxy.cut()
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy"], dest=proxy.uri(),
                      switch_postcopy=True, during=cut,
                      extra=["--bandwidth", "8", "--postcopy-bandwidth", "4"], timeout=120)
    check(rc != 0, "migration succeeded although the link was cut")
    msg = out.strip().splitlines()[-1]
    log("error: %s" % msg)
    check("post-copy resume that is not tunnelled" in msg, "the error does not say how to recover")
    wait_postcopy_failed(a, b)
    # A tunnel cannot resume; the error and the docs say so.
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "postcopy-resume"])
    check(rc != 0 and "post-copy recovery is not supported with tunnelled migration" in out,
          "tunnelled resume: %s" % out.strip())
    # Native recovery (QEMU connects directly) works and nothing was lost.
    resume_natively(a, b, g)


@case("native postcopy recovery after domjobabort --postcopy (was: destination daemon crash)")
def t_native_postcopy_resume(a, b):
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)

    def pause(proc):
        wait_postcopy_switch(a, proc)
        wait_guest_on(b, g, proc)
        p = a.virsh("domjobabort", "--postcopy", GNAME, check_rc=False)
        log("$ virsh domjobabort --postcopy %s -> rc %d %s" % (GNAME, p.returncode,
                                                               p.stderr.strip()))
    rc, out = migrate(a, b, ["live", "p2p", "postcopy"], switch_postcopy=True, during=pause,
                      extra=["--bandwidth", "8", "--postcopy-bandwidth", "4"], timeout=120)
    check(rc != 0, "migration was not interrupted")
    wait_postcopy_failed(a, b)
    resume_natively(a, b, g, daemons)


def open_tunnel(host, secret, readonly=False, target=None, kind="nbd"):
    args = [OPEN_TUNNEL, host.client_uri(), GNAME, kind, secret]
    if target:
        args += ["--target", target]
    if readonly:
        args.append("--readonly")
    p = run(args, check_rc=False)
    out = p.stdout.strip()
    log("$ open-tunnel %s %s%s%s -> %s" % (host.name, kind, " --target " + target if target else "",
                                          " --readonly" if readonly else "", out))
    return out


def tunnel_secret(host):
    """The secret of the migration coming in to host, from its daemon's debug
    log (the lab logs migration cookies), as only the source should know it."""
    secrets = re.findall(r"<tunnel secret='([0-9a-f]+)'/>", host.daemon_log())
    check(secrets, "no tunnel secret in %s's migration cookies" % host.name)
    return secrets[-1]


@case("tunnel stream RPC: every refusal is clear and disturbs nothing")
def t_open_tunnel_refusals(a, b):
    # converges at 16 MiB/s, slowly enough to probe B while it migrates in
    g = Guest(GNAME, wl_mem=16, wl_rate=4); g.start(a)
    daemons = daemons_now(a, b)
    check("has no incoming migration" in open_tunnel(a, "x" * 64),
          "a domain that is not migrating in was not refused")
    check("read only access prevents virDomainMigrateOpenTunnel" in
          open_tunnel(a, "x" * 64, readonly=True), "a read-only connection was not refused")
    refusals = []

    def probe(proc):
        wait_for("the incoming domain on B", lambda: proc.poll() is not None
                 or b.domstate(GNAME) is not None, 60)
        refusals.append(open_tunnel(b, "0" * 64))
        refusals.append(open_tunnel(b, ""))
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], during=probe,
                      extra=["--bandwidth", "16"])
    check(all("wrong tunnel secret for the incoming migration" in r for r in refusals),
          "a wrong secret was not refused: %s" % refusals)
    check_daemons(daemons)
    check(rc == 0, "the refusals disturbed the migration: %s" % out)
    verify_migrated(a, b, g)


@case("tunnel stream RPC on a stock daemon fails cleanly", a="stock")
def t_open_tunnel_stock(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a)
    out = open_tunnel(a, "x" * 64)
    check("ERROR" in out and "454" in out, "unexpected answer from a stock daemon: %s" % out)
    check_daemons(daemons)
    g.wait_progress(a, "guest progress on A", timeout=30)
    g.check_clean(a)


@case("tunnelled --copy-storage-all")
def t_tunnel_storage_all(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("tunnelled --copy-storage-inc (qcow2 backing chain)")
def t_tunnel_storage_inc(a, b):
    g = guest_disks(("vda",), fmt="qcow2", backing=True); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-inc"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("tunnelled --copy-storage-all --migrate-disks")
def t_tunnel_migrate_disks(a, b):
    g = guest_disks(("vda", "vdb"), shared=("vdb",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"],
                      extra=["--migrate-disks", "vda"])
    check(rc == 0, "migration failed: %s" % out)
    src, _ = verify_migrated(a, b, g, storage=True)
    # Only vda was copied: 32 MiB, not 64.
    key = "File processed" if "File processed" in src else "Disk processed"
    copied = mib_of(src, key)
    check(30 <= copied < 48, "copied %.1f MiB of storage, expected only vda's 32" % copied)


@case("headline: --live --p2p --tunnelled --postcopy --copy-storage-all")
def t_headline(a, b):
    g = guest_disks(("vda",), busy=True); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"],
                      switch_postcopy=True, extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True, storage=True)


@case("headline via virDomainMigrateToURI3, two disks")
def t_headline_api(a, b):
    """As nova calls it: typed parameters, the disks listed, post-copy
    started with virDomainMigrateStartPostCopy once precopy runs."""
    g = guest_disks(("vda", "vdb"), busy=True); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"],
                      api=True, switch_postcopy=True,
                      extra=["--disk", "vda", "--disk", "vdb", "--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    src, _ = verify_migrated(a, b, g, postcopy=True, storage=True)
    key = "File processed" if "File processed" in src else "Disk processed"
    check(mib_of(src, key) >= 64, "copied %s of storage, expected both disks" % src.get(key))


def disk_mib(info):
    key = "File processed" if "File processed" in info else "Disk processed"
    return mib_of(info, key)


def fds_of(host):
    """Open file descriptors of each daemon process of host."""
    out = {}
    for comm, pid in host.daemon_pids().items():
        out[comm] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def nbd_sockets(host):
    return glob.glob(os.path.join(host.dir, "var", "lib", "libvirt", "qemu", "domain-*",
                                  "migration-nbd*.sock"))


@case("tunnelled storage, patched -> stock is refused before anything starts", b="stock")
def t_tunnel_storage_to_stock(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    verify_refused(a, b, g, rc, out, REFUSE_STORAGE_DEST, daemons)


@case("tunnelled storage, stock -> patched is refused by the stock source", a="stock")
def t_tunnel_storage_from_stock(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    verify_refused(a, b, g, rc, out, REFUSE_STORAGE)


@case("tunnelled storage: nbd stream refusals with the migration's secret")
def t_open_tunnel_nbd_refusals(a, b):
    """Whoever holds the secret still gets only one stream per migrated disk."""
    g = guest_disks(("vda", "vdb"), shared=("vdb",)); prepare_disks(g, a, b); g.start(a)
    daemons = daemons_now(a, b)
    refusals = {}

    def probe(proc):
        wait_for("the mirror of vda to move", lambda: proc.poll() is not None or
                 disk_mib(jobinfo(a, GNAME, completed=False)) > 0, 60)
        secret = tunnel_secret(b)
        refusals["wrong disk"] = open_tunnel(b, secret, target="vdz")
        refusals["shared disk"] = open_tunnel(b, secret, target="vdb")
        refusals["no disk"] = open_tunnel(b, secret)
        refusals["second stream"] = open_tunnel(b, secret, target="vda")
        refusals["kind"] = open_tunnel(b, secret, target="vda", kind="multifd")
        # then let precopy converge
        a.virsh("migrate-setspeed", GNAME, "1000", check_rc=False)
    # the mirror runs at 4 MiB/s: 8 s to probe while it moves
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"], during=probe,
                      extra=["--migrate-disks", "vda", "--bandwidth", "4"])
    expect = {"wrong disk": "disk 'vdz' of domain 'lab-guest' is not being migrated",
              "shared disk": "disk 'vdb' of domain 'lab-guest' is not being migrated",
              "no disk": "is not being migrated",
              "second stream": "disk 'vda' of domain 'lab-guest' already has a tunnel stream",
              "kind": "unsupported tunnel stream kind 'multifd'"}
    for k, msg in expect.items():
        check(msg in refusals.get(k, ""), "%s: expected %r, got %r" % (k, msg, refusals.get(k)))
    check_daemons(daemons)
    check(rc == 0, "the refusals disturbed the migration: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("tunnelled storage: domjobabort mid-mirror leaves the guest on A, no leaks")
def t_tunnel_storage_abort(a, b):
    g = guest_disks(("vda", "vdb")); prepare_disks(g, a, b); g.start(a)
    g.wait_progress(a, "guest progress on A", timeout=60)
    daemons = daemons_now(a, b)
    fds_a, fds_b = fds_of(a), fds_of(b)
    log("daemon fds before: A=%s B=%s" % (fds_a, fds_b))

    def abort(proc):
        wait_for("the mirror to move", lambda: proc.poll() is not None or
                 disk_mib(jobinfo(a, GNAME, completed=False)) > 1, 60)
        check(nbd_sockets(a) == [], "a listening NBD socket is left on A once QEMU connected")
        p = a.virsh("domjobabort", GNAME, check_rc=False)
        log("$ virsh domjobabort %s -> rc %d %s" % (GNAME, p.returncode, p.stderr.strip()))
    # 2 MiB/s: the mirror of 64 MiB would take 30 s
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"], during=abort,
                      extra=["--bandwidth", "2"])
    check(rc != 0, "migration was not aborted: %s" % out)
    check("canceled by client" in out or "cancelled" in out.lower(),
          "unexpected error after abort: %s" % out.strip())
    check_daemons(daemons)
    check(a.domstate(GNAME) == "running (booted)", "source state %r" % a.domstate(GNAME))
    wait_for("the incoming domain to go from B", lambda: b.domstate(GNAME) is None, 60)
    check(not b.qemu_pids(), "a QEMU was left on the destination")
    g.wait_progress(a, "guest progress on A after the abort", timeout=60)
    g.check_clean(a)
    check(nbd_sockets(a) == [], "NBD tunnel sockets left on A: %s" % nbd_sockets(a))
    try:
        wait_for("the daemons to close what the migration opened",
                 lambda: fds_of(a) == fds_a and fds_of(b) == fds_b, 30)
    except Failure:
        for h in (a, b):
            for comm, pid in h.daemon_pids().items():
                fds = sorted(os.readlink("/proc/%d/fd/%s" % (pid, f))
                             for f in os.listdir("/proc/%d/fd" % pid))
                log("%s %s fds: %s" % (h.name, comm, fds))
        log(run(["ss", "-tnpx"], check_rc=False).stdout)
        raise
    log("daemon fds after: A=%s B=%s" % (fds_of(a), fds_of(b)))
    # The source's disks are intact and still the guest's: migrate again, natively.
    rc, out = migrate(a, b, ["live", "p2p", "copy-storage-all"])
    check(rc == 0, "migration after the abort failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("tunnelled --copy-storage-all --copy-storage-synchronous-writes over qemu+tls")
def t_tunnel_storage_sync_tls(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all",
                             "copy-storage-synchronous-writes"], transport="tls")
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("tunnelled storage: link cut mid-mirror keeps the guest on A")
def t_tunnel_storage_cut(a, b):
    g = guest_disks(("vda", "vdb")); prepare_disks(g, a, b); g.start(a)
    proxy = LinkProxy(b.addr)
    daemons = daemons_now(a, b)

    def cut(proc):
        wait_for("the mirror to move", lambda: proc.poll() is not None or
                 disk_mib(jobinfo(a, GNAME, completed=False)) > 1, 60)
        log("cutting the link after %d bytes" % proxy.bytes)
        proxy.cut()
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"], dest=proxy.uri(),
                      extra=["--bandwidth", "2"], timeout=120, during=cut, during_mirror=True)
    check(proxy.cut_done, "the link was never cut")
    check(rc != 0, "migration succeeded although the link was cut")
    log("error: %s" % out.strip().splitlines()[-1])
    check_daemons(daemons)
    sa = a.domstate(GNAME)
    check(sa == "running (booted)", "source state %r, expected running" % sa)
    wait_for("the destination to clean up", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 60)
    check(nbd_sockets(a) == [], "NBD tunnel sockets left on A: %s" % nbd_sockets(a))
    p = a.virsh("blockjob", GNAME, "vda", "--info", check_rc=False)
    check("No current block job" in p.stdout + p.stderr or p.stdout.strip() == "",
          "a block job is left on A: %s" % (p.stdout + p.stderr).strip())
    g.wait_progress(a, "guest progress on A after the cut", timeout=60)
    g.check_clean(a)


def copy_progress(sources, stop, timeline, deadline=600):
    """Sample {name: fn() -> bytes arrived} every 0.2 s until stop is set."""
    t0 = time.monotonic()
    while not stop.is_set() and time.monotonic() - t0 < deadline:
        timeline.append((time.monotonic() - t0, {k: fn() for k, fn in sources.items()}))
        stop.wait(0.2)


def caught_up(timeline, key, near=0.95):
    """Seconds until `key` had `near` of what it reached in the end."""
    final = timeline[-1][1][key] if timeline else 0
    return next((t for t, v in timeline if v[key] >= near * final), None), final


def fill_outside_ring(g, a, b, dev, mib):
    """Write `mib` MiB of random data after the guest's ring on disk `dev`
    on A (the guest never touches it, so it is compared directly).
    Returns compare(quiet=False) that compares that region on A and B."""
    import hashlib
    name = os.path.basename(next(d["path"] for d in g.disks if d["dev"] == dev))
    lo, hi = g.ring * 4096, g.ring * 4096 + mib * 2**20
    with open(os.path.join(a.private, name), "r+b") as f:
        f.seek(lo)
        for _ in range(mib):
            f.write(os.urandom(2**20))

    def sha(host):
        h = hashlib.sha256()
        with open(os.path.join(host.private, name), "rb") as f:
            f.seek(lo)
            for _ in range(mib):
                h.update(f.read(2**20))
        return h.hexdigest()
    want = []

    def compare(quiet=False):
        if not want:
            want.append(sha(a))
        if quiet:
            return sha(b) == want[0]
        check(sha(b) == want[0], "%s's data outside the guest's ring differs on B" % dev)
        log("%s's %d MiB outside the ring: identical on B" % (dev, mib))
    return compare


def slow_disks_xml(a, slow):
    """The guest's XML for B, with the disks in `slow` ({dev: SlowNbdDisk})
    on their slow NBD disks."""
    import xml.etree.ElementTree as ET
    dom = ET.fromstring(a.virsh("dumpxml", "--migratable", GNAME).stdout)
    for disk in dom.iter("disk"):
        dev = disk.find("target").get("dev")
        if dev not in slow:
            continue
        disk.set("type", "network")
        disk.remove(disk.find("source"))
        src = ET.SubElement(disk, "source", protocol="nbd", name=dev)
        ET.SubElement(src, "host", transport="unix", socket=slow[dev].socket_path)
    xmlpath = os.path.join(LAB, "dest-slow-disks.xml")
    with open(xmlpath, "w") as f:
        f.write(ET.tostring(dom, encoding="unicode"))
    return xmlpath


def tunnel_or_native():
    """["tunnelled"], or [] with LAB_NATIVE=1: the flow-control cases run the
    same migration natively, for comparison."""
    return [] if os.environ.get("LAB_NATIVE") else ["tunnelled"]


def check_keepalive(hosts, logs):
    """No keepalive timeout or error in the daemons' logs since `logs`."""
    for h, start in zip(hosts, logs):
        tripped = [l for l in h.daemon_log()[start:].splitlines() if "keepalive" in l.lower()
                   and ("timeout" in l.lower() or "error" in l.lower())]
        check(not tripped, "keepalive tripped on %s: %s" % (h.name, tripped[:2]))


@case("tunnelled storage: a throttled destination disk; keepalive holds")
def t_tunnel_storage_throttled(a, b):
    """vda holds 24 MiB of data besides the guest's ring, and its target on B
    is behind a 2 MiB/s link (qemu-nbd behind a slow forwarder, given to the
    destination with --xml); vdb's target is a local file.  The migration
    must complete with both disks intact, and no keepalive may trip while
    vda's stream is backed up.  What reached B over time is logged for each
    disk; LAB_NATIVE=1 runs the same natively for comparison, and
    LAB_THROTTLE_RATE sets the rate in bytes/s."""
    import threading
    rate, extra_mib = int(os.environ.get("LAB_THROTTLE_RATE", 2 * 2**20)), 24
    g = guest_disks(("vda", "vdb")); prepare_disks(g, a, b)
    compare_vda = fill_outside_ring(g, a, b, "vda", extra_mib)
    g.start(a)
    slow = SlowNbdDisk(b, g.disks[0]["path"], "vda", rate)
    try:
        xmlpath = slow_disks_xml(a, {"vda": slow})
        logs = (len(a.daemon_log()), len(b.daemon_log()))
        daemons = daemons_now(a, b)
        # what reached B: through the slow link for vda, allocated in vdb's file
        vdb_b = os.path.join(b.private, os.path.basename(g.disks[1]["path"]))
        sources = {"vda": lambda: slow.written,
                   "vdb": lambda: os.stat(vdb_b).st_blocks * 512}
        stop, timeline = threading.Event(), []
        watcher = threading.Thread(target=copy_progress, args=(sources, stop, timeline))
        watcher.start()
        try:
            rc, out = migrate(a, b, ["live", "p2p"] + tunnel_or_native() + ["copy-storage-all"],
                              extra=["--xml", xmlpath])
        finally:
            stop.set()
            watcher.join()
        check_daemons(daemons)
        check_keepalive((a, b), logs)
        check(rc == 0, "migration failed: %s" % out)
        log("throttle %.1f MiB/s on vda's target" % (rate / 2**20))
        for dev in ("vda", "vdb"):
            t, final = caught_up(timeline, dev)
            log("%s: 95%% of its %.1f MiB had reached B after %s s" %
                (dev, final / 2**20, "%.1f" % t if t is not None else "-"))
        log("MiB at B over time: " + ", ".join(
            "%.0fs %.1f/%.1f" % (t, v["vda"] / 2**20, v["vdb"] / 2**20)
            for i, (t, v) in enumerate(timeline) if i % 10 == 0))
        check(slow.written >= extra_mib * 2**20, "only %d bytes went through the slow link: was "
              "vda really copied to it?" % slow.written)
        verify_migrated(a, b, g, storage=True)
        compare_vda()
    finally:
        slow.stop()


@case("tunnelled storage: a stalled destination disk holds back only itself")
def t_tunnel_storage_stalled(a, b):
    """Both disks' targets on B are behind slow links (vda 4 MiB/s, vdb
    2 MiB/s), and vda holds 64 MiB, vdb 24 MiB besides the guest's ring.  Once
    both mirrors write to B, vdb's target stops taking writes (its
    forwarder stops reading) for longer than the keepalive allows (5 s x 5
    + 5 s).  While vdb is stalled, vda's data must still all reach B, and
    no keepalive may trip: the destination daemon must not stop reading
    the connection because vdb's stream is full.  Once vdb's target
    resumes, the migration completes with both disks intact.

    (vdb, the last disk, is the one stalled: QEMU drains every disk while
    it sets up a mirror, so a disk stalled before the next one's mirror
    started would hold that one back natively too.)  LAB_NATIVE=1
    runs the same natively."""
    hold, mib = 40, {"vda": 64, "vdb": 24}
    g = guest_disks(("vda", "vdb")); prepare_disks(g, a, b, size_mib={"vda": 96})
    compare = {dev: fill_outside_ring(g, a, b, dev, mib[dev]) for dev in ("vda", "vdb")}
    g.start(a)
    slow = {}
    try:
        slow["vda"] = SlowNbdDisk(b, g.disks[0]["path"], "vda", 4 * 2**20)
        slow["vdb"] = SlowNbdDisk(b, g.disks[1]["path"], "vdb", 2 * 2**20)
        xmlpath = slow_disks_xml(a, slow)
        logs = (len(a.daemon_log()), len(b.daemon_log()))
        daemons = daemons_now(a, b)
        seen = {}

        def stall(proc):
            wait_for("both mirrors to write to B", lambda: proc.poll() is not None or
                     min(d.written for d in slow.values()) >= 2**20, 60)
            slow["vdb"].pause()
            t0 = time.monotonic()
            seen["vda"] = slow["vda"].written
            log("vdb's target on B stalled; vda's target had got %.1f MiB" %
                (seen["vda"] / 2**20))
            wait_for("vda's data to reach B while vdb is stalled",
                     lambda: proc.poll() is not None or compare["vda"](quiet=True), hold - 10)
            check(proc.poll() is None, "the migration ended while vdb was stalled")
            written = slow["vdb"].written
            log("vda's data was on B %.1f s into the stall" % (time.monotonic() - t0))
            # hold the stall past the point where a keepalive would trip
            try:
                proc.wait(timeout=max(0, hold - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                pass
            check(proc.poll() is None, "the migration failed while vdb was stalled")
            check(slow["vdb"].written == written, "vdb's target was not really stalled")
            log("resuming vdb's target after %.1f s, with %.1f MiB written to it" %
                (time.monotonic() - t0, written / 2**20))
            slow["vdb"].resume()
        try:
            rc, out = migrate(a, b, ["live", "p2p"] + tunnel_or_native() + ["copy-storage-all"],
                              extra=["--xml", xmlpath], during=stall, during_mirror=True)
        finally:
            slow["vdb"].resume()
        check_daemons(daemons)
        check_keepalive((a, b), logs)
        check(rc == 0, "migration failed: %s" % out)
        check(seen.get("vda", 2**30) < mib["vda"] * 2**20,
              "vda's copy was done before vdb stalled: nothing was shown")
        verify_migrated(a, b, g, storage=True)
        for dev in ("vda", "vdb"):
            compare[dev]()
    finally:
        for d in slow.values():
            d.stop()


@case("tunnelled storage: the destination QEMU stops reading mid-mirror; keepalive holds")
def t_tunnel_storage_dest_stopped(a, b):
    """B's QEMU is stopped (SIGSTOP) for 40 s while both disks' mirrors run
    (at 4 MiB/s, vda holding 24 MiB besides the guest's ring): it reads
    none of its NBD connections, so each disk's stream backs up in B's
    daemon.  That must not stop B's daemon from reading the connection,
    or the keepalive trips after 30 s and the migration fails, where a
    native migration just waits.  Once QEMU goes on (and the bandwidth
    limit is lifted), the migration completes with both disks intact.  LAB_NATIVE=1
    runs it natively."""
    import signal
    hold = 40
    g = guest_disks(("vda", "vdb")); prepare_disks(g, a, b)
    compare = fill_outside_ring(g, a, b, "vda", 24)
    g.start(a)
    logs = (len(a.daemon_log()), len(b.daemon_log()))
    daemons = daemons_now(a, b)
    stopped = []

    def stop(proc):
        copied = [0.0]

        def moving():
            if proc.poll() is not None:
                return True
            copied[0] = disk_mib(jobinfo(a, GNAME, completed=False))
            return copied[0] > 1
        wait_for("the mirror to move", moving, 60)
        pids = b.qemu_pids()
        check(proc.poll() is None and len(pids) == 1,
              "no migration to B in progress (QEMU on B: %s)" % pids)
        os.kill(pids[0], signal.SIGSTOP)
        stopped.append(pids[0])
        t0 = time.monotonic()
        log("B's QEMU stopped with %.1f MiB of storage copied" % copied[0])
        try:
            proc.wait(timeout=hold)
        except subprocess.TimeoutExpired:
            pass
        check(proc.poll() is None, "the migration ended %.1f s after B's QEMU stopped" %
              (time.monotonic() - t0))
        os.kill(stopped.pop(), signal.SIGCONT)
        log("B's QEMU resumed after %.1f s" % (time.monotonic() - t0))
        # the memory could not converge at 4 MiB/s
        a.virsh("migrate-setspeed", GNAME, "--bandwidth", "10000")
    try:
        rc, out = migrate(a, b, ["live", "p2p"] + tunnel_or_native() + ["copy-storage-all"],
                          extra=["--bandwidth", "4"], during=stop, during_mirror=True)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    check_daemons(daemons)
    check_keepalive((a, b), logs)
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)
    compare()


@case("tunnelled storage: the destination QEMU dies mid-mirror")
def t_tunnel_storage_dest_killed(a, b):
    """B's QEMU is killed (SIGKILL) while the mirrors run at --bandwidth 4,
    with the source still sending disk data into the streams.  The
    migration must fail with an error, both daemons must survive, the guest
    must keep running on A on its own disks, and nothing may be left."""
    import signal
    g = guest_disks(("vda", "vdb")); prepare_disks(g, a, b)
    fill_outside_ring(g, a, b, "vda", 24)
    g.start(a)
    daemons = daemons_now(a, b)

    def kill(proc):
        wait_for("the mirror to move", lambda: proc.poll() is not None or
                 disk_mib(jobinfo(a, GNAME, completed=False)) > 1, 60)
        pids = b.qemu_pids()
        check(proc.poll() is None and len(pids) == 1,
              "no migration to B in progress (QEMU on B: %s)" % pids)
        os.kill(pids[0], signal.SIGKILL)
        log("B's QEMU killed")
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"],
                      extra=["--bandwidth", "4"], during=kill, during_mirror=True,
                      timeout=120)
    check(rc != 0, "migration succeeded although B's QEMU was killed")
    log("error: %s" % out.strip().splitlines()[-1])
    check_daemons(daemons)
    check(a.domstate(GNAME) == "running (booted)", "source state %r" % a.domstate(GNAME))
    wait_for("the destination to clean up", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 60)
    check(nbd_sockets(a) == [], "NBD tunnel sockets left on A: %s" % nbd_sockets(a))
    g.wait_progress(a, "guest progress on A after the failure", timeout=60)
    g.check_clean(a)


# ---------------------------------------------------------------- runner

class Lab:
    """Keeps hosts A and B running while consecutive cases share a setup."""

    def __init__(self):
        self.key = None
        self.a = self.b = None

    def hosts(self, ka, kb):
        if self.key != (ka, kb):
            self.stop()
            self.a = Host("a", 1, stock=ka.startswith("stock"), split=ka.endswith("+split"))
            self.b = Host("b", 2, stock=kb.startswith("stock"), split=kb.endswith("+split"))
            self.a.start()
            self.b.start()
            self.key = (ka, kb)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="", help="run cases whose name contains this")
    ap.add_argument("--list", action="store_true")
    opts = ap.parse_args()
    cases = [c for c in CASES if opts.k in c["name"]]
    if opts.list:
        for c in cases:
            print(c["name"] + ("  [expected failure]" if c["xfail"] else ""))
        return 0

    build_helpers()
    # A previous run killed hard may have left hosts behind.
    run([os.path.join(TOP, "lab", "lab.sh"), "stop-all"], check_rc=False)
    lab = Lab()
    passed, failed, xfailed = [], [], []
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    try:
        for c in cases:
            tag = " [expected failure: today's refusal]" if c["xfail"] else ""
            print("--- %s%s" % (c["name"], tag), flush=True)
            t0 = time.monotonic()
            err = None
            try:
                a, b = lab.hosts(c["a"], c["b"])
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
                failed.append(c["name"])
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
    for n in failed:
        print("  failed: %s" % n)
    print("%d passed, %d failed" % (len(passed) + len(xfailed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
