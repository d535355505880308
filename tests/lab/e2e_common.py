"""Shared by the lab's end-to-end cases: the case registry, migrating,
verifying the guest, and the guests and disks the cases use.

Every check looks at the guest itself, never only at an exit code."""
import glob
import json
import os
import shutil
import subprocess
import time

from labpy import (Failure, Guest, LAB, PREFIX, PRIVATE, SHARED, TOP, VIRSH, check,  # noqa: F401
                   check_qemu_user, jobinfo, log, make_disk, parse_console, run, verify_disk, wait_for)

# Built against the client library of the install under test (LVT_PREFIX)
HELPERS = os.path.join(LAB, "helpers-" + os.path.basename(PREFIX))
MIGRATE_API = os.path.join(HELPERS, "migrate-api")
OPEN_TUNNEL = os.path.join(HELPERS, "open-tunnel")
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


def case(name, a="patched", b="patched", xfail=None, env=None, heavy=False, optin=False):
    """Register a test.  a/b: 'patched', 'stock', optionally '+split';
    'packaged', 'packaged-trixie'.
    env: variables for lab.sh when it starts both hosts (LAB_LOG_FILTERS,
    LAB_DAEMON_CONF).  heavy: a long fault case that `make check` leaves to
    `make check-faults` (a variant of one that `make check` runs).
    optin: only run when -k names it (its preparation is too long for CI)."""
    def deco(fn):
        CASES.append({"name": name, "fn": fn, "a": a, "b": b, "xfail": xfail,
                      "env": tuple(sorted((env or {}).items())), "heavy": heavy,
                      "optin": optin})
        return fn
    return deco


def build_helpers():
    os.makedirs(HELPERS, exist_ok=True)
    header = os.path.join(TOP, "tests", "lab", "lab-client.h")
    for exe in (MIGRATE_API, OPEN_TUNNEL):
        src = os.path.join(TOP, "tests", "lab", os.path.basename(exe) + ".c")
        if not os.path.exists(exe) or max(os.path.getmtime(src), os.path.getmtime(header)) \
                > os.path.getmtime(exe):
            libdir = os.path.join(PREFIX, "lib", "x86_64-linux-gnu")
            # against a sanitized client library (make check-asan), the
            # runtime must come first: the helper is built with it too
            san = ["-fsanitize=address,undefined"] if os.environ.get("LVT_SANITIZE") else []
            run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-I" + os.path.join(PREFIX, "include"),
                 "-o", exe, src, "-L" + libdir, "-Wl,-rpath," + libdir, "-lvirt"] + san)


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


def verify_migrated(a, b, g, postcopy=False, storage=None, source_stats=None):
    """The full set of checks after a successful migration.

    source_stats: the source's completed job statistics (as `domjobinfo
    --completed` prints them) for a migration that undefined the source
    domain (VIR_MIGRATE_UNDEFINE_SOURCE, as nova migrates): A must then have
    no such domain any more."""
    # Domain state and reason on both hosts.
    sa, sb = a.domstate(GNAME), b.domstate(GNAME)
    log("state: A=%s B=%s" % (sa, sb))
    if source_stats is not None:
        check(sa is None, "source state is %r, expected no domain (undefined)" % sa)
    else:
        check(sa == "shut off (migrated)",
              "source state is %r, expected 'shut off (migrated)'" % sa)
    check(sb in ("running (migrated)", "running (post-copy)"),
          "destination state is %r" % sb)
    check(not a.qemu_pids(), "a QEMU is still running on the source")
    check_qemu_user(b)
    # The guest keeps making progress on B, with no verifier errors.
    stats = g.wait_progress(b, "guest progress on B", timeout=90)
    last = g.check_clean(b)
    log("guest on B: t=%d mem_gen=%d mem_err=%d disks=%s" % (
        last["t"], last["gen"], last["mem_err"],
        {k: (v["seq"], v["err"]) for k, v in last["disks"].items()}))
    check(stats[-1]["gen"] >= 1, "memory workload made no pass on B")
    # Job statistics, from both ends.
    src = jobinfo(a, GNAME) if source_stats is None else source_stats
    dst = jobinfo(b, GNAME)
    check(src.get("Job type") == "Completed", "source job stats: %r" % src.get("Job type"))
    check(src.get("Operation") == "Outgoing migration", "source job operation %r" % src.get("Operation"))
    # The destination keeps incoming stats only for precopy completions.
    check(dst.get("Operation") in (None, "Incoming migration"),
          "destination job operation %r" % dst.get("Operation"))
    mem_total = mib_of(src, "Memory total")
    mem_done = mib_of(src, "Memory processed")
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



def mib_of(info, key="Memory processed"):
    """A domjobinfo size such as "12.5 MiB", in MiB."""
    v = info.get(key, "0 B").split()
    return float(v[0]) * {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}.get(v[1], 0)


def mib_processed(a):
    return mib_of(jobinfo(a, GNAME, completed=False))



def with_side_qmp(xml, name):
    """Domain XML `xml` with a second QMP monitor instead of any the XML
    had, on a UNIX socket the lab talks to itself (libvirt's own monitor
    serves no qemu-monitor-command while a migration job runs).  Returns
    (the XML, the socket path)."""
    import xml.etree.ElementTree as ET
    ns = "http://libvirt.org/schemas/domain/qemu/1.0"
    ET.register_namespace("qemu", ns)
    qdir = os.path.join(LAB, "qmp")
    os.makedirs(qdir, exist_ok=True)
    os.chmod(qdir, 0o1777)          # QEMU runs unprivileged
    sock = os.path.join(qdir, name + ".sock")
    if os.path.exists(sock):
        os.unlink(sock)
    dom = ET.fromstring(xml)
    for old in dom.findall("{%s}commandline" % ns):
        dom.remove(old)             # the source's own side monitor, if any
    cmdline = ET.SubElement(dom, "{%s}commandline" % ns)
    for arg in ("-qmp", "unix:%s,server=on,wait=off" % sock):
        ET.SubElement(cmdline, "{%s}arg" % ns, value=arg)
    return ET.tostring(dom, encoding="unicode"), sock


def side_qmp_xml(a, name="blocktime"):
    """The guest's XML for B with a side monitor of its own (with_side_qmp).
    Returns (xml path, socket path)."""
    xml, sock = with_side_qmp(a.virsh("dumpxml", "--migratable", GNAME).stdout, name)
    xmlpath = os.path.join(LAB, "dest-%s.xml" % name)
    with open(xmlpath, "w") as f:
        f.write(xml)
    return xmlpath, sock


def side_qmp(sock, command, arguments=None, timeout=10):
    """Run one QMP command on a side monitor (side_qmp_xml).  Returns its
    "return" value, or None if the monitor is not there or it failed."""
    import socket as sk
    cmd = {"execute": command}
    if arguments:
        cmd["arguments"] = arguments
    try:
        with sk.socket(sk.AF_UNIX, sk.SOCK_STREAM) as c:
            c.settimeout(timeout)
            c.connect(sock)
            f = c.makefile("rw")
            f.readline()                                    # greeting
            for msg in ({"execute": "qmp_capabilities"}, cmd):
                f.write(json.dumps(msg) + "\n")
                f.flush()
                for _ in range(100):                        # skip events
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply.get("return")
    except (OSError, ValueError):
        return None


def switch_measuring_blocktime(a, b, proc, result, sock, after_mib=None, on_switch=None):
    """A migrate(during=) step for post-copy to B started with a side QMP
    monitor (side_qmp_xml): make B's QEMU measure how long its vCPUs wait
    for the pages they fault on (postcopy-blocktime, which QEMU accepts on
    the destination while the incoming migration runs), note whether B's
    QEMU uses preempt, switch to post-copy, and sample the measure until
    the migration ends.  Fills result with preempt_b, blocktime_ms and
    samples.

    With after_mib, switch only once A's job has sent that many MiB
    (polled every 50 ms), so that runs compared with each other switch at
    the same point of the migration, not whenever the measure was set
    up; then result also holds switch_data_mib and switch_elapsed_ms,
    A's job at the poll that switched (none if the poll never saw the
    threshold or the job's elapsed time).  result["switched"] says whether
    migrate-postcopy succeeded.  on_switch, if given, is called just
    before the switch."""
    wait_for("B's side monitor", lambda: proc.poll() is not None or
             side_qmp(sock, "query-status") is not None, 60)
    rc = side_qmp(sock, "migrate-set-capabilities",
                  {"capabilities": [{"capability": "postcopy-blocktime", "state": True}]})
    check(rc is not None, "B's QEMU refused to measure post-copy blocktime")
    result["preempt_b"] = any(c.get("capability") == "postcopy-preempt" and c.get("state")
                              for c in side_qmp(sock, "query-migrate-capabilities") or [])
    if after_mib is not None:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            info = jobinfo(a, GNAME, completed=False)
            if mib_of(info, "Data processed") >= after_mib:
                try:
                    elapsed = float(info["Time elapsed"].split()[0])
                except (KeyError, ValueError, IndexError):
                    break
                result["switch_data_mib"] = round(mib_of(info, "Data processed"), 1)
                result["switch_elapsed_ms"] = elapsed
                break
            time.sleep(0.05)
    if on_switch:
        on_switch()
    p = a.virsh("migrate-postcopy", GNAME, check_rc=False)
    result["switched"] = p.returncode == 0
    log("$ virsh migrate-postcopy %s -> rc %d %s" % (GNAME, p.returncode, p.stderr.strip()))
    result["samples"] = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = proc.poll() is not None
        info = side_qmp(sock, "query-migrate")
        if info and "postcopy-blocktime" in info:
            result["blocktime_ms"] = info["postcopy-blocktime"]
            result["samples"] += 1
        if done:
            break
        time.sleep(0.1)


def preempt_bytes(a, since):
    """The bytes the source's preempt tunnel carried to B, from A's daemon
    log after offset since, or None if it had no preempt tunnel."""
    import re
    m = re.findall(r"migration tunnel preempt completed: (\d+) bytes to stream",
                   a.daemon_log()[since:])
    return int(m[-1]) if m else None


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


STILL_RUNNING = "QEMU reports migration is still running"
RECOVER_HINT = ("waits for the post-copy migration to be recovered: repeat it with "
                "VIR_MIGRATE_POSTCOPY_RESUME")
REFUSE_RECOVERY_NATIVE = ("post-copy migration of domain 'lab-guest' was not tunnelled: "
                          "recover it without VIR_MIGRATE_TUNNELLED")
REFUSE_RECOVERY_DEST = ("destination libvirt does not support post-copy recovery with "
                        "tunnelled migration")


def try_resume(a, b, flags=(), dest=None, during=None, bandwidth=1000, transport="tcp",
               api=False):
    """Ask A to recover its failed post-copy (with flags, e.g. tunnelled).
    Returns (rc, output) of the first try that is not refused as too early.

    libvirt marks a post-copy failed as soon as the migration API fails,
    which can be before QEMU itself noticed (its status is then still
    postcopy-active, not postcopy-paused) and while it cannot be resumed
    yet: both sides refuse the resume with "QEMU reports migration is still
    running", and leave everything as it was.  Wait for QEMU the way an
    operator would, by trying again (bounded)."""
    deadline = time.monotonic() + 60
    while True:
        rc, out = migrate(a, b, ["live", "p2p"] + list(flags) + ["postcopy", "postcopy-resume"],
                          transport=transport, dest=dest, during=during, api=api,
                          extra=["--postcopy-bandwidth", str(bandwidth)])
        if rc == 0 or STILL_RUNNING not in out or time.monotonic() > deadline:
            return rc, out
        log("QEMU has not paused the failed post-copy yet; trying again")
        time.sleep(1)


def resume_natively(a, b, g, daemons=None):
    """Recover a failed post-copy with a native resume; nothing may be lost."""
    rc, out = try_resume(a, b)
    if daemons:
        check_daemons(daemons)
    check(rc == 0, "native post-copy recovery failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)


def resume_tunnelled(a, b, g, daemons=None, transport="tcp", api=False):
    """Recover a failed post-copy through the tunnel (with api, through
    virDomainMigrateToURI3 as management software does); nothing may be lost."""
    rc, out = try_resume(a, b, ["tunnelled"], transport=transport, api=api)
    if daemons:
        check_daemons(daemons)
    check(rc == 0, "tunnelled post-copy recovery failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)


def open_tunnel(host, readonly=False, target=None, kind="nbd", quiet=False):
    args = [OPEN_TUNNEL, host.client_uri(), GNAME, kind]
    if target:
        args += ["--target", target]
    if readonly:
        args.append("--readonly")
    p = run(args, check_rc=False)
    out = p.stdout.strip()
    if not quiet:
        log("$ open-tunnel %s %s%s%s -> %s" % (host.name, kind, " --target " + target if target else "",
                                              " --readonly" if readonly else "", out))
    return out


NOT_PREPARER = "incoming migration of domain 'lab-guest' was prepared by another connection"



def disk_mib(info):
    key = "File processed" if "File processed" in info else "Disk processed"
    return mib_of(info, key)


def mirrors_running(host, disks):
    """Whether each of disks has its block copy job on host: its NBD
    connection is then past the handshake.  QEMU's NBD server drops a
    client whose handshake is not done within 10 s, so a case that stops
    the destination QEMU must not do it while a handshake is in flight."""
    for dev in disks:
        p = host.virsh("blockjob", GNAME, dev, "--info", check_rc=False)
        if "Block Copy" not in p.stdout + p.stderr:
            return False
    return True


def check_no_blockjob(host, dev="vda"):
    """No block job is left on dev of the guest on host."""
    p = host.virsh("blockjob", GNAME, dev, "--info", check_rc=False)
    check("No current block job" in p.stdout + p.stderr or p.stdout.strip() == "",
          "a block job is left on %s: %s" % (host.name.upper(), (p.stdout + p.stderr).strip()))


def fds_of(host):
    """Open file descriptors of each daemon process of host."""
    out = {}
    for comm, pid in host.daemon_pids().items():
        out[comm] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def rss_kib(pid):
    """Resident memory of a process, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fault_baseline(a, b, g):
    """Before a fault case's migration: the guest runs on A; what the
    daemons are and which descriptors they hold, to compare afterwards
    (check_daemons(), wait_fds_back())."""
    g.wait_progress(a, "guest progress on A", timeout=60)
    daemons = daemons_now(a, b)
    fds = (fds_of(a), fds_of(b))
    log("daemon fds before: A=%s B=%s" % fds)
    return daemons, fds


def wait_fds_back(a, b, fds):
    wait_for("the daemons to hold what they held before the migration",
             lambda: (fds_of(a), fds_of(b)) == fds, 30)


def nbd_sockets(host):
    return glob.glob(os.path.join(host.dir, "var", "lib", "libvirt", "qemu", "domain-*",
                                  "migration-nbd*.sock"))



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
    lo = g.ring * 4096
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


