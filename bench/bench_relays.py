"""Relays for make bench's ceilings and relay modes: a native migration's
connections through two copying (socat) or splicing relays, one per
host, and the loopback TCP ceiling."""
import os
import signal
import socket
import subprocess
import threading
import time

from bench_config import SPLICE_RELAY, SPLICE_SRC
from bench_util import built, cpu_seconds, proc_stat
from labpy import Failure


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
