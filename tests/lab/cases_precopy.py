"""Lab cases: pre-copy migration, native and tunnelled, and its refusals;
what a host's capabilities say its tunnelled migration can carry."""
import os
import xml.etree.ElementTree as ET

from e2e_common import (Guest, LAB, REFUSE_TUNNEL_TLS, case, check, daemons_now, guest_nodisk,
                         log, migrate, verify_migrated, verify_refused)


@case("native precopy")
def t_native_precopy(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)



@case("native --tls")
def t_native_tls(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tls"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy over qemu+tcp")
def t_tunnel_tcp(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy over qemu+tls")
def t_tunnel_tls(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], transport="tls")
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy via virDomainMigrateToURI3", b="patched+split")
def t_tunnel_api_split(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], api=True)
    check(rc == 0 and "migrate-api: OK" in out, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy patched -> stock", b="stock")
def t_tunnel_to_stock(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled precopy stock -> patched", a="stock")
def t_tunnel_from_stock(a, b):
    g = guest_nodisk(); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g)


@case("tunnelled --tls is refused (was: source daemon crash)")
def t_tunnel_tls_flag(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "tls"])
    verify_refused(a, b, g, rc, out, REFUSE_TUNNEL_TLS, daemons)


@case("tunnelled --tls from a stock source is refused by the destination", a="stock")
def t_tunnel_tls_flag_stock_src(a, b):
    g = guest_nodisk(); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "tls"])
    verify_refused(a, b, g, rc, out, REFUSE_TUNNEL_TLS, daemons)


@case("tunnelled Prepare failure returns at once (split destination)", b="patched+split")
def t_tunnel_prepare_fail_split(a, b):
    g = guest_nodisk(); g.start(a)
    # A different domain already holds the name we migrate to.
    other = Guest("lab-other")
    xmlpath = os.path.join(LAB, "lab-other.xml")
    with open(xmlpath, "w") as f:
        f.write(other.xml())
    b.virsh("define", xmlpath)
    daemons = daemons_now(a, b)
    # 11.3.0 hangs here forever; the deadline turns a hang into a failure.
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled"], extra=["--dname", "lab-other"],
                      timeout=60)
    verify_refused(a, b, g, rc, out, "already exists", daemons)
    check(b.domstate("lab-other") == "shut off (unknown)", "B's own domain was disturbed: %r"
          % b.domstate("lab-other"))


TUNNELLED_FEATURES = ["postcopy", "storage", "postcopy_resume", "parallel"]


def tunnelled_features(host):
    """What `virsh capabilities` on `host` says its tunnelled migration can
    carry (<migration_features><tunnelled>), or None without the element."""
    caps = ET.fromstring(host.virsh("capabilities", timeout=60).stdout)
    mf = caps.find("./host/migration_features")
    check(mf is not None and mf.find("live") is not None,
          "%s's capabilities have no live migration feature" % host.name)
    tun = mf.find("tunnelled")
    return None if tun is None else [e.tag for e in tun]


@case("capabilities list what tunnelled migration carries: patched (split daemons) yes, stock no",
      a="patched+split", b="stock")
def t_capabilities_tunnelled(a, b):
    """A management application (nova) enables tunnelled post-copy and
    storage only between hosts that both list them: a patched host lists
    all four, through virtproxyd too; a stock 11.3.0 host lists nothing."""
    got = tunnelled_features(a)
    log("A (patched, split) lists: %s" % got)
    check(got == TUNNELLED_FEATURES,
          "patched host lists %s, expected %s" % (got, TUNNELLED_FEATURES))
    got = tunnelled_features(b)
    log("B (stock) lists: %s" % got)
    check(got is None, "stock host lists tunnelled features %s" % got)
