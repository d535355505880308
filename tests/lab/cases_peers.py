"""Lab cases: a peer that stops answering or goes away in the middle of a
tunnelled migration (its daemon frozen or restarted, the link blackholed).
The source daemon must keep answering its other clients, the migration must
fail with an error, and nothing may be lost."""
import os
import re
import select
import signal
import subprocess
import tempfile
import time

from labpy import LinkProxy
from e2e_common import (Failure, GNAME, case, check, check_daemons, check_no_blockjob,
                         daemons_now, disk_mib,
                         guest_busy, guest_disks, guest_nodisk, jobinfo, log, mib_processed, migrate,
                         nbd_sockets, prepare_disks, resume_natively, resume_tunnelled,
                         verify_migrated,
                         wait_for, wait_guest_on, wait_postcopy_failed, wait_postcopy_switch)


# ------------------------------------------------- a destination that stops answering

def check_responsive(host, what, probes=3):
    """The daemon of `host` answers other clients while `what`: `virsh list`
    must come back, each time, well within the keepalive's 30 s (stock
    11.3.0 answers in tens of ms; the series once did not answer at all)."""
    for i in range(probes):
        t0 = time.monotonic()
        try:
            p = host.virsh("list", "--all", timeout=10, check_rc=False)
        except Failure as e:
            raise Failure("%s while %s" % (e, what))
        check(p.returncode == 0, "virsh list on %s failed: %s" % (host.name, p.stderr.strip()))
        log("%s answered `virsh list` in %.0f ms (%s)" % (host.name,
                                                        (time.monotonic() - t0) * 1000, what))
        time.sleep(1)


def freeze_destination(b, how, proxy):
    """Make the destination stop answering: its daemon stopped (SIGSTOP),
    or the link between the daemons blackholed (nothing goes through, no
    reset).  Returns the function that undoes it."""
    if how == "sigstop":
        pids = list(b.daemon_pids().values())
        check(pids, "no daemon on B")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        log("B's daemon stopped (SIGSTOP %s)" % pids)

        def thaw():
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        return thaw
    proxy.blackhole()
    log("the link to B is blackholed after %d bytes" % proxy.bytes)
    return proxy.resume


def frozen_destination(a, b, how, storage=False, postcopy=False):
    """Freeze the destination (`how`: "sigstop" or "blackhole") in the
    middle of a tunnelled migration.  The source daemon must go on
    answering other clients; domjobabort must return promptly (pre-copy
    and storage); the migration must fail, with the guest still running on
    A, verified, and nothing left on B once it is back (pre-copy, storage),
    or the guest paused on A and recoverable (post-copy, recovered here
    with a native resume)."""
    if storage:
        g = guest_disks(("vda",)); prepare_disks(g, a, b)
    else:
        g = guest_busy()
    g.start(a)
    proxy = LinkProxy(b.addr) if how == "blackhole" else None
    daemons = daemons_now(a, b)
    thawed = []
    events = {}

    def freeze(proc):
        if postcopy:
            wait_postcopy_switch(a, proc)
            wait_guest_on(b, g, proc)
        elif storage:
            wait_for("the mirror to move", lambda: proc.poll() is not None
                     or disk_mib(jobinfo(a, GNAME, completed=False)) > 1, 60)
        else:
            wait_for("8 MiB through the tunnel", lambda: proc.poll() is not None
                     or mib_processed(a) > 8, 60)
        check(proc.poll() is None, "the migration ended before the destination froze")
        thaw = freeze_destination(b, how, proxy)
        thawed.append(thaw)
        events["frozen"] = time.monotonic()
        check_responsive(a, "the destination is frozen")
        p = a.virsh("domjobinfo", GNAME, timeout=10, check_rc=False)
        check(p.returncode == 0, "domjobinfo on A failed: %s" % p.stderr.strip())
        if not postcopy:
            t0 = time.monotonic()
            p = a.virsh("domjobabort", GNAME, timeout=20, check_rc=False)
            log("$ virsh domjobabort -> rc %d in %.1f s %s" % (p.returncode, time.monotonic() - t0,
                                                               p.stderr.strip()))
            check(p.returncode == 0, "domjobabort failed: %s" % p.stderr.strip())
            check_responsive(a, "the migration is being aborted", probes=2)
    flags = ["live", "p2p", "tunnelled"]
    extra = ["--bandwidth", "8"]
    if storage:
        flags.append("copy-storage-all")
        extra = ["--bandwidth", "2"]
    if postcopy:
        flags.append("postcopy")
        extra += ["--postcopy-bandwidth", "4"]
    try:
        rc, out = migrate(a, b, flags, dest=proxy.uri() if proxy else None,
                          switch_postcopy=postcopy, during=freeze, during_mirror=storage,
                          extra=extra, timeout=180)
        check(rc != 0, "the migration succeeded although the destination froze")
        log("the migration failed %.0f s after the destination froze: %s" % (
            time.monotonic() - events.get("frozen", time.monotonic()),
            out.strip().splitlines()[-1] if out.strip() else ""))
        check_responsive(a, "the migration failed", probes=1)
    finally:
        for thaw in thawed:
            thaw()
        if proxy:
            proxy.close()
    check_daemons(daemons)
    if postcopy:
        wait_postcopy_failed(a, b)
        resume_natively(a, b, g)
        return
    wait_for("the guest to keep running on A",
             lambda: (a.domstate(GNAME) or "").startswith("running"), 60)
    g.wait_progress(a, "guest progress on A", timeout=60)
    g.check_clean(a)
    wait_for("B to remove the incoming domain", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 90)
    if storage:
        check_no_blockjob(a)


@case("frozen destination daemon (SIGSTOP) in tunnelled pre-copy: the source answers, abort works",
      heavy=True)
def t_frozen_precopy(a, b):
    frozen_destination(a, b, "sigstop")


@case("frozen destination daemon (SIGSTOP) mid-mirror: the source answers, abort works",
      heavy=True)
def t_frozen_storage(a, b):
    frozen_destination(a, b, "sigstop", storage=True)


@case("frozen destination daemon (SIGSTOP) in tunnelled post-copy: paused, then recovered",
      heavy=True)
def t_frozen_postcopy(a, b):
    frozen_destination(a, b, "sigstop", postcopy=True)


@case("blackholed link in tunnelled pre-copy: the source answers, abort works",
      heavy=True)
def t_blackhole_precopy(a, b):
    frozen_destination(a, b, "blackhole")


@case("blackholed link mid-mirror: the source answers, abort works",
      heavy=True)
def t_blackhole_storage(a, b):
    frozen_destination(a, b, "blackhole", storage=True)


@case("blackholed link in tunnelled post-copy: paused, then recovered",
      heavy=True)
def t_blackhole_postcopy(a, b):
    frozen_destination(a, b, "blackhole", postcopy=True)


# ------------------------------------------------- daemons restarted mid-migration

def restarted_daemon(a, b, where, kill=False, storage=False, postcopy=False):
    """Restart the libvirt daemon of `where` ("source" or "destination")
    while a tunnelled migration runs: SIGTERM as a service restart does, or
    SIGKILL (kill) as a crash, then start it again.  The tunnels die with
    the daemon, so the migration fails.  What a restarted libvirt promises
    must hold: the daemon finds the guest again from its status XML (with
    the tunnelled NBD targets in it), the guest keeps running on A on its
    own disks, B drops the incoming domain, nothing is left behind, and a
    second tunnelled migration of the same guest then completes.  In
    post-copy (the guest already runs on B) the guest is paused on both
    hosts instead, waiting for recovery, and a tunnelled resume from A
    completes the migration."""
    if postcopy:
        g = guest_busy()
    elif storage:
        g = guest_disks(("vda",)); prepare_disks(g, a, b)
    else:
        # dirties 32 MiB/s: pre-copy at 8 MiB/s goes on until the restart,
        # and the second, unlimited migration converges even when the
        # daemons are slow (sanitized, under load); a busy guest did not
        g = guest_nodisk()
    g.start(a)
    host, other = (a, b) if where == "source" else (b, a)
    daemons = daemons_now(other)
    restarted = []

    def restart(proc):
        if postcopy:
            wait_postcopy_switch(a, proc)
            wait_guest_on(b, g, proc)
        elif storage:
            wait_for("the mirror to move", lambda: proc.poll() is not None
                     or disk_mib(jobinfo(a, GNAME, completed=False)) > 1, 60)
        else:
            wait_for("8 MiB through the tunnel", lambda: proc.poll() is not None
                     or mib_processed(a) > 8, 60)
        check(proc.poll() is None, "the migration ended before the %s daemon restarted" % where)
        t0 = time.monotonic()
        host.restart_daemons(kill=kill)
        restarted.append(True)
        log("%s's daemon %s in %.1f s" % (host.name.upper(), "killed and started again"
                                         if kill else "restarted", time.monotonic() - t0))
    flags = ["live", "p2p", "tunnelled"] + (["copy-storage-all"] if storage else [])
    extra = ["--bandwidth", "2" if storage else "8"]
    if postcopy:
        flags.append("postcopy")
        extra += ["--postcopy-bandwidth", "4"]
    rc, out = migrate(a, b, flags, during=restart, during_mirror=storage,
                      switch_postcopy=postcopy, extra=extra, timeout=180)
    check(restarted, "the %s daemon was never restarted" % where)
    check(rc != 0, "the migration succeeded although the %s daemon restarted" % where)
    log("error: %s" % (out.strip().splitlines()[-1] if out.strip() else ""))
    check_daemons(daemons)
    if postcopy:
        wait_postcopy_failed(a, b)
        resume_tunnelled(a, b, g, daemons=daemons_now(a, b))
        return

    wait_for("the guest to run on A again",
             lambda: (a.domstate(GNAME) or "").startswith("running"), 60)
    log("state on A: %s" % a.domstate(GNAME))
    g.wait_progress(a, "guest progress on A", timeout=60)
    g.check_clean(a)
    wait_for("B to remove the incoming domain", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 90)
    p = a.virsh("domjobinfo", GNAME, check_rc=False)
    check(p.returncode == 0 and "None" in p.stdout.split("\n")[0],
          "a job is left on A: %s" % (p.stdout + p.stderr).strip())
    if storage:
        wait_for("the tunnelled NBD sockets on A to go",
                 lambda: nbd_sockets(a) == [], 30)
        check_no_blockjob(a)

    log("a second tunnelled migration of the same guest")
    rc, out = migrate(a, b, flags, timeout=300)
    check(rc == 0, "the second migration failed: %s" % out)
    verify_migrated(a, b, g, storage=storage)


@case("source daemon restarted (SIGTERM) mid-mirror: the guest stays on A, migrates again",
      heavy=True)
def t_restart_source_storage(a, b):
    restarted_daemon(a, b, "source", storage=True)


@case("source daemon killed (SIGKILL) in tunnelled pre-copy: the guest stays on A, migrates again")
def t_kill_source_precopy(a, b):
    restarted_daemon(a, b, "source", kill=True)


@case("destination daemon killed (SIGKILL) mid-mirror: the guest stays on A, migrates again")
def t_kill_destination_storage(a, b):
    restarted_daemon(a, b, "destination", kill=True, storage=True)


@case("destination daemon killed (SIGKILL) in tunnelled pre-copy: the guest stays on A, "
      "migrates again", heavy=True)
def t_kill_destination_precopy(a, b):
    restarted_daemon(a, b, "destination", kill=True)


@case("source daemon killed (SIGKILL) mid-mirror: the guest stays on A, migrates again",
      heavy=True)
def t_kill_source_storage(a, b):
    restarted_daemon(a, b, "source", kill=True, storage=True)


@case("destination daemon killed (SIGKILL) in tunnelled post-copy: paused, tunnelled resume "
      "recovers")
def t_kill_destination_postcopy(a, b):
    restarted_daemon(a, b, "destination", kill=True, postcopy=True)


@case("source daemon killed (SIGKILL) in tunnelled post-copy: paused, tunnelled resume "
      "recovers", heavy=True)
def t_kill_source_postcopy(a, b):
    restarted_daemon(a, b, "source", kill=True, postcopy=True)


# ------------------------------------------------- a poor link

@case("headline over a slow, lossy link (24 MiB/s, 2 ms, stalls as on lost segments)", heavy=True)
def t_lossy_link(a, b):
    """The daemons talk through a LinkProxy that carries at most 24 MiB/s
    towards B, delays every chunk by 2 ms both ways, and holds 1 chunk in
    200 back for 0.2-0.6 s more, as TCP does while it retransmits a lost
    segment (the kernel here has no netem).  The headline migration
    (post-copy and storage, through the tunnel) completes and is verified;
    no daemon died."""
    g = guest_disks(("vda",), busy=True); prepare_disks(g, a, b); g.start(a)
    proxy = LinkProxy(b.addr, rate=24 * 2**20, latency=0.002, stall=(0.005, (0.2, 0.6)))
    daemons = daemons_now(a, b)
    try:
        rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"],
                          dest=proxy.uri(), switch_postcopy=True, extra=["--bandwidth", "8"])
    finally:
        proxy.close()
    log("link: %.0f MiB through, %d stalls" % (proxy.bytes / 2**20, proxy.stalls))
    check(proxy.stalls > 0, "the link never stalled")
    check_daemons(daemons)
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True, storage=True)


# ------------------------------------------------- a destination gone while the source negotiates

GDB = "/usr/bin/gdb"


class Gdb:
    """gdb attached to a daemon in batch mode, running `script` (its
    commands after the attach, which stop the daemon until the script's
    `continue`).  The script prints READY before it continues; stop()
    interrupts a `continue` that is still running, so that the script's
    `detach` takes the breakpoints out again, and returns what gdb
    printed.  A gdb that does not answer is killed, and the case fails:
    its daemon may be left stopped or with breakpoints in."""

    def __init__(self, pid, script, timeout=120):
        with tempfile.NamedTemporaryFile("w", suffix=".gdb", delete=False) as f:
            f.write("set pagination off\nset confirm off\n"
                    "handle all nostop noprint pass\n" + script)
        self.path = f.name
        self.lines = []
        self.proc = subprocess.Popen([GDB, "-nx", "-batch", "-p", str(pid), "-x", self.path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        try:
            self._wait_ready(pid, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, pid, timeout):
        deadline = time.monotonic() + timeout
        buf = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("gdb did not attach to %d within %d s" % (pid, timeout))
            if not select.select([self.proc.stdout], [], [], left)[0]:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 4096).decode(errors="replace")
            if not chunk:
                raise Failure("gdb exited before it was ready: %s" % buf[-1000:])
            buf += chunk
            if "READY\n" in buf:
                self.lines.append(buf)
                return

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise Failure("gdb did not detach within %d s" % timeout)
        finally:
            if os.path.exists(self.path):
                os.unlink(self.path)
        return "".join(self.lines) + out


@case("destination daemon killed while the source asks for its migration features: a clear "
      "error, the guest stays on A, migrates again")
def t_kill_destination_negotiating(a, b):
    """B's daemon dies (SIGKILL, from gdb) when it is asked whether it
    supports peer-to-peer migration, the first question the source asks
    its peer once connected.  Each question is a remote call, made with
    the domain unlocked; a failed one must not leave that section with a
    jump, or the source unlocks the domain again in its cleanup while
    another thread may hold the lock (libvirt 11.3.0 did).  gdb on A's
    daemon prints the domain's lock word whenever the daemon leaves the
    domain for a remote call: it must be held each time."""
    g = guest_nodisk()
    g.start(a)
    (adaemon, apid), = a.daemon_pids().items()
    (bdaemon, bpid), = b.daemon_pids().items()
    check(adaemon == bdaemon == "libvirtd", "expected libvirtd on both hosts: %s, %s"
          % (adaemon, bdaemon))
    # the lock word and its owner, and the thread that leaves the domain
    watch = Gdb(apid, "break qemuDomainObjEnterRemote\n"
                      "commands\nsilent\n"
                      "printf \"enter-remote lock=%d owner=%d \", "
                      "obj->parent.lock.lock.__data.__lock, obj->parent.lock.lock.__data.__owner\n"
                      "python print('lwp=%d' % gdb.selected_thread().ptid[1])\n"
                      "continue\nend\n"
                      "echo READY\\n\ncontinue\ndetach\nquit\n")
    try:
        # VIR_DRV_FEATURE_MIGRATION_P2P = 4, the second argument; the
        # kill only happens at the breakpoint
        killer = Gdb(bpid, "break *virConnectSupportsFeature if ($rsi & 0xffffffff) == 4\n"
                           "commands\nsilent\necho KILLED\\n\nkill\nquit\nend\n"
                           "echo READY\\n\ncontinue\ndetach\nquit\n")
        try:
            rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], timeout=120)
        finally:
            killed = killer.stop()
    finally:
        watched = watch.stop()
    check("KILLED" in killed, "B's daemon was not killed at the feature question: %s"
          % killed[-500:])
    check(rc != 0, "the migration succeeded although B's daemon was killed")
    err = out.strip().splitlines()[-1] if out.strip() else ""
    log("the migration failed: %s" % err)
    check(err.startswith("error:") and "internal error" not in err,
          "unclear error: %s" % out.strip())
    sections = [tuple(int(x) for x in m) for m in
                re.findall(r"enter-remote lock=(-?\d+) owner=(-?\d+) lwp=(\d+)", watched)]
    log("A's domain lock (word, owner, thread) at each remote section: %s" % sections)
    # connect, the features, and the close in the cleanup
    check(len(sections) >= 3, "gdb saw %d remote sections on A: %s"
          % (len(sections), watched[-800:]))
    # glibc records the owner's thread ID in the daemon's PID namespace
    def ns_tid(lwp):
        for line in open("/proc/%d/task/%d/status" % (apid, lwp)):
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
        raise Failure("no NSpid for thread %d of A's daemon" % lwp)
    check(all(lock != 0 and owner == ns_tid(lwp) for lock, owner, lwp in sections),
          "A's daemon left the domain for a remote call while it did not hold its lock")
    check_responsive(a, "the destination is gone", probes=1)
    check((a.domstate(GNAME) or "").startswith("running"), "state on A: %s" % a.domstate(GNAME))
    g.wait_progress(a, "guest progress on A", timeout=60)
    g.check_clean(a)
    p = a.virsh("domjobinfo", GNAME, check_rc=False)
    check(p.returncode == 0 and "None" in p.stdout.split("\n")[0],
          "a job is left on A: %s" % (p.stdout + p.stderr).strip())
    b.restart_daemons(kill=True)
    log("a second tunnelled migration of the same guest")
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], timeout=300)
    check(rc == 0, "the second migration failed: %s" % out)
    verify_migrated(a, b, g)
