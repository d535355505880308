"""make bench's report: the tables it prints, and the chart."""
import os
import statistics
import sys

import pc_timeline
from bench_config import (BENCH_PY, CONCURRENT, DOWNTIME_MS, GUEST_MEM, MODES, OUT,
                          PC_PRECOPY_MIB_S, PC_SWITCH_MIB, PROFILE, RELAY_OF, RUNS,
                          SPLICE_OF, WL_MEM, WL_RATE, compared_by)


def summary(med, runs, concurrent, ceiling, fwd, fwd_cpu, spl, spl_cpu):
    """Print the tables of a run: medians and ratios per mode, the source
    daemon's answer time, and each mode family's own figures.  Adds the
    figures it derives (vs_relay, pc_phase_cpu) to med."""
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
            *("%.1f" % v if v is not None else "-"
              for v in (r["src_list_ms_median"], r["ctl_list_ms_median"])), d))

    if concurrent:
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
            os.spawnv(os.P_WAIT, "/usr/bin/python3", ["/usr/bin/python3", BENCH_PY, "--chart-only"])
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
