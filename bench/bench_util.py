"""Small helpers of make bench: /proc CPU times, the C helpers' build,
and number parsing."""
import os
import subprocess

import e2e_common as ec
from bench_config import AUTOGROUP_SYSCTL, CLK, OUT


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


def percentile(samples, q):
    """The q-th percentile (nearest rank), None without samples."""
    if not samples:
        return None
    s = sorted(samples)
    return round(s[min(len(s) - 1, max(0, -(-len(s) * q // 100) - 1))], 1)


def num(s, default=0.0):
    try:
        return float(s.split()[0])
    except (AttributeError, ValueError, IndexError):
        return default


def autogroups(value=None):
    """kernel.sched_autogroup_enabled (None on a kernel without it), set
    first to value ("0" or "1") if given (BENCH_AUTOGROUP)."""
    if value is not None:
        with open(AUTOGROUP_SYSCTL, "w") as f:
            f.write(value)
    try:
        with open(AUTOGROUP_SYSCTL) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
