#!/usr/bin/python3
"""make bench: tunnelled vs native live migration, measured side by side.

Modes run interleaved (round-robin), BENCH_RUNS times each (default 3), on
the same guest and workload; the table reports medians and the ratio of each
mode to its native baseline *measured in the same run*.  Also measured: the
loopback TCP ceiling between the two host addresses, and CPU seconds spent
by each libvirt daemon and each QEMU during the migration.  The storage
modes (native-nbd, tunnel-nbd) give the guest a DISK_MIB disk full of random
data and compare the rate at which the mirrors copied it.

Output: a table on stdout, build/bench/result.json and build/bench/bench.png.

BENCH_PROFILE=1 (`make profile`) also profiles each libvirt daemon during
each migration: `perf stat` counts syscalls, context switches, page faults
and CPU time, reported per MiB moved with each daemon's idle rate (measured
just before, over the same guest) subtracted; `perf record` samples the
call stacks, and the top symbols of each daemon go to
build/bench/profile/<mode>-<run>-<daemon>.txt.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lab"))
import e2e  # noqa: E402
import e2e_common as ec  # noqa: E402
import pc_timeline  # noqa: E402
from labpy import BUILD, Failure, Guest, jobinfo, parse_console, wait_for  # noqa: E402

OUT = os.path.join(BUILD, "bench")
SPLICE_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splice_relay.c")
SPLICE_RELAY = os.path.join(OUT, "splice_relay")
API_PROBE_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "api_probe.c")
API_PROBE = os.path.join(OUT, "api_probe")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
# BENCH_GUEST_MIB and BENCH_WL_MIB: a larger guest, and more of its memory
# written by the workload (so more data moves), to show how cost grows
WL_MEM = int(os.environ.get("BENCH_WL_MIB", "128"))
WL_RATE = 64
GUEST_MEM = int(os.environ.get("BENCH_GUEST_MIB", "512"))
PC_SWITCH_MIB = int(os.environ.get("BENCH_PC_SWITCH_MIB", "32"))
PC_PRECOPY_MIB_S = int(os.environ.get("BENCH_PC_PRECOPY_MIB_S", "16"))

# name: (flags, transport, baseline); "postcopy" modes copy at most
# BENCH_PC_PRECOPY_MIB_S (default 16) MiB/s before the switch (QEMU's
# max-bandwidth, which also caps NBD mirrors; post-copy has no limit) and
# switch with migrate-postcopy once the source sent BENCH_PC_SWITCH_MIB
# (default 32) MiB (one virsh domjobinfo every 50 ms), so that every
# run switches at the same point, after the blocktime measure is set up,
# and most of the guest moves in post-copy. They are compared by the rate
# of that phase: a switch that lands later leaves less to post-copy, and
# the whole migration's rate is the pre-copy limit's. The phase runs from
# the poll that switched to the end of the job, so it also holds the
# switch's round trip and the Finish and Confirm calls (0.1-0.2 s of
# about 1.3 s), which pulls its ratios towards 1.
MODES = {
    "native-tcp": (["live", "p2p"], "tcp", None),
    "native-tls": (["live", "p2p", "tls"], "tcp", None),
    "tunnel-tcp": (["live", "p2p", "tunnelled"], "tcp", "native-tcp"),
    "tunnel-tls": (["live", "p2p", "tunnelled"], "tls", "native-tls"),
    "native-pc": (["live", "p2p", "postcopy"], "tcp", None),
    "tunnel-pc": (["live", "p2p", "tunnelled", "postcopy"], "tcp", "native-pc"),
    # storage: the guest also has a DISK_MIB disk full of data; compared by
    # the rate at which the mirrors copied it (before RAM moves)
    "native-nbd": (["live", "p2p", "copy-storage-all"], "tcp", None),
    "tunnel-nbd": (["live", "p2p", "tunnelled", "copy-storage-all"], "tcp", "native-nbd"),
}
# relay modes: a native migration whose connections (and NBD's) go through
# two copying relays, one per host (RelayChain): what any tunnel that
# copies through user space costs on this machine, measured side by side
RELAY_OF = {"tunnel-tcp": "relay-tcp", "tunnel-pc": "relay-pc", "tunnel-nbd": "relay-nbd"}
for _t, _r in RELAY_OF.items():
    _flags, _tr, _base = MODES[_t]
    MODES[_r] = ([f for f in _flags if f != "tunnelled"], _tr, _base)
# the same through two relays that splice(2) through a pipe instead of
# copying (bench/splice_relay.c): what a tunnel with no copy through user
# space could reach on this machine
SPLICE_OF = {"tunnel-tcp": "splice-tcp", "tunnel-nbd": "splice-nbd"}
for _t, _r in SPLICE_OF.items():
    MODES[_r] = MODES[RELAY_OF[_t]]
# fixed maximum downtime: migrate-setmaxdowntime before the migration, the
# same value on both sides of the comparison
DOWNTIME_MS = int(os.environ.get("BENCH_DOWNTIME_MS", "50"))
MODES["native-dt"] = (["live", "p2p"], "tcp", None)
MODES["tunnel-dt"] = (["live", "p2p", "tunnelled"], "tcp", "native-dt")
# parallel migration: QEMU's multifd channels, 2 (QEMU's default) and 4;
# each also compared with one native connection (native-tcp)
MODES["native-par2"] = (["live", "p2p", "parallel"], "tcp", None)
MODES["tunnel-par2"] = (["live", "p2p", "tunnelled", "parallel"], "tcp", "native-par2")
MODES["native-par4"] = (["live", "p2p", "parallel", "parallel-connections=4"], "tcp", None)
MODES["tunnel-par4"] = (["live", "p2p", "tunnelled", "parallel", "parallel-connections=4"],
                        "tcp", "native-par4")
DISK_MIB = 512
# BENCH_CONCURRENT guests migrated at once between the same two hosts,
# natively and tunnelled, compared by aggregate throughput
# (0: skip; by default skipped when BENCH_MODES picks modes)
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT",
                                "0" if os.environ.get("BENCH_MODES") else "4"))
if os.environ.get("BENCH_MODES"):
    MODES = {m: MODES[m] for m in os.environ["BENCH_MODES"].split(",")}
# The daemons log as a host does by default (warnings), not with the lab's
# debug filters, which write several lines per stream packet; set
# BENCH_LOG_FILTERS to measure with other filters.
LAB_ENV = (("LAB_LOG_FILTERS", os.environ.get("BENCH_LOG_FILTERS", "3:*")),)
CLK = os.sysconf("SC_CLK_TCK")
PROFILE = os.environ.get("BENCH_PROFILE") == "1"
# BENCH_TRACE=1, with BENCH_PROFILE=1: also `perf trace -s` on each daemon,
# which syscalls each thread made (<mode>-<run>-<daemon>.trace). It slows
# the daemons down: compare its counts, not the CPU of the same runs.
TRACE = os.environ.get("BENCH_TRACE") == "1"
# BENCH_RECORD_EVENT=page-faults, with BENCH_PROFILE=1: perf record samples
# every such event (where the daemons fault, say) instead of the CPU clock
RECORD_EVENT = (["-e", os.environ["BENCH_RECORD_EVENT"], "-c", "1"]
                if os.environ.get("BENCH_RECORD_EVENT") else ["-F", "999"])
# BENCH_SCHED=1: `perf sched record` of the whole machine during each
# migration, and for each call of the API probe that took SCHED_SLOW_MS or
# more, what the source daemon's threads did meanwhile: how long each ran,
# and how long each waited for a CPU once woken (<mode>-<run>.sched.txt)
SCHED = os.environ.get("BENCH_SCHED") == "1"
SCHED_SLOW_MS = 20
# BENCH_AUTOGROUP=0 or 1: the kernel's kernel.sched_autogroup_enabled for
# the whole run, put back afterwards.  Each lab host is a session of its
# own, and so is each QEMU, and with autogroups (the default) the kernel
# shares the CPUs fairly between those groups first, and only then
# between their threads (see performance.md, "What holds the slow calls")
AUTOGROUP_SYSCTL = "/proc/sys/kernel/sched_autogroup_enabled"
AUTOGROUP = os.environ.get("BENCH_AUTOGROUP")
PERF_EVENTS = ("raw_syscalls:sys_enter", "context-switches", "page-faults", "task-clock")
IDLE_S = 3.0


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (state first),
    or None if the process is gone."""
    try:
        return open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid):
    f = proc_stat(pid)
    return (int(f[11]) + int(f[12])) / CLK if f else None


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


def built(src, exe, libvirt=False):
    """A C helper of the bench, built into build/bench when its source
    changed; with libvirt, against the client library under test."""
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        os.makedirs(OUT, exist_ok=True)
        args = []
        if libvirt:
            libdir = os.path.join(ec.PREFIX, "lib", "x86_64-linux-gnu")
            # and the lab's clients' header (tests/lab/lab-client.h)
            args = ["-I" + os.path.join(ec.PREFIX, "include"), "-I" + os.path.join(ec.TOP, "tests", "lab"),
                    "-L" + libdir, "-Wl,-rpath," + libdir, "-lvirt"]
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe, src] + args,
                       check=True, timeout=120)
    return exe


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


def percentile(samples, q):
    """The q-th percentile (nearest rank), None without samples."""
    if not samples:
        return None
    s = sorted(samples)
    return round(s[min(len(s) - 1, max(0, -(-len(s) * q // 100) - 1))], 1)


class Profiler:
    """perf stat and perf record attached to every libvirt daemon of both
    hosts for the duration of one migration (see BENCH_PROFILE)."""

    def __init__(self, a, b, tag):
        self.tag = tag
        self.dir = os.path.join(OUT, "profile")
        os.makedirs(self.dir, exist_ok=True)
        self.daemons = {}
        for hn, h in (("A", a), ("B", b)):
            for comm, pid in h.daemon_pids().items():
                self.daemons["%s %s" % (hn, comm)] = pid
        self.procs = []
        self.idle = self.counts(IDLE_S)

    def _file(self, name, ext):
        return os.path.join(self.dir, "%s-%s.%s" % (self.tag, name.replace(" ", "-"), ext))

    def _stat(self, pid, out):
        # --no-inherit: not the QEMU a daemon forks on the destination
        return subprocess.Popen(["perf", "stat", "--no-inherit", "-x", ",", "-o", out,
                                 "-e", ",".join(PERF_EVENTS), "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _parse(path):
        counts = {}
        for line in open(path):
            f = line.strip().split(",")
            if len(f) > 2 and f[2] in PERF_EVENTS:
                try:
                    counts[f[2]] = float(f[0])
                except ValueError:
                    counts[f[2]] = 0.0
        return counts

    def _stop(self, procs):
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def counts(self, seconds):
        """What each daemon does per second while nothing migrates."""
        procs, files = [], {}
        for name, pid in self.daemons.items():
            files[name] = self._file(name, "idle.stat")
            procs.append(self._stat(pid, files[name]))
        time.sleep(seconds)
        self._stop(procs)
        return {n: {k: v / seconds for k, v in self._parse(f).items()} for n, f in files.items()}

    def start(self):
        self.t0 = time.monotonic()
        for name, pid in self.daemons.items():
            self.procs.append(self._stat(pid, self._file(name, "stat")))
            self.procs.append(subprocess.Popen(
                ["perf", "record", "-q", "--no-inherit", "-g"] + RECORD_EVENT + [
                 "-o", self._file(name, "data"),
                 "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if TRACE:
                self.procs.append(subprocess.Popen(
                    ["perf", "trace", "-s", "-o", self._file(name, "trace"),
                     "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self, data_mib):
        """Counts per MiB moved, idle rate subtracted, and top symbols."""
        wall = time.monotonic() - self.t0
        self._stop(self.procs)
        result = {}
        for name in self.daemons:
            got = self._parse(self._file(name, "stat"))
            idle = self.idle.get(name, {})
            net = {k: max(0.0, got.get(k, 0.0) - idle.get(k, 0.0) * wall) for k in PERF_EVENTS}
            result[name] = {
                "syscalls_per_mib": round(net["raw_syscalls:sys_enter"] / max(data_mib, 1), 1),
                "ctxsw_per_mib": round(net["context-switches"] / max(data_mib, 1), 1),
                "faults_per_mib": round(net["page-faults"] / max(data_mib, 1), 1),
                "cpu_ms_per_mib": round(net["task-clock"] / max(data_mib, 1), 3),
                "idle_cpu_ms_per_s": round(idle.get("task-clock", 0.0), 2),
            }
            report = subprocess.run(
                ["perf", "report", "-q", "--stdio", "--no-children", "--sort", "dso,symbol",
                 "-g", "none", "--percent-limit", "1", "-i", self._file(name, "data")],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=300)
            top = [ln.strip() for ln in report.stdout.splitlines() if ln.strip()][:25]
            with open(self._file(name, "txt"), "w") as f:
                f.write("\n".join(top) + "\n")
            result[name]["top"] = top[:8]
        return result


class SchedTrace:
    """The scheduler's view of the source daemon while a migration runs
    (BENCH_SCHED): which of its threads ran, or waited for a CPU, while a
    slow API call waited for its answer."""

    def __init__(self, a, tag):
        self.dir = os.path.join(OUT, "profile")
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "%s.sched.data" % tag)
        self.txt = os.path.join(self.dir, "%s.sched.txt" % tag)
        self.pid = next(iter(a.daemon_pids().values()))
        for comm, pid in a.daemon_pids().items():
            if comm in ("libvirtd", "virtqemud"):
                self.pid = pid
        # CLOCK_MONOTONIC: the probe's clock, and time.monotonic()'s
        self.proc = subprocess.Popen(["perf", "sched", "record", "-k", "CLOCK_MONOTONIC",
                                      "-a", "-o", self.data],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def slices(self):
        """[(task, pid, start s, run ms, delay ms)] of every task: each ran
        for run ms from start, after waiting delay ms for a CPU."""
        out = subprocess.run(["perf", "sched", "timehist", "-i", self.data],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=600).stdout
        res = []
        for line in out.splitlines():
            f = line.split()
            # time [cpu] comm[tid/pid] wait delay run
            if len(f) < 6 or not f[0][0].isdigit() or not f[1].startswith("["):
                continue
            try:
                end, delay, run = float(f[0]), float(f[-2]), float(f[-1])
            except ValueError:
                continue
            task = " ".join(f[2:-3])
            pid = task.rsplit("[", 1)[-1].rstrip("]").split("/")[-1]
            res.append((task, pid, end - run / 1000, run, delay))
        return res

    @staticmethod
    def overlap(a0, a1, b0, b1):
        return max(0.0, min(a1, b1) - max(a0, b0)) * 1000

    def report(self, api_at, t0):
        """Per slow call, the daemon threads' run and CPU-wait time that fell
        in its window, and which other tasks ran meanwhile; and the main
        thread's longest runs and waits."""
        self.stop()
        sl = self.slices()
        pid = str(self.pid)
        ours = [x for x in sl if x[1] == pid]
        others = [x for x in sl if x[1] != pid and not x[0].startswith("<idle>")]
        lines = []
        for t, ms in api_at:
            if ms < SCHED_SLOW_MS:
                continue
            w0, w1 = t0 + t, t0 + t + ms / 1000
            per = {}
            for task, _, start, run, delay in ours:
                r = self.overlap(w0, w1, start, start + run / 1000)
                d = self.overlap(w0, w1, start - delay / 1000, start)
                if r or d:
                    x = per.setdefault(task, [0.0, 0.0])
                    x[0] += r
                    x[1] += d
            meanwhile = {}
            for task, _, start, run, _ in others:
                r = self.overlap(w0, w1, start, start + run / 1000)
                if r:
                    meanwhile[task] = meanwhile.get(task, 0.0) + r
            busy = ", ".join("%s ran %.1f waited %.1f" % (c, x[0], x[1])
                             for c, x in sorted(per.items(), key=lambda kv: -sum(kv[1]))[:3])
            other = ", ".join("%s %.1f" % (c, r) for c, r in
                              sorted(meanwhile.items(), key=lambda kv: -kv[1])[:3])
            lines.append("call at %.3f s took %.1f ms: %s; on the CPUs meanwhile: %s"
                         % (t, ms, busy or "no thread ran", other or "nothing"))
        main = [x for x in ours if x[0].endswith("[%s]" % pid)]
        lines.append("main thread's longest runs (ms@s): " + ", ".join(
            "%.1f@%.3f" % (run, start - t0) for _, _, start, run, _ in
            sorted(main, key=lambda x: -x[3])[:10]))
        lines.append("main thread's longest waits for a CPU (ms): " + ", ".join(
            "%.1f" % d for d in sorted((x[4] for x in main), reverse=True)[:10]))
        with open(self.txt, "w") as f:
            f.write("\n".join(lines) + "\n")
        return lines


def free_port(addr):
    s = socket.socket()
    s.bind((addr, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(addr, port, deadline_s=10.0):
    """Wait until something listens on addr:port, without connecting (a
    relay that is not forking serves only its first connection)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        out = subprocess.run(["ss", "-Hltn", "src", "%s:%d" % (addr, port)],
                             stdout=subprocess.PIPE, text=True, timeout=10).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise Failure("nothing listens on %s:%d after %.0fs" % (addr, port, deadline_s))


def children_of(pid):
    """The pids whose parent is pid (a forking relay's connections)."""
    kids = []
    for d in os.listdir("/proc"):
        st = proc_stat(d) if d.isdigit() else None
        if st and int(st[1]) == pid:
            kids.append(int(d))
    return kids


def splice_relay():
    """bench/splice_relay.c, built when it changed."""
    return built(SPLICE_SRC, SPLICE_RELAY)


class RelayChain:
    """Two copying relays in user space (socat, 256 KiB buffers), one per
    host, the shape of a tunnel with nothing of libvirt in it:
    127.0.0.2:port -> relay B on 127.0.0.3 -> 127.0.0.3:target.  With
    fork, each relay serves every connection (a child per connection), as a
    migration's extra channels need.  With splice, the relays are
    bench/splice_relay.c instead, which copies nothing through user space
    and always forks."""

    def __init__(self, port, target, fork=False, splice=False):
        # the splicing relay always forks
        self.port, self.target, self.fork = port, target, fork or splice
        self.splice = splice
        self.procs = []

    def start(self):
        opt = ",fork" if self.fork else ""
        p_b = free_port("127.0.0.3")
        for listen, to in ((("127.0.0.3", p_b), ("127.0.0.3", self.target)),
                           (("127.0.0.2", self.port), ("127.0.0.3", p_b))):
            if self.splice:
                argv = [splice_relay(), listen[0], str(listen[1]), to[0], str(to[1])]
            else:
                argv = ["socat", "-b", "262144",
                        "TCP-LISTEN:%d,bind=%s,reuseaddr%s" % (listen[1], listen[0], opt),
                        "TCP:%s:%d" % to]
            self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        wait_listening("127.0.0.3", p_b)
        wait_listening("127.0.0.2", self.port)
        return self

    def stop(self, settle_s=10.0):
        """Stop both relays; returns the CPU seconds they spent, their
        connections' children included."""
        cpu = 0.0
        # a forking relay reaps each child when its connection ends, and
        # wait4() below counts the reaped ones: give them time to end
        t0 = time.monotonic()
        while (self.fork and time.monotonic() - t0 < settle_s and
               any(children_of(r.pid) for r in self.procs)):
            time.sleep(0.05)
        for r in self.procs:
            # a stopped relay reaps no child: each is counted once, either
            # here or in the relay's wait4()
            os.kill(r.pid, signal.SIGSTOP)
            for kid in children_of(r.pid):
                cpu += cpu_seconds(kid) or 0.0
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # not r.kill() or r.poll(): they would reap the relay, and its
            # CPU time with it
            os.kill(r.pid, signal.SIGKILL)
            _, status, ru = os.wait4(r.pid, 0)
            r.returncode = status
            cpu += ru.ru_utime + ru.ru_stime
        self.procs = []
        return cpu


def forwarder_ceiling(seconds=2.0, splice=False):
    """MiB/s of one TCP stream from 127.0.0.2 to 127.0.0.3 through two
    copying relays (RelayChain).  Also returns what each relay spent, in
    CPU ms per MiB moved."""
    sink = socket.socket()
    sink.bind(("127.0.0.3", 0))
    sink.listen(1)
    chain = RelayChain(free_port("127.0.0.2"), sink.getsockname()[1], splice=splice)
    stats = {}
    try:
        chain.start()
        rate = loopback_ceiling(seconds, srv=sink, dest=("127.0.0.2", chain.port), stats=stats)
    finally:
        cpu = chain.stop()
    # per relay: the chain has two
    return rate, 1000 * cpu / max(stats.get("mib", 1), 1) / 2


def loopback_ceiling(seconds=2.0, srv=None, dest=None, stats=None):
    """MiB/s of one TCP stream from 127.0.0.2 to 127.0.0.3 (or to @dest,
    which leads to @srv); the MiB moved go to stats["mib"]."""
    if srv is None:
        srv = socket.socket()
        srv.bind(("127.0.0.3", 0))
        srv.listen(1)
    port = srv.getsockname()[1]
    dest = dest or ("127.0.0.3", port)
    got = [0]

    def sink():
        srv.settimeout(30)
        c, _ = srv.accept()
        c.settimeout(30)
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            got[0] += len(d)
        c.close()
    t = threading.Thread(target=sink)
    t.start()
    cl = socket.socket()
    cl.bind(("127.0.0.2", 0))
    cl.settimeout(30)
    cl.connect(dest)
    buf = b"\0" * (1 << 20)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        cl.sendall(buf)
    cl.close()
    t.join()
    dt = time.monotonic() - t0
    srv.close()
    if stats is not None:
        stats["mib"] = got[0] / (1 << 20)
    return got[0] / dt / (1 << 20)


def num(s, default=0.0):
    try:
        return float(s.split()[0])
    except (AttributeError, ValueError, IndexError):
        return default


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


def disk_guest(a, b):
    """The bench guest with one DISK_MIB raw disk full of random data (after
    the workload's ring), and an empty target precreated on B."""
    disks = ec.guest_disks(("vda",)).disks
    g = Guest(ec.GNAME, mem_mib=GUEST_MEM, wl_mem=WL_MEM, wl_rate=WL_RATE, disks=disks)
    ec.prepare_disks(g, a, b, size_mib={"vda": DISK_MIB})
    ec.fill_outside_ring(g, a, b, "vda", DISK_MIB - g.ring * 4096 // 2**20)
    return g


def wait_full_pass(g, host, timeout=60):
    """Wait until the guest's workload has written all of its memory once
    (mem_gen counts its passes), so that every run migrates the same
    working set: started after its first status lines only, a migration
    moved anywhere between 215 and 345 MiB of the same guest."""
    if not g.wl_mem:
        return
    def done():
        stats, _ = parse_console(g.console(host))
        return stats if stats and stats[-1]["gen"] >= 1 else None
    wait_for("a full pass of the workload on %s" % host.name, done, timeout)


def one_run(lab, mode, tag=None):
    flags, transport, _ = MODES[mode]
    a, b = lab.hosts("patched", "patched", env=LAB_ENV)
    storage = "copy-storage-all" in flags
    timeline = pc_timeline.ENABLED and "postcopy" in flags
    if storage:
        g = disk_guest(a, b)
    else:
        g = (pc_timeline.MonitoredGuest if timeline else Guest)(
            ec.GNAME, mem_mib=GUEST_MEM, wl_mem=WL_MEM, wl_rate=WL_RATE)
    g.start(a)
    wait_full_pass(g, a)
    if mode.endswith("-dt"):
        a.virsh("migrate-setmaxdowntime", ec.GNAME, str(DOWNTIME_MS))
    clock = MirrorClock(a)
    if storage:
        clock.start()
    sampler = CpuSampler(a, b)
    sampler.sample()
    sampler.start()
    profiler = Profiler(a, b, tag or mode) if PROFILE else None
    api = ApiProbe(a)
    sched = SchedTrace(a, tag or mode) if SCHED else None
    probe = LatencyProbe(a)
    probe.start()
    if profiler:
        profiler.start()
    t0 = time.monotonic()
    # post-copy modes: B's QEMU measures how long the guest's vCPUs wait
    # for the pages they fault on (postcopy-blocktime, through a QMP
    # monitor of its own), then the switch
    pc = {}
    tl = pc_timeline.Timeline(a, b) if timeline else None
    extra = []
    chains = []
    try:
        if mode.startswith(("relay-", "splice-")):
            # B's QEMU (and NBD server) listen on 127.0.0.3:port, A's QEMU
            # connects to 127.0.0.2:port, the relays carry it between
            splice = mode.startswith("splice-")
            port = free_port("127.0.0.3")
            chains.append(RelayChain(port, port, fork=True, splice=splice).start())
            extra += ["--migrateuri", "tcp://127.0.0.2:%d" % port, "--listen-address", "127.0.0.3"]
            if storage:
                nbd = free_port("127.0.0.3")
                chains.append(RelayChain(nbd, nbd, fork=True, splice=splice).start())
                extra += ["--disks-port", str(nbd)]
        if "postcopy" in flags:
            extra += ["--bandwidth", str(PC_PRECOPY_MIB_S)]
            xml, sock = ec.side_qmp_xml(a)
            rc, out = ec.migrate(a, b, flags, transport=transport, extra=extra + ["--xml", xml],
                                 during=lambda proc: ec.switch_measuring_blocktime(
                                     a, b, proc, pc, sock, after_mib=PC_SWITCH_MIB,
                                     on_switch=lambda: (sampler.mark(), tl and tl.start())))
        else:
            rc, out = ec.migrate(a, b, flags, transport=transport, extra=extra)
    except BaseException:
        probe.stop.set()
        api.kill()
        if sched:
            sched.stop()
        raise
    finally:
        relay_cpu = sum(c.stop() for c in chains)
        if tl:
            tl.stop.set()
    t1 = time.monotonic()
    wall = t1 - t0
    api_at = api.stop(t0, t1)
    sched_report = sched.report(api_at, t0) if sched else None
    src = jobinfo(a, ec.GNAME)
    profile = profiler.stop(ec.mib_of(src, "Data processed")) if profiler else None
    sampler.stop.set()
    probe.stop.set()
    pc_parts = (tl.finish(os.path.join(OUT, "%s.timeline.json" % (tag or mode)))
                if tl and tl.t0 is not None else None)
    sampler.join()
    probe.join()
    clock.stop.set()
    if storage:
        clock.join()
    if rc != 0:
        raise Failure("%s: migration failed: %s" % (mode, out))
    if "postcopy" in flags and not (pc.get("switched") and pc.get("switch_data_mib") is not None):
        # no post-copy phase to compare: say so rather than mix in a
        # run that never switched, or switched at an unknown point
        raise Failure("%s: did not switch to post-copy after %d MiB (switch %s, at %s MiB)"
                      % (mode, PC_SWITCH_MIB, pc.get("switched"), pc.get("switch_data_mib")))
    g.wait_progress(b, "guest progress on B", timeout=60)
    g.check_clean(b)
    cpu = sampler.result()
    # the post-copy phase: what moved after the poll that switched, and how fast
    pc_phase = None
    pc_cpu = None
    if pc.get("switch_data_mib") is not None:
        mib = ec.mib_of(src, "Data processed") - pc["switch_data_mib"]
        secs = (num(src.get("Time elapsed")) - pc["switch_elapsed_ms"]) / 1000
        pc_phase = round(mib / secs, 1) if secs > 0 else None
        # where the phase's CPU went: each process's ms per MiB moved after
        # the switch, and how many of the cores all of them kept busy
        since, wall = sampler.since_mark()
        if since and mib > 0 and wall:
            pc_cpu = {k: round(1000 * v / mib, 2) for k, v in since.items()}
            pc_cpu["cores busy"] = round(sum(since.values()) / wall, 2)
    if chains:
        # counted with the daemons: the relays do the tunnel's work here
        cpu["relays"] = round(relay_cpu, 2)
    return {
        "profile": profile,
        "throughput_mib_s": num(src.get("Memory bandwidth")),
        "total_s": num(src.get("Time elapsed")) / 1000,
        "wall_s": round(wall, 2),
        "downtime_ms": num(src.get("Total downtime")),
        "data_mib": ec.mib_of(src, "Data processed"),
        "cpu_s": cpu,
        "src_list_ms_max": round(max(probe.samples), 1) if probe.samples else None,
        "src_list_ms_median": round(statistics.median(probe.samples), 1) if probe.samples else None,
        "ctl_list_ms_median": (round(statistics.median(probe.ctl_samples), 1)
                               if probe.ctl_samples else None),
        "sched": sched_report,
        "src_api_samples": [round(ms, 2) for _, ms in api_at],
        # when the calls that took over 50 ms started, in s from the migration's start
        "src_api_slow_at": [(round(t, 2), round(ms)) for t, ms in api_at if ms > 50],
        "postcopy_requests": num(src.get("Postcopy requests")),
        "preempt": pc.get("preempt_b"),
        "blocktime_ms": pc.get("blocktime_ms"),
        # the vCPUs' wait per page the source sent on request
        "pc_switch_mib": pc.get("switch_data_mib"),
        "pc_phase_mib_s": pc_phase,
        "pc_phase_cpu": pc_cpu,
        "pc_timeline": pc_parts,
        "wait_ms_per_request": (round(pc["blocktime_ms"] / num(src.get("Postcopy requests")), 3)
                                if pc.get("blocktime_ms") is not None and
                                num(src.get("Postcopy requests")) else None),
        "disk_mib": ec.disk_mib(src) if storage else None,
        "storage_mib_s": (round(ec.disk_mib(src) / clock.mirrored, 1)
                          if storage and clock.mirrored else None),
    }


def concurrent_run(lab, tunnelled, n):
    """Migrate n guests at once from A to B, each with its own virsh.
    Returns the aggregate MiB/s (data moved by all / time until the last
    one finished) and each migration's own throughput."""
    a, b = lab.hosts("patched", "patched", env=LAB_ENV)
    guests = [Guest("bench-c%d" % i, mem_mib=GUEST_MEM, wl_mem=WL_MEM // 2, wl_rate=WL_RATE // 4)
              for i in range(n)]
    for g in guests:
        g.start(a)
    for g in guests:
        wait_full_pass(g, a)
    flags = ["--live", "--p2p"] + (["--tunnelled"] if tunnelled else [])
    procs = []
    t0 = time.monotonic()
    for g in guests:
        args = [ec.VIRSH, "-c", a.client_uri(), "migrate"] + flags + [g.name, b.uri("tcp")]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=max(1, 600 - (time.monotonic() - t0)))[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall = time.monotonic() - t0
    each = []
    total = 0.0
    for g, p, out in zip(guests, procs, outs):
        if p.returncode != 0:
            raise Failure("%s: concurrent migration failed: %s" % (g.name, out.strip()))
        info = jobinfo(a, g.name)
        total += ec.mib_of(info, "Data processed")
        each.append(num(info.get("Memory bandwidth")))
    for g in guests:
        g.wait_progress(b, "%s progress on B" % g.name, timeout=90)
        g.check_clean(b)
    return {"aggregate_mib_s": round(total / wall, 1), "wall_s": round(wall, 2),
            "data_mib": round(total, 1), "each_mib_s": each}


def compared_by(r):
    """What a mode's medians r are compared by: storage modes by how fast
    the disks were copied, post-copy modes by how fast the post-copy phase
    moved the rest, the others by the migration's MiB/s."""
    if r.get("storage_mib_s"):
        return "storage_mib_s"
    if r.get("pc_phase_mib_s"):
        return "pc_phase_mib_s"
    return "throughput_mib_s"


def main():
    os.makedirs(OUT, exist_ok=True)
    if sys.argv[1:] == ["--chart-only"]:
        r = json.load(open(os.path.join(OUT, "result.json")))
        chart(r["median"], r["loopback_mib_s"], r.get("forwarder_mib_s"), r.get("concurrent"))
        return 0
    ec.build_helpers()
    built(API_PROBE_SRC, API_PROBE, libvirt=True)
    lab = e2e.Lab()
    runs = {m: [] for m in MODES}
    conc = {"native": [], "tunnel": []}
    autogroup_was = open(AUTOGROUP_SYSCTL).read().strip()
    try:
        if AUTOGROUP in ("0", "1"):
            with open(AUTOGROUP_SYSCTL, "w") as f:
                f.write(AUTOGROUP)
        autogroup = open(AUTOGROUP_SYSCTL).read().strip()
        print("kernel.sched_autogroup_enabled = %s" % autogroup, flush=True)
        lab.hosts("patched", "patched", env=LAB_ENV)
        ceiling = loopback_ceiling()
        fwd, fwd_cpu = forwarder_ceiling()
        spl, spl_cpu = forwarder_ceiling(splice=True)
        print("loopback TCP ceiling: %.0f MiB/s; through two copying relays (socat): %.0f MiB/s,"
              " each relay %.2f CPU ms per MiB; through two splicing relays: %.0f MiB/s, %.2f"
              % (ceiling, fwd, fwd_cpu, spl, spl_cpu), flush=True)
        for i in range(RUNS):
            for m in MODES:
                print("== run %d/%d %s" % (i + 1, RUNS, m), flush=True)
                runs[m].append(one_run(lab, m, "%s-%d" % (m, i + 1)))
                lab.cleanup()
            if CONCURRENT and not PROFILE:
                for name, tun in (("native", False), ("tunnel", True)):
                    print("== run %d/%d %d %s migrations at once" % (i + 1, RUNS, CONCURRENT, name),
                          flush=True)
                    conc[name].append(concurrent_run(lab, tun, CONCURRENT))
                    lab.cleanup()
    finally:
        lab.cleanup()
        lab.stop()
        if open(AUTOGROUP_SYSCTL).read().strip() != autogroup_was:
            with open(AUTOGROUP_SYSCTL, "w") as f:
                f.write(autogroup_was)

    med = {}
    for m, rs in runs.items():
        cpu_keys = sorted({k for r in rs for k in r["cpu_s"]})
        med[m] = {k: statistics.median(r[k] for r in rs)
                  for k in ("throughput_mib_s", "total_s", "downtime_ms", "data_mib",
                            "postcopy_requests")}
        for k in ("src_list_ms_median", "src_list_ms_max", "ctl_list_ms_median", "disk_mib", "storage_mib_s",
                  "blocktime_ms", "wait_ms_per_request", "pc_switch_mib", "pc_phase_mib_s"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            med[m][k] = statistics.median(vals) if vals else None
        # the answer times of all runs together: a migration's few
        # seconds give each run too few samples for a p99 of its own
        pooled = [x for r in rs for x in r.get("src_api_samples") or []]
        med[m]["src_api_pooled"] = {"n": len(pooled), "p50": percentile(pooled, 50),
                                    "p90": percentile(pooled, 90), "p99": percentile(pooled, 99),
                                    "max": round(max(pooled), 1) if pooled else None}
        med[m]["cpu_s"] = {k: statistics.median(r["cpu_s"].get(k, 0) for r in rs) for k in cpu_keys}
        med[m]["daemon_ms_per_mib"] = round(1000 * sum(
            v for k, v in med[m]["cpu_s"].items() if "qemu" not in k) / max(med[m]["data_mib"], 1), 2)
        base = MODES[m][2]
        key = compared_by(med[m])
        med[m]["ratio"] = (med[m][key] / med[base][key]
                           if base in med and med[base].get(key) else None)

    print()
    print("Median of %d interleaved runs; guest %d MiB, dirtying %d MiB at %d MiB/s; "
          "loopback ceiling %.0f MiB/s, two copying relays %.0f MiB/s (%.2f CPU ms/MiB each),"
          " two splicing relays %.0f MiB/s (%.2f)"
          % (RUNS, GUEST_MEM, WL_MEM, WL_RATE, ceiling, fwd, fwd_cpu, spl, spl_cpu))
    hdr = "%-11s %9s %8s %9s %9s %11s %-10s %13s  %s" % (
        "mode", "MiB/s", "total s", "downtime", "data MiB", "daemon ms/", "vs native",
        "src virsh list", "CPU seconds")
    print(hdr)
    print("%-11s %9s %8s %9s %9s %11s %10s %13s" % ("", "", "", "ms", "", "MiB moved", "",
                                                     "med/max ms"))
    for m, r in med.items():
        cpu = " ".join("%s=%.2f" % (k, v) for k, v in sorted(r["cpu_s"].items()))
        if r["storage_mib_s"]:
            cpu = "storage %.0f MiB at %.0f MiB/s; %s" % (r["disk_mib"], r["storage_mib_s"], cpu)
        lat = "/".join("%.1f" % v if v is not None else "-"
                       for v in (r["src_list_ms_median"], r["src_list_ms_max"]))
        print("%-11s %9.0f %8.2f %9.0f %9.0f %11.2f %-10s %13s  %s" % (
            m, r["throughput_mib_s"], r["total_s"], r["downtime_ms"], r["data_mib"],
            r["daemon_ms_per_mib"], "%.2fx" % r["ratio"] if r["ratio"] else "baseline", lat, cpu))

    print("\nsource daemon's answer time during the migration, ms: one call on an open"
          " connection (api_probe, every 20 ms, all runs pooled) p50/p90/p99/max; `virsh list`"
          " (a fresh client each time) and the control, a fresh virsh that asks no daemon:"
          " medians of the runs' medians")
    for m, r in med.items():
        base = MODES[m][2]
        b = med.get(base) if base else None
        pa = r["src_api_pooled"]
        d = ""
        if b and pa["p99"] is not None and b["src_api_pooled"]["p99"] is not None:
            d = " (p50 %+.1f, p99 %+.1f, virsh list %+.1f, control %+.1f vs %s)" % (
                pa["p50"] - b["src_api_pooled"]["p50"], pa["p99"] - b["src_api_pooled"]["p99"],
                r["src_list_ms_median"] - b["src_list_ms_median"],
                r["ctl_list_ms_median"] - b["ctl_list_ms_median"], base)
        print("  %-11s api %s/%s/%s/%s of %d  virsh list %s  control %s%s" % (
            m, pa["p50"], pa["p90"], pa["p99"], pa["max"], pa["n"],
            r["src_list_ms_median"], r["ctl_list_ms_median"], d))

    concurrent = None
    if conc["native"] and conc["tunnel"]:
        concurrent = {k: {"aggregate_mib_s": statistics.median(r["aggregate_mib_s"] for r in v),
                          "wall_s": statistics.median(r["wall_s"] for r in v),
                          "data_mib": statistics.median(r["data_mib"] for r in v)}
                      for k, v in conc.items()}
        concurrent["ratio"] = round(concurrent["tunnel"]["aggregate_mib_s"] /
                                    max(concurrent["native"]["aggregate_mib_s"], 1), 2)
        print()
        print("%d migrations at once (guests of %d MiB dirtying %d MiB at %d MiB/s), medians:"
              % (CONCURRENT, GUEST_MEM, WL_MEM // 2, WL_RATE // 4))
        for k in ("native", "tunnel"):
            print("  %-7s aggregate %6.0f MiB/s, %.0f MiB in %.2f s" % (
                k, concurrent[k]["aggregate_mib_s"], concurrent[k]["data_mib"],
                concurrent[k]["wall_s"]))
        print("  tunnelled aggregate: %.2fx of native" % concurrent["ratio"])
    pcm = [m for m in med if med[m].get("wait_ms_per_request") is not None]
    if pcm:
        print("\npost-copy page wait (B's QEMU postcopy-blocktime; whether B used preempt):")
        for m in pcm:
            base = MODES[m][2]
            bw = med.get(base, {}).get("wait_ms_per_request")
            print("  %-10s %7.0f ms blocked over %5.0f page requests = %6.3f ms per request%s; "
                  "preempt %s" % (
                      m, med[m]["blocktime_ms"], med[m]["postcopy_requests"],
                      med[m]["wait_ms_per_request"],
                      " (%.2fx native)" % (med[m]["wait_ms_per_request"] / bw) if bw else "",
                      runs[m][-1].get("preempt")))
    pcm = [m for m in med if med[m].get("pc_phase_mib_s") is not None]
    if pcm:
        print("\npost-copy phase (pre-copy at most %d MiB/s, switched once A's job had sent"
              " %d MiB; what moved after that poll, and how fast; the vs native column):"
              % (PC_PRECOPY_MIB_S, PC_SWITCH_MIB))
        for m in pcm:
            # "ratio" already compares these modes by their phase (compared_by)
            print("  %-10s switched at %5.0f MiB, then %5.0f MiB at %5.0f MiB/s%s" % (
                m, med[m]["pc_switch_mib"], med[m]["data_mib"] - med[m]["pc_switch_mib"],
                med[m]["pc_phase_mib_s"],
                " (%.2fx native)" % med[m]["ratio"] if med[m]["ratio"] else ""))
    pcm = [m for m in pcm if any(r.get("pc_phase_cpu") for r in runs[m])]
    if pcm:
        print("\npost-copy phase CPU (from the switch to the end, ms per MiB moved after"
              " the switch, and how many cores all of these kept busy; medians):")
        for m in pcm:
            cs = [r["pc_phase_cpu"] for r in runs[m] if r.get("pc_phase_cpu")]
            med[m]["pc_phase_cpu"] = {k: statistics.median(c.get(k, 0) for c in cs)
                                      for k in sorted({k for c in cs for k in c})}
            print("  %-10s %s" % (m, " ".join(
                "%s=%.2f" % (k, v) for k, v in med[m]["pc_phase_cpu"].items())))
    pc_timeline.report(runs, pcm)
    if "native-dt" in med:
        print("\n-dt modes: migrate-setmaxdowntime %d ms before migrating" % DOWNTIME_MS)
    single = med.get("native-tcp", {}).get("throughput_mib_s")
    par = [m for m in med if "-par" in m]
    if single and par:
        print("\n-parN modes: --parallel with N multifd channels; against one native "
              "connection (native-tcp): " + ", ".join(
                  "%s %.2fx" % (m, med[m]["throughput_mib_s"] / single) for m in par))

    pairs = [(t, r) for t, r in RELAY_OF.items() if t in med and r in med]
    if pairs:
        print("\nagainst a copying relay (%s: the native migration through two socat relays,"
              " one per host; daemon ms/MiB includes the relays):" % ", ".join(r for _, r in pairs))
        for t, r in pairs:
            key = compared_by(med[t])
            med[t]["vs_relay"] = (round(med[t][key] / med[r][key], 2) if med[r].get(key) else None)
            print("  %-10s %s of %s, which is %s native; daemon ms/MiB %.2f vs %.2f" % (
                t, "%.2fx" % med[t]["vs_relay"] if med[t]["vs_relay"] else "?", r,
                "%.2fx" % med[r]["ratio"] if med[r]["ratio"] else "?",
                med[t]["daemon_ms_per_mib"], med[r]["daemon_ms_per_mib"]))

    pairs = [(t, r) for t, r in SPLICE_OF.items() if r in med]
    if pairs:
        print("\nwith no copy through user space (%s: the same through two relays that"
              " splice(2) through a pipe):" % ", ".join(r for _, r in pairs))
        for t, r in pairs:
            key = compared_by(med[r])
            c = RELAY_OF[t]
            print("  %-10s %s native, %s of %s; daemon ms/MiB %.2f vs %s" % (
                r, "%.2fx" % med[r]["ratio"] if med[r]["ratio"] else "?",
                "%.2fx" % (med[r][key] / med[c][key]) if c in med and med[c].get(key) else "?",
                c, med[r]["daemon_ms_per_mib"],
                "%.2f" % med[c]["daemon_ms_per_mib"] if c in med else "?"))

    if PROFILE:
        print_profile(runs)

    result = {"runs": RUNS, "guest_mib": GUEST_MEM, "workload_mib": WL_MEM,
              "workload_rate": WL_RATE, "loopback_mib_s": ceiling,
              "forwarder_mib_s": fwd, "forwarder_cpu_ms_per_mib": round(fwd_cpu, 3),
              "splice_forwarder_mib_s": spl, "splice_forwarder_cpu_ms_per_mib": round(spl_cpu, 3),
              "downtime_limit_ms": DOWNTIME_MS,
              "concurrent": concurrent, "concurrent_n": CONCURRENT,
              "concurrent_all": conc, "sched_autogroup": autogroup,
              "median": med, "all": runs,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(OUT, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    chart(med, ceiling, fwd, concurrent)
    print("\nwrote %s/result.json and %s/bench.png" % (OUT, OUT))
    return 0


def print_profile(runs):
    """Per daemon and mode, medians over the runs, per MiB moved, idle
    subtracted; and where the first run's CPU went."""
    keys = ("cpu_ms_per_mib", "syscalls_per_mib", "ctxsw_per_mib", "faults_per_mib")
    print()
    print("Profile (perf), per MiB moved, idle subtracted; medians")
    print("%-11s %-14s %10s %12s %10s %10s %9s" % ("mode", "daemon", "CPU ms", "syscalls",
                                                 "ctx sw", "faults", "idle ms/s"))
    for m, rs in runs.items():
        profs = [r["profile"] for r in rs if r.get("profile")]
        for d in sorted({d for p in profs for d in p}):
            vals = [p[d] for p in profs if d in p]
            med = {k: statistics.median(v[k] for v in vals) for k in keys + ("idle_cpu_ms_per_s",)}
            print("%-11s %-14s %10.2f %12.0f %10.1f %10.1f %9.2f" % (
                m, d, med["cpu_ms_per_mib"], med["syscalls_per_mib"], med["ctxsw_per_mib"],
                med["faults_per_mib"], med["idle_cpu_ms_per_s"]))
    # what each tunnelled mode costs beyond its native baseline
    print()
    for m, rs in runs.items():
        base = MODES[m][2]
        if base not in runs:
            continue
        cost = {}
        for mode in (m, base):
            profs = [r["profile"] for r in runs[mode] if r.get("profile")]
            cost[mode] = statistics.median(sum(v["cpu_ms_per_mib"] for v in p.values())
                                           for p in profs) if profs else 0
        print("%s: daemons' CPU %.2f ms/MiB, %s %.2f: %+.2f ms/MiB beyond native" % (
            m, cost[m], base, cost[base], cost[m] - cost[base]))
    for m, rs in runs.items():
        p = rs[0].get("profile") or {}
        for d, v in sorted(p.items()):
            if v["top"]:
                print("\n%s, %s, top symbols (%s):" % (m, d, "build/bench/profile/"))
                for ln in v["top"]:
                    print("    " + ln)


def chart(med, ceiling, fwd=None, concurrent=None):
    try:
        import matplotlib
    except ImportError:
        # The first python3 on PATH may not be Debian's; draw with Debian's.
        if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
            os.spawnv(os.P_WAIT, "/usr/bin/python3", ["/usr/bin/python3", __file__, "--chart-only"])
            return
        print("no matplotlib: install python3-matplotlib (make deps) for the chart")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(med)
    rate = [med[m].get("pc_phase_mib_s") or med[m]["throughput_mib_s"] for m in names]
    labels = [("%.2fx" % med[m]["ratio"]) if med[m]["ratio"] else "native" for m in names]
    if concurrent:
        for k in ("native", "tunnel"):
            names.append("%s x4" % k)
            rate.append(concurrent[k]["aggregate_mib_s"])
            labels.append("%.2fx" % concurrent["ratio"] if k == "tunnel" else "native")
    def color(n):
        return ("#4477aa" if n.startswith("native") else
                "#999999" if n.startswith("relay") else
                "#cccccc" if n.startswith("splice") else "#ee7733")

    colors = [color(n) for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    bars = ax1.bar(names, rate, color=colors)
    for bar, lab in zip(bars, labels):
        ax1.annotate(lab, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                     ha="center", va="bottom", fontsize=8)
    ax1.set_ylabel("MiB/s (QEMU memory bandwidth; -pc: after the switch;\nx4: aggregate), median")
    title = ("Throughput, tunnelled (orange) vs native (blue), native through relays"
             " (grey; light: splicing)"
             "\nloopback ceiling %.0f MiB/s" % ceiling)
    if fwd:
        title += ", two copying relays %.0f MiB/s" % fwd
    ax1.set_title(title, fontsize=10)
    names2 = list(med)
    ax2.bar(names2, [med[m]["daemon_ms_per_mib"] for m in names2],
            color=[color(n) for n in names2])
    ax2.set_ylabel("libvirt daemons' CPU ms per MiB moved")
    ax2.set_title("Daemon cost", fontsize=10)
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=35, labelsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "bench.png"), dpi=100)


if __name__ == "__main__":
    sys.exit(main())
