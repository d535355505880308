"""Lab cases: storage migration (NBD), native and tunnelled, and storage
faults."""

import os

from e2e_common import (GNAME, REFUSE_STORAGE, REFUSE_STORAGE_DEST, case, check,
                         check_daemons, check_no_blockjob, daemons_now, fault_baseline,
                         fill_outside_ring, guest_disks, log, mib_of, migrate, nbd_sockets,
                         prepare_disks, run, verify_migrated, verify_refused, wait_fds_back,
                         wait_for)


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


# ------------------------------------------------------------ storage faults

def limit_dest_disk(b, g, dev, mib):
    """Put disk `dev` of B's copy-storage target on a tmpfs of `mib` MiB in
    B's mount namespace, under the same path, so that B's QEMU gets ENOSPC
    once the mirror has written that much.  The image keeps its full
    (sparse) size; the mount goes with B's namespace."""
    path = next(d["path"] for d in g.disks if d["dev"] == dev)
    small = os.path.join(b.dir, "small-" + dev)   # outside the private dir
    ns_pid = open(os.path.join(b.dir, "pid")).read().strip()
    size = os.path.getsize(os.path.join(b.private, os.path.basename(path)))
    script = ("set -e; mkdir -p {d}; mount -t tmpfs -o size={m}m,mode=0755 lab-small {d}; "
              "truncate -s {s} {d}/img; mount --bind {d}/img {p}").format(
                  d=small, m=mib, s=size, p=path)
    run(["nsenter", "--target", ns_pid, "--mount", "--pid", "sh", "-c", script], timeout=30)
    log("B: %s is on a %d MiB tmpfs (image size %d MiB)" % (path, mib, size >> 20))

    def unlimit():
        # --pid too: umount reads /proc/self, which is the host's own /proc
        run(["nsenter", "--target", ns_pid, "--mount", "--pid", "sh", "-c",
             "set -e; umount {p}; umount {d}".format(p=path, d=small)], timeout=30)
        log("B: %s is back on its own file" % path)
    return unlimit


@case("tunnelled storage: the destination disk fills up (ENOSPC) mid-mirror")
def t_tunnel_storage_enospc(a, b):
    """B's target for vda can hold only 16 MiB of the 48 MiB the mirror has
    to copy.  The migration must fail with an error that names the disk
    and says why, both daemons survive with the descriptors they held
    before, the guest keeps running on A on its own disks (untouched, its
    workload clean), B has no domain left, and once B has room again the
    guest migrates."""
    g = guest_disks(("vda",)); prepare_disks(g, a, b, size_mib={"vda": 64})
    compare = fill_outside_ring(g, a, b, "vda", 48)
    g.start(a)
    unlimit = limit_dest_disk(b, g, "vda", 16)
    daemons, fds = fault_baseline(a, b, g)
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"], timeout=180)
    check(rc != 0, "the migration succeeded although B's disk had no room")
    err = out.strip().splitlines()[-1] if out.strip() else ""
    log("error: %s" % err)
    check("vda" in err and "No space left on device" in err,
          "the error does not say which disk ran out of space: %r" % err)
    check_daemons(daemons)
    check(a.domstate(GNAME) == "running (booted)", "source state %r" % a.domstate(GNAME))
    wait_for("B to have no domain and no QEMU", lambda: b.domstate(GNAME) is None
             and not b.qemu_pids(), 60)
    check(nbd_sockets(a) == [], "NBD tunnel sockets left on A: %s" % nbd_sockets(a))
    check_no_blockjob(a, "vda")
    g.wait_progress(a, "guest progress on A after the failure", timeout=60)
    g.check_clean(a)
    wait_fds_back(a, b, fds)
    unlimit()
    rc, out = migrate(a, b, ["live", "p2p", "tunnelled", "copy-storage-all"])
    check(rc == 0, "migration with room on B failed: %s" % out)
    verify_migrated(a, b, g, storage=True)
    compare()
