"""Lab cases: the Debian packages `make deb` builds, on a host where apt
installs Debian's own libvirt 11.3.0 packages and then upgrades them to
ours, as an operator would (lab.sh start --packaged)."""
import glob
import os

from e2e_common import (GNAME, case, check, check_qemu_user, guest_disks, log, migrate, prepare_disks,
                         verify_migrated)
from labpy import BUILD

# Which Debian packages make deb's replace (scripts/deb.sh writes it).
DEBIAN_VERSION = open(os.path.join(BUILD, "debs", "debian-base")).read().strip() \
    if os.path.exists(os.path.join(BUILD, "debs", "debian-base")) else "11.3.0-2~bpo12+1"
HEADLINE = ["live", "p2p", "tunnelled", "postcopy", "copy-storage-all"]


def our_version():
    debs = glob.glob(os.path.join(BUILD, "debs", "libvirt0_*.deb"))
    check(debs, "no libvirt0 package in build/debs (make deb)")
    return os.path.basename(debs[0]).split("_")[1]


def installed(host, stage):
    """{package: version} apt left on the packaged host after a stage."""
    with open(os.path.join(host.dir, "dpkg-%s.txt" % stage)) as f:
        return dict(line.split() for line in f if line.strip() and len(line.split()) == 2)


@case("packages: Debian's 11.3.0 upgraded to make deb's, headline migration to and from a lab host",
      a="packaged")
def t_packaged_host(a, b):
    ours = our_version()
    check(ours.startswith(DEBIAN_VERSION + "+"), "our version %s does not sort above Debian's" % ours)
    before, after = installed(a, "debian"), installed(a, "ours")
    log("apt installed Debian's %d packages, then upgraded them to %s" % (len(before), ours))
    check(before.get("libvirt-daemon-system") == DEBIAN_VERSION,
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
