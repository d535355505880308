"""Helpers for the end-to-end lab tests: hosts, guests, migration, checks.

Everything here drives the real lab (lab/lab.sh) and real virsh; nothing is
mocked.  Waits are polls with deadlines, never fixed sleeps.
"""
import os
import re
import subprocess
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(TOP, "build")
LAB = os.path.join(BUILD, "lab")
PRIVATE = os.path.join(LAB, "private")
SHARED = os.path.join(LAB, "shared")
GUEST = os.path.join(BUILD, "guest")
PREFIX = os.environ.get("LVT_PREFIX", os.path.join(BUILD, "install"))
VIRSH = os.path.join(PREFIX, "bin", "virsh")
LABSH = os.path.join(TOP, "lab", "lab.sh")
CLIENT_PKI = os.path.join(LAB, "pki", "client")


DAEMONS = ("libvirtd", "virtqemud", "virtproxyd", "virtlogd", "virtstoraged")


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def log(msg):
    print("    " + msg, flush=True)


def run(args, timeout=600, check_rc=True, env=None):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check_rc and p.returncode != 0:
        raise Failure("%s failed (rc %d): %s" % (" ".join(args[:4]), p.returncode,
                                                 (p.stderr or p.stdout).strip()))
    return p


def wait_for(what, fn, timeout, interval=0.2):
    """Poll fn() until it returns a truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise Failure("timed out after %ds waiting for %s" % (timeout, what))


class Host:
    def __init__(self, name, idx, stock=False, split=False, env=None, packaged=False):
        self.name, self.idx, self.stock, self.split = name, idx, stock, split
        self.packaged = packaged
        self.env = env or {}
        self.addr = "127.0.0.%d" % (idx + 1)
        self.dir = os.path.join(LAB, "hosts", name)
        self.private = os.path.join(self.dir, "private")

    def start(self):
        args = [LABSH, "start", self.name, str(self.idx)]
        if self.stock:
            args.append("--stock")
        if self.split:
            args.append("--split")
        if self.packaged == "trixie":
            args.append("--trixie")   # a packaged host on a Debian 13 root
        elif self.packaged:
            args.append("--packaged")
        # A packaged host installs Debian's packages, then ours, first.
        run(args, timeout=900 if self.packaged else 120, env=dict(os.environ, **self.env))
        # Prove which build this host runs: the daemons' executables.
        want = os.path.join(os.path.join(BUILD, "install-stock") if self.stock else PREFIX, "sbin")
        pids = self.daemon_pids()
        check(pids, "no libvirt daemon found on host %s" % self.name)
        if self.packaged:
            # Its root is the overlay lab.sh mounts on root/ in its namespace.
            for comm, pid in pids.items():
                exe = os.readlink("/proc/%d/exe" % pid)
                want = os.path.join(self.dir, "root", "usr", "sbin", comm)
                check(exe == want, "%s on %s runs %s, expected %s" % (comm, self.name, exe, want))
            check("libvirtd" in pids, "host %s runs %s, expected libvirtd" % (self.name, sorted(pids)))
            return
        for comm, pid in pids.items():
            exe = os.readlink("/proc/%d/exe" % pid)
            if os.environ.get("LAB_VALGRIND") and "valgrind" in exe:
                exe = next(a for a in open("/proc/%d/cmdline" % pid).read().split("\0")
                           if "/sbin/" in a)
            check(os.path.dirname(exe) == want, "%s on %s runs %s, expected %s" % (comm, self.name, exe, want))
        expect = {"virtproxyd", "virtqemud"} if self.split else {"libvirtd"}
        check(expect <= set(pids), "host %s runs %s, expected %s" % (self.name, sorted(pids), sorted(expect)))

    def stop(self):
        run([LABSH, "stop", self.name], check_rc=False)

    def restart_daemons(self, kill=False):
        """Restart this host's libvirt daemons: SIGTERM as a service
        restart does, or SIGKILL (kill) as a crash.  QEMU keeps running."""
        run([LABSH, "restart", self.name] + (["--kill"] if kill else []), timeout=120)

    def uri(self, transport="tcp"):
        return "qemu+%s://%s/system" % (transport, self.addr)

    def client_uri(self, transport="tcp"):
        if transport == "tls":
            return self.uri("tls") + "?pkipath=" + CLIENT_PKI
        return self.uri("tcp")

    def virsh(self, *args, timeout=120, check_rc=True):
        """Every call has its own deadline, so that a hung daemon fails its
        case quickly and says so, rather than holding up the run."""
        try:
            return run([VIRSH, "-q", "-c", self.client_uri()] + list(args),
                       timeout=timeout, check_rc=check_rc)
        except subprocess.TimeoutExpired:
            raise Failure("%s's daemon did not answer `virsh %s` within %d s"
                          % (self.name, " ".join(args[:2]), timeout))

    def daemon_log(self):
        """The text of this host's daemon logs (debug for migration)."""
        d = os.path.join(self.dir, "var", "log", "libvirt")
        text = ""
        for f in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            if f.endswith(".log"):
                with open(os.path.join(d, f), errors="replace") as fh:
                    text += fh.read()
        return text

    def domstate(self, dom):
        p = self.virsh("domstate", "--reason", dom, check_rc=False)
        if p.returncode != 0:
            return None
        return p.stdout.strip()

    def procs(self):
        """{comm: [pid, ...]} of every process in this host's PID namespace,
        from one walk of /proc."""
        out = {}
        try:
            ns_pid = open(os.path.join(self.dir, "pid")).read().strip()
            ns = os.readlink("/proc/%s/ns/pid" % ns_pid)
        except OSError:
            return out
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                if os.readlink("/proc/%s/ns/pid" % p) != ns:
                    continue
                comm = open("/proc/%s/comm" % p).read().strip()
                if comm.startswith("memcheck"):
                    # a daemon under valgrind (LAB_VALGRIND): name it by its program
                    argv = open("/proc/%s/cmdline" % p).read().split("\0")
                    comm = next((os.path.basename(a) for a in argv if "/sbin/" in a), comm)
            except OSError:
                continue
            out.setdefault(comm, []).append(int(p))
        return out

    @staticmethod
    def qemus(procs):
        return [p for comm, pids in procs.items() if comm.startswith("qemu-system") for p in pids]

    @staticmethod
    def daemons(procs):
        return {comm: pids[0] for comm, pids in procs.items() if comm in DAEMONS}

    def qemu_pids(self):
        """QEMU processes of this host (libvirt daemonizes them into its namespace)."""
        return self.qemus(self.procs())

    def daemon_pids(self):
        return self.daemons(self.procs())


STATUS_RE = re.compile(r"^WL t=(\d+) mem_gen=(\d+) mem_pages=(\d+) mem_err=(\d+)(.*)$")
DISK_RE = re.compile(r"disk=(\w+):(\d+):(\d+):(\d+)")


def parse_console(path):
    """Return (status lines as dicts, error lines) from a guest console log."""
    stats, errors = [], []
    try:
        data = open(path, "rb").read().decode("utf-8", "replace")
    except FileNotFoundError:
        return stats, errors
    for line in data.splitlines():
        line = line.strip("\r\x1b[?7l2J")
        m = STATUS_RE.search(line)
        if m:
            disks = {d: {"seq": int(s), "err": int(e), "ring": int(r)}
                     for d, s, e, r in DISK_RE.findall(m.group(5))}
            stats.append({"t": int(m.group(1)), "gen": int(m.group(2)),
                          "pages": int(m.group(3)), "mem_err": int(m.group(4)),
                          "disks": disks})
        elif "WL " in line and ("error" in line or "fatal" in line):
            errors.append(line)
    return stats, errors


class Guest:
    """A lab guest: kernel + initramfs running the integrity workload."""

    def __init__(self, name, mem_mib=256, wl_mem=64, wl_rate=32, ring=1024,
                 wrate=100, disks=()):
        self.name = name
        self.mem_mib, self.wl_mem, self.wl_rate = mem_mib, wl_mem, wl_rate
        self.ring, self.wrate = ring, wrate
        # disks: list of dicts {dev, path, fmt, size_mib, backing(optional)}
        self.disks = list(disks)

    def console(self, host):
        return os.path.join(host.private, self.name + "-console.log")

    def xml(self):
        disks = ""
        for d in self.disks:
            disks += """
    <disk type='file' device='disk'>
      <driver name='qemu' type='%s' cache='none'/>
      <source file='%s'/>
      <target dev='%s' bus='virtio'/>
    </disk>""" % (d["fmt"], d["path"], d["dev"])
        cmdline = ("console=ttyS0 quiet panic=-1 wl_mem=%d wl_rate=%d wl_ring=%d "
                   "wl_wrate=%d wl_disks=%d" % (self.wl_mem, self.wl_rate, self.ring,
                                                self.wrate, len(self.disks)))
        if os.environ.get("LAB_BREAK") == "mem":
            cmdline += " wl_inject=1"
        return """<domain type='qemu'>
  <name>%(name)s</name>
  <memory unit='MiB'>%(mem)d</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>%(guest)s/vmlinuz</kernel>
    <initrd>%(guest)s/initrd.img</initrd>
    <cmdline>%(cmdline)s</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>%(disks)s
    <serial type='file'>
      <source path='%(console)s'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
""" % {"name": self.name, "mem": self.mem_mib, "guest": GUEST, "cmdline": cmdline,
       "disks": disks, "console": os.path.join(PRIVATE, self.name + "-console.log")}

    def start(self, host, persistent=True, timeout=120):
        """Boot on host and wait until the workload runs.  Persistent by
        default, so the source keeps its job statistics after migrating."""
        xmlpath = os.path.join(LAB, self.name + ".xml")
        with open(xmlpath, "w") as f:
            f.write(self.xml())
        if persistent:
            host.virsh("define", xmlpath)
            host.virsh("start", self.name)
        else:
            host.virsh("create", xmlpath)
        check_qemu_user(host)
        self.wait_progress(host, "workload running on %s" % host.name, timeout=timeout)

    def wait_progress(self, host, what, timeout=90, min_lines=3):
        """Wait until the console shows min_lines status lines with progress."""
        def ok():
            stats, _ = parse_console(self.console(host))
            if len(stats) < min_lines:
                return None
            a, b = stats[-min_lines], stats[-1]
            if b["pages"] <= a["pages"] and self.wl_mem:
                return None
            for d in self.disks:
                if b["disks"].get(d["dev"], {}).get("seq", 0) <= a["disks"].get(d["dev"], {}).get("seq", 0):
                    return None
            return stats
        return wait_for(what, ok, timeout)

    def check_clean(self, host):
        stats, errors = parse_console(self.console(host))
        check(not errors, "guest reported errors on %s: %s" % (host.name, errors[:3]))
        check(stats, "no workload status on %s" % host.name)
        last = stats[-1]
        check(last["mem_err"] == 0, "memory verifier errors on %s: %d" % (host.name, last["mem_err"]))
        for dev, d in last["disks"].items():
            check(d["err"] == 0, "disk verifier errors on %s %s: %d" % (host.name, dev, d["err"]))
        return last


QEMU_USER = "libvirt-qemu"


def check_qemu_user(host):
    """The lab runs QEMU as distributions do: unprivileged (lab.sh), unless
    LAB_QEMU_ROOT is set.  Every QEMU of `host` must run as that user."""
    import pwd
    want = 0 if os.environ.get("LAB_QEMU_ROOT") else pwd.getpwnam(QEMU_USER).pw_uid
    for pid in host.qemu_pids():
        try:
            with open("/proc/%d/status" % pid) as f:
                uid = int(next(line for line in f if line.startswith("Uid:")).split()[2])
        except (OSError, StopIteration):
            continue
        check(uid == want, "QEMU %d on %s runs as uid %d, expected %d (%s)"
              % (pid, host.name, uid, want, "root" if not want else QEMU_USER))


def make_disk(path, fmt="raw", size_mib=32, backing=None, base_blocks=0, ring=1024):
    """Create a disk image; a backing image gets the verifier's base pattern
    after the guest's ring, so an overlay can be proven to use it."""
    if os.path.exists(path):
        os.unlink(path)
    if backing:
        # The backing path is as the lab host sees it (inside its namespace),
        # so don't let qemu-img open it from here.
        run(["qemu-img", "create", "-q", "-f", fmt, "-F", "qcow2", "-b", backing, "-u",
             path, "%dM" % size_mib])
        return
    run(["qemu-img", "create", "-q", "-f", fmt, path, "%dM" % size_mib])
    if base_blocks:
        import importlib.util
        spec = importlib.util.spec_from_file_location("vd", os.path.join(TOP, "lab", "verify-disk.py"))
        vd = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(vd)
        raw = path + ".pattern"
        with open(raw, "wb") as f:
            f.truncate(size_mib * 1024 * 1024)
            f.seek(ring * 4096)
            for i in range(base_blocks):
                f.write(vd.base_block(ring + i))
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, raw, path])
        os.unlink(raw)


def verify_disk(host, image, dev, ring, reported, base_blocks=0):
    """Verify an image as the host sees it (inside its mount namespace, so
    backing chains resolve to the host's own files)."""
    ns_pid = open(os.path.join(host.dir, "pid")).read().strip()
    p = run(["nsenter", "--target", ns_pid, "--mount", "python3", os.path.join(TOP, "lab", "verify-disk.py"), image, "--name", dev,
             "--ring", str(ring), "--reported", str(reported),
             "--base-pattern", str(base_blocks)], check_rc=False)
    log(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr.strip())
    check(p.returncode == 0, "disk %s not identical to what the guest wrote:\n%s" % (image, p.stdout))


def jobinfo(host, dom, completed=True):
    args = ["domjobinfo", dom]
    if completed:
        args.append("--completed")
    p = host.virsh(*args, check_rc=False)
    info = {}
    for line in p.stdout.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


class Forwarder:
    """Forwards each connection accepted on `lsock` to a new one from
    `connect()`, both ways; with `rate`, at most `rate` bytes per second go
    towards the server (token bucket, 64 KiB bursts).  Counts `bytes` both
    ways and `written` towards the server.

    pause() stops taking data from the clients (they back up as if the
    server stopped reading), blackhole() stops taking data either way (a
    link that drops every packet but is never reset: only a timeout can
    notice), resume() goes on.  Once pause() returned, nothing more goes
    towards the server: data a forwarding thread was already waiting for
    when it came is held back too, and `written` no longer changes.

    Bounded: at most `max_conns` connections; every thread exits once
    close() closed the sockets."""

    def __init__(self, lsock, connect, max_conns, rate=None):
        import socket
        import threading
        self._socket, self._threading = socket, threading
        self.lsock, self._connect, self.max_conns, self.rate = lsock, connect, max_conns, rate
        self.conns = []
        self.bytes = self.written = 0
        self.lock = threading.Lock()
        self.closed = False
        self.flowing = threading.Event()
        self.flowing.set()
        self.flowing_back = threading.Event()
        self.flowing_back.set()
        # forwards past the gate and not yet counted, per direction
        self.gate = threading.Condition()
        self.inflight = {True: 0, False: 0}
        self.held_bytes = 0   # bytes towards the server held back at the gate
        threading.Thread(target=self._accept, daemon=True).start()

    def _hold(self, to_server, timeout=30):
        """Wait (bounded) until no forward in that direction is past the gate."""
        deadline = time.monotonic() + timeout
        with self.gate:
            while self.inflight[to_server] and time.monotonic() < deadline:
                self.gate.wait(0.1)
            if self.inflight[to_server]:
                raise Failure("a forward towards the %s did not finish in %ds" %
                              ("server" if to_server else "client", timeout))

    def pause(self):
        with self.gate:
            self.flowing.clear()
        self._hold(True)

    def blackhole(self):
        with self.gate:
            self.flowing.clear()
            self.flowing_back.clear()

    def pending(self):
        """Bytes the clients sent that wait in front of the forwarder or
        in it (e.g. writes held back by pause())."""
        import fcntl
        import struct
        import termios
        with self.gate:
            total = self.held_bytes
        with self.lock:
            clients = self.conns[0::2]
            for c in clients:
                try:
                    total += struct.unpack("i", fcntl.ioctl(c.fileno(), termios.FIONREAD,
                                                            b"\0\0\0\0"))[0]
                except OSError:
                    pass
        return total

    def resume(self):
        with self.gate:
            self.flowing.set()
            self.flowing_back.set()
            self.gate.notify_all()

    def _accept(self):
        for _ in range(self.max_conns):
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            s = self._connect()
            with self.lock:
                if self.closed:
                    c.close(); s.close()
                    return
                self.conns += [c, s]
            self._threading.Thread(target=self._pipe, args=(c, s, True), daemon=True).start()
            self._threading.Thread(target=self._pipe, args=(s, c, False), daemon=True).start()

    def filter(self, data, to_server, state):
        """What to forward of `data` just received; `state` is a dict kept
        per connection and direction.  Forwards everything."""
        return data

    def _pipe(self, src, dst, to_server):
        throttle = to_server and self.rate
        burst = 65536
        allowance, last = burst, time.monotonic()
        state = {}
        flowing = self.flowing if to_server else self.flowing_back
        while True:
            flowing.wait()   # close() sets both
            if self.closed:
                break
            try:
                data = src.recv(262144 if not throttle else 65536)
                if not data:
                    break
                data = self.filter(data, to_server, state)
                # a pause that came while recv() waited holds back what it
                # returned; pause() waits for forwards already past here
                with self.gate:
                    held = len(data) if to_server and not flowing.is_set() else 0
                    self.held_bytes += held
                    while not flowing.is_set() and not self.closed:
                        self.gate.wait(1.0)
                    self.held_bytes -= held
                    if self.closed:
                        break
                    self.inflight[to_server] += 1
            except OSError:
                break
            try:
                if throttle:
                    now = time.monotonic()
                    allowance = min(burst, allowance + (now - last) * self.rate)
                    last = now
                    if allowance < len(data):
                        time.sleep((len(data) - allowance) / self.rate)
                        allowance, last = len(data), time.monotonic()
                    allowance -= len(data)
                dst.sendall(data)
                with self.lock:
                    self.bytes += len(data)
                    if to_server:
                        self.written += len(data)
            except OSError:
                break
            finally:
                with self.gate:
                    self.inflight[to_server] -= 1
                    self.gate.notify_all()
        try:
            dst.shutdown(self._socket.SHUT_WR)
        except OSError:
            pass

    def close(self, reset=False):
        """Close every connection; with reset, as an RST, the way a dead
        link eventually looks to both ends."""
        import struct
        with self.gate:
            self.closed = True
            self.gate.notify_all()
        with self.lock:
            self.flowing.set()
            self.flowing_back.set()
            for s in self.conns:
                try:
                    if reset:
                        s.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
                    # Wake the thread reading it: a socket closed while a
                    # recv() waits on it stays open until the recv returns.
                    s.shutdown(self._socket.SHUT_RD)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass
        try:
            self.lsock.close()
        except OSError:
            pass


class LinkProxy(Forwarder):
    """A TCP forwarder on loopback standing in for the network between two
    hosts, so a test can cut the link in the middle of a migration."""

    def __init__(self, target_host, target_port=16509, max_conns=16, transport="tcp",
                 rate=None, latency=0, stall=None):
        """rate: bytes per second towards the destination; latency: seconds
        each chunk waits, both ways; stall (probability, (min, max)): with
        that probability per chunk, the chunk waits that many seconds more,
        as TCP holds data back while it retransmits a lost segment (the
        kernel here has no netem).  Chosen by a generator seeded per
        connection and direction, so a run repeats itself."""
        import socket
        self.transport = transport
        self.latency, self.stall, self.stalls = latency, stall, 0
        if transport == "tls" and target_port == 16509:
            target_port = 16514
        self.target = (target_host, target_port)
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        self.port = lsock.getsockname()[1]

        def connect():
            s = socket.create_connection(self.target, timeout=10)
            s.settimeout(None)
            return s
        super().__init__(lsock, connect, max_conns, rate=rate)

    def filter(self, data, to_server, state):
        if self.latency or self.stall:
            import random
            if "rnd" not in state:
                with self.lock:
                    state["rnd"] = random.Random(len(self.conns) * 2 + to_server)
            wait = self.latency
            if self.stall and state["rnd"].random() < self.stall[0]:
                wait += state["rnd"].uniform(*self.stall[1])
                with self.lock:
                    self.stalls += 1
            if wait:
                time.sleep(wait)
        return data

    @property
    def cut_done(self):
        return self.closed

    def uri(self):
        if self.transport == "tls":
            # the certificate names the host, not the proxy's address
            return "qemu+tls://127.0.0.1:%d/system?no_verify=1" % self.port
        return "qemu+tcp://127.0.0.1:%d/system" % self.port

    def cut(self):
        """Cut the link: every connection is reset at once."""
        self.close(reset=True)



class RpcHoldProxy(LinkProxy):
    """A LinkProxy that reads the libvirt RPC messages coming back from the
    destination and, from the first stream data message on (the first
    bytes a peer sends through a tunnel stream, e.g. the greeting of an
    NBD server), forwards no stream message to the source any more, while
    replies and keepalives still go through; `held` is set then.  The
    source sees a destination that answers its calls, and a tunnel stream
    on which nothing arrives."""

    RPC_STREAM, RPC_CONTINUE, RPC_HEADER = 3, 2, 28

    def __init__(self, *args, **kwargs):
        import threading
        super().__init__(*args, **kwargs)
        self.held = threading.Event()

    def filter(self, data, to_server, state):
        if to_server:
            return data
        import struct
        buf = state.get("buf", b"") + data
        out = b""
        while len(buf) >= self.RPC_HEADER:
            # length, then prog, vers, proc, type, serial, status
            length, = struct.unpack(">I", buf[:4])
            mtype, _, status = struct.unpack(">3I", buf[16:28])
            if len(buf) < length:
                break
            msg, buf = buf[:length], buf[length:]
            if mtype == self.RPC_STREAM and status == self.RPC_CONTINUE and \
                    length > self.RPC_HEADER:
                self.held.set()
            if not (mtype == self.RPC_STREAM and self.held.is_set()):
                out += msg
        state["buf"] = buf
        return out

class SlowNbdDisk(Forwarder):
    """A disk image served by qemu-nbd behind a UNIX-socket forwarder that
    lets at most `rate` bytes per second through towards the server: a
    destination disk whose writes are slow (a busy SAN, a throttled volume).

    Both sockets live in the host's private directory, so the host's QEMU
    reaches the forwarder at `socket_path`, as the host sees it.  stop()
    ends every thread and process."""

    def __init__(self, host, image, export, rate, max_conns=4):
        import socket
        name = os.path.basename(image)
        self.server_path = os.path.join(host.private, name + ".nbd.sock")
        self.listen_path = os.path.join(host.private, name + ".slow.sock")
        self.socket_path = os.path.join(PRIVATE, name + ".slow.sock")
        for p in (self.server_path, self.listen_path):
            if os.path.exists(p):
                os.unlink(p)
        # (stderr is read only once it exited, so it can't fill up before)
        self.nbd = subprocess.Popen(["qemu-nbd", "--socket", self.server_path, "--format", "raw",
                                     "--export-name", export, "--persistent", "--shared", "4",
                                     os.path.join(host.private, name)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for("qemu-nbd to listen", lambda: os.path.exists(self.server_path) or
                 self.nbd.poll() is not None, 30)
        if self.nbd.poll() is not None:
            raise Failure("qemu-nbd failed: %s" % self.nbd.stderr.read())
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(self.listen_path)
        # the host's QEMU runs unprivileged and must be able to connect
        os.chmod(self.listen_path, 0o777)
        lsock.listen(4)

        def connect():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.server_path)
            return s
        super().__init__(lsock, connect, max_conns, rate)

    def stop(self):
        self.close()
        self.nbd.terminate()
        try:
            self.nbd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.nbd.kill()
            self.nbd.wait()
        for p in (self.server_path, self.listen_path):
            if os.path.exists(p):
                os.unlink(p)
