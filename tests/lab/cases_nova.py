"""Lab cases: nova's real libvirt driver code against the lab (issue 14).

Debian 12's python3-nova (the .deb scripts/nova-tests.sh downloads, in
build/nova-deb) is extracted at run time into build/nova-lab/pristine, and
again into build/nova-lab/patched with patches/nova/*.patch applied; nothing
of nova is in the repository, and /usr/lib/python3/dist-packages is not
touched.  nova_migrate.py runs nova's code from one of them, with
python3-libvirt loaded against the project's client library: as the
destination's compute service in B's mount namespace
(check_can_live_migrate_destination), then as the source's in A's
(_parse_migration_flags, check_can_live_migrate_source, live_migration with
its operation thread and monitor).  The guest is verified as in every
other case."""
import glob
import json
import os
import shutil
import subprocess

from labpy import BUILD, LAB, PREFIX, TOP, Failure
from e2e_common import (GNAME, case, check, guest_disks, log, prepare_disks,
                        verify_migrated)

NOVA_LAB = os.path.join(BUILD, "nova-lab")
NOVA_DEB_DIR = os.path.join(BUILD, "nova-deb")
NOVA_DEB_VERSION = os.environ.get("NOVA_DEB_VERSION", "2:26.2.2-1~deb12u5")
PYTHON_LIBVIRT_VERSION = "9.0.0-1"
HELPER = os.path.join(TOP, "tests", "lab", "nova_migrate.py")
LIBDIR = os.path.join(PREFIX, "lib", "x86_64-linux-gnu")
# Debian's interpreter: nova's dependencies are Debian packages.
PY = "/usr/bin/python3"
_trees = {}
REFUSE_UNSAFE = "Unsafe migration: Migration without shared storage is unsafe"


def deb(package, version):
    """A Debian package's .deb in build/nova-deb, downloaded with apt-get as
    scripts/nova-tests.sh does."""
    want = os.path.join(NOVA_DEB_DIR, "%s_%s_*.deb" % (package, version.replace(":", "%3a")))
    have = sorted(glob.glob(want))
    if not have:
        os.makedirs(NOVA_DEB_DIR, exist_ok=True)
        p = subprocess.run(["apt-get", "download", "-q", "%s=%s" % (package, version)],
                           cwd=NOVA_DEB_DIR, capture_output=True, text=True, timeout=300)
        have = sorted(glob.glob(want))
        if p.returncode != 0 and package == "python3-nova":
            # the archive keeps only its newest security update
            have = sorted(glob.glob(os.path.join(NOVA_DEB_DIR, package + "_*.deb")))
        check(have, "cannot download %s %s: %s" % (package, version, p.stderr.strip()))
    return have[-1]


def extract(debfile, dest, what):
    """Extract what (a path under dist-packages) of debfile into dest."""
    shutil.rmtree(dest + ".x", ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", debfile, dest + ".x"], check=True, timeout=300)
    os.makedirs(dest, exist_ok=True)
    for w in what:
        src = os.path.join(dest + ".x", "usr", "lib", "python3", "dist-packages", w)
        os.rename(src, os.path.join(dest, w))
    shutil.rmtree(dest + ".x")


def python_libvirt():
    """Debian 12's python3-libvirt, extracted (not installed: installing it
    would pull Debian's libvirt0 and daemons); its libvirtmod loads the
    project's libvirt.so.0 through LD_LIBRARY_PATH."""
    if "libvirt" not in _trees:
        dest = os.path.join(NOVA_LAB, "python3-libvirt")
        shutil.rmtree(dest, ignore_errors=True)
        d = deb("python3-libvirt", PYTHON_LIBVIRT_VERSION)
        py = os.path.join("usr", "lib", "python3", "dist-packages")
        names = subprocess.run(["dpkg-deb", "-c", d], capture_output=True, text=True,
                               check=True, timeout=60).stdout
        files = sorted({os.path.basename(l.split()[-1]) for l in names.splitlines()
                        if "/" + py + "/" in l and (l.split()[-1].endswith(".py") or
                                                     l.split()[-1].endswith(".so"))})
        extract(d, dest, files)
        _trees["libvirt"] = dest
    return _trees["libvirt"]


def nova_tree(patched):
    """A fresh copy of python3-nova's nova/ (once per run), with
    patches/nova applied if patched.  Returns the directory for PYTHONPATH."""
    kind = "patched" if patched else "pristine"
    if kind in _trees:
        return _trees[kind]
    dest = os.path.join(NOVA_LAB, kind)
    shutil.rmtree(dest, ignore_errors=True)
    d = deb("python3-nova", NOVA_DEB_VERSION)
    os.makedirs(NOVA_LAB, exist_ok=True)
    extract(d, dest, ["nova"])
    if patched:
        for p in sorted(glob.glob(os.path.join(TOP, "patches", "nova", "*.patch"))):
            with open(p) as f:
                r = subprocess.run(["patch", "-p1", "--batch", "--no-backup-if-mismatch",
                                    "-d", dest], stdin=f, capture_output=True, text=True,
                                   timeout=60)
            check(r.returncode == 0, "nova patch %s does not apply: %s"
                  % (os.path.basename(p), r.stdout + r.stderr))
        shutil.rmtree(os.path.join(dest, "releasenotes"), ignore_errors=True)
    log("nova %s: %s (%s)" % (kind, dest, os.path.basename(d)))
    _trees[kind] = dest
    return dest


def run_nova(host, tree, args, name, timeout):
    """nova_migrate.py ARGS in host's mount namespace, nova from tree, the
    project's libvirt client library.  Returns its JSON result."""
    out = os.path.join(LAB, "nova-%s.json" % name)
    nlog = os.path.join(LAB, "nova-%s.log" % name)
    for f in (out, nlog):
        if os.path.exists(f):
            os.unlink(f)
    env = dict(os.environ, PYTHONPATH=tree + ":" + python_libvirt(), LD_LIBRARY_PATH=LIBDIR, PYTHONDONTWRITEBYTECODE="1",
               NOVA_LAB_INSTANCES=os.path.join(LAB, "private"), NOVA_LAB_LOG=nlog)
    ns_pid = open(os.path.join(host.dir, "pid")).read().strip()
    cmd = ["nsenter", "--target", ns_pid, "--mount", PY, HELPER] + args + [out]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Failure("nova %s did not finish within %ds (log: %s)" % (name, timeout, nlog))
    if p.returncode != 0 or not os.path.exists(out):
        raise Failure("nova %s failed (rc %d): %s (log: %s)"
                      % (name, p.returncode, (p.stderr or p.stdout).strip()[-3000:], nlog))
    with open(out) as f:
        return json.load(f), nlog


def check_client_library(facts, stock=False):
    """python3-libvirt really runs on the project's client library (and the
    host's daemon lists <tunnelled> in its capabilities, unless stock)."""
    libs = facts["libvirt_library"]
    check(libs and all(l.startswith(LIBDIR + "/") for l in libs),
          "python3-libvirt loaded %s, not the project's library in %s" % (libs, LIBDIR))
    check(facts["libvirt_version"] == 11003000, "libvirt.getVersion() = %s"
          % facts["libvirt_version"])
    check(facts["caps_tunnelled"] != stock, "the host's capabilities %s <tunnelled>"
          % ("list" if stock else "do not list"))


def completed_as_jobinfo(c):
    """libvirt's job-completed event (typed parameters) in the shape of
    `virsh domjobinfo --completed`, which verify_migrated reads."""
    mib = lambda k: "%.3f MiB" % (c.get(k, 0) / 2**20)  # noqa: E731
    return {"Job type": "Completed" if c else None,
            # VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT
            "Operation": "Outgoing migration" if c.get("operation") == 5 else c.get("operation"),
            "Memory total": mib("memory_total"), "Memory processed": mib("memory_processed"),
            "Memory remaining": mib("memory_remaining"), "Disk processed": mib("disk_processed"),
            "Data processed": mib("data_processed"),
            "Time elapsed": "%d ms" % c.get("time_elapsed", 0),
            "Total downtime": "%d ms" % c.get("downtime", 0),
            "Postcopy requests": str(c.get("memory_postcopy_requests", 0))}


def nova_migrate(a, b, patched):
    """nova's destination check on B, then nova's live migration on A.
    Returns what each saw, and the Guest.migrate call."""
    tree = nova_tree(patched)
    kind = "patched" if patched else "pristine"
    dst, _ = run_nova(b, tree, ["dest", b.uri()], kind + "-dest", 120)
    check_client_library(dst, stock=b.stock)
    check(dst["patched_nova"] == patched and dst["nova_file"].startswith(tree + "/"),
          "nova ran from %s" % dst["nova_file"])
    md = dst["migrate_data"]["nova_object.data"]
    log("nova dest check (LibvirtLiveMigrateData %s): dst_tunnelled_migration_features=%s"
        % (dst["migrate_data"]["nova_object.version"],
           md.get("dst_tunnelled_migration_features", "(no such field)")))
    src, nlog = run_nova(a, tree, ["migrate", a.uri(), b.addr, GNAME,
                                   os.path.join(LAB, "nova-%s-dest.json" % kind)],
                         kind + "-migrate", 240)
    check_client_library(src)
    ev = src["events"]
    polls = [e for e in ev if e["what"] == "get_job_info"]
    mig = [e for e in ev if e["what"] == "migrate"]
    log("nova flags: block migration %s; this migration %s; disks %s"
        % (src["flags_block"], src["flags_this_migration"], src["copy_disk_paths"]))
    log("nova Guest.migrate: %s" % (mig[0] if mig else None))
    log("nova monitor: %d jobStats polls in %.1f s, %s, result: post=%s recover=%s error=%s"
        % (len(polls), src["seconds"],
           [(e["what"], e.get("args"), e["t"]) for e in ev
            if e["what"] in ("migrate_configure_max_downtime", "migrate_start_postcopy",
                             "pause")],
           [e["t"] for e in ev if e["what"] == "post_method"],
           [e["t"] for e in ev if e["what"] == "recover_method"],
           src["live_migration_error"]))
    log("nova log: %s" % nlog)
    with open(nlog, errors="replace") as f:
        src["log"] = f.read()
    # What every nova migration here has in common, patched or not.
    check(src["live_migration_error"] is None, "nova's live_migration raised %s"
          % src["live_migration_error"])
    check(not src["is_shared_instance_path"] and not src["is_shared_block_storage"],
          "nova's source check saw shared storage")
    check("TUNNELLED" in src["flags_block"] and "POSTCOPY" in src["flags_block"] and
          "NON_SHARED_INC" in src["flags_block"],
          "_parse_migration_flags: block migration flags %s" % src["flags_block"])
    check(src["copy_disk_paths"][1] == ["vda"], "_live_migration_copy_disk_paths: %s"
          % src["copy_disk_paths"])
    check(len(mig) == 1, "Guest.migrate called %d times" % len(mig))
    check(polls, "nova's monitor never polled jobStats")
    return dst, src, mig[0]


def nova_called(src, what):
    return [e for e in src["events"] if e["what"] == what]


def check_monitor_completed(src):
    """nova's monitor watched a migration to its end: jobStats every 0.5 s,
    the maximum downtime set, and post_method called (not the rollback)."""
    polls = nova_called(src, "get_job_info")
    check(nova_called(src, "post_method") and not nova_called(src, "recover_method"),
          "nova's monitor did not call post_method (it called recover_method?)")
    check(len(polls) >= 4, "nova's monitor polled jobStats only %d times" % len(polls))
    # every 0.5 s (its loop's sleep), plus the time of the call itself;
    # the last round can be shorter (the operation thread's end wakes it)
    gaps = sorted(b_["t"] - a_["t"] for a_, b_ in zip(polls, polls[1:]))
    check(0.45 <= gaps[len(gaps) // 2] <= 1.0, "nova's monitor did not poll every 0.5 s: %s"
          % ["%.2f" % x for x in gaps])
    check(nova_called(src, "migrate_configure_max_downtime"),
          "nova's monitor never set the maximum downtime")


def check_postcopy_switched(src):
    """nova's monitor hit the completion timeout, ran its force_complete
    action and switched to post-copy (nova's own migration status)."""
    ev = src["events"]
    ok = [e for e in ev if e["what"] == "migrate_start_postcopy" and "error" not in e]
    check(ok, "nova never switched to post-copy: %s" % [e for e in ev if e["what"] ==
                                                        "migrate_start_postcopy"])
    check(any(e["what"] == "migration.save" and e["status"] == "running (post-copy)"
              for e in ev), "nova's migration status never became 'running (post-copy)'")
    for line in ("Live migration not completed after 8 sec",
                 "Switching to post-copy migration mode"):
        check(line in src["log"], "nova did not log %r" % line)
    log("nova switched to post-copy at %.1f s" % ok[0]["t"])


@case("nova (patched): tunnelled post-copy block migration through nova's driver and monitor")
def t_nova_patched(a, b):
    """Both hosts advertise tunnelled post-copy and storage: nova copies the
    local disk through the tunnel, and its monitor switches a migration that
    cannot converge to post-copy when the completion timeout's
    force_complete action fires.  The guest is verified on B."""
    g = guest_disks(("vda",), busy=True); prepare_disks(g, a, b); g.start(a)
    dst, src, mig = nova_migrate(a, b, patched=True)
    check_monitor_completed(src)
    md = dst["migrate_data"]
    check(md["nova_object.version"] == "1.11" and
          md["nova_object.data"].get("dst_tunnelled_migration_features") ==
          ["parallel", "postcopy", "postcopy_resume", "storage"],
          "check_can_live_migrate_destination: %s" % md)
    check(src["host_tunnelled_features"] == ["parallel", "postcopy", "postcopy_resume", "storage"],
          "Host.tunnelled_migration_features on A: %s" % src["host_tunnelled_features"])
    # Both hosts can: post-copy kept, the disk copied through the tunnel.
    check("TUNNELLED" in src["flags_this_migration"] and
          "POSTCOPY" in src["flags_this_migration"], "_get_migration_flags: %s"
          % src["flags_this_migration"])
    check(mig["migrate_disks"] == ["vda"] and mig["libvirt_migrate_disks"] == ["vda"] and
          "NON_SHARED_INC" in mig["libvirt_flags"] and "TUNNELLED" in mig["libvirt_flags"]
          and "POSTCOPY" in mig["libvirt_flags"], "Guest.migrate: %s" % mig)
    check_postcopy_switched(src)
    stats = completed_as_jobinfo(src["completed_job"])
    check(float(stats["Disk processed"].split()[0]) >= 32, "the disk was not copied: %s" % stats)
    verify_migrated(a, b, g, postcopy=True, storage=True, source_stats=stats)


@case("nova (Debian's 26.2.2, unpatched): tunnelled block migration sends no disk, refused "
      "as unsafe", xfail="libvirt: Migration without shared storage is unsafe", heavy=True)
def t_nova_pristine(a, b):
    """Today's nova with the same settings: _live_migration_operation
    empties migrate_disks for a tunnelled block migration, Guest.migrate then
    drops VIR_MIGRATE_NON_SHARED_INC, so nova asks libvirt for a tunnelled
    migration of a guest on local disks that copies none of them (and keeps
    VIR_MIGRATE_POSTCOPY, which stock libvirt refuses with tunnelling).
    libvirt refuses it as unsafe (the disks are not on shared storage);
    nova's monitor sees the failed job and calls the rollback.  The guest
    keeps running on A, nothing is left on B."""
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    dst, src, mig = nova_migrate(a, b, patched=False)
    check("dst_tunnelled_migration_features" not in dst["migrate_data"]["nova_object.data"] and
          dst["migrate_data"]["nova_object.version"] == "1.10",
          "unpatched check_can_live_migrate_destination: %s" % dst["migrate_data"])
    check("POSTCOPY" in mig["libvirt_flags"], "unpatched nova did not ask for post-copy: %s"
          % mig)
    check_refused_unsafe(a, b, g, src, mig)


def check_refused_unsafe(a, b, g, src, mig):
    """nova asked for a tunnelled migration that copies no disk: libvirt
    refused it as unsafe, nova's monitor rolled back, nothing was lost."""
    check(mig["migrate_disks"] == [] and mig.get("libvirt_migrate_disks") is None and
          "NON_SHARED_INC" not in mig["libvirt_flags"] and "TUNNELLED" in mig["libvirt_flags"],
          "Guest.migrate: %s" % mig)
    check(mig.get("error") == REFUSE_UNSAFE, "Guest.migrate: %s" % mig)
    log("refused as expected: %s" % REFUSE_UNSAFE)
    check(nova_called(src, "recover_method") and not nova_called(src, "post_method"),
          "nova's monitor did not call the rollback (recover_method)")
    check(a.domstate(GNAME) == "running (booted)", "source state %r" % a.domstate(GNAME))
    check(b.domstate(GNAME) is None, "a domain was left on the destination")
    check(not b.qemu_pids(), "a QEMU was left on the destination")
    g.wait_progress(a, "guest progress on A after the refusal", timeout=30)
    g.check_clean(a)


@case("nova (patched), stock destination: no post-copy asked, no disk copied, refused as "
      "unsafe as before", b="stock", xfail="libvirt: Migration without shared storage is unsafe")
def t_nova_patched_to_stock(a, b):
    """The behaviour matrix's "otherwise" rows: B's libvirt advertises no
    tunnelled features, so patched nova drops VIR_MIGRATE_POSTCOPY (stock
    libvirt refuses it with tunnelling) and copies no disk, with a warning
    naming both hosts' features; the migration is then what it was before
    the series (libvirt refuses it as unsafe)."""
    g = guest_disks(("vda",)); prepare_disks(g, a, b); g.start(a)
    dst, src, mig = nova_migrate(a, b, patched=True)
    check(dst["migrate_data"]["nova_object.data"].get("dst_tunnelled_migration_features") == [],
          "check_can_live_migrate_destination on a stock host: %s" % dst["migrate_data"])
    check("POSTCOPY" in src["flags_block"] and "POSTCOPY" not in src["flags_this_migration"]
          and "POSTCOPY" not in mig["libvirt_flags"],
          "_get_migration_flags kept post-copy: %s" % src["flags_this_migration"])
    for warning in ("Not permitting post-copy for this migration",
                    "Not copying local disks ['vda']"):
        check(warning in src["log"], "nova did not warn %r" % warning)
    check_refused_unsafe(a, b, g, src, mig)
