"""Lab cases: the private RPC that opens more streams of a tunnelled migration."""

from e2e_common import (GNAME, Guest, NOT_PREPARER, case, check, check_daemons, daemons_now,
                         disk_mib, guest_disks, guest_nodisk, jobinfo, migrate, open_tunnel,
                         prepare_disks, verify_migrated, wait_for)


@case("tunnel stream RPC: every refusal is clear and disturbs nothing")
def t_open_tunnel_refusals(a, b):
    """Only the connection that prepared an incoming migration, that is its
    source's, may open more streams for it: anybody else, however
    privileged, is refused, and the migration goes on."""
    # converges at 16 MiB/s, slowly enough to probe B while it migrates in
    g = Guest(GNAME, wl_mem=16, wl_rate=4); g.start(a)
    daemons = daemons_now(a, b)
    check("has no incoming migration" in open_tunnel(a),
          "a domain that is not migrating in was not refused")
    check("read only access prevents virDomainMigrateOpenTunnel" in
          open_tunnel(a, readonly=True), "a read-only connection was not refused")
    refusals = []

    def probe(proc):
        wait_for("the incoming domain on B", lambda: proc.poll() is not None
                 or b.domstate(GNAME) is not None, 60)
        refusals.append(open_tunnel(b))
        refusals.append(open_tunnel(b, target="vda"))
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], during=probe,
                      extra=["--bandwidth", "16"])
    check(refusals and all(NOT_PREPARER in r for r in refusals),
          "another connection was not refused: %s" % refusals)
    check_daemons(daemons)
    check(rc == 0, "the refusals disturbed the migration: %s" % out)
    verify_migrated(a, b, g)


@case("tunnel stream RPC on a stock daemon fails cleanly", a="stock")
def t_open_tunnel_stock(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a)
    out = open_tunnel(a)
    check("ERROR" in out and "454" in out, "unexpected answer from a stock daemon: %s" % out)
    check_daemons(daemons)
    g.wait_progress(a, "guest progress on A", timeout=30)
    g.check_clean(a)



@case("tunnelled storage: nbd streams only for the source's connection")
def t_open_tunnel_nbd_refusals(a, b):
    """While a tunnelled storage migration comes in, another connection to
    the destination can open no stream for any of its disks, whatever it
    asks for (the refusals that depend on the disk and the kind, for the
    source's own connection, are unit tests); the migration completes."""
    g = guest_disks(("vda", "vdb"), shared=("vdb",)); prepare_disks(g, a, b); g.start(a)
    daemons = daemons_now(a, b)
    refusals = {}

    def probe(proc):
        wait_for("the mirror of vda to move", lambda: proc.poll() is not None or
                 disk_mib(jobinfo(a, GNAME, completed=False)) > 0, 60)
        refusals["migrated disk"] = open_tunnel(b, target="vda")
        refusals["shared disk"] = open_tunnel(b, target="vdb")
        refusals["no disk"] = open_tunnel(b)
        refusals["kind"] = open_tunnel(b, target="vda", kind="multifd")
        # then let precopy converge
        a.virsh("migrate-setspeed", GNAME, "1000", check_rc=False)
    # the mirror runs at 4 MiB/s: 8 s to probe while it moves
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"], during=probe,
                      extra=["--migrate-disks", "vda", "--bandwidth", "4"])
    check(len(refusals) == 4, "the migration ended before B could be probed")
    for k, r in refusals.items():
        check(NOT_PREPARER in r, "%s: expected %r, got %r" % (k, NOT_PREPARER, r))
    check_daemons(daemons)
    check(rc == 0, "the refusals disturbed the migration: %s" % out)
    verify_migrated(a, b, g, storage=True)
