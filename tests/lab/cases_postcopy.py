"""Lab cases: post-copy migration, native and tunnelled."""

from labpy import LinkProxy
from e2e_common import (GNAME, REFUSE_POSTCOPY, REFUSE_POSTCOPY_DEST, case, check, daemons_now,
                         guest_busy, log, mib_processed, migrate, resume_natively,
                         tunnel_postcopy, verify_migrated, verify_refused, wait_for,
                         wait_guest_on, wait_postcopy_failed, wait_postcopy_switch)


@case("native postcopy (migrate-postcopy)")
def t_native_postcopy(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "postcopy"], switch_postcopy=True,
                      extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)


@case("native postcopy (--postcopy-after-precopy)")
def t_native_postcopy_after(a, b):
    g = guest_busy(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "postcopy", "postcopy-after-precopy"],
                      extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True)



@case("tunnelled postcopy (migrate-postcopy) over qemu+tcp")
def t_tunnel_postcopy(a, b):
    tunnel_postcopy(a, b, "command")


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tcp")
def t_tunnel_postcopy_after(a, b):
    tunnel_postcopy(a, b, "after")


@case("tunnelled postcopy (migrate-postcopy) over qemu+tls")
def t_tunnel_postcopy_tls(a, b):
    tunnel_postcopy(a, b, "command", transport="tls")


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tls")
def t_tunnel_postcopy_after_tls(a, b):
    tunnel_postcopy(a, b, "after", transport="tls")


@case("tunnelled postcopy via virDomainMigrateToURI3, split destination", b="patched+split")
def t_tunnel_postcopy_api_split(a, b):
    tunnel_postcopy(a, b, "command", api=True)


@case("tunnelled postcopy (--postcopy-after-precopy) over qemu+tls, split destination",
      b="patched+split")
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



@case("tunnelled postcopy: link cut stops the guest on both hosts; native resume recovers it")
def t_tunnel_cut_postcopy(a, b):
    g = guest_busy(); g.start(a)
    proxy = LinkProxy(b.addr)

    def cut(proc):
        wait_postcopy_switch(a, proc)
        wait_for("pages after the switch", lambda: proc.poll() is not None
                 or mib_processed(a) > 24, 60)
        wait_guest_on(b, g, proc)
        log("cutting the link after %d bytes" % proxy.bytes)
        proxy.cut()
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy"], dest=proxy.uri(),
                      switch_postcopy=True, during=cut,
                      extra=["--bandwidth", "8", "--postcopy-bandwidth", "4"], timeout=120)
    check(rc != 0, "migration succeeded although the link was cut")
    msg = out.strip().splitlines()[-1]
    log("error: %s" % msg)
    check("error:" in msg, "the migration failed without an error")
    wait_postcopy_failed(a, b)
    # A tunnel cannot resume; the error and the docs say so.
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "postcopy-resume"])
    check(rc != 0 and "post-copy recovery is not supported with tunnelled migration" in out,
          "tunnelled resume: %s" % out.strip())
    # Native recovery (QEMU connects directly) works and nothing was lost.
    resume_natively(a, b, g)


@case("native postcopy recovery after domjobabort --postcopy (was: destination daemon crash)")
def t_native_postcopy_resume(a, b):
    g = guest_busy(); g.start(a)
    daemons = daemons_now(a, b)

    def pause(proc):
        wait_postcopy_switch(a, proc)
        wait_guest_on(b, g, proc)
        p = a.virsh("domjobabort", "--postcopy", GNAME, check_rc=False)
        log("$ virsh domjobabort --postcopy %s -> rc %d %s" % (GNAME, p.returncode,
                                                               p.stderr.strip()))
    rc, out = migrate(a, b, ["live", "p2p", "postcopy"], switch_postcopy=True, during=pause,
                      extra=["--bandwidth", "8", "--postcopy-bandwidth", "4"], timeout=120)
    check(rc != 0, "migration was not interrupted")
    wait_postcopy_failed(a, b)
    resume_natively(a, b, g, daemons)
