"""Lab cases: load.  Several tunnelled migrations of different kinds at once
through one host pair, one of them aborted; and a flood of tunnel stream
requests that must be refused, with connections opening and closing, during
a migration.  The daemons' memory is sampled throughout."""
import os
import subprocess
import threading
import time

from e2e_common import (GNAME, PRIVATE, VIRSH, Guest, NOT_PREPARER, case, check,
                         check_daemons, daemons_now, jobinfo, log, mib_of, migrate, nbd_sockets,
                         open_tunnel, prepare_disks, rss_kib, verify_disk, verify_migrated, wait_for)


class RssSampler:
    """Peak RSS of each daemon of the given hosts, sampled every 0.2 s until
    stop(); bounded by `deadline` seconds."""

    def __init__(self, hosts, deadline=900):
        self.pids = {h.name: list(h.daemon_pids().values())[0] for h in hosts}
        self.before = {n: rss_kib(p) for n, p in self.pids.items()}
        self.peak = dict(self.before)
        self.done = threading.Event()
        self.deadline = deadline
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        t0 = time.monotonic()
        while not self.done.is_set() and time.monotonic() - t0 < self.deadline:
            for n, p in self.pids.items():
                try:
                    self.peak[n] = max(self.peak[n], rss_kib(p))
                except OSError:
                    pass
            self.done.wait(0.2)

    def stop(self):
        self.done.set()
        self.thread.join(10)
        after = {n: rss_kib(p) for n, p in self.pids.items()}
        for n in sorted(self.pids):
            log("%s's daemon: RSS %.1f MiB before, peak %.1f MiB, %.1f MiB after" % (
                n.upper(), self.before[n] / 1024, self.peak[n] / 1024, after[n] / 1024))
        return after


def start_migration(a, b, name, flags, extra):
    args = [VIRSH, "-c", a.client_uri(), "migrate", "--verbose"]
    args += ["--" + f for f in flags] + list(extra) + [name, b.uri("tcp")]
    log("$ virsh migrate %s %s %s" % (" ".join("--" + f for f in flags), " ".join(extra), name))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_migration(proc, name, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        check(False, "the migration of %s did not finish within %d s" % (name, timeout))
    last = out.strip().splitlines()[-1] if out.strip() else ""
    log("%s: migration rc=%d: %s" % (name, proc.returncode, last))
    return proc.returncode, last


def check_on_b(a, b, g):
    """What verify_migrated() checks of the guest itself, for one of several
    guests: migrated state on both hosts, progress on B, clean verifiers,
    and its disks byte-identical to what it wrote."""
    sa, sb = a.domstate(g.name), b.domstate(g.name)
    log("%s: A=%s B=%s" % (g.name, sa, sb))
    check(sa == "shut off (migrated)", "%s: source state %r" % (g.name, sa))
    check(sb in ("running (migrated)", "running (post-copy)"), "%s: destination state %r" % (g.name, sb))
    g.wait_progress(b, "%s's progress on B" % g.name, timeout=120)
    last = g.check_clean(b)
    for d in g.disks:
        verify_disk(b, d["path"], d["dev"], g.ring, last["disks"][d["dev"]]["seq"])


@case("load: 4 tunnelled migrations at once (precopy, storage, post-copy, one aborted)",
      heavy=True)
def t_four_at_once(a, b):
    """Four guests leave A for B at the same time through the same pair of
    daemons: one in pre-copy, one with its disk (--copy-storage-all), one
    switched to post-copy, and one slow pre-copy that is aborted once it
    moved.  The three complete and are verified on B (memory verifiers,
    progress, the disk byte-identical); the aborted one keeps running on A,
    clean, with nothing of it left on B; no daemon dies.  Peak RSS of both
    daemons is logged."""
    def guest(n, disks=()):
        return Guest(n, wl_mem=16, wl_rate=4, disks=disks)
    pre = guest(GNAME)
    sto = guest(GNAME + "-2", disks=[{"dev": "vda", "path": os.path.join(PRIVATE, GNAME + "-2-vda.raw"),
                                      "fmt": "raw", "shared": False, "backing": False,
                                      "base_blocks": 0}])
    post = guest(GNAME + "-3")
    abort = guest(GNAME + "-4")
    prepare_disks(sto, a, b)
    for g in (pre, sto, post, abort):
        g.start(a)
    for g in (pre, sto, post, abort):
        g.wait_progress(a, "%s's progress on A" % g.name, timeout=120)
    daemons = daemons_now(a, b)
    rss = RssSampler((a, b))
    procs = {}
    try:
        procs[pre.name] = start_migration(a, b, pre.name, ["live", "p2p", "tunnelled"],
                                          ["--bandwidth", "32"])
        procs[sto.name] = start_migration(a, b, sto.name, ["live", "p2p", "tunnelled",
                                                           "copy-storage-all"], ["--bandwidth", "32"])
        procs[post.name] = start_migration(a, b, post.name, ["live", "p2p", "tunnelled", "postcopy"],
                                           ["--bandwidth", "8", "--postcopy-bandwidth", "32"])
        procs[abort.name] = start_migration(a, b, abort.name, ["live", "p2p", "tunnelled"],
                                            ["--bandwidth", "2"])

        def moving(name):
            info = jobinfo(a, name, completed=False)
            return procs[name].poll() is not None or (
                info.get("Job type") == "Unbounded" and mib_of(info) > 2)
        wait_for("%s's pre-copy to move" % post.name, lambda: moving(post.name), 120)
        p = a.virsh("migrate-postcopy", post.name, check_rc=False)
        log("$ virsh migrate-postcopy %s -> rc %d %s" % (post.name, p.returncode, p.stderr.strip()))
        check(p.returncode == 0, "migrate-postcopy failed: %s" % p.stderr.strip())
        wait_for("%s's migration to move" % abort.name, lambda: moving(abort.name), 120)
        check(procs[abort.name].poll() is None, "%s's migration ended before the abort" % abort.name)
        p = a.virsh("domjobabort", abort.name, check_rc=False)
        log("$ virsh domjobabort %s -> rc %d %s" % (abort.name, p.returncode, p.stderr.strip()))
        check(p.returncode == 0, "domjobabort failed: %s" % p.stderr.strip())
        results = {n: finish_migration(proc, n, 600) for n, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        rss.stop()
    check_daemons(daemons)
    for g in (pre, sto, post):
        check(results[g.name][0] == 0, "%s's migration failed: %s" % (g.name, results[g.name][1]))
    check(results[abort.name][0] != 0, "%s's migration was not aborted" % abort.name)
    for g in (pre, sto, post):
        check_on_b(a, b, g)
    check(a.domstate(abort.name) == "running (booted)",
          "%s: source state %r" % (abort.name, a.domstate(abort.name)))
    wait_for("B to drop %s" % abort.name, lambda: b.domstate(abort.name) is None, 60)
    abort.wait_progress(a, "%s's progress on A after the abort" % abort.name, timeout=60)
    abort.check_clean(a)
    check(nbd_sockets(a) == [], "NBD tunnel sockets left on A: %s" % nbd_sockets(a))


@case("load: a flood of refused tunnel stream requests and short connections during a "
      "migration")
def t_open_tunnel_flood(a, b):
    """While a guest migrates into B through the tunnel (held at 2 MiB/s,
    below what the guest dirties, so that it cannot end meanwhile), other
    clients open connections to B and ask it for tunnel streams of that
    migration, 60 times (each a new connection, each refused: only the
    connection that prepared the migration may), and 60 `virsh list`
    connections come and go.  Every request is refused, B's daemon holds
    the descriptors it held when the flood began and grows by less than
    32 MiB, and once the bandwidth is raised the migration completes and
    is verified; no daemon dies."""
    g = Guest(GNAME, wl_mem=16, wl_rate=4); g.start(a)
    g.wait_progress(a, "guest progress on A", timeout=60)
    daemons = daemons_now(a, b)
    rss = RssSampler((a, b))
    answers, fds = [], {}

    def b_fds():
        return len(os.listdir("/proc/%d/fd" % list(b.daemon_pids().values())[0]))

    def flood(proc):
        wait_for("the incoming domain on B", lambda: proc.poll() is not None
                 or b.domstate(GNAME) is not None, 60)
        fds["before"] = b_fds()
        t0 = time.monotonic()
        for i in range(60):
            if time.monotonic() - t0 > 240 or proc.poll() is not None:
                break
            answers.append(open_tunnel(b, target="vda" if i % 2 else None, quiet=True))
            p = b.virsh("list", "--all", check_rc=False, timeout=30)
            check(p.returncode == 0, "virsh list on B failed: %s" % p.stderr.strip())
        log("%d tunnel stream requests in %.0f s; the first answer: %s" % (
            len(answers), time.monotonic() - t0, answers[0] if answers else None))
        check(proc.poll() is None, "the migration ended during the flood")
        wait_for("B's daemon to hold the descriptors it held when the flood began",
                 lambda: b_fds() <= fds["before"], 30)
        a.virsh("migrate-setspeed", GNAME, "--bandwidth", "1000")
    try:
        rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], during=flood,
                          extra=["--bandwidth", "2"], timeout=400)
    finally:
        after = rss.stop()
    check(len(answers) == 60 and all(NOT_PREPARER in r for r in answers),
          "not every request was refused as another connection's: %s" %
          [r for r in answers if NOT_PREPARER not in r][:3])
    check_daemons(daemons)
    check(rc == 0, "the migration failed: %s" % out)
    verify_migrated(a, b, g)
    grew = (max(after[b.name], rss.peak[b.name]) - rss.before[b.name]) / 1024
    if os.environ.get("LVT_SANITIZE"):
        # AddressSanitizer keeps freed memory in quarantine (256 MiB)
        log("B's daemon grew by %.1f MiB (sanitized: not checked)" % grew)
    else:
        check(grew < 32, "B's daemon grew by %.1f MiB during the flood" % grew)
