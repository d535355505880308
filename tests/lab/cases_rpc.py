"""Lab cases: the RPC layer.  The private RPC that opens more streams of a
tunnelled migration, and the stream users the series' RPC changes touch
besides migration: `virsh console` and volume upload/download, forwarded
by virtproxyd."""
import hashlib
import os
import pty
import select
import shutil
import signal
import time

from e2e_common import (GNAME, LAB, PRIVATE, VIRSH, Failure, Guest, NOT_PREPARER, case, check,
                         check_daemons, daemons_now, disk_mib, fds_of, guest_disks, guest_nodisk,
                         jobinfo, log, migrate, open_tunnel, parse_console, prepare_disks,
                         verify_migrated, wait_for)


@case("tunnel stream RPC: every refusal is clear and disturbs nothing")
def t_open_tunnel_refusals(a, b):
    """Only the connection that prepared an incoming migration, that is its
    source's, may open more streams for it: anybody else, however
    privileged, is refused, and the migration goes on."""
    # converges at 16 MiB/s, slowly enough to probe B while it migrates in
    g = Guest(GNAME, wl_mem=16, wl_rate=4); g.start(a)
    daemons = daemons_now(a, b)
    check("has no incoming migration" in open_tunnel(a),
          "a domain that is not migrating in was not refused")
    check("read only access prevents virDomainMigrateOpenTunnel" in
          open_tunnel(a, readonly=True), "a read-only connection was not refused")
    refusals = []

    def probe(proc):
        wait_for("the incoming domain on B", lambda: proc.poll() is not None
                 or b.domstate(GNAME) is not None, 60)
        refusals.append(open_tunnel(b))
        refusals.append(open_tunnel(b, target="vda"))
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], during=probe,
                      extra=["--bandwidth", "16"])
    check(refusals and all(NOT_PREPARER in r for r in refusals),
          "another connection was not refused: %s" % refusals)
    check_daemons(daemons)
    check(rc == 0, "the refusals disturbed the migration: %s" % out)
    verify_migrated(a, b, g)


@case("tunnel stream RPC on a stock daemon fails cleanly", a="stock")
def t_open_tunnel_stock(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a)
    out = open_tunnel(a)
    check("ERROR" in out and "454" in out, "unexpected answer from a stock daemon: %s" % out)
    check_daemons(daemons)
    g.wait_progress(a, "guest progress on A", timeout=30)
    g.check_clean(a)



@case("tunnelled storage: nbd streams only for the source's connection")
def t_open_tunnel_nbd_refusals(a, b):
    """While a tunnelled storage migration comes in, another connection to
    the destination can open no stream for any of its disks, whatever it
    asks for (the refusals that depend on the disk and the kind, for the
    source's own connection, are unit tests); the migration completes."""
    g = guest_disks(("vda", "vdb"), shared=("vdb",)); prepare_disks(g, a, b); g.start(a)
    daemons = daemons_now(a, b)
    refusals = {}

    def probe(proc):
        wait_for("the mirror of vda to move", lambda: proc.poll() is not None or
                 disk_mib(jobinfo(a, GNAME, completed=False)) > 0, 60)
        refusals["migrated disk"] = open_tunnel(b, target="vda")
        refusals["shared disk"] = open_tunnel(b, target="vdb")
        refusals["no disk"] = open_tunnel(b)
        refusals["kind"] = open_tunnel(b, target="vda", kind="multifd")
        # then let precopy converge
        a.virsh("migrate-setspeed", GNAME, "1000", check_rc=False)
    # the mirror runs at 4 MiB/s: 8 s to probe while it moves
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"], during=probe,
                      extra=["--migrate-disks", "vda", "--bandwidth", "4"])
    check(len(refusals) == 4, "the migration ended before B could be probed")
    for k, r in refusals.items():
        check(NOT_PREPARER in r, "%s: expected %r, got %r" % (k, NOT_PREPARER, r))
    check_daemons(daemons)
    check(rc == 0, "the refusals disturbed the migration: %s" % out)
    verify_migrated(a, b, g, storage=True)


# ------------------------------------------------- other streams through virtproxyd

def console_status(host, dom, lines=3, timeout=60):
    """Read the guest's serial console with `virsh console` (on a pty, as an
    operator would) until `lines` workload status lines came through, then
    leave with Ctrl-].  Returns the status lines."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(VIRSH, [VIRSH, "-c", host.client_uri(), "console", "--force", dom])
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
            if out.count(b"WL t=") > lines:
                break
        os.write(fd, b"\x1d")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise Failure("virsh console did not leave on Ctrl-]")
    finally:
        os.close(fd)
    text = out.decode("utf-8", "replace")
    path = os.path.join(LAB, "console-capture.log")
    with open(path, "w") as f:
        f.write(text)
    stats, errors = parse_console(path)
    check(not errors, "the guest reported errors on the console: %s" % errors)
    return stats


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@case("split daemons: virsh console and vol-upload/download through virtproxyd",
      a="patched+split")
def t_streams_through_virtproxyd(a, b):
    """virtproxyd forwards a client's streams to virtqemud and virtstoraged
    with the remote driver's client streams, the code the series makes
    non-blocking and whose event callbacks 0004 fixed.  `virsh console`
    (three sessions) must show the guest's workload progressing; a 48 MiB
    vol-upload and vol-download must round-trip byte for byte; and once the
    clients are gone virtproxyd must hold no more file descriptors than
    before (11.3.0 kept every forwarded stream's client and connection)."""
    g = Guest(GNAME)
    xml = g.xml().replace("""    <serial type='file'>
      <source path='%s'/>
      <target port='0'/>
    </serial>""" % os.path.join(PRIVATE, GNAME + "-console.log"), """    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>""")
    check("type='pty'" in xml, "the guest's serial console could not be switched to a pty")
    xmlpath = os.path.join(LAB, GNAME + "-pty.xml")
    with open(xmlpath, "w") as f:
        f.write(xml)
    before = fds_of(a)
    log("virtproxyd has %d fds" % before["virtproxyd"])
    a.virsh("create", xmlpath)
    last = None
    for i in range(3):
        stats = console_status(a, GNAME)
        check(len(stats) >= 2, "console session %d showed %d status lines" % (i + 1, len(stats)))
        check(last is None or stats[-1]["t"] > last["t"], "the guest made no progress "
              "between console sessions")
        check(stats[-1]["pages"] > stats[0]["pages"] or stats[-1]["gen"] > stats[0]["gen"],
              "the workload made no progress in console session %d" % (i + 1))
        last = stats[-1]
        log("console session %d: t=%d mem_gen=%d mem_err=%d" % (i + 1, last["t"], last["gen"],
                                                                  last["mem_err"]))

    pooldir = os.path.join(a.private, "pool")
    os.makedirs(pooldir, exist_ok=True)
    src = os.path.join(LAB, "upload.bin")
    back = os.path.join(LAB, "download.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(48 << 20))
    try:
        a.virsh("pool-create-as", "labpool", "dir", "--target", os.path.join(PRIVATE, "pool"))
        a.virsh("vol-create-as", "labpool", "up.raw", "48M", "--format", "raw")
        t0 = time.monotonic()
        a.virsh("vol-upload", "--pool", "labpool", "up.raw", src, timeout=300)
        t1 = time.monotonic()
        a.virsh("vol-download", "--pool", "labpool", "up.raw", back, timeout=300)
        t2 = time.monotonic()
        log("vol-upload 48 MiB in %.1f s, vol-download in %.1f s" % (t1 - t0, t2 - t1))
        want = sha256(src)
        check(sha256(os.path.join(pooldir, "up.raw")) == want,
              "the uploaded volume differs from what was sent")
        check(sha256(back) == want, "the downloaded volume differs from what was uploaded")
    finally:
        a.virsh("pool-destroy", "labpool", check_rc=False)
        shutil.rmtree(pooldir, ignore_errors=True)
        for f in (src, back):
            if os.path.exists(f):
                os.unlink(f)
    a.virsh("destroy", GNAME)
    try:
        wait_for("virtproxyd to let go of the clients' connections",
                 lambda: fds_of(a)["virtproxyd"] <= before["virtproxyd"], 30)
    finally:
        log("virtproxyd has %d fds" % fds_of(a)["virtproxyd"])
