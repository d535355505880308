"""What make bench samples while a migration runs: the processes' CPU
time, the source daemon's answer time (virsh list, and one call on an
open connection), and when the disks' mirrors had converged."""
import subprocess
import threading
import time

import e2e_common as ec
from bench_config import API_PROBE
from bench_util import cpu_seconds, num
from labpy import Failure, jobinfo


class CpuSampler(threading.Thread):
    """Sample CPU time of both hosts' daemons and QEMUs during a migration.
    The source QEMU exits at the end, so its last sample is kept."""

    def __init__(self, a, b):
        super().__init__(daemon=True)
        self.hosts = {"A": a, "B": b}
        self.first, self.last = {}, {}
        self.last_t = None
        self.marked = None
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def sample(self):
        with self.lock:
            for hn, h in self.hosts.items():
                found = h.procs()   # one /proc walk per host and sample
                procs = {"%s %s" % (hn, k): p for k, p in h.daemons(found).items()}
                for p in h.qemus(found):
                    procs["%s qemu" % hn] = p
                for k, p in procs.items():
                    c = cpu_seconds(p)
                    if c is None:
                        continue
                    self.first.setdefault(k, c)
                    self.last[k] = c
            self.last_t = time.monotonic()

    def mark(self):
        """Sample now and remember it as the start of a phase."""
        self.sample()
        with self.lock:
            self.marked = (self.last_t, dict(self.last))

    def run(self):
        while not self.stop.is_set():
            self.sample()
            time.sleep(0.1)

    def result(self):
        return {k: round(self.last[k] - self.first[k], 2) for k in self.last}

    def since_mark(self):
        """CPU seconds of each process from the mark to the last sample,
        and the wall seconds between them; None if never marked."""
        if not self.marked:
            return None, None
        t, at = self.marked
        return ({k: self.last[k] - at.get(k, self.first[k]) for k in self.last},
                self.last_t - t)


class LatencyProbe(threading.Thread):
    """How responsive is the source daemon while it migrates?  Times
    `virsh list` against it in a loop (each call a fresh connection).
    Every other round times `virsh -c test:///default list` instead, which
    starts the same client but asks no daemon: the control, what the
    machine's load alone adds to starting a client (ctl_samples)."""

    def __init__(self, host):
        super().__init__(daemon=True)
        self.host = host
        self.samples = []
        self.ctl_samples = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and len(self.samples) < 1000:
            t0 = time.monotonic()
            self.host.virsh("list", check_rc=False, timeout=60)
            self.samples.append((time.monotonic() - t0) * 1000)
            if self.stop.wait(0.05):
                break
            t0 = time.monotonic()
            subprocess.run([ec.VIRSH, "-q", "-c", "test:///default", "list"],
                           capture_output=True, timeout=60)
            self.ctl_samples.append((time.monotonic() - t0) * 1000)
            self.stop.wait(0.05)


class ApiProbe:
    """The source daemon's answer time to one call on a connection opened
    once (bench/api_probe.c: virConnectListAllDomains every 20 ms), which
    is what a management application sees, without the client's start and
    handshake that `virsh list` also times.  A thread reads its lines as
    they come, so that its pipe never fills."""

    def __init__(self, host):
        self.lines = []
        self.proc = subprocess.Popen([API_PROBE, host.client_uri(), "20", "100000"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        # the connection is open before the migration starts
        if not self.ready.wait(30) or self.lines[:1] != ["READY"]:
            self.kill()
            raise Failure("api_probe did not connect (30 s limit): %r" % self.lines[:2])
        del self.lines[0]

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            self.ready.set()
        self.ready.set()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self, t0, t1):
        """The calls that started between the monotonic times t0 and t1 (the
        migration), as (s since t0, ms the call took); a probe that failed
        or hung is a failure."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure("api_probe did not stop within 60 s")
        self.reader.join(timeout=60)
        if self.proc.returncode != 0:
            raise Failure("api_probe failed: %s" % (self.lines or ["?"])[-1])
        # api_probe prints CLOCK_MONOTONIC ms, the clock of time.monotonic()
        at = [(float(t) / 1000 - t0, float(ms)) for t, ms in (line.split() for line in self.lines)]
        return [(t, ms) for t, ms in at if 0 <= t <= t1 - t0]


class MirrorClock(threading.Thread):
    """When did RAM start to move?  Storage is copied before, so that is
    when the mirrors had converged (0.2 s resolution)."""

    def __init__(self, host):
        super().__init__(daemon=True)
        self.host = host
        self.t0 = time.monotonic()
        self.mirrored = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and time.monotonic() - self.t0 < 600:
            info = jobinfo(self.host, ec.GNAME, completed=False)
            if num(info.get("Memory processed")) > 0:
                self.mirrored = time.monotonic() - self.t0
                return
            self.stop.wait(0.2)
