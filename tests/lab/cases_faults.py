"""Lab cases: faults during a tunnelled migration (link cuts, aborts, slow,
stalled or dead destination storage and QEMU), the daemons' memory bound
and credentials.  A peer that stops answering or restarts: cases_peers."""
import os
import signal
import subprocess
import time

from labpy import LAB, LinkProxy, RpcHoldProxy, SlowNbdDisk
from e2e_common import (Failure, GNAME, case, caught_up, check, check_daemons, check_keepalive,
                         check_no_blockjob,
                         copy_progress, daemons_now, disk_mib, fault_baseline, fds_of, fill_outside_ring,
                         guest_busy, guest_disks, guest_nodisk, jobinfo, log, mib_processed, migrate,
                         mirrors_running, nbd_sockets, prepare_disks, rss_kib, run, slow_disks_xml,
                         tunnel_or_native, verify_migrated, wait_fds_back, wait_for)


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



@case("tunnelled storage: the source domain destroyed mid-mirror; no leaks")
def t_tunnel_storage_destroyed(a, b):
    """`virsh destroy` on A while the mirrors run: the migration job must
    notice that its domain died, fail with an error and close every tunnel;
    B must drop its domain.  Once the guest is started again on A (on
    fresh disks), both daemons hold exactly the file descriptors they held
    before the migration, and the guest migrates again."""
    g = guest_disks(("vda", "vdb")); prepare_disks(g, a, b); g.start(a)
    g.wait_progress(a, "guest progress on A", timeout=60)
    daemons = daemons_now(a, b)
    fds_a, fds_b = fds_of(a), fds_of(b)
    log("daemon fds before: A=%s B=%s" % (fds_a, fds_b))

    def destroy(proc):
        wait_for("both mirrors to run", lambda: proc.poll() is not None or
                 mirrors_running(a, ("vda", "vdb")), 60)
        check(proc.poll() is None, "the migration ended before the destroy")
        p = a.virsh("destroy", GNAME, check_rc=False)
        log("$ virsh destroy %s -> rc %d %s" % (GNAME, p.returncode, p.stderr.strip()))
        check(p.returncode == 0, "destroy failed: %s" % p.stderr.strip())
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"], during=destroy,
                      during_mirror=True, extra=["--bandwidth", "2"], timeout=120)
    check(rc != 0, "the migration succeeded although its domain was destroyed")
    log("error: %s" % out.strip().splitlines()[-1])
    check_daemons(daemons)
    check(a.domstate(GNAME) == "shut off (destroyed)", "source state %r" % a.domstate(GNAME))
    wait_for("the incoming domain to go from B", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 60)
    check(nbd_sockets(a) == [], "NBD tunnel sockets left on A: %s" % nbd_sockets(a))
    # A new boot starts the disk writer's sequence again: fresh disks.
    os.unlink(g.console(a))
    prepare_disks(g, a, b)
    a.virsh("start", GNAME)
    g.wait_progress(a, "guest progress on A after a new start", timeout=90)
    wait_for("the daemons to hold what they held before the migration",
             lambda: fds_of(a) == fds_a and fds_of(b) == fds_b, 30)
    log("daemon fds after: A=%s B=%s" % (fds_of(a), fds_of(b)))
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    check(rc == 0, "migration after the destroy failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("tunnelled precopy: the destination domain destroyed by another client; no leaks")
def t_tunnel_dest_destroyed(a, b):
    """`virsh destroy` on B, by a client other than the migration, while
    pre-copy moves through the tunnel: the migration fails with an error,
    the guest keeps running on A, clean, both daemons hold the descriptors
    they held before, and the guest migrates again."""
    g = guest_nodisk(); g.start(a)
    daemons, fds = fault_baseline(a, b, g)

    def destroy(proc):
        wait_for("4 MiB through the tunnel", lambda: proc.poll() is not None
                 or mib_processed(a) > 4, 60)
        check(proc.poll() is None, "the migration ended before the destroy")
        p = b.virsh("destroy", GNAME, check_rc=False)
        log("$ virsh -c B destroy %s -> rc %d %s" % (GNAME, p.returncode, p.stderr.strip()))
        check(p.returncode == 0, "destroy on B failed: %s" % p.stderr.strip())
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], during=destroy,
                      extra=["--bandwidth", "8"], timeout=120)
    check(rc != 0, "the migration succeeded although B's domain was destroyed")
    log("error: %s" % out.strip().splitlines()[-1])
    check_daemons(daemons)
    check(a.domstate(GNAME) == "running (booted)", "source state %r" % a.domstate(GNAME))
    wait_for("B to have no domain and no QEMU", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 60)
    g.wait_progress(a, "guest progress on A after the failure", timeout=60)
    g.check_clean(a)
    wait_fds_back(a, b, fds)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"])
    check(rc == 0, "migration after the destroy failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy: the source QEMU killed mid-migration; no leaks", heavy=True)
def t_tunnel_src_qemu_killed(a, b):
    """A's QEMU dies (SIGKILL) while pre-copy moves through the tunnel: the
    job notices, fails with an error and closes its tunnel; A's domain is
    shut off as crashed, B drops its domain, both daemons survive with the
    descriptors they held before, and a new boot of the guest migrates."""
    g = guest_nodisk(); g.start(a)
    daemons, fds = fault_baseline(a, b, g)

    def kill(proc):
        wait_for("4 MiB through the tunnel", lambda: proc.poll() is not None
                 or mib_processed(a) > 4, 60)
        pids = a.qemu_pids()
        check(proc.poll() is None and len(pids) == 1,
              "no migration from A in progress (QEMU on A: %s)" % pids)
        os.kill(pids[0], signal.SIGKILL)
        log("A's QEMU killed")
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], during=kill,
                      extra=["--bandwidth", "8"], timeout=120)
    check(rc != 0, "the migration succeeded although A's QEMU was killed")
    log("error: %s" % out.strip().splitlines()[-1])
    check_daemons(daemons)
    wait_for("A's domain to be shut off", lambda: (a.domstate(GNAME) or "").startswith(
        "shut off"), 60)
    log("A: %s" % a.domstate(GNAME))
    wait_for("B to have no domain and no QEMU", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 60)
    os.unlink(g.console(a))
    a.virsh("start", GNAME)
    g.wait_progress(a, "guest progress on A after a new start", timeout=90)
    wait_fds_back(a, b, fds)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"])
    check(rc == 0, "migration after the kill failed: %s" % out)
    verify_migrated(a, b, g)


def kept_on_a_after_cut(a, b, g, daemons):
    """After a link cut failed a tunnelled storage migration: no daemon
    died, the guest runs on A as booted, clean and making progress, B
    dropped its domain and A holds no tunnel socket."""
    check_daemons(daemons)
    sa = a.domstate(GNAME)
    check(sa == "running (booted)", "source state %r, expected running" % sa)
    wait_for("the destination to clean up", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 60)
    check(nbd_sockets(a) == [], "NBD tunnel sockets left on A: %s" % nbd_sockets(a))
    g.wait_progress(a, "guest progress on A after the cut", timeout=60)
    g.check_clean(a)


@case("tunnelled storage: link cut mid-mirror keeps the guest on A")
def t_tunnel_storage_cut(a, b):
    g = guest_disks(("vda", "vdb")); prepare_disks(g, a, b); g.start(a)
    proxy = LinkProxy(b.addr)
    daemons = daemons_now(a, b)

    def cut(proc):
        # Both mirrors run, so no NBD handshake is in flight (that moment
        # has its own case, below), and have moved.
        wait_for("both mirrors to move", lambda: proc.poll() is not None or
                 (mirrors_running(a, ("vda", "vdb")) and
                  disk_mib(jobinfo(a, GNAME, completed=False)) > 1), 60)
        check(proc.poll() is None, "the migration ended before the cut")
        log("cutting the link after %d bytes" % proxy.bytes)
        proxy.cut()
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"], dest=proxy.uri(),
                      extra=["--bandwidth", "2"], timeout=120, during=cut, during_mirror=True)
    check(proxy.cut_done, "the link was never cut")
    check(rc != 0, "migration succeeded although the link was cut")
    log("error: %s" % out.strip().splitlines()[-1])
    kept_on_a_after_cut(a, b, g, daemons)
    check_no_blockjob(a)



@case("tunnelled storage: link cut while QEMU waits for B's NBD server to greet it")
def t_tunnel_storage_cut_handshake(a, b):
    """QEMU on A opens its NBD connection inside blockdev-add, with the
    migration job waiting in the monitor, and the server speaks first.  The
    proxy passes B's replies but no stream data any more from the first
    bytes of a tunnel stream (that greeting) on; once A started the disk's
    tunnel (B answered OpenTunnel), the link is cut.  Nothing arrives on
    the disk's stream, so only the closed connection can tell its tunnel
    to give up, and with it QEMU's NBD client and the job: the migration
    must fail promptly, the guest stay on A and migrate again afterwards."""
    import threading
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    proxy = RpcHoldProxy(b.addr)
    daemons = daemons_now(a, b)
    log_start = len(a.daemon_log())
    cut_at, finished = [], threading.Event()

    def tunnel_started():
        return "tunnel=nbd:vda fd=" in a.daemon_log()[log_start:]

    def cut():
        deadline = time.monotonic() + 90
        while not finished.is_set() and time.monotonic() < deadline:
            if proxy.held.is_set() and tunnel_started():
                cut_at.append(time.monotonic())
                log("B's NBD greeting held back, vda's tunnel started; cutting the link")
                proxy.cut()
                return
            time.sleep(0.05)
    cutter = threading.Thread(target=cut, daemon=True)
    cutter.start()
    try:
        rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"],
                          dest=proxy.uri(), timeout=90)
    finally:
        finished.set()
        cutter.join()
        proxy.cut()
    check(cut_at, "the precondition was not met: greeting held %s, vda's tunnel started %s"
          % (proxy.held.is_set(), tunnel_started()))
    check(rc != 0, "migration succeeded although the link was cut")
    log("failed %.1f s after the cut: %s" % (time.monotonic() - cut_at[0],
                                             out.strip().splitlines()[-1]))
    check("Lost connection to destination host" in out,
          "the error does not say the destination was lost: %s" % out.strip())
    kept_on_a_after_cut(a, b, g, daemons)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    check(rc == 0, "migration after the cut failed: %s" % out)
    verify_migrated(a, b, g, storage=True)

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


@case("tunnelled storage: a stalled destination disk holds back only itself", heavy=True)
def t_tunnel_storage_stalled(a, b):
    """Both disks' targets on B are behind slow links (vda 4 MiB/s, vdb
    2 MiB/s), and vda holds 64 MiB, vdb 24 MiB besides the guest's ring.
    vdb's target stops taking writes (its forwarder stops reading) as soon
    as vda's mirror writes to B, before vdb's own mirror can have copied
    anything, and stays stalled for longer than the keepalive allows
    (5 s x 5 + 5 s) and until all of vda's data is on B.  Meanwhile vdb's
    mirror must really be writing (its writes wait in front of its stalled
    target), vda must keep moving (the rest of its data, and the guest's
    new writes) and no keepalive may trip: the destination daemon must not
    stop reading the connection because vdb's stream is full.  Once vdb's
    target resumes, the migration completes with both disks intact.

    Nothing here depends on timing: vdb is stalled before its mirror
    starts, so vda's progress while vdb is stalled is shown whatever the
    machine's speed.  (vdb, the last disk, is the one stalled: QEMU drains
    every disk while it sets up a mirror, so a disk stalled before the next
    one's mirror started would hold that one back natively too.)
    LAB_NATIVE=1 runs the same natively."""
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

        def stall(proc):
            # B's QEMU has opened both targets once vda's mirror writes to
            # B; vdb's mirror starts only after vda's (disk order).
            wait_for("vda's mirror to write to B", lambda: proc.poll() is not None or
                     slow["vda"].written >= 2**20, 120)
            check(proc.poll() is None, "the migration ended before vda's mirror wrote to B")
            slow["vdb"].pause()
            t0 = time.monotonic()
            log("vdb's target on B stalled; vda's target had got %.1f MiB" %
                (slow["vda"].written / 2**20))
            wait_for("vdb's mirror writes to wait at its stalled target",
                     lambda: proc.poll() is not None or slow["vdb"].pending() > 0, 120)
            check(proc.poll() is None, "the migration ended while vdb was stalled")
            written, moved = slow["vdb"].written, slow["vda"].written
            log("vdb's mirror is writing: %d bytes wait at its stalled target, %.1f MiB "
                "went through before the stall" % (slow["vdb"].pending(), written / 2**20))
            wait_for("vda's data to reach B while vdb is stalled",
                     lambda: proc.poll() is not None or compare["vda"](quiet=True), 180)
            check(proc.poll() is None, "the migration ended while vdb was stalled")
            log("vda's data was on B %.1f s into the stall" % (time.monotonic() - t0))
            # hold the stall past the point where a keepalive would trip
            try:
                proc.wait(timeout=max(0, hold - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                pass
            check(proc.poll() is None, "the migration failed while vdb was stalled")
            check(slow["vdb"].written == written, "vdb's target was not really stalled")
            check(slow["vda"].written > moved,
                  "vda did not move while vdb was stalled (%d bytes before and after)" % moved)
            log("resuming vdb's target after %.1f s; vda moved %.1f MiB meanwhile" %
                (time.monotonic() - t0, (slow["vda"].written - moved) / 2**20))
            slow["vdb"].resume()
        try:
            rc, out = migrate(a, b, ["live", "p2p"] + tunnel_or_native() + ["copy-storage-all"],
                              extra=["--xml", xmlpath], during=stall, during_mirror=True)
        finally:
            slow["vdb"].resume()
        check_daemons(daemons)
        check_keepalive((a, b), logs)
        check(rc == 0, "migration failed: %s" % out)
        verify_migrated(a, b, g, storage=True)
        for dev in ("vda", "vdb"):
            compare[dev]()
    finally:
        for d in slow.values():
            d.stop()


def hold_dest_qemu_stopped(a, b, proc, hold, stopped, what):
    """Stop B's QEMU (SIGSTOP) for `hold` s while `proc` migrates, check the
    migration is still running, then resume it and lift the bandwidth
    limit.  `stopped` collects the PID for the caller's finally."""
    pids = b.qemu_pids()
    check(proc.poll() is None and len(pids) == 1,
          "no migration to B in progress (QEMU on B: %s)" % pids)
    os.kill(pids[0], signal.SIGSTOP)
    stopped.append(pids[0])
    t0 = time.monotonic()
    log("B's QEMU stopped with %s" % what)
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


@case("tunnelled storage: the destination QEMU stops reading mid-mirror; keepalive holds",
      heavy=True)
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
            return copied[0] > 1 and mirrors_running(a, ("vda", "vdb"))
        wait_for("both mirrors to move", moving, 60)
        hold_dest_qemu_stopped(a, b, proc, hold, stopped,
                               "%.1f MiB of storage copied" % copied[0])
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


@case("tunnelled precopy: the destination QEMU stops reading for 40 s; keepalive holds")
def t_tunnel_precopy_dest_stopped(a, b):
    """B's QEMU is stopped (SIGSTOP) for 40 s while the memory moves at 4
    MiB/s.  QEMU's migration stream does not bound what it sends: only the
    destination's credits keep its data from filling B's request window,
    after which B's daemon would stop reading the connection and the
    keepalive would trip after 30 s, where a native migration just waits.
    Once QEMU goes on (and the bandwidth limit is lifted), the migration
    completes.  LAB_NATIVE=1 runs it natively."""
    precopy_dest_stopped(a, b)


@case("tunnelled precopy, split destination: the destination QEMU stops reading for 40 s; "
      "keepalive holds", b="patched+split", heavy=True)
def t_tunnel_precopy_dest_stopped_split(a, b):
    """The same through virtproxyd: it asks virtqemud for credits on the
    stream it forwards, so that neither connection fills up."""
    precopy_dest_stopped(a, b)


def precopy_dest_stopped(a, b):
    hold = 40
    g = guest_nodisk(); g.start(a)
    logs = (len(a.daemon_log()), len(b.daemon_log()))
    daemons = daemons_now(a, b)
    stopped = []

    def stop(proc):
        hold_dest_qemu_stopped(a, b, proc, hold, stopped,
                               "%.1f MiB of memory sent" % mib_processed(a))
    try:
        rc, out = migrate(a, b, ["live", "p2p"] + tunnel_or_native(),
                          extra=["--bandwidth", "4"], during=stop)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    check_daemons(daemons)
    check_keepalive((a, b), logs)
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


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


# ------------------------------------------------- memory and credentials

STREAM_QUEUE_MIB = 2


@case("a stalled destination QEMU with synchronous writes: B's daemon queues at most its cap",
      env={"LAB_DAEMON_CONF": "max_client_stream_queue = %d\nmax_stream_queue = %d"
           % (STREAM_QUEUE_MIB, 2 * STREAM_QUEUE_MIB)}, heavy=True)
def t_stream_queue_cap(a, b):
    """B's QEMU stops reading (SIGSTOP, 20 s: less than the keepalive
    allows, so the migration survives) while a synchronous-writes mirror
    pushes into it at 8 MiB/s; B's daemon is configured to queue at most
    2 MiB of stream data per client without request slots.  Its memory
    must grow by no more than that, plus the max_client_requests packets
    it takes beyond the cap and some slack (the mirror alone has 16 MiB in
    flight, so without the cap B's daemon would hold all of it), and the
    migration completes with the disk intact."""
    hold, slack_mib = 20, 6
    g = guest_disks(("vda",)); prepare_disks(g, a, b, size_mib={"vda": 96})
    compare = fill_outside_ring(g, a, b, "vda", 64)
    g.start(a)
    daemon = list(b.daemon_pids().values())[0]
    daemons = daemons_now(a, b)
    stopped, rss = [], {}

    def stop(proc):
        wait_for("the mirror to move", lambda: proc.poll() is not None
                 or disk_mib(jobinfo(a, GNAME, completed=False)) > 1, 60)
        pids = b.qemu_pids()
        check(proc.poll() is None and len(pids) == 1, "no migration to B in progress")
        rss["before"] = rss["peak"] = rss_kib(daemon)
        os.kill(pids[0], signal.SIGSTOP)
        stopped.append(pids[0])
        t0 = time.monotonic()
        while time.monotonic() - t0 < hold and proc.poll() is None:
            rss["peak"] = max(rss["peak"], rss_kib(daemon))
            time.sleep(0.2)
        check(proc.poll() is None, "the migration ended while B's QEMU was stopped")
        os.kill(stopped.pop(), signal.SIGCONT)
        a.virsh("migrate-setspeed", GNAME, "--bandwidth", "10000")
    try:
        rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all",
                                 "copy-storage-synchronous-writes"],
                          extra=["--bandwidth", "8"], during=stop, during_mirror=True)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    check_daemons(daemons)
    grew = (rss.get("peak", 0) - rss.get("before", 0)) / 1024
    log("B's daemon: RSS %.1f MiB before the stall, peak %.1f MiB (+%.1f MiB; cap %d MiB)"
        % (rss.get("before", 0) / 1024, rss.get("peak", 0) / 1024, grew, STREAM_QUEUE_MIB))
    check(grew <= STREAM_QUEUE_MIB + 2 + slack_mib,
          "B's daemon grew by %.1f MiB, more than its %d MiB stream queue cap allows"
          % (grew, STREAM_QUEUE_MIB))
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)
    compare()


@case("debug logs of both daemons hold no credential", env={"LAB_LOG_FILTERS": "1:*"})
def t_no_credential_in_logs(a, b):
    """With every module of both daemons at debug level, a tunnelled storage
    migration with post-copy (every kind of stream) leaves nothing in the
    logs that would let another client attach to a migration: the streams
    are bound to the connection that prepared the migration, so there is no
    secret to log, and none of the lab's TLS key material shows up
    either."""
    g = guest_disks(("vda",), busy=True); prepare_disks(g, a, b); g.start(a)
    logs = (len(a.daemon_log()), len(b.daemon_log()))
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"],
                      switch_postcopy=True, extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True, storage=True)
    text = a.daemon_log()[logs[0]:] + b.daemon_log()[logs[1]:]
    # the logs really are at debug level and cover the streams being opened
    check("virDomainMigrateOpenTunnel" in text and "kind=nbd" in text,
          "the debug logs do not show the tunnel streams being opened")
    check("<tunnel" not in text and "secret=" not in text,
          "a tunnel credential appears in the daemons' logs")
    key = open(os.path.join(LAB, "pki", "hostkey.pem")).read().splitlines()
    leaked = [line for line in key if len(line) > 40 and line in text]
    check(not leaked, "the lab's TLS private key appears in the daemons' logs")
    log("%d MiB of debug logs, no credential in them" % (len(text) // 2**20))
