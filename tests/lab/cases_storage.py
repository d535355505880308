"""Lab cases: storage migration (NBD), native and tunnelled."""

from e2e_common import (REFUSE_STORAGE, REFUSE_STORAGE_DEST, case, check, daemons_now,
                         guest_disks, mib_of, migrate, prepare_disks, verify_migrated,
                         verify_refused)


@case("native --copy-storage-all (raw)")
def t_native_storage_all(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "copy-storage-all"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("native --copy-storage-inc (qcow2 backing chain)")
def t_native_storage_inc(a, b):
    g = guest_disks(("vda",), fmt="qcow2", backing=True); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "copy-storage-inc"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)



@case("tunnelled --copy-storage-all")
def t_tunnel_storage_all(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("tunnelled --copy-storage-inc (qcow2 backing chain)")
def t_tunnel_storage_inc(a, b):
    g = guest_disks(("vda",), fmt="qcow2", backing=True); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-inc"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)


@case("tunnelled --copy-storage-all --migrate-disks")
def t_tunnel_migrate_disks(a, b):
    g = guest_disks(("vda", "vdb"), shared=("vdb",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"],
                      extra=["--migrate-disks", "vda"])
    check(rc == 0, "migration failed: %s" % out)
    src, _ = verify_migrated(a, b, g, storage=True)
    # Only vda was copied: 32 MiB, not 64.
    key = "File processed" if "File processed" in src else "Disk processed"
    copied = mib_of(src, key)
    check(30 <= copied < 48, "copied %.1f MiB of storage, expected only vda's 32" % copied)


@case("headline: --live --p2p --tunnelled --postcopy --copy-storage-all")
def t_headline(a, b):
    g = guest_disks(("vda",), busy=True); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"],
                      switch_postcopy=True, extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True, storage=True)


@case("headline via virDomainMigrateToURI3, two disks")
def t_headline_api(a, b):
    """As nova calls it: typed parameters, the disks listed, post-copy
    started with virDomainMigrateStartPostCopy once precopy runs."""
    g = guest_disks(("vda", "vdb"), busy=True); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"],
                      api=True, switch_postcopy=True,
                      extra=["--disk", "vda", "--disk", "vdb", "--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    src, _ = verify_migrated(a, b, g, postcopy=True, storage=True)
    key = "File processed" if "File processed" in src else "Disk processed"
    check(mib_of(src, key) >= 64, "copied %s of storage, expected both disks" % src.get(key))



@case("tunnelled storage, patched -> stock is refused before anything starts", b="stock")
def t_tunnel_storage_to_stock(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    daemons = daemons_now(a, b)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    verify_refused(a, b, g, rc, out, REFUSE_STORAGE_DEST, daemons)


@case("tunnelled storage, stock -> patched is refused by the stock source", a="stock")
def t_tunnel_storage_from_stock(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    verify_refused(a, b, g, rc, out, REFUSE_STORAGE)



@case("tunnelled --copy-storage-all --copy-storage-synchronous-writes over qemu+tls")
def t_tunnel_storage_sync_tls(a, b):
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all",
                             "copy-storage-synchronous-writes"], transport="tls")
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, storage=True)
