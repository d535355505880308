"""make bench's settings: the modes it compares, and what the BENCH_*
environment variables choose (see bench.py and docs/performance.md)."""
import os

from labpy import BUILD

BENCH_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py")
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


def compared_by(r):
    """What a mode's medians r are compared by: storage modes by how fast
    the disks were copied, post-copy modes by how fast the post-copy phase
    moved the rest, the others by the migration's MiB/s."""
    if r.get("storage_mib_s"):
        return "storage_mib_s"
    if r.get("pc_phase_mib_s"):
        return "pc_phase_mib_s"
    return "throughput_mib_s"
