"""BENCH_PC_TIMELINE=1: what a post-copy phase is made of.

From the switch to the end, every TICK_S: the source QEMU's RAM counters
(`query-migrate` on a QMP monitor of its own, which the guest gets only
with this option) and the CPU time of every thread of both QEMUs and both
daemons (/proc/PID/task). Each interval then counts as one of:
- "sending": the source handed on at least SEND_MIB of page data;
- "walking": it went on through its RAM (remaining fell) but sent next to
  nothing, i.e. it walked pages the guest never wrote, which go as zero
  pages of a few bytes each.
For each part: how long, how fast the source walked its RAM and sent, and
how much of the time the threads that do the work ran, and how much
they were runnable but waited for a CPU (/proc/.../schedstat). The samples go to
build/bench/<mode>-<run>.timeline.json.
"""
import json
import os
import statistics
import threading
import time

import e2e_common as ec  # noqa: E402
from labpy import LAB, Guest  # noqa: E402

ENABLED = os.environ.get("BENCH_PC_TIMELINE") == "1"
TICK_S = 0.025
SEND_MIB = 1.0
MONITOR_NAME = "timeline-src"
MONITOR = os.path.join(LAB, "qmp", MONITOR_NAME + ".sock")
# QEMU's thread names (debug-threads=on, as libvirt starts it)
THREADS = (("src migration", "A qemu", "mig/src/main"),
           ("dst listen", "B qemu", "mig/dst/listen"),
           ("dst vCPU", "B qemu", "CPU "),
           ("A daemon", "A libvirtd", None),
           ("B daemon", "B libvirtd", None))
MIB = 1024 * 1024


class MonitoredGuest(Guest):
    """The bench's guest, with a side QMP monitor on the source that the
    timeline polls (ec.with_side_qmp(); ec.side_qmp_xml() leaves it out of
    the destination's XML)."""

    def xml(self):
        return ec.with_side_qmp(super().xml(), MONITOR_NAME)[0]


def thread_cpu(hosts):
    """{"process|thread name|tid": (ns on a CPU, ns runnable but waiting for
    one)} of both hosts' QEMUs and daemons (/proc/.../schedstat); a daemon's
    main thread is "main"."""
    out = {}
    for hn, h in hosts.items():
        found = h.procs()
        procs = [("%s qemu" % hn, p) for p in h.qemus(found)]
        procs += [("%s %s" % (hn, k), p) for k, p in h.daemons(found).items()]
        for name, pid in procs:
            try:
                tids = os.listdir("/proc/%s/task" % pid)
            except OSError:
                continue
            for tid in tids:
                try:
                    comm = open("/proc/%s/task/%s/comm" % (pid, tid)).read().strip()
                    run, wait = open("/proc/%s/task/%s/schedstat" % (pid, tid)).read().split()[:2]
                except (OSError, ValueError):
                    continue
                main = tid == str(pid)
                out["%s|%s|%s" % (name, comm if not main or "qemu" in name else "main", tid)] = (
                    int(run), int(wait))
    return out


class Timeline(threading.Thread):
    def __init__(self, a, b):
        super().__init__(daemon=True)
        self.hosts = {"A": a, "B": b}
        self.samples = []
        self.stop = threading.Event()
        self.t0 = None

    def run(self):
        self.t0 = time.monotonic()
        deadline = self.t0 + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            ram = (ec.side_qmp(MONITOR, "query-migrate", timeout=2) or {}).get("ram")
            self.samples.append((time.monotonic() - self.t0, ram, thread_cpu(self.hosts)))
            time.sleep(TICK_S)

    def finish(self, path):
        self.stop.set()
        self.join()
        with open(path, "w") as f:
            json.dump({"tick_s": TICK_S, "samples": self.samples}, f)
        return split(self.samples)


def _busy(prev, cur, proc, name):
    """Seconds the threads of proc whose name starts with name (None: the
    process's main thread) ran, and waited to run, between two samples. A
    thread that went away in between is missed, with its last share."""
    run = wait = 0
    for k, (r, w) in cur.items():
        p, comm, _ = k.split("|")
        if p != proc or not (comm == "main" if name is None else comm.startswith(name)):
            continue
        r0, w0 = prev.get(k, (0, 0))    # a thread that started counts whole
        run += r - r0
        wait += w - w0
    return run / 1e9, wait / 1e9


def split(samples):
    """The sending and walking parts of a phase (see the module's doc)."""
    parts = {p: {"s": 0.0, "walked_mib": 0.0, "sent_mib": 0.0,
                 **{t[0]: [0.0, 0.0] for t in THREADS}}
             for p in ("sending", "walking")}
    pts = [s for s in samples if s[1]]
    for (t1, r1, c1), (t2, r2, c2) in zip(pts, pts[1:]):
        sent = (r2["transferred"] - r1["transferred"]) / MIB
        walked = (r1["remaining"] - r2["remaining"]) / MIB
        if sent < SEND_MIB and walked <= 0:
            continue            # before the switch took, or after the end
        p = parts["sending" if sent >= SEND_MIB else "walking"]
        p["s"] += t2 - t1
        p["walked_mib"] += max(walked, 0)
        p["sent_mib"] += sent
        for label, proc, name in THREADS:
            run, wait = _busy(c1, c2, proc, name)
            p[label][0] += run
            p[label][1] += wait
    out = {}
    for k, p in parts.items():
        if p["s"] <= 0:
            continue
        out[k] = {"s": round(p["s"], 3),
                  "walk_mib_s": round(p["walked_mib"] / p["s"]),
                  "send_mib_s": round(p["sent_mib"] / p["s"])}
        out[k].update({t[0]: round(p[t[0]][0] / p["s"], 2) for t in THREADS})
        out[k].update({t[0] + " waiting": round(p[t[0]][1] / p["s"], 2) for t in THREADS})
    return out


def report(runs, modes):
    """Medians per post-copy mode and part: seconds, rates, and each
    thread's share of a core."""
    rows = []
    for m in modes:
        tl = [r["pc_timeline"] for r in runs[m] if r.get("pc_timeline")]
        for part in ("sending", "walking"):
            vals = [t[part] for t in tl if part in t]
            if not vals:
                continue
            med = {k: statistics.median(v[k] for v in vals) for k in vals[0]}
            rows.append("  %-10s %-8s %5.2f s  RAM walked %4.0f MiB/s, sent %4.0f MiB/s;  %s" % (
                m, part, med["s"], med["walk_mib_s"], med["send_mib_s"],
                ", ".join("%s %.0f%% (+%.0f%%)" % (t[0], 100 * med[t[0]],
                                                    100 * med[t[0] + " waiting"])
                          for t in THREADS)))
    if rows:
        print()
        print("post-copy phase timeline (BENCH_PC_TIMELINE; every %d ms, medians; each thread's"
              " share of the time on a CPU, and (+) runnable but waiting for one):"
              % (TICK_S * 1000))
        print("\n".join(rows))
