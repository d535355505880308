"""Lab cases: the Debian packages `make deb` builds, on a host where apt
installs Debian's own libvirt 11.3.0 packages and then upgrades them to
ours, as an operator would (lab.sh start --packaged); and the same for
Debian 13 with `make deb-trixie`'s, on a trixie root (lab.sh start --trixie,
`make check-trixie`)."""
import glob
import os

from e2e_common import (GNAME, case, check, check_qemu_user, guest_disks, log, migrate, prepare_disks,
                         verify_migrated)
from labpy import BUILD

HEADLINE = ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"]


def debian_version(debs, default):
    """Which Debian packages those in build/DEBS replace (deb.sh writes it)."""
    path = os.path.join(BUILD, debs, "debian-base")
    return open(path).read().strip() if os.path.exists(path) else default


# Which Debian packages make deb's replace.
DEBIAN_VERSION = debian_version("debs", "11.3.0-2~bpo12+1")


def our_version(debs="debs"):
    found = glob.glob(os.path.join(BUILD, debs, "libvirt0_*.deb"))
    check(found, "no libvirt0 package in build/%s (make %s)" % (debs, debs.replace("debs", "deb")))
    return os.path.basename(found[0]).split("_")[1]


def installed(host, stage):
    """{package: version} apt left on the packaged host after a stage."""
    with open(os.path.join(host.dir, "dpkg-%s.txt" % stage)) as f:
        return dict(line.split() for line in f if line.strip() and len(line.split()) == 2)


def packaged_headline(a, b, debs, debian):
    """Host a has Debian's `debian` packages upgraded to those of build/DEBS:
    check that, then the headline migration from a to b and back."""
    ours = our_version(debs)
    check(ours.startswith(debian + "+"), "our version %s does not sort above Debian's" % ours)
    before, after = installed(a, "debian"), installed(a, "ours")
    log("apt installed Debian's %d packages, then upgraded them to %s" % (len(before), ours))
    check(before.get("libvirt-daemon-system") == debian,
          "Debian's libvirt-daemon-system was not installed first: %r" % before)
    check(set(after) == set(before), "the upgrade changed the package set: %s -> %s"
          % (sorted(before), sorted(after)))
    stale = {p: v for p, v in after.items() if v != ours}
    check(not stale, "packages not upgraded to %s: %s" % (ours, stale))
    # The daemon that answers is the packaged one (its log names the package).
    check("package: %s (libvirt-tunnel)" % ours in a.daemon_log(),
          "the daemon's log does not name package %s" % ours)
    caps = a.virsh("capabilities").stdout
    for feature in ("postcopy", "storage", "postcopy_resume"):
        check("<%s/>" % feature in caps.split("<tunnelled>")[-1].split("</tunnelled>")[0],
              "the packaged host does not advertise tunnelled %s" % feature)

    # The headline, from the packaged host to a lab host...
    g = guest_disks(("vda",), busy=True)
    prepare_disks(g, a, b)
    g.start(a)
    check_qemu_user(a)  # Debian's default: QEMU as libvirt-qemu under DAC
    rc, out = migrate(a, b, HEADLINE, switch_postcopy=True, extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(a, b, g, postcopy=True, storage=True)

    # ... and from a lab host to the packaged host.
    a.virsh("undefine", GNAME)
    g = guest_disks(("vda",), busy=True)
    prepare_disks(g, b, a)
    g.start(b)
    rc, out = migrate(b, a, HEADLINE, switch_postcopy=True, extra=["--bandwidth", "8"])
    check(rc == 0, "migration failed: %s" % out)
    verify_migrated(b, a, g, postcopy=True, storage=True)
    check_qemu_user(a)


@case("packages: Debian's 11.3.0 upgraded to make deb's, headline migration to and from a lab host",
      a="packaged")
def t_packaged_host(a, b):
    packaged_headline(a, b, "debs", DEBIAN_VERSION)


# Not in `make check` (a trixie root and a build in it take too long for CI):
# `make check-trixie` runs it, with -k trixie.
@case("trixie: Debian 13's libvirt 11.3.0 upgraded to make deb-trixie's, headline migration "
      "to and from a lab host", a="packaged-trixie", optin=True)
def t_trixie_host(a, b):
    # The host is a Debian 13 system (as its daemon sees its root), whose
    # QEMU is trixie's.
    with open("/proc/%d/root/etc/debian_version" % a.daemon_pids()["libvirtd"]) as f:
        release = f.read().strip()
    check(release.startswith("13."), "the trixie host's root is Debian %s" % release)
    packaged_headline(a, b, "debs-trixie", debian_version("debs-trixie", "11.3.0-3+deb13u3"))
    with open(os.path.join(a.dir, "var", "log", "libvirt", "qemu", GNAME + ".log"), errors="replace") as f:
        qemu = [line.split("qemu version: ")[1].split(",")[0] for line in f if "qemu version: " in line]
    check(qemu and all("deb13" in v for v in qemu), "the trixie host's QEMU is not trixie's: %s" % qemu)
    log("Debian %s, QEMU %s" % (release, qemu[-1]))
