#!/bin/bash
# Install every Debian package the project needs, idempotently.
#
# Build: what libvirt 11.3.0 needs for the features we configure.
# Lab:   QEMU 10.0 (bookworm-backports), busybox-static, TLS tooling.
#
# Deb:   what make deb needs to build with Debian's configuration, and
#        debootstrap for make deb-trixie (its trixie root gets the rest).
#
# Nova:  Debian 12's python3-nova (nova 26.2.2) with its dependencies, and
#        what its unit tests need (scripts/nova-tests.sh).
#
# QEMU comes from bookworm-backports: Debian 12's QEMU 7.2 loses guest
# writes during TCG live migration.  We add a bookworm-backports *binary*
# entry (same release, backports suite) and pin it low, so only packages
# we ask for explicitly with -t come from it.
set -euo pipefail

BUILD_PKGS=(
    build-essential pkg-config meson ninja-build ccache git xz-utils
    python3 python3-pytest python3-docutils perl
    libxml2-dev libxml2-utils xsltproc libglib2.0-dev libgnutls28-dev
    libnl-3-dev libnl-route-3-dev libjson-c-dev libreadline-dev
    libtirpc-dev libcap-ng-dev
    dwarves augeas-tools locales valgrind
)
LAB_PKGS=(
    gnutls-bin busybox-static cpio iproute2 util-linux socat
    procps psmisc python3-matplotlib acl gdb
    dnsmasq-base iptables mdevctl logrotate systemd-container   # what Debian's libvirt
                                         # packages need (the packaged lab host)
)
NOVA_PKGS=(
    python3-nova python3-stestr subunit python3-oslotest python3-fixtures
    python3-testtools python3-testscenarios python3-testresources
    python3-ddt python3-requests-mock python3-wsgi-intercept
)
# make deb: what Debian's libvirt 11.3.0 Build-Depends names for amd64
# (the Sources index), beyond the build packages above.
DEB_PKGS=(
    bash-completion kmod libacl1-dev libapparmor-dev libattr1-dev libaudit-dev
    libblkid-dev libbsd-dev libcurl4-gnutls-dev libdevmapper-dev libfuse3-dev
    libglusterfs-dev libiscsi-dev libnuma-dev libparted-dev libpcap0.8-dev
    libpciaccess-dev librados-dev librbd-dev libsanlock-dev libsasl2-dev
    libselinux1-dev libssh-dev libssh2-1-dev libtasn1-6-dev libudev-dev
    libwireshark-dev libxen-dev lvm2 mount numad open-iscsi systemtap-sdt-dev
    debootstrap      # make deb-trixie's build root and the trixie lab host's root
)
BPO_PKGS=(qemu-system-x86 qemu-utils)
BPO_LIST=/etc/apt/sources.list.d/libvirt-tunnel-bpo.sources
BPO_PREF=/etc/apt/preferences.d/libvirt-tunnel-bpo

die() { echo "deps: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get install)"

missing=()
for p in "${BUILD_PKGS[@]}" "${LAB_PKGS[@]}" "${NOVA_PKGS[@]}" "${DEB_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
qemu_ok=0
if command -v qemu-system-x86_64 >/dev/null &&
   qemu-system-x86_64 --version | grep -qE 'version (9\.[1-9]|1[0-9])\.'; then
    qemu_ok=1
fi
locale_ok=0
locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$' && locale_ok=1

if [ ${#missing[@]} -eq 0 ] && [ $qemu_ok = 1 ] && [ $locale_ok = 1 ]; then
    echo "deps: everything already installed"
    exit 0
fi

if [ ! -f "$BPO_LIST" ]; then
    cat > "$BPO_LIST" <<'EOS'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
    cat > "$BPO_PREF" <<'EOS'
Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100
EOS
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q || die "apt-get update failed: is the Debian mirror reachable? (check /etc/apt/sources.list.d and network)"
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        die "apt-get install failed (mirror unreachable or disk full? see above)"
fi
if [ $qemu_ok = 0 ]; then
    apt-get install -y -q --no-install-recommends -t bookworm-backports "${BPO_PKGS[@]}" ||
        die "installing QEMU from bookworm-backports failed"
fi
if [ $locale_ok = 0 ]; then
    sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >> /etc/locale.gen
    locale-gen
fi
echo "deps: done"
