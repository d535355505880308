"""Lab cases: post-copy migration, native and tunnelled."""

from labpy import LinkProxy
from e2e_common import (GNAME, RECOVER_HINT, REFUSE_POSTCOPY, REFUSE_POSTCOPY_DEST,
                         REFUSE_RECOVERY_DEST, REFUSE_RECOVERY_NATIVE, case, check,
                         check_daemons, daemons_now, guest_busy, log, mib_processed,
                         migrate, preempt_bytes, side_qmp_xml, switch_measuring_blocktime,
                         resume_natively, resume_tunnelled, try_resume, tunnel_postcopy,
                         verify_migrated, verify_refused, wait_for, wait_guest_on,
                         wait_postcopy_failed, wait_postcopy_switch)


@case("native postcopy (migrate-postcopy)")
def t_native_postcopy(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "postcopy"], switch_postcopy=True,
                      extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)


@case("native postcopy (--postcopy-after-precopy)", heavy=True)
def t_native_postcopy_after(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "postcopy", "postcopy-after-precopy"],
                      extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)



@case("tunnelled postcopy (migrate-postcopy) over qemu+tcp")
def t_tunnel_postcopy(a, b):
    tunnel_postcopy(a, b, "command")


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tcp", heavy=True)
def t_tunnel_postcopy_after(a, b):
    tunnel_postcopy(a, b, "after")


def postcopy_blocktime(a, b, flags):
    """Post-copy of a busy guest with B's QEMU measuring the vCPUs' waits
    for faulted pages.  Returns (result of switch_measuring_blocktime,
    page requests, bytes of A's preempt tunnel).  The guest is verified."""
    g = guest_busy(); g.start(a)
    xml, sock = side_qmp_xml(a)
    since = len(a.daemon_log())
    result = {}
    rc, out = migrate(a, b, flags, extra=["--bandwidth", "8", "--xml", xml],
                      during=lambda proc: switch_measuring_blocktime(a, b, proc, result, sock))
    check(rc == 0, "migration failed: %s" % out)
    src, _ = verify_migrated(a, b, g, postcopy=True)
    requests = int(src.get("Postcopy requests", "0").split()[0])
    sent = preempt_bytes(a, since)
    log("preempt on B: %s, %s bytes through A's preempt tunnel; blocktime %s ms over "
        "%d page requests (%d samples)" % (result.get("preempt_b"), sent,
                                            result.get("blocktime_ms"), requests,
                                            result["samples"]))
    return result, requests, sent


@case("tunnelled postcopy uses post-copy preempt on both QEMUs")
def t_tunnel_postcopy_preempt(a, b):
    """Preempt needs QEMU's second connection, through a stream of its own
    (the source listens for QEMU's connections, the destination's QEMU
    listens on a socket): B's QEMU has it on, the pages B faulted on went
    through A's preempt tunnel, and the guest runs on B."""
    result, requests, sent = postcopy_blocktime(a, b, ["live", "p2p", "tunnelled", "postcopy"])
    check(result.get("preempt_b"), "B's QEMU does not use post-copy preempt")
    check(requests > 0, "no page request went through the tunnel")
    check(sent, "no page went through the preempt tunnel (%s bytes)" % sent)


@case("tunnelled postcopy (migrate-postcopy) over qemu+tls")
def t_tunnel_postcopy_tls(a, b):
    tunnel_postcopy(a, b, "command", transport="tls")


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tls", heavy=True)
def t_tunnel_postcopy_after_tls(a, b):
    tunnel_postcopy(a, b, "after", transport="tls")


@case("tunnelled postcopy via virDomainMigrateToURI3, split destination", b="patched+split")
def t_tunnel_postcopy_api_split(a, b):
    tunnel_postcopy(a, b, "command", api=True)


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tls, split destination",
      b="patched+split", heavy=True)
def t_tunnel_postcopy_split(a, b):
    tunnel_postcopy(a, b, "after", transport="tls")


@case("tunnelled --postcopy patched -> stock is refused before anything starts", b="stock")
def t_tunnel_postcopy_to_stock(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy"], extra=["--bandwidth", "8"])
    verify_refused(a, b, g, rc, out, REFUSE_POSTCOPY_DEST)


@case("tunnelled --postcopy stock -> patched is refused by the stock source", a="stock")
def t_tunnel_postcopy_from_stock(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy"], extra=["--bandwidth", "8"])
    verify_refused(a, b, g, rc, out, REFUSE_POSTCOPY)



def cut_tunnelled_postcopy(a, b, g, transport="tcp"):
    """A tunnelled post-copy migration whose link is cut once the guest runs
    on B: it fails with an error and both sides wait for recovery."""
    proxy = LinkProxy(b.addr, transport=transport)

    def cut(proc):
        wait_postcopy_switch(a, proc)
        wait_for("pages after the switch", lambda: proc.poll() is not None
                 or mib_processed(a) > 24, 60)
        wait_guest_on(b, g, proc)
        log("cutting the link after %d bytes" % proxy.bytes)
        proxy.cut()
    try:
        rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy"], dest=proxy.uri(),
                          switch_postcopy=True, during=cut,
                          extra=["--bandwidth", "8", "--postcopy-bandwidth", "4"], timeout=120)
    finally:
        proxy.close()
    check(rc != 0, "migration succeeded although the link was cut")
    msg = out.strip().splitlines()[-1]
    log("error: %s" % msg)
    check("error:" in msg, "the migration failed without an error")
    check(RECOVER_HINT in out, "the error does not say how to recover the domain: %s" % msg)
    wait_postcopy_failed(a, b)


@case("tunnelled postcopy: link cut stops the guest on both hosts; tunnelled resume via "
      "virDomainMigrateToURI3 recovers it")
def t_tunnel_cut_postcopy(a, b):
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)
    cut_tunnelled_postcopy(a, b, g)
    resume_tunnelled(a, b, g, daemons, api=True)


@case("tunnelled postcopy: a resumed post-copy that loses its link again is resumed again")
def t_tunnel_cut_postcopy_twice(a, b):
    """The recovery runs through a tunnel like the migration: cut that one
    too, in the middle of the resumed post-copy, and recover again."""
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)
    cut_tunnelled_postcopy(a, b, g)
    before = mib_processed(a)
    proxy, cuts = LinkProxy(b.addr), []

    def cut(proc):
        wait_for("the resumed post-copy to move pages",
                 lambda: proc.poll() is not None or
                 (a.domstate(GNAME) == "paused (post-copy)" and mib_processed(a) > before + 4), 60)
        if proc.poll() is not None:
            return      # refused as too early: try_resume() tries again
        log("cutting the resumed post-copy's link after %d bytes (%.1f MiB processed)" %
            (proxy.bytes, mib_processed(a)))
        proxy.cut()
        cuts.append(proxy.bytes)
    try:
        rc, out = try_resume(a, b, ["tunnelled"], dest=proxy.uri(), during=cut, bandwidth=4)
    finally:
        proxy.close()
    check(cuts, "the resumed post-copy ended before the second cut: %s" % out.strip())
    check(rc != 0, "the resumed post-copy succeeded although its link was cut: %s" % out)
    log("error: %s" % out.strip().splitlines()[-1])
    check(RECOVER_HINT in out, "the error does not say how to recover the domain: %s" % out)
    wait_postcopy_failed(a, b)
    resume_tunnelled(a, b, g, daemons)


def pause_postcopy(a, b, g, tunnelled=False):
    """A post-copy migration paused with domjobabort --postcopy on the
    source once the guest runs on B; both sides wait for recovery."""
    def pause(proc):
        wait_postcopy_switch(a, proc)
        wait_guest_on(b, g, proc)
        p = a.virsh("domjobabort", "--postcopy", GNAME, check_rc=False, timeout=30)
        log("$ virsh domjobabort --postcopy %s -> rc %d %s" % (GNAME, p.returncode,
                                                               p.stderr.strip()))
        check(p.returncode == 0, "domjobabort --postcopy failed: %s" % p.stderr.strip())
    flags = ["live", "p2p"] + (["tunnelled"] if tunnelled else []) + ["postcopy"]
    rc, out = migrate(a, b, flags, switch_postcopy=True, during=pause,
                      extra=["--bandwidth", "8", "--postcopy-bandwidth", "4"], timeout=120)
    check(rc != 0, "migration was not interrupted")
    log("error: %s" % out.strip().splitlines()[-1])
    if tunnelled:
        check(RECOVER_HINT in out, "the error does not say how to recover the domain: %s" % out)
    wait_postcopy_failed(a, b)


@case("tunnelled postcopy: domjobabort --postcopy on the source pauses it on both hosts; "
      "tunnelled resume recovers")
def t_tunnel_pause_postcopy(a, b):
    """The source's QEMU cannot shut down a migration channel it got as a
    file descriptor, so libvirt breaks the tunnel itself: the destination
    must notice at once, not wait for pages forever."""
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)
    pause_postcopy(a, b, g, tunnelled=True)
    resume_tunnelled(a, b, g, daemons)


@case("tunnelled postcopy over qemu+tls, split destination: link cut; tunnelled resume "
      "recovers", b="patched+split", heavy=True)
def t_tunnel_cut_postcopy_tls_split(a, b):
    """The recovery's stream goes through virtproxyd to virtqemud on B, and
    the feature query too."""
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)
    cut_tunnelled_postcopy(a, b, g, transport="tls")
    resume_tunnelled(a, b, g, daemons, transport="tls")


def check_recovery_refused(a, b, rc, out, message, states, daemons):
    """A refused recovery: its own error, without the recovery hint, no
    daemon died, and both sides in the states they were in before."""
    check(rc != 0 and message in out, "tunnelled resume: %s" % out.strip())
    check(RECOVER_HINT not in out, "a refusal also says to repeat the recovery: %s" % out.strip())
    log("refused as expected: %s" % message)
    check_daemons(daemons)
    check((a.domstate(GNAME), b.domstate(GNAME)) == states,
          "the refusal changed the domain's state: %s -> %s" %
          (states, (a.domstate(GNAME), b.domstate(GNAME))))


@case("tunnelled --postcopy-resume patched -> stock is refused before anything changes",
      b="stock")
def t_tunnel_resume_to_stock(a, b):
    """A failed (native) post-copy to a stock destination: the tunnelled
    recovery is refused before anything changes.  (Stock 11.3.0 cannot be
    the destination of any recovery: its Prepare crashes, patch 0005.)"""
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)
    pause_postcopy(a, b, g)
    states = (a.domstate(GNAME), b.domstate(GNAME))
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "postcopy-resume"])
    check_recovery_refused(a, b, rc, out, REFUSE_RECOVERY_DEST, states, daemons)


def refused_recovery_of_native(a, b):
    """A native post-copy (which may use preempt, enabled when both QEMUs
    have it) failed; its tunnelled recovery is refused with the reason,
    before anything changes, and a native resume recovers it."""
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)
    pause_postcopy(a, b, g)
    states = (a.domstate(GNAME), b.domstate(GNAME))
    rc, out = try_resume(a, b, ["tunnelled"])
    check_recovery_refused(a, b, rc, out, REFUSE_RECOVERY_NATIVE, states, daemons)
    resume_natively(a, b, g, daemons)


@case("tunnelled --postcopy-resume of a native post-copy is refused; native resume recovers")
def t_tunnel_resume_preempt(a, b):
    refused_recovery_of_native(a, b)


@case("tunnelled --postcopy-resume stock -> patched: the destination refuses; native resume "
      "recovers", a="stock")
def t_tunnel_resume_from_stock(a, b):
    """A stock source does not refuse a tunnelled recovery itself (11.3.0
    checks only fresh migrations); the destination does."""
    refused_recovery_of_native(a, b)


@case("native postcopy recovery after domjobabort --postcopy (was: destination daemon crash)")
def t_native_postcopy_resume(a, b):
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)
    pause_postcopy(a, b, g)
    resume_natively(a, b, g, daemons)
