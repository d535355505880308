"""make bench's profilers: perf stat/record on every daemon
(BENCH_PROFILE) and the scheduler's view of the source daemon
(BENCH_SCHED)."""
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

from bench_config import IDLE_S, OUT, PERF_EVENTS, RECORD_EVENT, SCHED_SLOW_MS, TRACE


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

    def abort(self):
        """Stop the perf processes of a run that will not be reported."""
        self._stop(self.procs)
        self.procs = []

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
        daemons = a.daemon_pids()
        self.pid = next((daemons[c] for c in ("virtqemud", "libvirtd") if c in daemons),
                        next(iter(daemons.values())))
        if os.path.exists(self.data):
            os.unlink(self.data)
        # perf starts with its events off and says when it turned them
        # on: only then has the migration a trace from its start
        self.fifos = tempfile.mkdtemp(prefix="bench-sched-")
        ctl, ack = os.path.join(self.fifos, "ctl"), os.path.join(self.fifos, "ack")
        os.mkfifo(ctl)
        os.mkfifo(ack)
        # Both ends are open before perf starts: the command waits in the
        # fifo until perf reads it, and until perf opens its end of the
        # ack fifo, select() does not see it as readable
        rfd = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(ctl, os.O_RDWR)
        try:
            os.write(wfd, b"enable\n")
            # CLOCK_MONOTONIC: the probe's clock, and time.monotonic()'s
            try:
                self.proc = subprocess.Popen(["perf", "sched", "record", "-k", "CLOCK_MONOTONIC",
                                              "-a", "-D", "-1", "--control",
                                              "fifo:%s,%s" % (ctl, ack), "-o", self.data],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except OSError:
                shutil.rmtree(self.fifos, ignore_errors=True)
                raise
            deadline = time.monotonic() + 10
            got = b""
            while b"ack" not in got:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("perf sched record did not start (10 s limit)")
                if select.select([rfd], [], [], 0.1)[0]:
                    got += os.read(rfd, 64)
        finally:
            os.close(wfd)
            os.close(rfd)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.fifos, ignore_errors=True)

    def slices(self):
        """[(task, pid, start s, run ms, cpu wait ms)] of every task, the
        events perf lost, and timehist's exit status.  Each slice ran for
        run ms from start, after waiting cpu wait ms for a CPU: since its
        wakeup (`sch delay`) or, if its previous slice ended runnable
        (preempted: state R, or W, which perf 6.1 prints for the kernel's
        "preempted" report), since that slice ended (`wait time`, all of
        the time off the CPU, which then holds any `sch delay`)."""
        p = subprocess.run(["perf", "sched", "timehist", "--state", "-i", self.data],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=600)
        res, lost, runnable = [], 0, {}
        for line in p.stdout.splitlines():
            f = line.split()
            # "<time> lost N events on cpu C"
            if len(f) > 2 and f[1] == "lost":
                lost += int(f[2]) if f[2].isdigit() else 1
            # time [cpu] comm[tid/pid] wait delay run state
            if len(f) < 7 or not f[0][0].isdigit() or not f[1].startswith("["):
                continue
            try:
                end, wait, delay, run = float(f[0]), float(f[-4]), float(f[-3]), float(f[-2])
            except ValueError:
                continue
            task = " ".join(f[2:-4])
            ids = task.rsplit("[", 1)[-1].rstrip("]").split("/")
            tid, pid = ids[0], ids[-1]
            if runnable.get(tid):
                delay = max(delay, wait)
            runnable[tid] = f[-1] in ("R", "W")
            res.append((task, pid, end - run / 1000, run, delay))
        return res, lost, p.returncode

    @staticmethod
    def overlap(a0, a1, b0, b1):
        return max(0.0, min(a1, b1) - max(a0, b0)) * 1000

    def report(self, api_at, t0, t1, probe_pid):
        """Per slow call, the daemon's (and the probe's) threads' run and
        CPU-wait time that fell in its window, and which other tasks ran
        meanwhile; then the main thread's longest runs and waits during
        the migration (t0 to t1)."""
        self.stop()
        sl, lost, rc = self.slices()
        pid = str(self.pid)
        watched = (pid, str(probe_pid))
        ours = [x for x in sl if x[1] in watched]
        others = [x for x in sl if x[1] not in watched and not x[0].startswith("<idle>")]
        lines = []
        if rc != 0 or not sl:
            lines.append("perf sched timehist read nothing from %s (exit %d)" % (self.data, rc))
        if lost:
            lines.append("perf lost %d events: the figures below miss some" % lost)
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
                             for c, x in sorted(per.items(), key=lambda kv: -sum(kv[1]))[:4])
            other = ", ".join("%s %.1f" % (c, r) for c, r in
                              sorted(meanwhile.items(), key=lambda kv: -kv[1])[:3])
            lines.append("call at %.3f s took %.1f ms: %s; on the CPUs meanwhile: %s"
                         % (t, ms, busy or "no thread ran", other or "nothing"))
        main = [x for x in ours if x[0].endswith("[%s]" % pid) and t0 <= x[2] <= t1]
        lines.append("main thread's longest runs during the migration (ms@s): " + ", ".join(
            "%.1f@%.3f" % (run, start - t0) for _, _, start, run, _ in
            sorted(main, key=lambda x: -x[3])[:10]))
        lines.append("main thread's longest waits for a CPU during the migration (ms): " +
                     ", ".join("%.1f" % d for d in sorted((x[4] for x in main), reverse=True)[:10]))
        with open(self.txt, "w") as f:
            f.write("\n".join(lines) + "\n")
        # what report() read, to read the trace again
        with open(self.data.replace(".data", ".json"), "w") as f:
            json.dump({"pid": self.pid, "probe_pid": probe_pid, "t0": t0, "t1": t1,
                       "api_at": api_at}, f)
        return lines
