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
build/bench/profile/<mode>-<run>-<daemon>.txt.  BENCH_SCHED=1 also traces
the scheduler, for the source daemon's slow answers; BENCH_AUTOGROUP sets
the kernel's autogroups for the run (docs/performance.md).

This file runs the migrations; bench_config.py has the modes and the
BENCH_* settings, bench_probes.py what is sampled during a migration,
bench_perf.py the profilers, bench_relays.py the relays and ceilings,
bench_report.py the tables and the chart.
"""
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lab"))
import e2e  # noqa: E402
import e2e_common as ec  # noqa: E402
import bench_report  # noqa: E402
import pc_timeline  # noqa: E402
from bench_config import (API_PROBE, API_PROBE_SRC, AUTOGROUP, CONCURRENT,  # noqa: E402
                          DISK_MIB, DOWNTIME_MS, GUEST_MEM, LAB_ENV, MODES, OUT,
                          PC_PRECOPY_MIB_S, PC_SWITCH_MIB, PROFILE, RUNS, SCHED, WL_MEM,
                          WL_RATE, compared_by)
from bench_perf import Profiler, SchedTrace  # noqa: E402
from bench_probes import ApiProbe, CpuSampler, LatencyProbe, MirrorClock  # noqa: E402
from bench_relays import RelayChain, forwarder_ceiling, free_port, loopback_ceiling  # noqa: E402
from bench_util import autogroups, built, num, percentile  # noqa: E402
from labpy import Failure, Guest, jobinfo, parse_console, wait_for  # noqa: E402


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
    # post-copy modes: B's QEMU measures how long the guest's vCPUs wait
    # for the pages they fault on (postcopy-blocktime, through a QMP
    # monitor of its own), then the switch
    pc = {}
    tl = pc_timeline.Timeline(a, b) if timeline else None
    extra = []
    chains = []
    # what a failure leaves to undo; on success, each is stopped below,
    # in its place
    with contextlib.ExitStack() as undo:
        api = ApiProbe(a)
        undo.callback(api.kill)
        probe = LatencyProbe(a)
        probe.start()
        undo.callback(probe.stop.set)
        if profiler:
            profiler.start()
            undo.callback(profiler.abort)
        sched = SchedTrace(a, tag or mode) if SCHED else None
        t0 = time.monotonic()
        try:
            if mode.startswith(("relay-", "splice-")):
                # B's QEMU (and NBD server) listen on 127.0.0.3:port, A's QEMU
                # connects to 127.0.0.2:port, the relays carry it between
                splice = mode.startswith("splice-")
                port = free_port("127.0.0.3")
                chains.append(RelayChain(port, port, fork=True, splice=splice).start())
                extra += ["--migrateuri", "tcp://127.0.0.2:%d" % port,
                          "--listen-address", "127.0.0.3"]
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
            # the migration's end, before the relays take their time to stop
            t1 = time.monotonic()
        finally:
            if sched:
                sched.stop()
            relay_cpu = sum(c.stop() for c in chains)
            if tl:
                tl.stop.set()
        undo.pop_all()
    wall = t1 - t0
    api_at = api.stop(t0, t1)
    src = jobinfo(a, ec.GNAME)
    profile = profiler.stop(ec.mib_of(src, "Data processed")) if profiler else None
    sampler.stop.set()
    probe.stop.set()
    pc_parts = (tl.finish(os.path.join(OUT, "%s.timeline.json" % (tag or mode)))
                if tl and tl.t0 is not None else None)
    sampler.join()
    probe.join()
    # read the trace once nothing else of the run is measured
    sched_report = sched.report(api_at, t0, t1, api.proc.pid) if sched else None
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
        since, phase_wall = sampler.since_mark()
        if since and mib > 0 and phase_wall:
            pc_cpu = {k: round(1000 * v / mib, 2) for k, v in since.items()}
            pc_cpu["cores busy"] = round(sum(since.values()) / phase_wall, 2)
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


def main():
    # `timeout` and CI stop the bench with SIGTERM: unwind as on an
    # error, so that the lab is cleaned up and the autogroup setting put
    # back
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.makedirs(OUT, exist_ok=True)
    if sys.argv[1:] == ["--chart-only"]:
        r = json.load(open(os.path.join(OUT, "result.json")))
        bench_report.chart(r["median"], r["loopback_mib_s"], r.get("forwarder_mib_s"),
                           r.get("concurrent"))
        return 0
    ec.build_helpers()
    built(API_PROBE_SRC, API_PROBE, libvirt=True)
    lab = e2e.Lab()
    runs = {m: [] for m in MODES}
    conc = {"native": [], "tunnel": []}
    if AUTOGROUP not in (None, "0", "1"):
        raise Failure("BENCH_AUTOGROUP must be 0 or 1, not %r" % AUTOGROUP)
    autogroup_was = autogroups() if AUTOGROUP else None
    try:
        autogroup = autogroups(AUTOGROUP)
        if AUTOGROUP:
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
        try:
            lab.cleanup()
            lab.stop()
        finally:
            if autogroup_was is not None:
                autogroups(autogroup_was)

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

    concurrent = None
    if conc["native"] and conc["tunnel"]:
        concurrent = {k: {"aggregate_mib_s": statistics.median(r["aggregate_mib_s"] for r in v),
                          "wall_s": statistics.median(r["wall_s"] for r in v),
                          "data_mib": statistics.median(r["data_mib"] for r in v)}
                      for k, v in conc.items()}
        concurrent["ratio"] = round(concurrent["tunnel"]["aggregate_mib_s"] /
                                    max(concurrent["native"]["aggregate_mib_s"], 1), 2)
    bench_report.summary(med, runs, concurrent, ceiling, fwd, fwd_cpu, spl, spl_cpu)

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
    bench_report.chart(med, ceiling, fwd, concurrent)
    print("\nwrote %s/result.json and %s/bench.png" % (OUT, OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
