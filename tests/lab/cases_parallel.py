"""Lab cases: parallel migration (multifd channels) through the tunnel.

QEMU makes the main connection and one per multifd channel; each goes
through its own stream.  The source daemon logs every tunnel it starts
("tunnel=NAME fd=N started"), which says how many connections the tunnel
carried.

Parallel migration is pre-copy only (QEMU 10.0 refuses it with post-copy),
so the guests dirty memory at the default rate, which pre-copy converges
on even on a loaded machine, not at guest_busy()'s."""

import glob
import os

from e2e_common import (GNAME, case, check, check_daemons, daemons_now, fault_baseline,
                         guest_disks, guest_nodisk, log, mib_processed, migrate,
                         prepare_disks, verify_migrated, verify_refused, wait_fds_back,
                         wait_for)

REFUSE_PARALLEL_DEST = "destination libvirt does not support parallel migration through a tunnel"
REFUSE_PARALLEL_SRC = "parallel migration through a tunnel is not supported by the source host"


def source_sockets(a):
    return glob.glob(os.path.join(a.dir, "var", "lib", "libvirt", "qemu", "domain-*",
                                  "migration-tunnel.sock"))


def check_channels(a, log_start, channels):
    """The source tunnelled QEMU's main connection and exactly `channels`
    multifd channels, each through a stream of its own."""
    text = a.daemon_log()[log_start:]
    names = ["migration"] + ["multifd:%d" % i for i in range(channels)]
    for name in names:
        check("tunnel=%s fd=" % name in text,
              "the source did not tunnel connection %s (expected %d channels)" % (name, channels))
    check("tunnel=multifd:%d fd=" % channels not in text,
          "the source tunnelled more than %d multifd channels" % channels)
    check(not source_sockets(a), "the source's migration socket is still there: %s"
          % source_sockets(a))
    log("tunnelled connections: %s" % ", ".join(names))


def parallel(a, b, g, channels=None, transport="tcp", flags=(), extra=(), api=False,
             storage=None):
    log_start = len(a.daemon_log())
    if api:
        extra = list(extra) + (["--parallel-connections", str(channels)] if channels else [])
        rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "parallel"] + list(flags),
                          transport=transport, extra=extra, api=True)
        check(rc == 0 and "migrate-api: OK" in out, "migration failed: %s" % out)
    else:
        extra = list(extra) + (["--parallel-connections", str(channels)] if channels else [])
        rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "parallel"] + list(flags),
                          transport=transport, extra=extra)
        check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=storage)
    check_channels(a, log_start, channels or 2)


@case("tunnelled --parallel over qemu+tcp (QEMU's default, 2 channels)")
def t_parallel_tcp(a, b):
    g = guest_nodisk(); g.start(a)
    parallel(a, b, g)


@case("tunnelled --parallel --parallel-connections 4 over qemu+tls", heavy=True)
def t_parallel_tls(a, b):
    g = guest_nodisk(); g.start(a)
    parallel(a, b, g, channels=4, transport="tls")


@case("tunnelled --parallel with --copy-storage-all, 3 channels, via virDomainMigrateToURI3")
def t_parallel_storage(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    parallel(a, b, g, channels=3, flags=["copy-storage-all"], api=True, storage=True)


@case("tunnelled --parallel with zstd compression", heavy=True)
def t_parallel_zstd(a, b):
    g = guest_nodisk(); g.start(a)
    parallel(a, b, g, extra=["--compressed", "--comp-methods", "zstd"])


@case("tunnelled --parallel to a stock destination is refused", b="stock")
def t_parallel_to_stock(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "parallel"])
    verify_refused(a, b, g, rc, out, REFUSE_PARALLEL_DEST, daemons)


@case("tunnelled --parallel from a stock source is refused", a="stock", heavy=True)
def t_parallel_from_stock(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "parallel"])
    verify_refused(a, b, g, rc, out, REFUSE_PARALLEL_SRC, daemons)


REFUSE_PARALLEL_POSTCOPY = "post-copy is not supported with parallel tunnelled migration"
REFUSE_TUNNEL_ZEROCOPY = "zero-copy migration is not supported with tunnelled migration"


@case("tunnelled --parallel with --postcopy or --zerocopy is refused before it starts")
def t_parallel_refused(a, b):
    """QEMU 10.0 refuses multifd with post-copy natively; libvirt refuses it
    with a parallel tunnelled migration before anything starts, and
    zero-copy, which needs TCP sockets, with any tunnelled migration."""
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "parallel", "postcopy"])
    check(rc != 0, "native --parallel --postcopy was not refused: QEMU allows it now")
    log("natively: %s" % out.strip().splitlines()[-1])
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "parallel", "postcopy"])
    verify_refused(a, b, g, rc, out, REFUSE_PARALLEL_POSTCOPY, daemons)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "parallel", "zerocopy"])
    verify_refused(a, b, g, rc, out, REFUSE_TUNNEL_ZEROCOPY, daemons)


@case("tunnelled --parallel: domjobabort mid-migration leaves the guest on A, no leaks")
def t_parallel_abort(a, b):
    """The job is aborted while QEMU's 3 connections move data: every tunnel
    and stream ends, the source's socket is gone, both daemons are back to
    the descriptors they had, and the guest runs on A, which can migrate
    again the same way."""
    g = guest_nodisk(); g.start(a)
    daemons, fds = fault_baseline(a, b, g)

    def abort(proc):
        wait_for("4 MiB through the tunnel", lambda: proc.poll() is not None or
                 mib_processed(a) > 4, 60)
        p = a.virsh("domjobabort", GNAME, check_rc=False)
        log("$ virsh domjobabort %s -> rc %d %s" % (GNAME, p.returncode, p.stderr.strip()))
    # 8 MiB/s for all channels together: the migration would take a minute
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "parallel"], during=abort,
                      extra=["--bandwidth", "8"], timeout=120)
    check(rc != 0, "migration was not aborted: %s" % out)
    check("canceled by client" in out or "cancelled" in out.lower(),
          "unexpected error after abort: %s" % out.strip())
    check_daemons(daemons)
    check(a.domstate(GNAME) == "running (booted)", "source state %r" % a.domstate(GNAME))
    wait_for("the incoming domain to go from B", lambda: b.domstate(GNAME) is None, 60)
    check(not b.qemu_pids(), "a QEMU was left on the destination")
    check(not source_sockets(a), "the migration socket is left on A: %s" % source_sockets(a))
    wait_fds_back(a, b, fds)
    g.wait_progress(a, "guest progress on A after the abort", timeout=60)
    g.check_clean(a)
    parallel(a, b, g)
